"""Idempotent background services for the lab's roles (a node agent, the control plane).

``python -m testbed.lab service start --state FILE --log LOG -- ARGV...`` starts ARGV in its own session
and records ``{"pid", "argv"}`` in FILE. Run again with the same ARGV while the process lives, it
prints ``unchanged`` (Ansible reports ok); with another ARGV it restarts it (``restarted``). ``stop``
ends it (``stopped``/``absent``). The first word of stdout is what a role's ``changed_when`` reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .hosts import _alive


def _read(state: Path) -> dict | None:
    try:
        doc = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and _alive(int(doc.get("pid", 0)) or -1) else None


def _stop_pid(pid: int, grace: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def start(state: Path, log: Path, argv: list[str], env: dict[str, str] | None = None,
          ready_file: Path | None = None, timeout: float = 120) -> str:
    cur = _read(state)
    if cur and cur.get("argv") == argv:
        return "unchanged"
    verb = "started"
    if cur:
        _stop_pid(int(cur["pid"]))
        verb = "restarted"
    state.parent.mkdir(parents=True, exist_ok=True)
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
    state.write_text(json.dumps({"pid": proc.pid, "argv": argv}))
    if ready_file is not None:  # wait for the service's own "ready" mark
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"{argv[0]} exited during start-up:\n  " + "\n  ".join(tail))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} not ready within {timeout:.0f}s; see {log}")
            time.sleep(0.1)
    return verb


def stop(state: Path) -> str:
    cur = _read(state)
    state.unlink(missing_ok=True)
    if not cur:
        return "absent"
    _stop_pid(int(cur["pid"]))
    return "stopped"
