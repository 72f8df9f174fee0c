"""Benchmark (not a timed test): the whole NVIDIA matrix (every minor of reports/matrix_plan.py),
cells run concurrently, then merged into one matrix bundle. Goal: under 8 minutes on 2 cores.

    python bench/matrix.py                    # all 18 minors, all at once (as memory allows)
    python bench/matrix.py --control-plane real --jobs 6   # 1.18-1.37 on each minor's built control plane
    python bench/matrix.py --jobs 3 --minors 1.33,1.34,1.35
    python bench/matrix.py --no-retry         # no re-run of failed cases
    python bench/matrix.py --control-plane real --jobs 6   # on each minor's built kube-* binaries

Results, with the commands and load averages they were taken at: ``bench/README.md``.

Where a cell's time goes (profile of 1.33 alone on a quiet machine: 175 s wall): provision 5 s,
helm install 8 s, registration 1 s, suites 156 s, report 5 s. The suites are mostly waiting on the
cluster (the plugin's 30 s handshake period, a node lock held for a fixed time, kube-scheduler's
back-off, the utilisation bands' sampling windows), not computing: one cell keeps about a quarter of
one core busy. So the matrix is run many cells at a time, and what makes it fast is how little CPU
an idle or waiting cell costs (see ``cpu_s`` below; ``testbed up`` no longer scans /proc 10 times a
second, which cost each testbed 6 % of a core and grew with every testbed beside it).

CPU of one passing 1.33 cell, by process kind, and how to measure it (``bench/cpu_by_process.py``):
``bench/README.md``, "CPU per process kind". On a quiet machine a cell is about 30 CPU-s; on a
saturated one every component's periodic work (about 4 % of a core for an idle cell) runs for as long
as the stretched cell lives.

What is shared between cells, so each cell pays only for its own cluster: the native builds (the
shim, the emulated driver libraries: built once up front, not by several cells at once), the
kubectl/helm cache, the Python environment. What cannot be shared: each cell is its own emulated
control plane of its minor, node agents and chart install (that is what it certifies).

Each cell is ``hami-conformance run --k8s 1.X --json`` (its own process group, testbed and bundle);
the first wave starts ``--stagger`` seconds apart so the cells' testbed start-up and helm install
(their CPU-heavy part) do not all coincide. The bench is the child subreaper of everything it starts,
so ``cpu_s`` is the CPU time of every process of every cell (testbeds and pods included).

The last line is one JSON object: ``minors``, ``cells``, ``concurrency``, ``wall_s`` (start to merged
matrix), ``cell_wall_s`` and ``verdicts`` (per minor), ``phases_s`` (per minor: provision, deploy,
register, suites, report), ``cpu_s`` / ``cpu_s_per_cell``, ``slowest_cases`` (mean seconds over the
cells), ``matrix_verdict``, ``load_before`` / ``load_after`` (1/5/15-minute load averages: numbers
taken on a loaded machine are inflated, say so when quoting them), ``cpus``, ``control_plane``,
``mem_used_before_mib`` / ``mem_used_peak_mib`` (the machine's memory in use before and at its highest
while the cells ran).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reports import matrix_plan  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36


def prebuild() -> float:
    """Build the native parts once, before cells race for them (the builds are cached by content),
    and fetch the helm binaries the cells install with (Helm 3 below 1.32, Helm 4 from it)."""
    t = time.monotonic()
    code = (
        "from testbed.hardware.build import ensure_built as hw\n"
        "from hami_stack.enforcer.build import ensure_built as shim\n"
        "hw(); shim()\n"
    )
    for cmd in (
        [sys.executable, "-c", code],
        [sys.executable, "-m", "testbed.clients", "fetch", "1.31", "1.33"],
    ):
        proc = run(cmd, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"bench/matrix: {' '.join(cmd[1:3])} failed: {proc.stderr.strip()[-800:]}")
    return round(time.monotonic() - t, 2)


def _events(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            ev = json.loads(line)
            if isinstance(ev, dict):
                out.append(ev)
    return out


def phase_times(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per phase: from each ``phase`` event to the next phase or the cell's end."""
    phases: dict[str, float] = {}
    last_name, last_t = "", 0.0
    for ev in events:
        if ev.get("event") in ("phase", "cell-end", "run-end") and "t" in ev:
            if last_name:
                phases[last_name] = round(float(ev["t"]) - last_t, 2)
                last_name = ""
            if ev.get("event") == "phase":
                last_name, last_t = str(ev.get("phase", "")), float(ev["t"])
    return phases


