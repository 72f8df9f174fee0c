"""Container logs in the CRI file format (``<RFC3339Nano> <stream> <F|P> <line>``), as kubelets keep
them under ``/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log``, and reading them back with the
options of ``GET /containerLogs``. Each container's shim (``nsexec.py``) writes its file, so logging goes
on while no node agent runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path


def now_nano() -> str:
    t = dt.datetime.now(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z"


def pod_log_dir(node_root: Path, ns: str, name: str, uid: str) -> Path:
    return node_root / "var" / "log" / "pods" / f"{ns}_{name}_{uid}"


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
