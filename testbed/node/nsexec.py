"""Pre-exec helper: put a container process into its namespaces, build its root, then exec it.

Run as ``python -S nsexec.py -`` with the spec's JSON on stdin (or ``nsexec.py SPEC_JSON``); no
imports from the project, so it starts fast and can run outside the repository. Spec keys:
``argv``, ``env``, ``cwd``, ``netns`` (a /var/run/netns path or null), ``mount_ns`` (bool),
``mounts`` ([host, container, read_only]), ``devices`` ([host, container]), ``root`` (null, or the
container's own root, see below), ``user`` (null or {uid, gid, groups}), ``pid_ns`` (bool: a PID
namespace of its own, with a small init as pid 1), ``pid_ns_of`` (a pid whose PID namespace the
container joins instead), ``hostname`` (with ``mount_ns``: a UTS namespace of its own with that
name), ``status_fd``. When ``exec`` fails the reason is written to ``status_fd`` (the runtime turns
it into ``StartError``); a
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

The shim also serves ``attach_path``, a unix socket (see ``_Attach``): attached clients get the
container's output live and type into its stdin. ``stdin`` gives the container a pipe as stdin (held
open by the shim; ``stdin_once``: closed when the first attached session's input ends); ``tty`` gives it
a terminal instead, opened inside the container's own ``/dev/pts`` (a devpts ``newinstance``) and made
its controlling terminal, whose master side the shim reads (the log gets it as ``stdout``) and writes.
"""

import ctypes
import json
import os
import select
import signal
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
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
        # a devpts instance of the container's own (as runc mounts one): terminals opened here are
        # named inside the container, so tty/ttyname() work; the host's ptys stay invisible
        pts = os.path.join(dev, "pts")
        os.makedirs(pts)
        _mount(lib, "devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=620,gid=5", "mount /dev/pts")
        os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
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
    if sys.argv[1] == "-":  # the spec on stdin, which then becomes /dev/null (the container's default)
        with os.fdopen(os.dup(0), "rb") as f:
            spec = json.loads(f.read())
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.close(null)
    else:
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


# -- attach: the shim's socket ---------------------------------------------------------------------
# Frames on the attach socket are one kind byte, a 4-byte big-endian length, then the payload. From the
# node agent: HELLO (payload b"1" when the session carries stdin), STDIN data, EOF (the session's stdin
# ended), RESIZE (width, height as two 16-bit numbers). To it: STDOUT and STDERR data, as the container
# writes them; the socket closes once the container has ended (its exit file is written by then).
F_HELLO, F_STDIN, F_EOF, F_RESIZE, F_STDOUT, F_STDERR = b"h", b"i", b"e", b"r", b"1", b"2"
MAX_QUEUED = 8 << 20  # an attached client that falls this far behind is dropped, never the container


def frame(kind, data):
    return kind + len(data).to_bytes(4, "big") + data


def _listen(path):
    """A listening unix socket at ``path`` (bound through /proc/self/fd: pod paths exceed 108 bytes)."""
    import socket

    d, name = os.path.split(path)
    try:
        os.unlink(path)
    except OSError:
        pass
    dfd = os.open(d, os.O_PATH | os.O_DIRECTORY)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(f"/proc/self/fd/{dfd}/{name}")
        os.chmod(path, 0o600)
        s.listen(8)
        return s
    finally:
        os.close(dfd)