def case_times(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per case (its last run: a re-run replaces the first)."""
    started: dict[str, float] = {}
    out: dict[str, float] = {}
    for ev in events:
        case = str(ev.get("case", ""))
        if ev.get("event") == "case-start" and "t" in ev:
            started[case] = float(ev["t"])
        elif ev.get("event") == "case-end" and case in started and "t" in ev:
            out[case.rsplit("/", 1)[-1]] = round(float(ev["t"]) - started[case], 2)
    return out


_OWN_CHILDREN: set[int] = set()  # pids a thread here waits for itself (never reaped by the Reaper)
_SPAWN = threading.Lock()  # held while spawning and while the Reaper looks: no pid is seen unregistered


def run(cmd: list[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run, with the child registered as ours (the Reaper leaves it alone)."""
    with _SPAWN:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _OWN_CHILDREN.add(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise subprocess.CalledProcessError(-9, cmd, out, err) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_cell(minor: str, out: Path, retry: bool, control_plane: str = "") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "conformance", "run", "--k8s", minor, "--json", "--out", str(out)]
    if not retry:
        cmd.append("--no-retry")
    if control_plane:
        cmd += ["--control-plane", control_plane]
    t = time.monotonic()
    proc = run(cmd)
    wall = round(time.monotonic() - t, 2)
    events = _events(proc.stdout)
    end = next((e for e in reversed(events) if e.get("event") == "run-end"), {})
    cell = (end.get("cells") or [{}])[0]
    return {
        "minor": minor,
        "wall_s": wall,
        "exit_code": proc.returncode,
        "verdict": end.get("verdict", "ERROR"),
        "counts": cell.get("counts", {}),
        "phases_s": phase_times(events),
        "cases_s": case_times(events),
        "bundle": cell.get("bundle"),
        "retries": sum(1 for e in events if e.get("event") == "retry"),
        "note": cell.get("note", ""),
        "error": None if end else (proc.stderr.strip().splitlines() or ["no output"])[-1],
    }


class Reaper:
    """This process as child subreaper: the cells' detached testbeds (and their pods) are re-parented
    here when their starters exit, so their CPU time reaches RUSAGE_CHILDREN once they are reaped."""

    def __init__(self) -> None:
        self.enabled = ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reap, daemon=True)

    def _reap(self) -> None:
        # only the re-parented orphans: subprocess.run waits for its own children itself, and a
        # waitpid(-1) here could take one from under it; so orphans are found by their parent pid
        me = os.getpid()
        while not self._stop.wait(1.0):
            with _SPAWN:
                for entry in os.listdir("/proc"):
                    if not entry.isdigit() or int(entry) in _OWN_CHILDREN:
                        continue
                    try:
                        fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(fields[1]) == me and fields[0] == "Z":
                        with contextlib.suppress(ChildProcessError, OSError):
                            os.waitpid(int(entry), os.WNOHANG)

    def __enter__(self) -> Reaper:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @staticmethod
    def cpu_s() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return round(ru.ru_utime + ru.ru_stime, 1)


# memory one emulated cell adds at its peak: 18 cells at once took the machine from 0.6 to 12.5 GiB in
# use (bench/README.md), ~680 MiB each; with room for the page cache the cells read from
CELL_MIB = 900


def _meminfo_mib() -> dict[str, int]:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) // 1024
    return info


