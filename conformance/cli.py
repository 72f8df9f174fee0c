"""``hami-conformance``: the main job.

    hami-conformance run                      # testbed 1.33, the stack's chart, NVIDIA suites, bundle
    hami-conformance run --k8s 1.30,1.31      # several minors, one cell (and one bundle) each
    hami-conformance run --k8s all            # the whole NVIDIA matrix 1.18..1.33
    hami-conformance run --cluster kubeconfig --kubeconfig ~/.kube/config
    hami-conformance verify reports/out/<run id>/bundle

Each cell is one ``pytest conformance/suites`` session (its own cluster, run directory and bundle
under ``reports/out/<run id>/``); progress is shown with ``rich`` and a vendor x minor table closes
the run. Exit code: 0 all cells passed, 1 some case failed, 4 bad input (as pytest and
``reports.cli`` use).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from conformance.backends import MINORS, NEWEST_MINOR, BackendError, check_minor
from conformance.cases import VENDORS

REPO = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_minors(text: str) -> list[str]:
    """``1.33`` | ``1.30,1.31`` | ``all`` -> sorted minors; BackendError names a bad one."""
    if text.strip() == "all":
        return list(MINORS)
    out = sorted({check_minor(p) for p in text.split(",") if p.strip()}, key=lambda m: int(m.split(".")[1]))
    if not out:
        raise BackendError("--k8s: give a minor (1.33), a list (1.30,1.31) or all")
    return out


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hami-conformance", description="HAMi conformance: run the suites, verify bundles.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="provision, deploy, run the suites and write the bundle(s)")
    r.add_argument("--vendor", default="nvidia", choices=VENDORS)
    r.add_argument(
        "--k8s", default=NEWEST_MINOR, help="minor, comma list or 'all' (testbed/k3s; default 1.33)"
    )
    r.add_argument("--cluster", default="testbed", choices=("testbed", "kubeconfig", "k3s"))
    r.add_argument("--kubeconfig", help="kubeconfig for --cluster kubeconfig")
    r.add_argument("--profile", help="profile name or YAML path (default: the vendor's)")
    r.add_argument("--hami-namespace", default="hami-system")
    r.add_argument("--signing-key", help="Ed25519 private key (PEM) to sign each bundle")
    r.add_argument("--out", default=str(REPO / "reports" / "out"), help="parent of the per-run folders")
    r.add_argument("--workers", default="0", help="pytest-xdist workers per cell (default 0: serial)")
    r.add_argument("--keep-cluster", action="store_true")
    r.add_argument("--chart-set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    v = sub.add_parser("verify", help="check a bundle's manifest, statement and signature")
    v.add_argument("bundle")
    v.add_argument("--key", help="the signer's public key (PEM); default: the bundled one")
    return p


@dataclass
class Cell:
    vendor: str
    minor: str
    exit_code: int = -1
    wall_s: float = 0.0
    run_dir: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""


def cell_command(args: argparse.Namespace, minor: str, out_dir: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "conformance" / "suites"),
        "-p",
        "no:cacheprovider",
        "-q",
        "--cluster",
        args.cluster,
        "--vendor",
        args.vendor,
        "--hami-namespace",
        args.hami_namespace,
        "--bundle-dir",
        str(out_dir),
        "--junitxml",
        str(out_dir / "junit.xml"),
    ]
    if args.cluster != "kubeconfig":
        cmd += ["--k8s-version", minor]
    if args.kubeconfig:
        cmd += ["--kubeconfig", args.kubeconfig]
    if args.profile:
        cmd += ["--profile", args.profile]
    if args.signing_key:
        cmd += ["--signing-key", args.signing_key]
    if args.keep_cluster:
        cmd.append("--keep-cluster")
    for kv in args.chart_set:
        cmd += ["--chart-set", kv]
    if args.workers not in ("0", ""):
        cmd += ["-n", args.workers]
    return cmd + list(args.pytest_args)


def _counts(run_dir: Path) -> dict[str, int]:
    path = run_dir / "bundle" / "results.json"
    try:
        summary = json.loads(path.read_text()).get("summary") or {}
    except (OSError, ValueError):
        return {}
    return {k: int(v) for k, v in summary.items() if isinstance(v, int)}


def _run_cell(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """One cell's pytest; a SIGTERM or Ctrl-C here is passed on, so the cell tears its cluster down."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        out, err = proc.communicate()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_cells(args: argparse.Namespace, minors: list[str]) -> list[Cell]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    cells = [Cell(args.vendor, m) for m in minors]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"{args.vendor}: {len(cells)} cell(s)", total=len(cells))
        for cell in cells:
            label = cell.minor if args.cluster != "kubeconfig" else "cluster"
            progress.update(task, description=f"{args.vendor} {label}: provisioning, deploying, testing")
            out_dir = Path(args.out).resolve() / f"{stamp}-{args.vendor}-{label}"
            t = time.monotonic()
            proc = _run_cell(cell_command(args, cell.minor, out_dir))
            cell.wall_s = round(time.monotonic() - t, 1)
            cell.exit_code = proc.returncode
            cell.run_dir = out_dir
            cell.counts = _counts(out_dir)
            if proc.returncode not in (0, 1):
                tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
                cell.note = " | ".join(tail)
            if out_dir.exists():
                (out_dir / "pytest.log").write_text(proc.stdout + proc.stderr)
            progress.advance(task)
    return cells


def summary_table(cells: list[Cell]) -> object:
    from rich.table import Table

    table = Table(title="HAMi conformance")
    for col in ("vendor", "minor", "passed", "failed", "unknown", "skipped", "wall s", "result"):
        table.add_column(col)
    for c in cells:
        result = {0: "PASS", 1: "FAIL", 4: "BAD INPUT"}.get(c.exit_code, f"ERROR {c.exit_code}")
        table.add_row(
            c.vendor,
            c.minor,
            *(str(c.counts.get(k, "-")) for k in ("passed", "failed", "unknown", "skipped")),
            str(c.wall_s),
            result + (f" ({c.note})" if c.note else ""),
        )
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    try:
        minors = parse_minors(args.k8s) if args.cluster != "kubeconfig" else ["1.0"]
    except BackendError as e:
        print(f"hami-conformance: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.cluster == "kubeconfig" and not args.kubeconfig:
        print("hami-conformance: error: --cluster kubeconfig needs --kubeconfig", file=sys.stderr)
        return EXIT_USAGE
    cells = run_cells(args, minors)
    console = Console()
    console.print(summary_table(cells))
    for c in cells:
        if c.run_dir is not None and (c.run_dir / "bundle").is_dir():
            console.print(f"bundle: {c.run_dir / 'bundle'}")
    codes = {c.exit_code for c in cells}
    if codes == {0}:
        return EXIT_OK
    if codes <= {0, 4} and 4 in codes and len(cells) == 1:
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "verify":
        from reports.cli import main as reports_main

        forwarded = ["verify", args.bundle] + (["--key", args.key] if args.key else [])
        return reports_main(forwarded)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
