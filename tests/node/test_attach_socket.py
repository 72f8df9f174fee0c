"""The shim's attach socket on its own (no testbed, no root): stdin, stdinOnce, a terminal, and a
container attached through the record an agent restart adopts it from."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from testbed.node.container import LaunchSpec, Process, attach_socket
from testbed.node.nsexec import F_EOF, F_HELLO, F_RESIZE, F_STDIN, F_STDOUT, frame


def _connect(exit_path: Path) -> socket.socket:
    path = attach_socket(exit_path)
    dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:  # the same way the agent connects (pod paths can exceed 108 bytes)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(f"/proc/self/fd/{dfd}/{path.name}")
    finally:
        os.close(dfd)
    s.settimeout(10)
    return s


def _read_until(s: socket.socket, needle: bytes) -> bytes:
    """Stdout frames until ``needle`` shows (or the shim closes: the container ended)."""
    buf, out = b"", b""
    while needle not in out:
        data = s.recv(65536)
        if not data:
            break
        buf += data
        while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[1:5], "big"):
            n = int.from_bytes(buf[1:5], "big")
            if buf[:1] == F_STDOUT:
                out += buf[5:5 + n]
            buf = buf[5 + n:]
    return out


def _spec(code: str, **kw: bool) -> LaunchSpec:
    return LaunchSpec(argv=[sys.executable, "-c", code], env={"PATH": os.environ.get("PATH", "")}, **kw)


ECHO = ("import sys\n"
        "for line in sys.stdin:\n"
        "    print('echo:' + line.strip(), flush=True)\n"
        "print('stdin-closed', flush=True)\n")


def test_adopted_container_is_attached_and_stdin_stays_open(tmp_path: Path) -> None:
    """``stdin`` without ``stdinOnce``: a session's end leaves stdin open; a second session attaches
    through a Process adopted from the first one's record, as a restarted agent would."""
    log, ex = tmp_path / "c" / "0.log", tmp_path / "pods" / ("x" * 90) / "0.exit"  # a long path
    p = Process(_spec(ECHO, stdin=True), log, ex)
    try:
        with _connect(ex) as s:
            s.sendall(frame(F_HELLO, b"1") + frame(F_STDIN, b"one\n"))
            assert b"echo:one" in _read_until(s, b"echo:one")
            s.sendall(frame(F_EOF, b""))
        time.sleep(0.3)
        assert p.poll() is None  # no stdinOnce: still reading
        adopted = Process.adopt(p.record(), log, ex)
        with _connect(adopted.exit_path) as s:
            s.sendall(frame(F_HELLO, b"1") + frame(F_STDIN, b"two\n"))
            assert b"echo:two" in _read_until(s, b"echo:two")
    finally:
        p.stop(2)
    assert not attach_socket(ex).exists()  # the shim removes its socket when the container ends


def test_stdin_once_closes_the_pipe_after_the_first_session(tmp_path: Path) -> None:
    log, ex = tmp_path / "0.log", tmp_path / "0.exit"
    p = Process(_spec(ECHO, stdin=True, stdin_once=True), log, ex)
    try:
        with _connect(ex) as s:
            s.sendall(frame(F_HELLO, b"1") + frame(F_STDIN, b"only\n"))
            assert b"echo:only" in _read_until(s, b"echo:only")
            s.sendall(frame(F_EOF, b""))
            assert b"stdin-closed" in _read_until(s, b"stdin-closed")
        deadline = time.monotonic() + 10
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() == 0
    finally:
        p.stop(2)


def test_tty_container_reads_a_terminal_sized_by_resize(tmp_path: Path) -> None:
    code = ("import os, sys\n"
            "print('tty', os.isatty(0), os.isatty(1), flush=True)\n"
            "line = sys.stdin.readline()\n"
            "print('size', os.get_terminal_size(0).columns, os.get_terminal_size(0).lines, line.strip(),"
            " flush=True)\n")
    log, ex = tmp_path / "0.log", tmp_path / "0.exit"
    p = Process(_spec(code, stdin=True, tty=True), log, ex)
    try:
        with _connect(ex) as s:
            size = (132).to_bytes(2, "big") + (43).to_bytes(2, "big")  # columns, rows
            s.sendall(frame(F_HELLO, b"1") + frame(F_RESIZE, size))
            time.sleep(0.2)
            s.sendall(frame(F_STDIN, b"typed\r"))
            out = _read_until(s, b"43 typed")
        assert b"size 132 43 typed" in out, out
        deadline = time.monotonic() + 10
        while p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() == 0
        # what the terminal showed is the container's log, as stdout
        assert "stdout F tty True True" in log.read_text()
    finally:
        p.stop(2)