class _Attach:
    """The container's live stdio for attached clients: stdin (a pipe or the terminal) and output."""

    def __init__(self, listener, stdin_fd, stdin_once, master, stdin):
        import threading

        self.listener, self.stdin_fd, self.stdin_once, self.master = listener, stdin_fd, stdin_once, master
        self.stdin = stdin  # the container takes input (``stdin: true``); else what is typed is dropped
        self.lock = threading.Lock()  # the client list and their queue sizes
        # stdin writes block while the container does not read: never under ``lock``, or a container
        # blocked writing its output (which the main loop hands out under ``lock``) would never read
        self.in_lock = threading.Lock()
        self.clients = []  # [socket, queue, bytes queued]
        self.threading = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import queue

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            q = queue.Queue()
            entry = [conn, q, 0]
            with self.lock:
                self.clients.append(entry)
            self.threading.Thread(target=self._read, args=(conn,), daemon=True).start()
            self.threading.Thread(target=self._write, args=(entry,), daemon=True).start()

    def _read(self, conn):
        buf = b""
        with_stdin = False
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 5:
                    n = int.from_bytes(buf[1:5], "big")
                    if len(buf) < 5 + n:
                        break
                    kind, payload, buf = buf[:1], buf[5:5 + n], buf[5 + n:]
                    if kind == F_HELLO:
                        with_stdin = payload == b"1"
                    elif kind == F_STDIN:
                        self._to_stdin(payload)
                    elif kind == F_EOF:
                        self._stdin_ended()
                        with_stdin = False
                    elif kind == F_RESIZE and self.master is not None and n == 4:
                        import fcntl
                        import struct
                        import termios

                        w, h = struct.unpack(">HH", payload)
                        try:
                            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
                        except OSError:
                            pass
        except OSError:
            pass
        if with_stdin:
            self._stdin_ended()  # the client went away without ending its input

    def _to_stdin(self, data):
        if not self.stdin:
            return
        with self.in_lock:
            fd = self.master if self.master is not None else self.stdin_fd
            if fd is None:
                return
            try:
                while data:
                    data = data[os.write(fd, data):]
            except OSError:
                pass

    def _stdin_ended(self):
        """stdinOnce: the first attached session's end of input is the container's (a pipe is closed:
        the command reads EOF); without it, stdin stays open for the next session. A terminal's input
        is left open."""
        with self.in_lock:
            if self.stdin_once and self.stdin_fd is not None:
                try:
                    os.close(self.stdin_fd)
                except OSError:
                    pass
                self.stdin_fd = None

    def _write(self, entry):
        conn, q = entry[0], entry[1]
        while True:
            data = q.get()
            if data is None:
                break
            with self.lock:
                entry[2] -= len(data)
            try:
                conn.sendall(data)
            except OSError:
                break
        self._drop(entry)

    def _drop(self, entry):
        import socket

        with self.lock:
            if entry in self.clients:
                self.clients.remove(entry)
        try:
            entry[0].shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        entry[0].close()

    def output(self, kind, data):
        with self.lock:
            for entry in list(self.clients):
                if entry[2] > MAX_QUEUED:
                    entry[1].put(None)  # too far behind: this client goes
                    continue
                f = frame(kind, data)
                entry[2] += len(f)
                entry[1].put(f)

    def close(self):
        """The container ended: clients get what is queued, then EOF."""
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            clients = list(self.clients)
        for entry in clients:
            entry[1].put(None)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self.lock:
                if not self.clients:
                    break
            time.sleep(0.01)


