"""Benchmark (not a timed test): wall time of one conformance cell and of the NVIDIA matrix.

    python bench/harness.py                 # one cell: NVIDIA, 1.33
    python bench/harness.py --minor 1.25
    python bench/harness.py --matrix        # also every NVIDIA minor of the plan (slow), one after another
                                            # (bench/matrix.py runs them concurrently)
    python bench/harness.py --vendor ascend # one Ascend cell (emulated 910B3 + 910C nodes)
    python bench/harness.py --vendor all    # one cell with every vendor's suites on the mixed-families
                                            # cluster (goal: under 5 minutes on 2 cores)

Where the time goes, per cell: provisioning (testbed up), helm (install + wait), registration (device
plugins), and the suites (scheduling + pod start), read from the run's environment capture and the
per-case durations. Pin to 2 cores with ``taskset -c 0,1 python bench/harness.py``. The last line is
one JSON object with at least ``cell_wall_s``, ``cell_cpu_s`` (CPU seconds of every process of the
cell: pytest, the testbed and its pods, counted as bench/matrix.py does), ``load_before`` /
``load_after`` and ``nvidia_matrix_wall_s`` (null when not run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/matrix.py: the CPU accounting of a cell (child subreaper) and the runner it needs
from matrix import Reaper  # noqa: E402
from matrix import run as run_command  # noqa: E402

from reports import matrix_plan  # noqa: E402


def run_cell(minor: str, out: Path, extra: list[str]) -> dict[str, Any]:
    t = time.monotonic()
    cpu0 = Reaper.cpu_s()
    proc = run_command(
        [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "conformance" / "suites"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--k8s-version",
            minor,
            "--bundle-dir",
            str(out),
            *extra,
        ],
    )
    wall = time.monotonic() - t
    time.sleep(1.5)  # the testbed's supervisor, re-parented here, is reaped and counted
    cell: dict[str, Any] = {
        "minor": minor,
        "wall_s": round(wall, 2),
        "exit_code": proc.returncode,
        "cpu_s": round(Reaper.cpu_s() - cpu0, 1),
    }
    run_json = out / "run" / "run.json"
    if run_json.is_file():
        run = json.loads(run_json.read_text())
        timings = run["environment"].get("extra", {}).get("timings", {})
        by_cap: dict[str, float] = {}
        by_vendor: dict[str, float] = {}
        for c in run["cases"]:
            by_cap[c["capability"]] = by_cap.get(c["capability"], 0.0) + c["durationSeconds"]
            by_vendor[c["vendor"]] = by_vendor.get(c["vendor"], 0.0) + c["durationSeconds"]
        outcomes: dict[str, int] = {}
        for c in run["cases"]:
            outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1
        cell.update(
            provision_s=timings.get("provision_s"),
            helm_s=timings.get("helm_s"),
            register_s=timings.get("register_s"),
            suites_s=round(sum(by_cap.values()), 2),
            by_capability_s={k: round(v, 2) for k, v in by_cap.items()},
            by_vendor_s={k: round(v, 2) for k, v in by_vendor.items()},
            outcomes=outcomes,
        )
    else:
        cell["error"] = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:]
    return cell


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minor", default="1.33")
    p.add_argument("--matrix", action="store_true", help="also run the 16-minor NVIDIA matrix")
    p.add_argument("--workers", default="0", help="pytest-xdist workers per cell")
    p.add_argument(
        "--vendor",
        default="nvidia",
        help="vendor(s) of the single cell: a vendor (its inventory), a comma list or all (mixed-families)",
    )
    args = p.parse_args(argv)
    extra = ["-n", args.workers] if args.workers != "0" else []
    extra += ["--vendor", args.vendor]
    root = Path(tempfile.mkdtemp(prefix="hami-bench-"))
    load_before = [round(x, 2) for x in os.getloadavg()]
    matrix_wall: float | None = None
    cells: list[dict[str, Any]] = []
    with Reaper():
        cell = run_cell(args.minor, root / f"cell-{args.minor}", extra)
        print(json.dumps(cell), flush=True)
        if args.matrix:
            t = time.monotonic()
            for minor in [c.minor for c in matrix_plan.cells() if c.vendor == "nvidia"]:
                c = run_cell(minor, root / f"matrix-{minor}", extra)
                print(json.dumps(c), flush=True)
                cells.append(c)
            matrix_wall = round(time.monotonic() - t, 2)
    print(
        json.dumps(
            {
                "cell_wall_s": cell["wall_s"],
                "cell_minor": args.minor,
                "cell_vendor": args.vendor,
                "cell_exit_code": cell["exit_code"],
                "cell_cpu_s": cell["cpu_s"],
                "load_before": load_before,
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
                "cell_breakdown": {
                    k: cell.get(k) for k in ("provision_s", "helm_s", "register_s", "suites_s")
                },
                "cell_by_vendor_s": cell.get("by_vendor_s"),
                "cell_outcomes": cell.get("outcomes"),
                "nvidia_matrix_wall_s": matrix_wall,
                "matrix_failed_cells": [c["minor"] for c in cells if c["exit_code"] != 0]
                if args.matrix
                else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
