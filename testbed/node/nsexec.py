"""Pre-exec helper: put a container process into its namespaces, build its root, then exec it.

Run as ``python -S nsexec.py SPEC_JSON`` (no imports from the project, so it starts fast and can run
outside the repository). Spec keys: ``argv``, ``env``, ``cwd``, ``netns`` (a /var/run/netns path or
null), ``mount_ns`` (bool), ``mounts`` ([host, container, read_only]), ``devices`` ([host, container]),
``root`` (null, or the container's own root, see below), ``user`` (null or {uid, gid, groups}),
``pid_ns`` (bool: a PID namespace of its own, with a small init as pid 1), ``status_fd``. When
``exec`` fails the reason is written to ``status_fd`` (the runtime turns it into ``StartError``); a
successful exec closes it empty (it is close-on-exec).

``root`` = {``dir``: an empty directory to build the root on, ``image``: [host paths shown read-only
at the same path: the image's contents], ``links``: [[path, target]] symlinks, ``hide``: [paths
covered by an empty tmpfs even where an image path exposes them], ``privileged``: bool}. The root is a
tmpfs on ``dir`` (nothing the container creates outside its volumes reaches the host); image
directories are overlays on the host's (writable, changes discarded, like an image layer); /dev holds
null, zero, full, random, urandom, tty and a tmpfs /dev/shm (privileged: the host's /dev); /proc is a
fresh procfs; /tmp a private tmpfs. After ``pivot_root`` the host's root is detached. An unprivileged
container then enters its own user namespace (identity-mapped, so file ownership means what it means
on the host) and so holds no capability over the host: it cannot mount, and cannot follow
``/proc/<pid>/root`` of host processes or of other pods.

With ``log_path`` and ``exit_path`` in the spec the helper is the container's *shim* (as
containerd-shim is): it forks; the child becomes the container (a session of its own, so its process
group is the container's) and the shim stays outside every namespace, writing the container's stdout
and stderr into ``log_path`` in the CRI log format and, when the container ends, its exit code into
``exit_path`` (JSON ``{"exitCode", "finishedAt"}``). Nothing of the container passes through the
node agent: the container and its logs outlive a killed agent, and a restarted agent adopts them
(``podcheckpoint.py``). The first line on ``status_fd`` is then ``pid <container pid>``.
"""

import ctypes
import json
import os
import select
import signal
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def _libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.syscall.restype = ctypes.c_long
    return lib


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(lib, src, dst, fstype, flags, data, what):
    _check(
        lib.mount(
            src.encode() if src else None,
            dst.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        what,
    )


def _ensure_target(src, dst):
    # Bind mounts need an existing target of the same type. Under a built root the target is created
    # inside the container's root (tmpfs or an image overlay); without one, on the host filesystem
    # (an empty file or directory; documented in README.md).
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    elif not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst) or "/", exist_ok=True)
        with open(dst, "a"):
            pass


def _bind(lib, src, dst, ro):
    _ensure_target(src, dst)
    _mount(lib, src, dst, None, MS_BIND | MS_REC, None, f"bind {src} -> {dst}")
    if ro:
        _mount(lib, None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None, f"remount ro {dst}")


def _inside(root, path):
    return os.path.join(root, os.path.normpath("/" + path).lstrip("/"))


