"""Container logs in the CRI file format (``<RFC3339Nano> <stream> <F|P> <line>``), as kubelets keep
them under ``/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log``, and reading them back with the
options of ``GET /containerLogs``."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def now_nano() -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def pod_log_dir(node_root: Path, ns: str, name: str, uid: str) -> Path:
    return node_root / "var" / "log" / "pods" / f"{ns}_{name}_{uid}"


class LogWriter:
    """Copies a process's stdout and stderr into one CRI log file, line by line, on two threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "ab", buffering=0)  # noqa: SIM115 - closed when both streams end
        self._lock = threading.Lock()
        self._open = 0
        self.done = threading.Event()

    def attach(self, stream: IO[bytes], name: str) -> None:
        self._open += 1
        threading.Thread(
            target=self._copy, args=(stream, name.encode()), daemon=True, name=f"log {self.path.parent.name}"
        ).start()

    def _copy(self, stream: IO[bytes], name: bytes) -> None:
        try:
            for line in iter(stream.readline, b""):
                tag = b"F"
                if line.endswith(b"\n"):
                    line = line[:-1]
                else:
                    tag = b"P" if len(line) >= 16384 else b"F"
                with self._lock:
                    self._f.write(now_nano().encode() + b" " + name + b" " + tag + b" " + line + b"\n")
        finally:
            stream.close()
            with self._lock:
                self._open -= 1
                if self._open == 0:
                    self._f.close()
                    self.done.set()


def parse_line(raw: bytes) -> tuple[str, str, bytes] | None:
    parts = raw.split(b" ", 3)
    if len(parts) < 4:
        return None
    ts, stream, tag, msg = parts
    return ts.decode(), stream.decode(), msg + (b"" if tag == b"P" else b"\n")


def ts_of(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts[:26] + "+00:00")


def read_lines(
    path: Path, *, since: dt.datetime | None = None, tail: int | None = None, timestamps: bool = False
) -> tuple[list[bytes], int]:
    """Formatted lines of a finished or running log, and the file offset read up to."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    out = []
    for raw in data[:end].splitlines():
        p = parse_line(raw)
        if p is None:
            continue
        ts, _stream, msg = p
        if since is not None and ts_of(ts) < since:
            continue
        out.append((ts.encode() + b" " + msg) if timestamps else msg)
    if tail is not None:
        out = out[-tail:] if tail > 0 else []
    return out, end


def follow_from(path: Path, offset: int, timestamps: bool) -> Iterator[tuple[list[bytes], int]]:
    """New complete lines appended after ``offset``; the caller polls."""
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        end = data.rfind(b"\n") + 1
        lines = []
        for raw in data[:end].splitlines():
            p = parse_line(raw)
            if p:
                lines.append((p[0].encode() + b" " + p[2]) if timestamps else p[2])
        offset += end
        yield lines, offset
