"""The kubelet's streaming endpoints: ``/exec``, ``/attach`` and ``/portForward``.

Protocols, as kubectl of every minor and the official clients negotiate them:

* SPDY/3.1 (``spdy.py``) with ``X-Stream-Protocol-Version`` ``v5``/``v4``/``v3``/``v2.channel.k8s.io``
  or ``channel.k8s.io`` (remote command) and ``portforward.k8s.io``: one SPDY stream per
  ``streamtype`` (stdin, stdout, stderr, error, resize) or, for port-forward, a data and an error
  stream per connection (headers ``port``, ``requestid``);
* WebSocket with ``v5``..``v1.channel.k8s.io`` subprotocols (kubectl 1.30+, the Python client): binary
  messages whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, 255
  close in v5); ``v4.base64.channel.k8s.io`` and ``base64.channel.k8s.io`` (browsers): text messages,
  the channel as an ASCII digit followed by the base64 of the data; port-forward over
  ``v4.channel.k8s.io`` (``?ports=``: data channel 2i, error 2i+1,
  each opened by the port number, 2 bytes little-endian);
* SPDY tunnelled in WebSocket (subprotocol ``SPDY/3.1+portforward.k8s.io``: kubectl 1.31+
  port-forward).

The error channel carries a ``Status`` (v4+): ``Success``, or ``Failure`` with reason
``NonZeroExitCode`` and the code as cause ``ExitCode``, which kubectl turns into its own exit code.
Commands run in the container's namespaces (mount, network, UTS, PID and, for unprivileged
containers, its user namespace) with its environment, user and working directory, through ``nsenter``
as the exec probes do, behind ``EXEC_WRAPPER`` (a command that cannot be started is reported as the
runtime's error, not an exit code); ``tty`` gets a pseudo-terminal from the container's own
``/dev/pts`` whose size follows the resize channel. ``attach`` connects to the container's shim
(``nsexec.py``'s attach socket): the container's output live, and what the client types into its
stdin (``stdin: true``) or terminal (``tty: true``), resized like exec's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import stat
import struct
import sys
import termios
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from . import ephemeral, netns, probes, spdy, upgrade

if TYPE_CHECKING:
    from .agent import NodeAgent
    from .runtime import CState, PodWorker

REMOTECOMMAND = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                 "channel.k8s.io")
# WebSocket only: text frames, the channel as an ASCII digit and the data base64-encoded (browsers)
BASE64 = ("v4.base64.channel.k8s.io", "base64.channel.k8s.io")
PORTFORWARD = "portforward.k8s.io"
TUNNEL = "SPDY/3.1+portforward.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
# (kind, transport, protocol) of the sessions served, newest last (tests and debugging read it)
SEEN: list[tuple[str, str, str]] = []


def _flag(q: Any, key: str) -> bool:
    return str(q.get(key, "")).lower() in ("1", "true", "yes")


def _status_ok() -> bytes:
    return json.dumps({"metadata": {}, "status": "Success"}).encode()


def _status_failure(message: str, code: int | None = None) -> bytes:
    st: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": message}
    if code is not None:
        st["reason"] = "NonZeroExitCode"
        st["details"] = {"causes": [{"reason": "ExitCode", "message": str(code)}]}
    else:
        st["reason"] = "InternalError"
        st["details"] = {"causes": [{"message": message}]}
        st["code"] = 500
    return json.dumps(st).encode()


# -- finding the container -------------------------------------------------------------------------


def find(agent: NodeAgent, ns: str, pod: str, container: str | None) -> tuple[PodWorker, CState]:
    w = next((w for w in list(agent.runtime.workers.values()) if w.ns == ns and w.name == pod), None)
    if w is None:
        raise web.HTTPNotFound(text=f'pod "{pod}" in namespace "{ns}" not found on node {agent.name}')
    if not container:
        if len(w.apps) != 1:
            names = " ".join(c.name for c in w.apps)
            msg = f"a container name must be specified for pod {pod}, choose one of: [{names}]"
            raise web.HTTPBadRequest(text=msg)
        return w, w.apps[0]
    c = next((c for c in w.init + w.apps + ephemeral.containers_of(w) if c.name == container), None)
    if c is None:
        raise web.HTTPNotFound(text=f'container "{container}" in pod "{pod}" not found')
    return w, c


def _running(w: PodWorker, c: CState) -> int:
    if c.proc is None or c.proc.poll() is not None:
        raise web.HTTPBadRequest(text=f"unable to upgrade connection: container not found (\"{c.name}\")")
    return c.proc.pid


def _own_ns(pid: int, kind: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return False


def nsenter_argv(pid: int, argv: list[str], use_ns: bool) -> list[str]:
    """``argv`` inside the namespaces of ``pid`` (mount, network, and its user and PID namespaces when
    it has its own: ``ps`` then lists the container's processes), as its user, in its working
    directory. With ``-p`` nsenter forks the command into the namespace and passes on its exit code."""
    if not (use_ns and shutil.which("nsenter")):
        return list(argv)
    user = probes._as_user_of(pid)
    flags = [*(["-U"] if _own_ns(pid, "user") else []), *(["-p"] if _own_ns(pid, "pid") else []),
             *(["-u"] if _own_ns(pid, "uts") else [])]
    return ["nsenter", "-t", str(pid), "-m", "-n", *flags, *user, "-w", "--", *argv]


TIOCSPTLCK, TIOCGPTPEER = 0x40045431, 0x5441
WHY_FD = -1  # placeholder for the descriptor the exec wrapper reports on (Exec.start sets it)

# Runs first inside the container: exec the command as runc would and, when that fails, say why on the
# inherited descriptor (argv[1]) instead of printing nsenter's message, so the agent can answer as the
# runtime does. Passed with -c (no file to read: a non-root container user may not reach the checkout).
EXEC_WRAPPER = """import os, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
os.set_inheritable(fd, False)
name = '"' + argv[0] + '"'
try:
    if "/" in argv[0]:
        os.stat(argv[0])
        os.execv(argv[0], argv)
    os.execvp(argv[0], argv)
except OSError as e:
    why = (e.strerror or str(e)).lower()
    if "/" in argv[0] and e.errno == 2:
        why = "stat %s: %s" % (argv[0], why)
    elif e.errno == 2:
        why = "executable file not found in $PATH"
    os.write(fd, ("exec: %s: %s" % (name, why)).encode())
os._exit(127)
"""
HOST_PYTHON3 = (shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
                or os.path.realpath(sys.executable))


def wrapped(argv: list[str], fd: int) -> list[str]:
    """``argv`` behind the exec wrapper, which reports a failed exec on ``fd``."""
    return [HOST_PYTHON3, "-S", "-c", EXEC_WRAPPER, str(fd), *argv]


def runtime_exec_error(reason: str) -> str:
    """The message a containerd node's kubelet sends when runc cannot start the exec'd command."""
    return ("Internal error occurred: error executing command in container: failed to exec in container: "
            f'failed to start exec "{os.urandom(32).hex()}": OCI runtime exec failed: exec failed: unable '
            f"to start container process: {reason}: unknown")


def container_pty(pid: int | None) -> tuple[int, int]:
    """A pseudo-terminal from the container's own ``/dev/pts`` (``nsexec.py`` mounts a devpts
    instance there), so the command's terminal has a name inside (``tty``); the host's otherwise."""
    if pid:
        # the container owns that path: an absolute symlink there resolves in the host's root, so the
        # file is looked at (O_PATH, no link followed) and opened only when it is a pty multiplexer
        try:
            at = os.open(f"/proc/{pid}/root/dev/pts/ptmx", os.O_PATH | os.O_NOFOLLOW)
        except OSError:
            return os.openpty()
        try:
            st = os.fstat(at)
            if not (stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (5, 2)):
                return os.openpty()
            master = os.open(f"/proc/self/fd/{at}", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return os.openpty()
        finally:
            os.close(at)
        try:
            fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
            return master, fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            os.close(master)
    return os.openpty()


# -- the process side of exec -----------------------------------------------------------------------


class Exec:
    """One exec'd process: pipes, or a pseudo-terminal when ``tty``."""

    def __init__(self, argv: list[str], env: dict[str, str], tty: bool, stdin: bool,
                 pid: int | None = None, command: list[str] | None = None) -> None:
        self.argv, self.env, self.tty, self.want_stdin = argv, env, tty, stdin
        self.pid = pid  # the container's: its /dev/pts provides the terminal
        self.command = command or argv  # what the client asked for (messages name it)
        self.failed: str | None = None  # why the command could not be started (the exec wrapper's word)
        self._why_r: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.master: int | None = None
        self._pty_proc: Any = None

    async def start(self) -> None:
        why_r, why_w = os.pipe()
        self._why_r = why_r
        if EXEC_WRAPPER in self.argv:  # the wrapper's descriptor argument follows its code
            self.argv[self.argv.index(EXEC_WRAPPER) + 1] = str(why_w)
        try:
            await self._start(why_w)
        finally:
            os.close(why_w)

    def why(self) -> str | None:
        """After the command ended: the reason its exec failed, or None (it ran)."""
        if self._why_r is None:
            return None
        try:
            os.set_blocking(self._why_r, False)
            data = os.read(self._why_r, 4096)
        except OSError:
            data = b""
        os.close(self._why_r)
        self._why_r = None
        return data.decode(errors="replace") or None

    async def _start(self, why_w: int) -> None:
        if self.tty:
            import subprocess

            master, slave = container_pty(self.pid)

            def ctty() -> None:
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

            self._pty_proc = subprocess.Popen(
                self.argv, stdin=slave, stdout=slave, stderr=slave, env=self.env, preexec_fn=ctty,
                close_fds=True, pass_fds=(why_w,),
            )
            os.close(slave)
            self.master = master
            os.set_blocking(master, False)
        else:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if self.want_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,
                pass_fds=(why_w,),
            )

    def resize(self, width: int, height: int) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def write_stdin(self, data: bytes) -> None:
        if self.master is not None:
            loop = asyncio.get_running_loop()
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.master, view)
                    view = view[n:]
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                except OSError:
                    return
            del loop
        elif self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError, OSError):
                self.proc.stdin.write(data)
                await self.proc.stdin.drain()

    def close_stdin(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.write(self.master, b"\x04")  # end of input at a terminal: ^D
        elif self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()

    async def pump_output(self, out: Callable[[bytes], Awaitable[None]],
                          err: Callable[[bytes], Awaitable[None]]) -> None:
        if self.master is not None:
            master = self.master
            loop = asyncio.get_running_loop()
            q: asyncio.Queue[bytes] = asyncio.Queue()

            def readable() -> None:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    loop.remove_reader(master)
                q.put_nowait(data)

            loop.add_reader(master, readable)
            while data := await q.get():
                await out(data)
            return
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None

        async def copy(reader: asyncio.StreamReader, fn: Callable[[bytes], Awaitable[None]]) -> None:
            while data := await reader.read(65536):
                await fn(data)

        await asyncio.gather(copy(self.proc.stdout, out), copy(self.proc.stderr, err))

    async def wait(self) -> int:
        if self._pty_proc is not None:
            code = await asyncio.to_thread(self._pty_proc.wait)
        else:
            assert self.proc is not None
            code = await self.proc.wait()
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        """SIGKILL to the command's process group (its own session), so its children go too."""
        for proc, alive in ((self._pty_proc, self._pty_proc is not None and self._pty_proc.poll() is None),
                            (self.proc, self.proc is not None and self.proc.returncode is None)):
            if proc is not None and alive:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        """The terminal's master side; what the command started in the background keeps running."""
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


# -- the transports ---------------------------------------------------------------------------------


class Channels:
    """What a remote-command protocol offers the exec/attach logic, whatever the transport."""

    def __init__(self) -> None:
        self.stdin: asyncio.Queue[bytes] = asyncio.Queue()  # b"" at end of input
        self.resize: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.gone = asyncio.Event()  # the client went away: the command is killed, as the runtime does

    async def stdout(self, data: bytes) -> None: ...
    async def stderr(self, data: bytes) -> None: ...
    async def finish(self, status: bytes | None, text_error: str | None) -> None: ...


class SpdyChannels(Channels):
    def __init__(self, session: spdy.Session, streams: dict[str, spdy.Stream], protocol: str) -> None:
        super().__init__()
        self.session, self.streams, self.protocol = session, streams, protocol
        self._tasks: list[asyncio.Task[None]] = [asyncio.ensure_future(self._watch_session())]
        if "stdin" in streams:
            self._tasks.append(asyncio.ensure_future(self._read_stdin(streams["stdin"])))
        if "resize" in streams:
            self._tasks.append(asyncio.ensure_future(self._read_resize(streams["resize"])))

    async def _watch_session(self) -> None:
        await self.session.closed.wait()
        self.gone.set()

    async def _read_stdin(self, s: spdy.Stream) -> None:
        while data := await s.read():
            await self.stdin.put(data)
        await self.stdin.put(b"")

    async def _read_resize(self, s: spdy.Stream) -> None:
        buf = b""
        dec = json.JSONDecoder()
        while data := await s.read():
            buf += data
            text = buf.decode(errors="ignore").lstrip()
            while text:
                try:
                    obj, end = dec.raw_decode(text)
                except ValueError:
                    break
                await self.resize.put((int(obj.get("Width", 0)), int(obj.get("Height", 0))))
                text = text[end:].lstrip()
            buf = text.encode()

    async def stdout(self, data: bytes) -> None:
        if "stdout" in self.streams:
            await self.streams["stdout"].write(data)

    async def stderr(self, data: bytes) -> None:
        if "stderr" in self.streams:
            await self.streams["stderr"].write(data)

    async def finish(self, status: bytes | None, text_error: str | None) -> None:
        for name in ("stdout", "stderr"):
            if name in self.streams:
                await self.streams[name].close()
        err = self.streams.get("error")
        if err is not None:
            if self.protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io"):
                if status is not None:
                    await err.write(status)
            elif text_error:
                await err.write(text_error.encode())
            await err.close()
        for t in self._tasks:
            t.cancel()


class WsChannels(Channels):
    def __init__(self, ws: web.WebSocketResponse, protocol: str) -> None:
        super().__init__()
        self.ws, self.protocol = ws, protocol
        self.base64 = protocol in BASE64
        self.status = protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io")

    async def read_loop(self) -> None:
        async for msg in self.ws:
            raw = _ws_bytes(msg)
            if not raw:
                continue
            if self.base64:
                try:
                    raw = bytes([raw[0] - ord("0")]) + base64.b64decode(raw[1:])
                except ValueError:
                    continue  # not a base64 frame: ignored, as the apiserver's reader drops it
            ch, data = raw[0], raw[1:]
            if ch == STDIN and data:
                await self.stdin.put(bytes(data))
            elif ch == RESIZE and data:
                with contextlib.suppress(ValueError):
                    obj = json.loads(data)
                    await self.resize.put((int(obj.get("Width", 0)), int(obj.get("Height", 0))))
            elif ch == CLOSE and data and data[0] == STDIN:
                await self.stdin.put(b"")
        await self.stdin.put(b"")
        self.gone.set()

    async def _send(self, ch: int, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            if self.base64:
                await self.ws.send_str(chr(ord("0") + ch) + base64.b64encode(data).decode())
            else:
                await self.ws.send_bytes(bytes([ch]) + data)

    async def stdout(self, data: bytes) -> None:
        await self._send(STDOUT, data)

    async def stderr(self, data: bytes) -> None:
        await self._send(STDERR, data)

    async def finish(self, status: bytes | None, text_error: str | None) -> None:
        if self.status:
            if status is not None:
                await self._send(ERROR, status)
        elif text_error:
            await self._send(ERROR, text_error.encode())
        with contextlib.suppress(Exception):
            await self.ws.close()


def _ws_bytes(msg: Any) -> bytes:
    """A channel message: binary, or text (the Python client sends str stdin as text frames)."""
    if msg.type == WSMsgType.BINARY:
        return bytes(msg.data)
    if msg.type == WSMsgType.TEXT:
        return str(msg.data).encode()
    return b""


async def run_exec(ch: Channels, ex: Exec) -> None:
    try:
        await ex.start()
    except OSError as e:
        msg = f"failed to exec in container: {e}"
        await ch.finish(_status_failure(msg), msg)
        return

    async def feed_stdin() -> None:
        while data := await ch.stdin.get():
            await ex.write_stdin(data)
        ex.close_stdin()

    async def follow_resize() -> None:
        while True:
            w, h = await ch.resize.get()
            ex.resize(w, h)

    side = [asyncio.ensure_future(follow_resize())]
    if ex.want_stdin:
        side.append(asyncio.ensure_future(feed_stdin()))
    pump = asyncio.ensure_future(ex.pump_output(ch.stdout, ch.stderr))
    gone = asyncio.ensure_future(ch.gone.wait())
    try:
        await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not pump.done():  # the client is gone: so is the command
            ex.kill()
            pump.cancel()
            return
        code = await ex.wait()
    finally:
        for t in [*side, gone]:
            t.cancel()
        ex.close()
    why = ex.why()
    if why:  # runc could not start it: the runtime's error, not an exit code
        msg = runtime_exec_error(why)
        await ch.finish(_status_failure(msg), msg)
        return
    if code == 0:
        await ch.finish(_status_ok(), None)
    else:
        msg = ("command terminated with non-zero exit code: error executing command "
               f"{ex.command}, exit code {code}")
        await ch.finish(_status_failure(msg, code), f"command terminated with non-zero exit code: {code}")


async def run_attach(ch: Channels, w: PodWorker, c: CState, stdin: bool) -> None:
    """The container's live stdio through its shim's attach socket: what it writes from now on, and
    (``stdin``) what the client types, until it exits or the client goes."""
    from .container import attach_socket
    from .nsexec import F_EOF, F_HELLO, F_RESIZE, F_STDERR, F_STDIN, frame

    path = attach_socket(c.proc.exit_path) if c.proc is not None else None
    try:
        if path is None:
            raise FileNotFoundError("no shim")
        dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:  # through /proc/self/fd: a pod's paths can exceed a socket address's 108 bytes
            reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{dfd}/{path.name}")
        finally:
            os.close(dfd)
    except OSError:
        await _attach_from_log(ch, w, c)  # a container whose shim serves no attach socket
        return
    writer.write(frame(F_HELLO, b"1" if stdin else b"0"))

    async def feed_stdin() -> None:
        while data := await ch.stdin.get():
            writer.write(frame(F_STDIN, data))
            await writer.drain()
        writer.write(frame(F_EOF, b""))
        await writer.drain()

    async def follow_resize() -> None:
        while True:
            width, height = await ch.resize.get()
            writer.write(frame(F_RESIZE, struct.pack(">HH", width & 0xFFFF, height & 0xFFFF)))
            await writer.drain()

    async def output() -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(5)
                data = await reader.readexactly(int.from_bytes(head[1:5], "big"))
                await (ch.stderr if head[:1] == F_STDERR else ch.stdout)(data)

    side = [asyncio.ensure_future(follow_resize())]
    if stdin:
        side.append(asyncio.ensure_future(feed_stdin()))
    out = asyncio.ensure_future(output())
    gone = asyncio.ensure_future(ch.gone.wait())
    try:
        await asyncio.wait({out, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (*side, out, gone):
            t.cancel()
        writer.close()
    await ch.finish(_status_ok(), None)


async def _attach_from_log(ch: Channels, w: PodWorker, c: CState) -> None:
    """Stream what the container writes from now on (its CRI log) until it exits."""
    from .logs import parse_line

    path = w.log_dir / c.name / f"{c.restarts}.log"
    offset = path.stat().st_size if path.exists() else 0
    buf = b""
    while True:
        running = c.proc is not None and c.proc.poll() is None
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            data = b""
        offset += len(data)
        buf += data
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            parsed = parse_line(raw)
            if parsed is None:
                continue
            _ts, stream, msg = parsed
            await (ch.stderr if stream == "stderr" else ch.stdout)(msg)
        if (not running and not data) or ch.gone.is_set():
            break
        await asyncio.sleep(0.1)
    await ch.finish(_status_ok(), None)


# -- port forwarding --------------------------------------------------------------------------------


async def _dial(w: PodWorker, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = await asyncio.to_thread(netns.connect, w.netns_path, "127.0.0.1" if w.netns_path else w.pod_ip,
                                   port, 5)
    sock.setblocking(False)
    return await asyncio.open_connection(sock=sock)


async def spdy_forward(w: PodWorker, data: spdy.Stream, error: spdy.Stream | None, port: int) -> None:
    try:
        r, wr = await _dial(w, port)
    except OSError as e:
        msg = (f"error forwarding port {port} to pod {w.uid}, uid : failed to connect to localhost:{port} "
               f"inside namespace: {e}")
        if error is not None:
            await error.write(msg.encode())
            await error.close()
        await data.close()
        return

    async def up() -> None:
        while chunk := await data.read():
            wr.write(chunk)
            with contextlib.suppress(ConnectionError, OSError):
                await wr.drain()
        with contextlib.suppress(OSError):
            if wr.can_write_eof():
                wr.write_eof()

    async def down() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await r.read(65536):
                await data.write(chunk)
        await data.close()

    upt = asyncio.ensure_future(up())
    await down()
    upt.cancel()
    wr.close()
    if error is not None:
        await error.close()


async def serve_spdy(request: web.Request, protocols: list[str], reader: asyncio.StreamReader | None,
                     send: Callable[[bytes], Awaitable[None]] | None, kind: str, agent: NodeAgent,
                     target: dict[str, Any]) -> web.StreamResponse:
    """Run a SPDY session (hijacked, or over ``reader``/``send`` when tunnelled)."""
    hijacked = reader is None
    SEEN.append((kind, "spdy" if hijacked else "websocket", protocols[0]))
    del SEEN[:-50]
    if hijacked:
        reader, transport = await upgrade.hijack(request, {
            "Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": protocols[0]})

        async def send_raw(data: bytes) -> None:
            if transport.is_closing():
                raise ConnectionError("closed")
            transport.write(data)

        send = send_raw
    assert reader is not None and send is not None
    arrived: asyncio.Queue[spdy.Stream] = asyncio.Queue()
    session = spdy.Session(reader, send, arrived.put_nowait)
    runner = asyncio.ensure_future(session.run())
    try:
        if kind == "portforward":
            await _portforward_session(session, arrived, target["worker"])
        else:
            await _remotecommand_session(session, arrived, protocols[0], target)
    finally:
        await session.goaway()
        runner.cancel()
        if hijacked:
            with contextlib.suppress(Exception):
                transport.close()
    return web.StreamResponse(status=101)


async def _portforward_session(
    session: spdy.Session, arrived: asyncio.Queue[spdy.Stream], w: PodWorker
) -> None:
    errors: dict[str, spdy.Stream] = {}
    tasks: set[asyncio.Task[None]] = set()
    closed = asyncio.ensure_future(session.closed.wait())
    while True:
        get = asyncio.ensure_future(arrived.get())
        done, _ = await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            break
        s = get.result()
        rid = s.headers.get("requestid", "")
        if s.headers.get("streamtype") == "error":
            errors[rid] = s
            continue
        if s.headers.get("streamtype") == "data":
            try:
                port = int(s.headers.get("port", ""))
            except ValueError:
                await s.close()
                continue
            t = asyncio.ensure_future(spdy_forward(w, s, errors.pop(rid, None), port))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
    for t in list(tasks):
        t.cancel()


async def _remotecommand_session(session: spdy.Session, arrived: asyncio.Queue[spdy.Stream], protocol: str,
                                 target: dict[str, Any]) -> None:
    q = target["query"]
    tty = _flag(q, "tty")
    want = {"error"}
    if _flag(q, "stdin"):
        want.add("stdin")
    if _flag(q, "stdout"):
        want.add("stdout")
    if _flag(q, "stderr") and not tty:
        want.add("stderr")
    if tty and protocol not in ("channel.k8s.io", "v2.channel.k8s.io"):
        want.add("resize")
    streams: dict[str, spdy.Stream] = {}
    deadline = asyncio.get_running_loop().time() + 30
    while not want <= set(streams):
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0 or session.closed.is_set():
            return
        try:
            s = await asyncio.wait_for(arrived.get(), min(left, 1.0))
        except TimeoutError:
            continue
        streams[s.headers.get("streamtype", "")] = s
    ch = SpdyChannels(session, streams, protocol)
    await _run_target(ch, target, "stdin" in streams)


async def _run_target(ch: Channels, target: dict[str, Any], stdin: bool) -> None:
    if target["kind"] == "attach":
        await run_attach(ch, target["worker"], target["container"], stdin)
        return
    ex = Exec(target["argv"], target["env"], _flag(target["query"], "tty"), stdin, target.get("pid"),
              target.get("command"))
    await run_exec(ch, ex)


async def serve_ws(request: web.Request, kind: str, target: dict[str, Any]) -> web.StreamResponse:
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    supported = [TUNNEL, "v4.channel.k8s.io"] if kind == "portforward" else [*REMOTECOMMAND, *BASE64]
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise web.HTTPBadRequest(text=f"unable to upgrade: no supported subprotocol among {offered}")
    if chosen != TUNNEL:
        SEEN.append((kind, "websocket", chosen))
        del SEEN[:-50]
    ws = web.WebSocketResponse(protocols=[chosen], max_msg_size=0, autoping=True)
    await ws.prepare(request)
    if chosen == TUNNEL:
        reader = asyncio.StreamReader(limit=2**22)

        async def pump() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    reader.feed_data(msg.data)
            reader.feed_eof()

        async def send(data: bytes) -> None:
            await ws.send_bytes(data)

        pumper = asyncio.ensure_future(pump())
        try:
            await serve_spdy(request, [PORTFORWARD], reader, send, "portforward", target["agent"], target)
        finally:
            pumper.cancel()
            await ws.close()
        return ws
    if kind == "portforward":
        await _ws_portforward(ws, target)
        return ws
    ch = WsChannels(ws, chosen)
    reader_task = asyncio.ensure_future(ch.read_loop())
    try:
        await _run_target(ch, target, _flag(target["query"], "stdin"))
    finally:
        reader_task.cancel()
    return ws


async def _ws_portforward(ws: web.WebSocketResponse, target: dict[str, Any]) -> None:
    w = target["worker"]
    ports = [int(p) for p in str(target["query"].get("ports", "")).split(",") if p.strip().isdigit()]
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
    for i, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await ws.send_bytes(bytes([2 * i]) + prefix)
        await ws.send_bytes(bytes([2 * i + 1]) + prefix)
        try:
            conns.append(await _dial(w, port))
        except OSError as e:
            conns.append(None)
            await ws.send_bytes(bytes([2 * i + 1]) + f"error forwarding port {port}: {e}".encode())

    async def down(i: int, r: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            while chunk := await r.read(65536):
                await ws.send_bytes(bytes([2 * i]) + chunk)
        with contextlib.suppress(Exception):
            await ws.close()

    tasks = [asyncio.ensure_future(down(i, c[0])) for i, c in enumerate(conns) if c is not None]
    try:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or len(msg.data) < 2:
                continue
            ch = msg.data[0]
            if ch % 2 == 0 and ch // 2 < len(conns) and conns[ch // 2] is not None:
                wr = conns[ch // 2][1]  # type: ignore[index]
                wr.write(msg.data[1:])
    finally:
        for t in tasks:
            t.cancel()
        for c in conns:
            if c is not None:
                c[1].close()


# -- the routes -------------------------------------------------------------------------------------


def _negotiate_spdy(request: web.Request, supported: tuple[str, ...]) -> list[str]:
    offered = [p.strip() for v in request.headers.getall("X-Stream-Protocol-Version", [])
               for p in v.split(",") if p.strip()]
    chosen = [p for p in offered if p in supported]
    if not chosen:
        raise web.HTTPForbidden(
            text=f"unable to upgrade: unable to negotiate protocol: client supports {offered}, "
                 f"server supports {list(supported)}")
    return chosen


def add_routes(app: web.Application, agent: NodeAgent) -> None:
    async def remotecommand(r: web.Request, kind: str) -> web.StreamResponse:
        m = r.match_info
        w, c = find(agent, m["ns"], m["pod"], m.get("container"))
        pid = _running(w, c)
        q = r.query
        target: dict[str, Any] = {"kind": kind, "worker": w, "container": c, "query": q, "agent": agent}
        if kind == "exec":
            cmd = q.getall("command", [])
            if not cmd:
                raise web.HTTPBadRequest(text="you must specify at least 1 command")
            target["command"] = list(cmd)
            target["argv"] = nsenter_argv(pid, wrapped(list(cmd), WHY_FD), agent.options.use_mount_ns)
            target["pid"] = pid if agent.options.use_mount_ns else None
            target["env"] = dict(c.env)
        if not (_flag(q, "stdin") or _flag(q, "stdout") or _flag(q, "stderr")):
            raise web.HTTPBadRequest(text="you must specify at least 1 of stdin, stdout, stderr")
        proto = upgrade.is_upgrade(r)
        if proto == "websocket":
            return await serve_ws(r, kind, target)
        if proto.startswith("spdy/3.1"):
            return await serve_spdy(r, _negotiate_spdy(r, REMOTECOMMAND), None, None, kind, agent, target)
        raise web.HTTPBadRequest(text="Upgrade request required")

    async def exec_(r: web.Request) -> web.StreamResponse:
        return await remotecommand(r, "exec")

    async def attach(r: web.Request) -> web.StreamResponse:
        return await remotecommand(r, "attach")

    async def port_forward(r: web.Request) -> web.StreamResponse:
        m = r.match_info
        w = _pod(agent, m["ns"], m["pod"])
        target = {"kind": "portforward", "worker": w, "query": r.query, "agent": agent}
        proto = upgrade.is_upgrade(r)
        if proto == "websocket":
            return await serve_ws(r, "portforward", target)
        if proto.startswith("spdy/3.1"):
            return await serve_spdy(r, _negotiate_spdy(r, (PORTFORWARD,)), None, None, "portforward", agent,
                                    target)
        raise web.HTTPBadRequest(text="Upgrade request required")

    async def pod_proxy(r: web.Request) -> web.StreamResponse:
        """Testbed-private: HTTP(S) to a pod port inside its namespace, for the apiserver's pods/proxy
        and services/proxy (a real apiserver dials the pod IP, which here only carries declared ports)."""
        m = r.match_info
        w = _pod(agent, m["ns"], m["pod"])
        scheme, port = m["scheme"], int(m["port"])

        async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            sock = await asyncio.to_thread(
                netns.connect, w.netns_path, "127.0.0.1" if w.netns_path else w.pod_ip, port, 5
            )
            sock.setblocking(False)
            ctx = None
            if scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sni = w.pod_ip if ctx else None
            return await asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=sni)

        qs = r.query_string
        return await upgrade.proxy(r, w.pod_ip, port, "/" + m["tail"] + (f"?{qs}" if qs else ""), None, dial)

    app.router.add_route("*", "/testbed/podProxy/{ns}/{pod}/{scheme}/{port:[0-9]+}/{tail:.*}", pod_proxy)
    for path, handler in (
        ("/exec/{ns}/{pod}/{container}", exec_),
        ("/exec/{ns}/{pod}/{uid}/{container}", exec_),
        ("/attach/{ns}/{pod}/{container}", attach),
        ("/attach/{ns}/{pod}/{uid}/{container}", attach),
        ("/portForward/{ns}/{pod}", port_forward),
        ("/portForward/{ns}/{pod}/{uid}", port_forward),
    ):
        app.router.add_route("GET", path, handler)
        app.router.add_route("POST", path, handler)


def _pod(agent: NodeAgent, ns: str, pod: str) -> PodWorker:
    w = next((w for w in list(agent.runtime.workers.values()) if w.ns == ns and w.name == pod), None)
    if w is None:
        raise web.HTTPNotFound(text=f'pod "{pod}" in namespace "{ns}" not found on node {agent.name}')
    return w
