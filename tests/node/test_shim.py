"""The container shim (nsexec.py): CRI log records, exit codes, and a container that outlives its starter."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from testbed.node.container import LaunchSpec, Process
from testbed.node.logs import read_lines

from .helpers import wait_for


def _spec(code: str) -> LaunchSpec:
    return LaunchSpec(argv=[sys.executable, "-c", code], env={"PATH": os.environ.get("PATH", "")})


def test_shim_writes_cri_records_and_the_exit_code(tmp_path: Path) -> None:
    log, ex = tmp_path / "logs" / "0.log", tmp_path / "c" / "0.exit"
    code = ("import sys; print('x' * 20000); sys.stderr.write('err no newline'); sys.stdout.flush(); "
            "sys.exit(7)")
    p = Process(_spec(code), log, ex)
    assert wait_for(lambda: p.poll() is not None, timeout=20)
    assert p.exit_code() == 7 and json.loads(ex.read_text())["exitCode"] == 7
    raw = log.read_bytes().split(b"\n")[:-1]
    assert all(len(r.split(b" ", 3)) == 4 for r in raw), [r[:80] for r in raw]
    tags = [tuple(r.split(b" ", 3)[1:3]) for r in raw]
    # a 20000-byte line: one partial record of 16384 bytes, then the rest; stderr's unterminated tail
    assert tags == [(b"stdout", b"P"), (b"stdout", b"F"), (b"stderr", b"F")], tags
    lines, _ = read_lines(log)
    assert b"".join(lines[:2]) == b"x" * 20000 + b"\n"


def test_a_container_outlives_its_starter_and_is_adopted(tmp_path: Path) -> None:
    log, ex = tmp_path / "0.log", tmp_path / "0.exit"
    ticker = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)"
    p = Process(_spec(ticker), log, ex)
    rec = p.record()
    # a new owner (as a restarted agent) re-attaches from the record alone: the shim is not its child
    q = Process.adopt(rec, log, ex)
    assert q.poll() is None and q.pid == p.pid
    size = log.stat().st_size
    assert wait_for(lambda: log.stat().st_size > size, timeout=10)  # still logging
    assert q.stop(5.0) == 128 + signal.SIGTERM  # SIGTERM, seen through the shim's exit file
    assert p.poll() == 128 + signal.SIGTERM
    # a record whose shim is gone without an exit file (it was killed): reported as a kill
    ex.unlink()
    gone = Process.adopt(rec, log, ex)
    assert gone.poll() == 137


def test_adopt_tells_a_reused_pid_apart(tmp_path: Path) -> None:
    rec = {"pid": os.getpid(), "start": "1", "shimPid": os.getpid(), "shimStart": "1",
           "logPath": str(tmp_path / "l"), "exitPath": str(tmp_path / "e")}
    (tmp_path / "e").write_text(json.dumps({"exitCode": 3, "finishedAt": "x"}))
    t0 = time.monotonic()
    # this test's own pid with another start time: not the recorded shim, so the container has ended
    assert Process.adopt(rec, tmp_path / "l", tmp_path / "e").poll() == 3
    assert time.monotonic() - t0 < 5


def test_cri_records_do_not_depend_on_how_output_is_chunked() -> None:
    import io

    from testbed.node.nsexec import MAX_LINE, _Stream

    data = b"a" * (MAX_LINE + 100) + b"\nshort\n" + b"b" * 10
    outs = []
    for chunks in ([data], [data[i:i + 7] for i in range(0, len(data), 7)]):
        buf = io.BytesIO()
        s = _Stream("stdout", buf)
        for c in chunks:
            s.feed(c)
        s.flush()
        outs.append([tuple(r.split(b" ", 3)[1:]) for r in buf.getvalue().split(b"\n")[:-1]])
    assert outs[0] == outs[1] == [(b"stdout", b"P", b"a" * MAX_LINE), (b"stdout", b"F", b"a" * 100),
                                  (b"stdout", b"F", b"short"), (b"stdout", b"F", b"b" * 10)]
