"""Progress of a ``hami-conformance run`` that people (and machines) can read while it runs.

Two halves joined by a file of JSON lines:

* **Inside a cell** (the pytest session of one vendor x minor), :func:`emit` appends one event per
  line to the file named by ``$HAMI_CONFORMANCE_PROGRESS``: the phase (provision, deploy, register,
  suites, report), how many cases were collected, each case as it starts and ends, retries. Without
  the variable :func:`emit` does nothing, so the suites run unchanged under plain pytest.
* **In the main job**, :class:`Tail` reads what a cell appended since the last look and
  :class:`Board` keeps per cell: phase, cases done/total, the current case, failures so far. A
  :class:`LiveView` draws the board with ``rich``; :class:`JsonLines` prints every event, with its
  cell, as one JSON object per line on stdout (``run --json``), closed by a ``run-end`` event with
  the verdicts and bundle paths.

Events (``"v": 1``; every event has ``event`` and ``t``, UNIX seconds)::

    cell-start {cell, vendor, minor}          main job, before the cell's pytest starts
    phase      {phase}                        provision | deploy | register | suites | report
    collected  {total}
    case-start {case, rule}
    case-end   {case, rule, outcome, done, total, failures}
    retry      {case, rule, outcome}          a failed case re-run once (see conformance.retry)
    cell-end   {cell, verdict, bundle, counts, wall_s, note}
    run-end    {verdict, exit_code, cells: [...]}
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

ENV = "HAMI_CONFORMANCE_PROGRESS"
VERSION = 1
PHASES = ("provision", "deploy", "register", "suites", "report")


def emit(event: str, **fields: Any) -> None:
    """Append one event to the progress file of this cell; a no-op outside ``hami-conformance run``."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"v": VERSION, "event": event, "t": round(time.time(), 3), **fields}, default=str)
    try:
        # one write of one line in append mode: lines from the controller never interleave
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass  # progress is a view; a full disk must not fail the cell


def phase(name: str) -> None:
    if name not in PHASES:
        raise ValueError(f"unknown progress phase {name!r}; phases are {', '.join(PHASES)}")
    emit("phase", phase=name)


class Tail:
    """The events a cell appended to its progress file since the last call (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        events = []
        for raw in lines:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue  # not ours (or torn by a crash): the view skips it
            if isinstance(obj, dict) and "event" in obj:
                events.append(obj)
        return events


@dataclass
class CellState:
    cell: str
    phase: str = "waiting"
    done: int = 0
    total: int = 0
    failures: int = 0
    current: str = ""
    started: float = 0.0
    verdict: str = ""
    bundle: str = ""
    retried: int = 0
    failed_cases: list[str] = field(default_factory=list)


class Board:
    """Per-cell state folded from events; the one model both views draw from."""

    def __init__(self) -> None:
        self.cells: dict[str, CellState] = {}

    def apply(self, cell: str, ev: dict[str, Any]) -> CellState:
        st = self.cells.setdefault(cell, CellState(cell))
        kind = ev.get("event")
        if kind == "cell-start":
            st.started, st.phase = float(ev.get("t", time.time())), "starting"
        elif kind == "phase":
            st.phase = str(ev.get("phase", st.phase))
        elif kind == "collected":
            st.total = int(ev.get("total", 0))
        elif kind == "case-start":
            st.current = str(ev.get("case", ""))
        elif kind == "case-end":
            st.done = int(ev.get("done", st.done + 1))
            st.total = max(st.total, int(ev.get("total", 0)))
            st.failures = int(ev.get("failures", st.failures))
            if ev.get("outcome") == "failed":
                st.failed_cases.append(str(ev.get("case", "")))
            if st.current == ev.get("case"):
                st.current = ""
        elif kind == "retry":
            st.retried += 1
        elif kind == "cell-end":
            st.phase, st.current = "done", ""
            st.verdict, st.bundle = str(ev.get("verdict", "")), str(ev.get("bundle") or "")
        return st


def _short_case(nodeid: str, width: int = 60) -> str:
    name = nodeid.rsplit("/", 1)[-1]
    return name if len(name) <= width else "…" + name[-(width - 1) :]


class LiveView:
    """A ``rich`` live table on stderr, one row per cell, redrawn as events arrive."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.board = Board()
        self.console = console or Console(stderr=True)
        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.update(self._render())
        self._live.__exit__(*exc)

    def handle(self, cell: str, ev: dict[str, Any]) -> None:
        self.board.apply(cell, ev)
        self._live.update(self._render())

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title="hami-conformance run", expand=False)
        for col in ("cell", "phase", "cases", "failures", "current case / verdict", "elapsed"):
            table.add_column(col)
        now = time.time()
        for st in self.board.cells.values():
            cases = f"{st.done}/{st.total}" if st.total else (str(st.done) if st.done else "-")
            last = st.verdict or _short_case(st.current)
            if st.verdict and st.bundle:
                last = f"{st.verdict}  {st.bundle}"
            elapsed = f"{now - st.started:.0f}s" if st.started and not st.verdict else ""
            fail = str(st.failures) + (f" ({st.retried} retried)" if st.retried else "")
            table.add_row(st.cell, st.phase, cases, fail, last, elapsed)
        return table