def _build_root(lib, spec, mounts, devices):
    r = spec["dir"]
    _mount(lib, "tmpfs", r, "tmpfs", MS_NOSUID, "mode=755", "tmpfs root")
    # the overlays' upper layers live on a scratch tmpfs that is detached with the host's root
    scratch = os.path.join(r, ".scratch")
    os.makedirs(scratch)
    _mount(lib, "tmpfs", scratch, "tmpfs", 0, "mode=700", "tmpfs scratch")
    # the private /tmp first: image paths that live under the host's /tmp (a checkout or venv there,
    # as in CI's clone) are then mounted on top of it instead of being covered by it
    tmp = _inside(r, "/tmp")
    os.makedirs(tmp, exist_ok=True)
    _mount(lib, "tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", "tmpfs /tmp")
    for i, path in enumerate(spec.get("image") or []):
        if not os.path.exists(path):
            continue
        dst = _inside(r, path)
        if os.path.isdir(path):
            os.makedirs(dst, exist_ok=True)
            up, work = os.path.join(scratch, f"u{i}"), os.path.join(scratch, f"w{i}")
            os.makedirs(up)
            os.makedirs(work)
            opts = f"lowerdir={path},upperdir={up},workdir={work}"
            try:
                _mount(lib, "overlay", dst, "overlay", 0, opts, f"overlay {path}")
            except OSError:
                _bind(lib, path, dst, True)  # no overlayfs: read-only image directory
        else:
            _bind(lib, path, dst, True)
    for path, target in spec.get("links") or []:
        dst = _inside(r, path)
        if not os.path.lexists(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(target, dst)
    for path in spec.get("hide") or []:
        dst = _inside(r, path)
        if os.path.isdir(dst):
            _mount(lib, "tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755", f"hide {path}")
    dev = _inside(r, "/dev")
    os.makedirs(dev, exist_ok=True)
    if spec.get("privileged"):
        _bind(lib, "/dev", dev, False)
    else:
        _mount(lib, "tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755", "tmpfs /dev")
        for name in DEV_NODES:
            if os.path.exists("/dev/" + name):
                _bind(lib, "/dev/" + name, os.path.join(dev, name), False)
        os.makedirs(os.path.join(dev, "shm"))
        _mount(lib, "tmpfs", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", "/dev/shm")
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, os.path.join(dev, name))
    proc = _inside(r, "/proc")
    os.makedirs(proc, exist_ok=True)
    _mount(lib, "proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None, "mount /proc")
    for src, dst, ro in mounts:
        _bind(lib, src, _inside(r, dst), ro)
    for src, dst in devices:
        _bind(lib, src, _inside(r, dst), False)
    old = os.path.join(r, ".oldroot")
    os.makedirs(old)
    os.chdir(r)
    _check(lib.syscall(PIVOT_ROOT.get(os.uname().machine, 155), b".", b".oldroot"), "pivot_root")
    os.chdir("/")
    _check(lib.umount2(b"/.oldroot", MNT_DETACH), "detach the host root")
    os.rmdir("/.oldroot")
    _check(lib.umount2(b"/.scratch", MNT_DETACH), "detach the scratch layer")
    os.rmdir("/.scratch")


def _own_user_namespace(lib):
    """Enter a new user namespace mapped 1:1 onto the host's IDs; a forked helper still holding the
    host's capabilities writes the maps (a process cannot map more than itself into its own)."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    me = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(w)
        os.close(r2)
        os.read(r, 1)
        code = 0
        try:
            with open(f"/proc/{me}/uid_map", "w") as f:
                f.write("0 0 4294967295\n")
            with open(f"/proc/{me}/gid_map", "w") as f:
                f.write("0 0 4294967295\n")
        except OSError as e:
            os.write(w2, str(e).encode()[:200])
            code = 1
        os._exit(code)
    os.close(r)
    os.close(w2)
    err = None
    if lib.unshare(CLONE_NEWUSER) != 0:
        err = OSError(ctypes.get_errno(), "unshare user namespace")
    os.write(w, b"x")
    os.close(w)
    msg = os.read(r2, 256)
    os.close(r2)
    os.waitpid(child, 0)
    if err is not None:
        raise err
    if msg:
        raise OSError(1, "user namespace id maps: " + msg.decode(errors="replace"))


def _switch_user(user):
    groups = [int(g) for g in user.get("groups") or []]
    os.setgroups(groups)
    os.setgid(int(user.get("gid", 0)))
    os.setuid(int(user["uid"]))


def main():
    spec = json.loads(sys.argv[1])
    fd = spec.get("status_fd")
    if fd is not None:
        os.set_inheritable(fd, False)  # closes on a successful exec, which the runtime reads as success
    if spec.get("log_path"):
        _shim(spec, fd)
    else:
        _container(spec, fd)


def _cri_stamp():
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


MAX_LINE = 16384  # longer lines are split into partial (P) records, as containerd does


class _Stream:
    def __init__(self, name, out):
        self.name = name.encode()
        self.out = out
        self.buf = b""

    def feed(self, data):
        self.buf += data
        while True:
            nl = self.buf.find(b"\n", 0, MAX_LINE + 1)
            if nl >= 0:
                self._write(b"F", self.buf[:nl])
                self.buf = self.buf[nl + 1:]
            elif len(self.buf) >= MAX_LINE:
                self._write(b"P", self.buf[:MAX_LINE])
                self.buf = self.buf[MAX_LINE:]
            else:
                break

    def flush(self):
        if self.buf:
            self._write(b"F", self.buf)
            self.buf = b""

    def _write(self, tag, line):
        self.out.write(_cri_stamp().encode() + b" " + self.name + b" " + tag + b" " + line + b"\n")


def _shim(spec, fd):
    """Fork the container, copy its output into the CRI log, record its exit code, then exit."""
    try:
        os.makedirs(os.path.dirname(spec["log_path"]), exist_ok=True)
        os.makedirs(os.path.dirname(spec["exit_path"]), exist_ok=True)
        log = open(spec["log_path"], "ab", buffering=0)  # noqa: SIM115 - the shim's whole life
    except OSError as e:
        _report(fd, f"error during container init: log file: {e}")
        os._exit(128)
    if spec.get("pid_ns"):
        # the next child is the init (pid 1) of a PID namespace of its own: the container sees only
        # its own processes, and they all end with it
        lib = _libc()
        if lib.unshare(CLONE_NEWPID) != 0:
            err = os.strerror(ctypes.get_errno())
            _report(fd, f"error during container init: unshare pid namespace: {err}")
            os._exit(128)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(out_r)
        os.close(err_r)
        os.close(go_w)
        os.read(go_r, 1)  # the shim has told the runtime our pid first: an error message comes after it
        os.close(go_r)
        log.close()
        os.setsid()  # the container's own process group: the runtime signals it, never the shim
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        _container(spec, fd)
        os._exit(128)
    os.close(out_w)
    os.close(err_w)
    os.close(go_r)
    _report(fd, f"pid {child}\n")
    os.write(go_w, b"x")
    os.close(go_w)
    if fd is not None:
        os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # signals are for the container (its own group); the shim stays to record how it ended
        signal.signal(sig, lambda *_: None)
    streams = {out_r: _Stream("stdout", log), err_r: _Stream("stderr", log)}
    poller = select.poll()
    for r in streams:
        poller.register(r, select.POLLIN | select.POLLHUP | select.POLLERR)
    status = None
    drain_until = None
    while streams:
        try:
            events = poller.poll(200)
        except InterruptedError:
            continue
        for r, _ev in events:
            try:
                data = os.read(r, 65536)
            except OSError:
                data = b""
            if data:
                streams[r].feed(data)
            else:
                streams.pop(r).flush()
                poller.unregister(r)
                os.close(r)
        if status is None:
            pid, st = os.waitpid(child, os.WNOHANG)
            if pid == child:
                status = st
                # the container's main process ended: so does the container (what it left behind in its
                # group goes, as in a PID namespace whose init exits); its last output is still read
                try:
                    os.killpg(child, signal.SIGKILL)
                except OSError:
                    pass
                drain_until = time.monotonic() + 2.0
        elif drain_until is not None and time.monotonic() > drain_until:
            break  # something outside the group still holds the pipes
    for s in streams.values():
        s.flush()
    if status is None:  # it closed its output but runs on
        _pid, status = os.waitpid(child, 0)
        try:
            os.killpg(child, signal.SIGKILL)
        except OSError:
            pass
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = spec["exit_path"] + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({"exitCode": code, "finishedAt": finished}, f)
        os.replace(tmp, spec["exit_path"])
    except OSError:
        pass  # the runtime then reports the container as ended with an unknown status
    log.close()
    os._exit(code & 0xFF)


def _container(spec, fd):
    root = spec.get("root")
    try:
        lib = _libc()
        if spec.get("netns"):
            nsfd = os.open(spec["netns"], os.O_RDONLY)
            _check(lib.setns(nsfd, CLONE_NEWNET), "setns net")
            os.close(nsfd)
            if root and not root.get("privileged"):
                # the netns belongs to the host's user namespace: without this, a container in its own
                # user namespace could not bind ports below 1024, which containers normally may
                try:
                    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "w") as f:
                        f.write("0")
                except OSError:
                    pass  # an older kernel: low ports stay privileged
        if spec.get("mount_ns"):
            _check(lib.unshare(CLONE_NEWNS), "unshare mount namespace")
            # private: our binds must not propagate back to the host
            _check(lib.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
            mounts = [tuple(m) for m in spec.get("mounts") or []]
            devices = [tuple(d) for d in spec.get("devices") or []]
            if root:
                _build_root(lib, root, mounts, devices)
                if not root.get("privileged"):
                    _own_user_namespace(lib)
            else:
                for src, dst, ro in mounts:
                    _bind(lib, src, dst, ro)
                for src, dst in devices:
                    if src != dst:
                        _bind(lib, src, dst, False)
        if spec.get("user"):
            _switch_user(spec["user"])
        cwd = spec.get("cwd")
        if cwd:
            try:
                os.makedirs(cwd, exist_ok=True)
            except OSError:
                pass  # a read-only root: chdir below names the problem
            os.chdir(cwd)
    except OSError as e:
        _report(fd, f"error during container init: {e}")
        os._exit(128)
    if spec.get("pid_ns") and os.getpid() == 1:
        _init(spec, fd)
    _exec(spec, fd)


def _init(spec, fd):
    """Stay as the PID namespace's init: fork the container's command, reap every orphan, and exit with
    the command's status (as ``docker run --init`` does). The command is pid 2, so SIGTERM reaches it
    with its default action (the runtime signals the whole process group, this init included, which
    ignores it); when the init exits, the kernel ends whatever is left in the namespace."""
    cmd = os.fork()
    if cmd == 0:
        _exec(spec, fd)
    if fd is not None:
        os.close(fd)  # the command's copy closes on exec: EOF tells the runtime it started
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda *_: None)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(128)
        if pid == cmd:
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _exec(spec, fd):
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
