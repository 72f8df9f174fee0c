"""Bench: an emulated 1 control-plane + 2 node lab over SSH (inventories/emulated/lab.yml).

    .venv/bin/python bench/lab.py [--inventory FILE] [--no-certify]

Provisions the lab (timed), provisions it again (changed tasks: the goal is 0), then certifies the
NVIDIA cell on it (deploy + suites + bundle fetched; timed) and tears it down. The last line is JSON:
``provision_s``, ``reprovision_changed``, ``reprovision_s``, ``certify_s`` (null unless the verdict
was PASSED, with ``certify_error``), ``certify_rc``, ``verdict``, ``teardown_s``.
Needs root and /usr/sbin/sshd (openssh-server).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conformance.cli import main as cli_main  # noqa: E402


def _last_run(out: Path) -> list[dict]:
    run_dir = sorted(out.iterdir())[-1]
    return json.loads((run_dir / "lab-run.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inventory", default=str(REPO / "inventories" / "emulated" / "lab.yml"))
    ap.add_argument("--no-certify", action="store_true")
    ap.add_argument("--helm-timeout", type=int, default=180, help="hami_timeout_s for the certify run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hcl-bench-"))
    base = ["-i", args.inventory, "--state", str(tmp / "state")]
    result: dict = {"inventory": args.inventory}
    try:
        t = time.monotonic()
        rc = cli_main(["provision", *base, "--out", str(tmp / "p1")])
        result["provision_s"] = round(time.monotonic() - t, 2)
        if rc != 0:
            result["error"] = f"provision exited {rc}"
            return 1
        t = time.monotonic()
        cli_main(["provision", *base, "--out", str(tmp / "p2")])
        result["reprovision_s"] = round(time.monotonic() - t, 2)
        result["reprovision_changed"] = _last_run(tmp / "p2")[0]["changedTotal"]
        if not args.no_certify:
            t = time.monotonic()
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = cli_main(["certify", *base, "--out", str(tmp / "c"),
                               "-e", f"hami_timeout_s={args.helm_timeout}"])
            result["certify_rc"] = rc  # the bundle's verdict as an exit code: 0 PASSED
            bundles = sorted((tmp / "c").glob("*/*/bundle"))
            if bundles:
                result["verdict"] = json.loads((bundles[-1] / "results.json").read_text())["verdict"]
            if rc == 0:
                result["certify_s"] = round(time.monotonic() - t, 2)
            else:
                result["certify_s"] = None
                result["certify_error"] = err.getvalue().strip()[-600:]
    finally:
        t = time.monotonic()
        cli_main(["teardown", *base, "--out", str(tmp / "td")])
        result["teardown_s"] = round(time.monotonic() - t, 2)
        result["runs"] = str(tmp)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