def _shim(spec, fd):
    """Fork the container, copy its output into the CRI log (and to attached clients), feed it what
    attached clients type, record its exit code, then exit."""
    try:
        os.makedirs(os.path.dirname(spec["log_path"]), exist_ok=True)
        os.makedirs(os.path.dirname(spec["exit_path"]), exist_ok=True)
        log = open(spec["log_path"], "ab", buffering=0)  # noqa: SIM115 - the shim's whole life
        listener = _listen(spec["attach_path"]) if spec.get("attach_path") else None
    except OSError as e:
        _report(fd, f"error during container init: log file: {e}")
        os._exit(128)
    # the shim's own PID namespace, to return to once the container is forked: a process whose children
    # would land in another PID namespace cannot start threads (clone fails with EINVAL)
    own_pid_ns = None
    if spec.get("pid_ns_of") or spec.get("pid_ns"):
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    if spec.get("pid_ns_of"):
        # the next child joins another container's PID namespace (an ephemeral container's target)
        lib = _libc()
        try:
            nsfd = os.open(f"/proc/{int(spec['pid_ns_of'])}/ns/pid", os.O_RDONLY)
            _check(lib.setns(nsfd, CLONE_NEWPID), "setns pid")
            os.close(nsfd)
        except OSError as e:
            _report(fd, f"error during container init: join the target's pid namespace: {e}")
            os._exit(128)
        spec["pid_ns"] = False  # not its init
    elif spec.get("pid_ns"):
        # the next child is the init (pid 1) of a PID namespace of its own: the container sees only
        # its own processes, and they all end with it
        lib = _libc()
        if lib.unshare(CLONE_NEWPID) != 0:
            err = os.strerror(ctypes.get_errno())
            _report(fd, f"error during container init: unshare pid namespace: {err}")
            os._exit(128)
    tty = bool(spec.get("tty"))
    if tty:
        import socket

        # the container opens its terminal in its own /dev/pts and hands the master side over (as
        # runc's console socket does)
        console, console_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if spec.get("stdin") else (None, None)
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(go_w)
        os.read(go_r, 1)  # the shim has told the runtime our pid first: an error message comes after it
        os.close(go_r)
        log.close()
        if listener is not None:
            listener.close()
        os.setsid()  # the container's own process group: the runtime signals it, never the shim
        if tty:
            console.close()
            spec["console_fd"] = console_child.fileno()
            spec["_console"] = console_child  # kept referenced: the socket object owns the fd
        else:
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            if in_r is not None:
                os.close(in_w)
                os.dup2(in_r, 0)
                os.close(in_r)
        _container(spec, fd)
        os._exit(128)
    os.close(go_r)
    if own_pid_ns is not None:
        _libc().setns(own_pid_ns, CLONE_NEWPID)
        os.close(own_pid_ns)
    _report(fd, f"pid {child}\n")
    os.write(go_w, b"x")
    os.close(go_w)
    if fd is not None:
        os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # signals are for the container (its own group); the shim stays to record how it ended
        signal.signal(sig, lambda *_: None)
    master = None
    if tty:
        console_child.close()
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(console, 16, 1)
            master = fds[0] if fds else None
        except OSError:
            master = None
        console.close()
        streams = {master: _Stream("stdout", log)} if master is not None else {}
        stdin_fd = None
    else:
        os.close(out_w)
        os.close(err_w)
        streams = {out_r: _Stream("stdout", log), err_r: _Stream("stderr", log)}
        stdin_fd = None
        if in_r is not None:
            os.close(in_r)
            stdin_fd = in_w
    attach = None
    if listener is not None:
        attach = _Attach(listener, stdin_fd, bool(spec.get("stdin_once")), master, bool(spec.get("stdin")))
    poller = select.poll()
    for r in streams:
        poller.register(r, select.POLLIN | select.POLLHUP | select.POLLERR)
    # the container's exit wakes the loop through a pidfd, so an idle container costs its shim nothing
    # (a 200 ms poll for the exit was 5 wake-ups a second per container); 200 ms ticks where there is
    # no pidfd (kernel before 5.3) and while draining the pipes after the exit
    try:
        exit_fd = os.pidfd_open(child)
        poller.register(exit_fd, select.POLLIN)
    except (AttributeError, OSError):
        exit_fd = None
    status = None
    drain_until = None
    while streams:
        try:
            events = poller.poll(None if exit_fd is not None else 200)
        except InterruptedError:
            continue
        for r, _ev in events:
            if r == exit_fd:
                continue
            try:
                data = os.read(r, 65536)
            except OSError:
                data = b""  # a terminal whose last slave closed reads EIO
            if data:
                s = streams[r]
                s.feed(data)
                if attach is not None:
                    attach.output(F_STDERR if s.name == b"stderr" else F_STDOUT, data)
            else:
                streams.pop(r).flush()
                poller.unregister(r)
                if r != master:
                    os.close(r)
        if status is None:
            pid, st = os.waitpid(child, os.WNOHANG)
            if pid == child:
                status = st
                if exit_fd is not None:
                    poller.unregister(exit_fd)
                    os.close(exit_fd)
                    exit_fd = None  # back to 200 ms ticks for the drain deadline
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
    if attach is not None:
        attach.close()
        try:
            os.unlink(spec["attach_path"])
        except OSError:
            pass
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
        if spec.get("hostname") and spec.get("mount_ns"):
            # a UTS namespace of its own: `hostname` says the pod's name, as in any pod
            name = spec["hostname"].encode()
            _check(lib.unshare(CLONE_NEWUTS), "unshare uts namespace")
            _check(lib.sethostname(name, len(name)), "sethostname")
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
        if spec.get("console_fd") is not None:
            _take_terminal(spec)
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


TIOCSPTLCK, TIOCGPTPEER, TIOCGPTN = 0x40045431, 0x5441, 0x80045430


def _open_terminal():
    """A pseudo-terminal from the container's own /dev/pts (its slave then has a name inside)."""
    import fcntl
    import struct

    for path in ("/dev/pts/ptmx", "/dev/ptmx"):
        try:
            master = os.open(path, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            continue
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        try:
            slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        except OSError:  # before Linux 4.13: by name
            n = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
            slave = os.open(f"/dev/pts/{n}", os.O_RDWR | os.O_NOCTTY)
        return master, slave
    return os.openpty()


def _take_terminal(spec):
    """``tty``: the terminal becomes this process's controlling terminal and stdio; its master side
    goes to the shim over the console socket."""
    import fcntl
    import socket
    import termios

    master, slave = _open_terminal()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for i in (0, 1, 2):
        os.dup2(slave, i)
    if slave > 2:
        os.close(slave)
    con = spec.pop("_console")
    socket.send_fds(con, [b"m"], [master])
    os.close(master)
    con.close()
    spec.pop("console_fd", None)


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
    # with a terminal the command may lead a process group of its own (a shell's job control), out of
    # reach of the runtime's signal to the container's group: signals are passed on to it
    forward = (lambda sig, _f: _kill(cmd, sig)) if spec.get("tty") else (lambda *_: None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(128)
        if pid == cmd:
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


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
