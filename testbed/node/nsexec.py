"""Pre-exec helper: put a container process into its namespaces, mount its volumes, then exec it.

Run as ``python -S nsexec.py SPEC_JSON`` (no imports from the project, so it starts fast and can run
outside the repository). Spec keys: ``argv``, ``env``, ``cwd``, ``netns`` (a /var/run/netns path or
null), ``mount_ns`` (bool), ``mounts`` ([host, container, read_only]), ``devices`` ([host, container]),
``status_fd``. When ``exec`` fails the reason is written to ``status_fd`` (the runtime turns it into
``StartError``); a successful exec closes it empty (it is close-on-exec).
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    return lib


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _ensure_target(src, dst):
    # Bind mounts need an existing target of the same type; a missing one is created on the host
    # filesystem (an empty file or directory; documented in README.md).
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    elif not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst) or "/", exist_ok=True)
        with open(dst, "a"):
            pass


def _bind(lib, src, dst, ro):
    _ensure_target(src, dst)
    _check(lib.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None), f"bind {src} -> {dst}")
    if ro:
        _check(
            lib.mount(None, dst.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None), f"remount ro {dst}"
        )


def main():
    spec = json.loads(sys.argv[1])
    fd = spec.get("status_fd")
    if fd is not None:
        os.set_inheritable(fd, False)  # closes on a successful exec, which the runtime reads as success
    try:
        lib = _libc()
        if spec.get("netns"):
            nsfd = os.open(spec["netns"], os.O_RDONLY)
            _check(lib.setns(nsfd, CLONE_NEWNET), "setns net")
            os.close(nsfd)
        if spec.get("mount_ns"):
            _check(lib.unshare(CLONE_NEWNS), "unshare mount namespace")
            # private: our binds must not propagate back to the host
            _check(lib.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
            for src, dst, ro in spec.get("mounts") or []:
                _bind(lib, src, dst, ro)
            for src, dst in spec.get("devices") or []:
                if src != dst:
                    _bind(lib, src, dst, False)
        cwd = spec.get("cwd")
        if cwd:
            os.makedirs(cwd, exist_ok=True)
            os.chdir(cwd)
    except OSError as e:
        _report(fd, f"error during container init: {e}")
        os._exit(128)
    argv = spec["argv"]
    env = spec["env"]
    try:
        if "/" in argv[0]:
            os.execve(argv[0], argv, env)
        path = env.get("PATH", os.defpath)
        for d in path.split(":"):
            cand = os.path.join(d or ".", argv[0])
            if os.path.isfile(cand) and os.access(cand, os.X_OK):
                os.execve(cand, argv, env)
        _report(fd, f'exec: "{argv[0]}": executable file not found in $PATH')
    except OSError as e:
        what = "no such file or directory" if e.errno == 2 else (e.strerror or str(e)).lower()
        _report(fd, f'exec: "{argv[0]}": {what}')
    os._exit(128)


def _report(fd, msg):
    if fd is not None:
        try:
            os.write(fd, msg.encode())
        except OSError:
            pass


if __name__ == "__main__":
    main()
