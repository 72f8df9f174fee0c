"""Benchmark (not a timed test): the whole fault catalogue on one minor.

    python bench/selftest.py                   # NVIDIA, 1.33, every catalogue fault, one testbed
    python bench/selftest.py --workers 2       # two testbeds take faults in parallel
    python bench/selftest.py --faults shim-limiter-off webhook-allows-privileged

Runs ``hami-conformance selftest`` (clean stack, then each fault switched by ``helm upgrade``) and
reads its ``selftest.json``. Pin to 2 cores with ``taskset -c 0,1 python bench/selftest.py``. The last
line is one JSON object with at least ``faults``, ``caught``, ``sensitivity`` and ``selftest_wall_s``
(goal: sensitivity 1.0, wall under 15 minutes on 2 cores), plus the survivors and their reasons and
where the time went: ``clean_wall_s`` (provision, deploy, every suite), ``switch_total_s`` (helm
upgrades and re-registration), ``cases_total_s`` (the faults' pytest sessions) and ``per_fault_s``
(``[wall, switch, cases]`` per fault). With ``--workers N`` the faults' totals are spread over N testbeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minor", default="1.33")
    p.add_argument("--workers", default="1")
    p.add_argument("--faults", nargs="+")
    args = p.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="hami-bench-selftest-"))
    cmd = [
        sys.executable,
        "-m",
        "conformance",
        "selftest",
        "--k8s",
        args.minor,
        "--out",
        str(out),
        "--workers",
        args.workers,
    ]
    if args.faults:
        cmd += ["--faults", *args.faults]
    t = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = round(time.monotonic() - t, 1)
    sys.stderr.write(proc.stderr[-4000:])
    print(proc.stdout[-12000:])
    docs = sorted(out.glob(f"*/{args.minor}/selftest.json"))
    if not docs:
        print(
            json.dumps(
                {
                    "faults": None,
                    "caught": None,
                    "sensitivity": None,
                    "selftest_wall_s": wall,
                    "exit_code": proc.returncode,
                    "error": (proc.stderr.strip().splitlines() or [""])[-1],
                }
            )
        )
        return 1
    doc = json.loads(docs[0].read_text())
    survivors = {r["fault"]: r["reason"] for r in doc["rows"] if not r["caught_by_expected_rule"]}
    print(
        json.dumps(
            {
                "faults": doc["faults"],
                "caught": doc["caught"],
                "sensitivity": doc["sensitivity"],
                "selftest_wall_s": wall,
                "minor": args.minor,
                "workers": int(args.workers),
                "exit_code": proc.returncode,
                "clean_exit_code": doc.get("clean_exit_code"),
                "clean_wall_s": doc.get("clean_wall_s"),
                "switch_total_s": round(sum(r.get("switch_s") or 0 for r in doc["rows"]), 1),
                "cases_total_s": round(sum(r.get("suites_s") or 0 for r in doc["rows"]), 1),
                # per fault: [wall, helm switch + re-registration, its cases]
                "per_fault_s": {
                    r["fault"]: [r.get("wall_s"), r.get("switch_s"), r.get("suites_s")] for r in doc["rows"]
                },
                "survivors": survivors,
                "out": str(docs[0].parent),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