class JsonLines:
    """``run --json``: every event with its cell, one JSON object per line, flushed at once."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.board = Board()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.out.flush()

    def handle(self, cell: str, ev: dict[str, Any]) -> None:
        self.board.apply(cell, ev)
        self.write({**ev, "cell": cell})

    def write(self, obj: dict[str, Any]) -> None:
        obj.setdefault("v", VERSION)
        obj.setdefault("t", round(time.time(), 3))
        self.out.write(json.dumps(obj, default=str) + "\n")
        self.out.flush()


class Hooks:
    """pytest hooks of a cell's controller that feed :func:`emit` (registered by the plugin only
    when ``$HAMI_CONFORMANCE_PROGRESS`` is set). xdist forwards the workers' log events here."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.failures = 0
        self._phases: dict[str, dict[str, str]] = {}
        self._skip: dict[str, str] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: Any) -> None:
        phase("provision")  # before the plugin's own sessionstart provisions the cluster
        if session.config.pluginmanager.hasplugin("xdist"):
            # with -n the controller collects nothing itself: its workers report what they collected
            session.config.pluginmanager.register(_XdistTotal(self), "hami-conformance-progress-xdist")

    def pytest_collection_finish(self, session: Any) -> None:
        if hasattr(session.config, "workerinput") or (not session.items and self.total):
            return
        if session.items or not session.config.pluginmanager.hasplugin("dsession"):
            self.total = len(session.items)
            emit("collected", total=self.total)
            phase("suites")

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        emit("case-start", case=nodeid)

    def pytest_runtest_logreport(self, report: Any) -> None:
        from conformance.cases import map_outcome
        from conformance.recording import skip_text

        phases = self._phases.setdefault(report.nodeid, {})
        phases[report.when] = report.outcome
        if report.outcome == "skipped":
            self._skip[report.nodeid] = skip_text(report.longrepr)
        if report.when != "teardown":
            return
        outcome = map_outcome(self._phases.pop(report.nodeid), self._skip.pop(report.nodeid, ""))
        self.done += 1
        self.failures += outcome == "failed"
        emit(
            "case-end",
            case=report.nodeid,
            outcome=outcome,
            done=self.done,
            total=max(self.total, self.done),
            failures=self.failures,
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> None:
        phase("report")  # before the plugin's sessionfinish builds the bundle


class _XdistTotal:
    """The case total under pytest-xdist (every worker collects the same items)."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if len(ids) != self.hooks.total:
            self.hooks.total = len(ids)
            emit("collected", total=len(ids))
            phase("suites")