def default_jobs(cells: int) -> int:
    """Every cell at once (their suites are mostly waiting, so the wall time is that of the slowest
    cell stretched by the shared CPU) unless the available memory holds fewer."""
    return max(1, min(cells, _meminfo_mib()["MemAvailable"] // CELL_MIB))


def _used_mib() -> int:
    """Memory in use on the machine (MemTotal - MemAvailable), MiB."""
    info = _meminfo_mib()
    return info["MemTotal"] - info["MemAvailable"]


class MemoryPeak:
    """The highest memory in use while the cells run, sampled every 2 s (what running N cells at once
    needs beyond what the machine used before)."""

    def __init__(self) -> None:
        self.before = _used_mib()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(2.0):
            self.peak = max(self.peak, _used_mib())

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=0,
                   help="cells at a time (default: every cell at once where memory allows, "
                        f"{CELL_MIB} MiB of available memory per cell)")
    p.add_argument("--stagger", type=float, default=6.0, help="seconds between the first wave's starts")
    p.add_argument("--minors", help="comma list (default: every nvidia minor of the plan)")
    p.add_argument("--no-retry", action="store_true")
    p.add_argument("--out", type=Path, help="where the cells' and the matrix bundles go (default: temp dir)")
    p.add_argument("--control-plane", choices=("real", "emulated", "auto"), default="",
                   help="passed to each cell (default: the run's own default)")
    args = p.parse_args(argv)
    planned = [c.minor for c in matrix_plan.cells() if c.vendor == "nvidia"]
    if args.control_plane == "real":  # the minors newer than every emulated profile run only there
        from conformance.backends import REAL_ONLY_MINORS

        planned += list(REAL_ONLY_MINORS)
    minors = args.minors.split(",") if args.minors else planned
    unknown = sorted(set(minors) - set(planned))
    if unknown:
        p.error(
            f"--minors: {', '.join(unknown)} not in the plan's NVIDIA minors ({planned[0]}..{planned[-1]})"
        )
    if args.jobs <= 0:
        args.jobs = default_jobs(len(minors))
    root = args.out or Path(tempfile.mkdtemp(prefix="hami-bench-matrix-"))
    load_before = _load()
    t0 = time.monotonic()
    prebuild_s = prebuild()
    cells: list[dict[str, Any]] = []
    with Reaper() as reaper, MemoryPeak() as memory, ThreadPoolExecutor(max_workers=args.jobs) as pool:

        def staggered(i: int, minor: str) -> dict[str, Any]:
            if i < args.jobs:
                time.sleep(i * args.stagger)
            return run_cell(minor, root / "cells" / minor, not args.no_retry, args.control_plane)

        futures = [pool.submit(staggered, i, m) for i, m in enumerate(minors)]
        for f in futures:
            cell = f.result()
            print(json.dumps({k: v for k, v in cell.items() if k != "cases_s"}), flush=True)
            cells.append(cell)
        cells_wall = round(time.monotonic() - t0, 2)
        time.sleep(1.5 if reaper.enabled else 0)  # the last testbeds' supervisors: reaped, counted
    t = time.monotonic()
    bundles = [c["bundle"] for c in cells if c["bundle"]]
    # with no bundle at all the merge refuses (usage error), which is reported
    merged = run(
        [sys.executable, "-m", "conformance", "matrix", "merge", *bundles, "-o", str(root / "matrix")]
    )
    merge_wall = round(time.monotonic() - t, 2)
    verdict = None
    if merged.returncode == 0:
        verdict = json.loads((root / "matrix" / "matrix.json").read_text())["verdict"]
    cases: dict[str, list[float]] = defaultdict(list)
    for c in cells:
        for name, s in c["cases_s"].items():
            cases[name].append(s)
    mean = {name: round(sum(v) / len(v), 1) for name, v in cases.items()}
    cpu = reaper.cpu_s()
    print(
        json.dumps(
            {
                "minors": minors,
                "cells": len(cells),
                "concurrency": args.jobs,
                "control_plane": args.control_plane or "default",
                "wall_s": round(time.monotonic() - t0, 2),
                "cells_wall_s": cells_wall,
                "prebuild_s": prebuild_s,
                "merge_wall_s": merge_wall,
                "cell_wall_s": {c["minor"]: c["wall_s"] for c in cells},
                "verdicts": {c["minor"]: c["verdict"] for c in cells},
                "counts": {c["minor"]: c["counts"] for c in cells},
                "retries": {c["minor"]: c["retries"] for c in cells if c["retries"]},
                "notes": {c["minor"]: c["note"] or c["error"] for c in cells if c["note"] or c["error"]},
                "phases_s": {c["minor"]: c["phases_s"] for c in cells},
                "sum_cell_wall_s": round(sum(c["wall_s"] for c in cells), 2),
                "cpu_s": cpu,
                "cpu_s_per_cell": round(cpu / max(1, len(cells)), 1),
                "slowest_cases": dict(sorted(mean.items(), key=lambda kv: -kv[1])[:10]),
                "matrix_verdict": verdict,
                "merge_error": None if merged.returncode == 0 else merged.stderr.strip()[-400:],
                "load_before": load_before,
                "load_after": _load(),
                "mem_used_before_mib": memory.before,
                "mem_used_peak_mib": memory.peak,
                "cpus": os.cpu_count(),
                "out": str(root),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
