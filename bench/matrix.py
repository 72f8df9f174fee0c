"""Benchmark (not a timed test): the whole NVIDIA matrix (every minor of reports/matrix_plan.py),
cells run concurrently, then merged into one matrix bundle. Goal: under 8 minutes on 2 cores.

    python bench/matrix.py                    # all minors, 2 cells at a time
    python bench/matrix.py --jobs 3 --minors 1.33,1.34,1.35
    python bench/matrix.py --no-retry         # no re-run of failed cases

What is shared between cells, so each cell pays only for its own cluster: the native builds (the
shim, the emulated driver libraries: built once up front by ``nativebuild``, not by two cells at
once), the kubectl/helm cache, the Python environment. What cannot be shared: each cell is its own
emulated control plane of its minor, node agents and chart install (that is what it certifies).

Each cell is ``hami-conformance run --k8s 1.X --json`` (its own process group, testbed and bundle);
the bench reads their progress events to report per-cell phase times. The last line is one JSON
object: ``matrix_wall_s``, ``cells`` (minor, wall, verdict, phase times), ``merge_wall_s``,
``matrix_verdict``, ``load_before`` (1-minute load average when it started: numbers taken on a
loaded machine are inflated, say so when quoting them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reports import matrix_plan  # noqa: E402


def prebuild() -> float:
    """Build the native parts once, before cells race for them (the builds are cached by content)."""
    t = time.monotonic()
    code = (
        "from testbed.hardware.build import ensure_built as hw\n"
        "from hami_stack.enforcer.build import ensure_built as shim\n"
        "hw(); shim()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, timeout=600)
    return round(time.monotonic() - t, 2)


def run_cell(minor: str, out: Path, retry: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "conformance", "run", "--k8s", minor, "--json", "--out", str(out)]
    if not retry:
        cmd.append("--no-retry")
    t = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = round(time.monotonic() - t, 2)
    events = []
    for line in proc.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    phases: dict[str, float] = {}
    last_name, last_t = "", 0.0
    for ev in events:
        if ev.get("event") in ("phase", "cell-end") and "t" in ev:
            if last_name:
                phases[last_name] = round(float(ev["t"]) - last_t, 2)
            last_name, last_t = str(ev.get("phase", "")), float(ev["t"])
    end = next((e for e in reversed(events) if e.get("event") == "run-end"), {})
    cell = (end.get("cells") or [{}])[0]
    return {
        "minor": minor,
        "wall_s": wall,
        "exit_code": proc.returncode,
        "verdict": end.get("verdict", "ERROR"),
        "counts": cell.get("counts", {}),
        "phases_s": phases,
        "bundle": cell.get("bundle"),
        "retries": sum(1 for e in events if e.get("event") == "retry"),
        "note": cell.get("note", ""),
        "error": None if end else (proc.stderr.strip().splitlines() or ["no output"])[-1],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2, help="cells at a time (default 2)")
    p.add_argument("--minors", help="comma list (default: every nvidia minor of the plan)")
    p.add_argument("--no-retry", action="store_true")
    p.add_argument("--out", type=Path, help="where the cells' and the matrix bundles go (default: temp dir)")
    args = p.parse_args(argv)
    planned = [c.minor for c in matrix_plan.cells() if c.vendor == "nvidia"]
    minors = args.minors.split(",") if args.minors else planned
    root = args.out or Path(tempfile.mkdtemp(prefix="hami-bench-matrix-"))
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.monotonic()
    prebuild_s = prebuild()
    cells: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_cell, m, root / "cells" / m, not args.no_retry) for m in minors]
        for f in futures:
            cell = f.result()
            print(json.dumps(cell), flush=True)
            cells.append(cell)
    cells_wall = round(time.monotonic() - t0, 2)
    t = time.monotonic()
    bundles = [c["bundle"] for c in cells if c["bundle"]]
    merged = subprocess.run(  # with no bundle at all the merge refuses (usage error), which is reported
        [sys.executable, "-m", "conformance", "matrix", "merge", *bundles, "-o", str(root / "matrix")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    merge_wall = round(time.monotonic() - t, 2)
    verdict = None
    if merged.returncode == 0:
        verdict = json.loads((root / "matrix" / "matrix.json").read_text())["verdict"]
    print(
        json.dumps(
            {
                "matrix_wall_s": round(time.monotonic() - t0, 2),
                "cells_wall_s": cells_wall,
                "prebuild_s": prebuild_s,
                "merge_wall_s": merge_wall,
                "jobs": args.jobs,
                "cells": len(cells),
                "cell_wall_s": {c["minor"]: c["wall_s"] for c in cells},
                "cell_verdicts": {c["minor"]: c["verdict"] for c in cells},
                "sum_cell_wall_s": round(sum(c["wall_s"] for c in cells), 2),
                "matrix_verdict": verdict,
                "merge_error": None if merged.returncode == 0 else merged.stderr.strip()[-400:],
                "load_before": load_before,
                "load_after": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count(),
                "out": str(root),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
