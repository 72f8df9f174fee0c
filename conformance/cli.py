"""``hami-conformance``: the main job.

    hami-conformance run                      # testbed 1.33, the stack's chart, NVIDIA suites, bundle
    hami-conformance run --k8s 1.30,1.31      # several minors, one cell (and one bundle) each
    hami-conformance run --k8s all            # the whole NVIDIA matrix 1.18..1.35
    hami-conformance run --cluster kubeconfig --kubeconfig ~/.kube/config
    hami-conformance verify reports/out/<run id>/bundle
    hami-conformance matrix merge cell1/bundle cell2/bundle -o matrix   # CI: one matrix bundle

Each cell is one ``pytest conformance/suites`` session (its own cluster, run directory and bundle
under ``reports/out/<run id>/``); progress is shown with ``rich`` and a vendor x minor table closes
the run. The table, the exit code, the bundle's summary.md and results.json and ``verify`` all show
one verdict, decided by ``reports.summary.decide`` (see ``EXIT_HELP`` for the exit codes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from conformance.backends import DEFAULT_MINOR, MINORS, BackendError, check_minor
from conformance.cases import VENDORS
from reports.summary import EXIT_BAD_INPUT, EXIT_CODES, EXIT_NO_VERDICT, VERDICTS

REPO = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_USAGE = EXIT_CODES["PASSED"], EXIT_CODES["FAILED"], EXIT_BAD_INPUT
BAD_INPUT, ERROR = "BAD INPUT", "ERROR"
EXIT_HELP = f"""exit codes (run: the worst cell decides; the same verdict is in each bundle):
  {EXIT_CODES["PASSED"]}  PASSED      every required rule of the profile ran and passed
  {EXIT_CODES["FAILED"]}  FAILED      a required rule failed (verify: the bundle does not verify)
  {EXIT_CODES["INCOMPLETE"]}  INCOMPLETE  a required rule did not run: filtered (-k, -m, node ids),
                deselected, interrupted or unfinished; the bundle lists what did not run
  {EXIT_CODES["WARNED"]}  WARNED      all required rules passed; an optional rule failed or a case
                could not apply
  {EXIT_BAD_INPUT}  bad input   unknown minor, profile, vendor or backend; unreachable cluster; a
                --sensitivity file of another commit; nothing runs, no bundle is written
  {EXIT_NO_VERDICT}  ERROR       a cell ended without a bundle (provisioning or harness error)
"""


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
    p = _Parser(
        prog="hami-conformance",
        description="HAMi conformance: run the suites, verify bundles.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser(
        "run",
        help="provision, deploy, run the suites and write the bundle(s)",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--vendor",
        default="nvidia",
        help=f"one of {', '.join(VENDORS)}; a comma list (nvidia,ascend: their suites in one cell on one "
        "cluster, the mixed inventory by default) or all (every vendor with a profile)",
    )
    r.add_argument(
        "--k8s", default=DEFAULT_MINOR, help="minor, comma list or 'all' (testbed/k3s; default 1.33)"
    )
    r.add_argument("--cluster", default="testbed", choices=("testbed", "kubeconfig", "k3s"))
    r.add_argument(
        "--control-plane",
        choices=("real", "emulated", "auto"),
        help="testbed: the minor's real kube-apiserver/controller-manager/scheduler (built by `python -m "
        "testbed.controlplane build`), the emulated one, or real when built (default "
        "$TESTBED_CONTROL_PLANE, else emulated)",
    )
    r.add_argument("--kubeconfig", help="kubeconfig for --cluster kubeconfig")
    r.add_argument(
        "--profile",
        help="profile name or YAML path (default: the vendor's; nvidia-scheduling-only certifies "
        "without enforcement and monitor rules)",
    )
    r.add_argument("--hami-namespace", default="hami-system")
    r.add_argument("--signing-key", help="Ed25519 private key (PEM) to sign each bundle")
    r.add_argument("--out", default=str(REPO / "reports" / "out"), help="parent of the per-run folders")
    r.add_argument("--workers", default="0",
                   help="pytest-xdist workers per cell (default 0: serial); on the testbed each worker "
                        "gets a cluster of its own")
    r.add_argument("--keep-cluster", action="store_true")
    r.add_argument("--chart-set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument(
        "--sensitivity",
        metavar="FILE",
        help="the self-test's sensitivity.json to carry in each bundle (refused, exit 4, if it is "
        "not of this checkout's commit)",
    )
    r.add_argument(
        "--json",
        action="store_true",
        help="machine-readable progress: one JSON event per line on stdout (see conformance.progress)",
    )
    r.add_argument(
        "--no-retry",
        action="store_true",
        help="do not re-run a failed case once (by default a pass on the re-run marks it flaky, "
        "and it stays failed)",
    )
    r.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    v = sub.add_parser(
        "verify", help="check a bundle's manifest, statement, signature and that one verdict is everywhere"
    )
    v.add_argument("bundle")
    v.add_argument("--key", help="the signer's public key (PEM); default: the bundled one")
    from conformance.selftest import add_parser as add_selftest

    add_selftest(sub, _Parser, DEFAULT_MINOR, str(REPO / "reports" / "out"))
    from reports.matrix_cli import add_parser as add_matrix

    add_matrix(sub, _Parser)
    from conformance.backends.lab import add_parsers as add_lab

    add_lab(sub, _Parser)
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
    verdict: str = ""  # the bundle's verdict; BAD INPUT or ERROR when the cell wrote no bundle


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
    if getattr(args, "sensitivity", None):
        cmd += ["--sensitivity", str(Path(args.sensitivity).resolve())]
    if args.workers not in ("0", ""):
        cmd += ["-n", args.workers]
    return cmd + list(args.pytest_args)


def _results(run_dir: Path) -> dict[str, object]:
    try:
        doc = json.loads((run_dir / "bundle" / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _counts(run_dir: Path) -> dict[str, int]:
    summary = _results(run_dir).get("summary") or {}
    return {k: int(v) for k, v in summary.items() if isinstance(v, int)}  # type: ignore[union-attr]


def cell_verdict(cell: Cell) -> str:
    """The cell's verdict as its bundle states it; BAD INPUT / ERROR when there is no bundle."""
    if cell.run_dir is not None:
        verdict = _results(cell.run_dir).get("verdict")
        if isinstance(verdict, str) and verdict in VERDICTS:
            return verdict
    return BAD_INPUT if cell.exit_code == EXIT_BAD_INPUT else ERROR


def exit_code(cells: list[Cell]) -> int:
    """The run's exit code: that of the worst cell (FAILED > ERROR > INCOMPLETE > WARNED > PASSED);
    bad input only when no cell ran."""
    verdicts = [c.verdict or cell_verdict(c) for c in cells]
    if verdicts and all(v == BAD_INPUT for v in verdicts):
        return EXIT_BAD_INPUT
    order = ["PASSED", "WARNED", "INCOMPLETE", ERROR, "FAILED"]
    worst = max((v if v in order else ERROR for v in verdicts), key=order.index, default=ERROR)
    return EXIT_NO_VERDICT if worst == ERROR else EXIT_CODES[worst]


_INTERRUPTED: list[int] = []  # signals received while a cell ran: no further cell starts


def _run_cell(
    cmd: list[str], env: dict[str, str] | None = None, on_tick: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """One cell's pytest; a SIGTERM or Ctrl-C here is passed on, so the cell tears its cluster down
    (and writes its bundle, INCOMPLETE), and the cells after it do not start. ``on_tick`` is called
    a few times a second while it runs (the progress view reads the cell's events then)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err, text=True, env=env)

        def forward(signum: int, _frame: object) -> None:
            _INTERRUPTED.append(signum)
            proc.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while True:
                try:
                    proc.wait(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    if on_tick is not None:
                        on_tick()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        if on_tick is not None:
            on_tick()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def run_cells(args: argparse.Namespace, minors: list[str], view: Any = None) -> list[Cell]:
    """Run the cells one after the other; ``view`` (a ``conformance.progress`` view) gets each
    cell's events as they arrive, and a ``cell-end`` event with its verdict and bundle."""
    from conformance import progress, retry
    from conformance.vendorsel import label as selection_label

    vendor_label = selection_label(args.vendor.split(","))
    cells = [Cell(args.vendor, m) for m in minors]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="hami-progress-") as spool:
        for cell in cells:
            label = cell.minor if args.cluster != "kubeconfig" else "cluster"
            name = f"{vendor_label}-{label}"
            if _INTERRUPTED:
                cell.verdict, cell.note = "INCOMPLETE", "not run: the run was interrupted"
                if view is not None:
                    view.handle(name, {"event": "cell-end", "verdict": cell.verdict, "note": cell.note})
                continue
            out_dir = Path(args.out).resolve() / f"{stamp}-{vendor_label}-{label}"
            events = Path(spool) / f"{name}.jsonl"
            env = {**os.environ, progress.ENV: str(events)}
            if not getattr(args, "no_retry", False):
                env[retry.ENV] = "1"
            tail = progress.Tail(events)
            if view is not None:
                view.handle(
                    name,
                    {"event": "cell-start", "t": time.time(), "vendor": cell.vendor, "minor": cell.minor},
                )

            def tick(tail: progress.Tail = tail, name: str = name) -> None:
                if view is not None:
                    for ev in tail.read():
                        view.handle(name, ev)

            t = time.monotonic()
            proc = _run_cell(cell_command(args, cell.minor, out_dir), env=env, on_tick=tick)
            cell.wall_s = round(time.monotonic() - t, 1)
            cell.exit_code = proc.returncode
            cell.run_dir = out_dir
            cell.counts = _counts(out_dir)
            cell.verdict = cell_verdict(cell)
            if cell.verdict == ERROR and _INTERRUPTED:
                cell.verdict, cell.note = "INCOMPLETE", "interrupted before its bundle was written"
            elif cell.verdict in (BAD_INPUT, ERROR):
                tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
                cell.note = " | ".join(tail)
            elif proc.returncode != EXIT_CODES[cell.verdict]:
                # the session's exit code is derived from the same verdict; a mismatch is a harness bug
                cell.note = f"pytest exit {proc.returncode} disagrees with the bundle's {cell.verdict}"
                cell.verdict = ERROR
            if out_dir.exists():
                (out_dir / "pytest.log").write_text(proc.stdout + proc.stderr)
                if events.is_file():
                    shutil.copyfile(events, out_dir / "progress.jsonl")
            if view is not None:
                bundle = out_dir / "bundle"
                view.handle(
                    name,
                    {
                        "event": "cell-end",
                        "verdict": cell.verdict,
                        "bundle": str(bundle) if bundle.is_dir() else None,
                        "counts": cell.counts,
                        "wall_s": cell.wall_s,
                        "note": cell.note,
                    },
                )
    return cells


def summary_table(cells: list[Cell]) -> object:
    from rich.table import Table

    table = Table(title="HAMi conformance")
    for col in ("vendor", "minor", "passed", "failed", "unknown", "skipped", "wall s", "verdict"):
        table.add_column(col)
    for c in cells:
        result = c.verdict or cell_verdict(c)
        table.add_row(
            c.vendor,
            c.minor,
            *(str(c.counts.get(k, "-")) for k in ("passed", "failed", "unknown", "skipped")),
            str(c.wall_s),
            result + (f" ({c.note})" if c.note else ""),
        )
    return table


def check_sensitivity(path: str) -> str | None:
    """None when ``path`` is a valid sensitivity document of this checkout's commit, else why not."""
    from conformance.recording import project_commit
    from reports import sensitivity
    from reports.model import RunInputError

    try:
        sensitivity.load(path, commit=project_commit(REPO))
    except RunInputError as e:
        return f"--sensitivity: {e}"
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.control_plane:  # read by `python -m testbed up`, which the testbed backend runs
        os.environ["TESTBED_CONTROL_PLANE"] = args.control_plane

    from conformance.vendorsel import VendorError, parse_vendors

    try:
        minors = parse_minors(args.k8s) if args.cluster != "kubeconfig" else ["1.0"]
        args.vendor = ",".join(parse_vendors(args.vendor))
    except (BackendError, VendorError) as e:
        print(f"hami-conformance: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if "," in args.vendor and args.profile:
        print(
            "hami-conformance: error: --profile names one vendor's profile; with several vendors each "
            "runs under its own default profile",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.cluster == "kubeconfig" and not args.kubeconfig:
        print("hami-conformance: error: --cluster kubeconfig needs --kubeconfig", file=sys.stderr)
        return EXIT_USAGE
    if args.sensitivity and (problem := check_sensitivity(args.sensitivity)):
        print(f"hami-conformance: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from conformance import progress

    if args.json:
        with progress.JsonLines() as view:
            cells = run_cells(args, minors, view)
            code = exit_code(cells)
            view.write(
                {
                    "event": "run-end",
                    "verdict": _overall(cells),
                    "exit_code": code,
                    "cells": [
                        {
                            "vendor": c.vendor,
                            "minor": c.minor,
                            "verdict": c.verdict or cell_verdict(c),
                            "counts": c.counts,
                            "wall_s": c.wall_s,
                            "note": c.note,
                            "bundle": str(c.run_dir / "bundle")
                            if c.run_dir is not None and (c.run_dir / "bundle").is_dir()
                            else None,
                        }
                        for c in cells
                    ],
                }
            )
        return code
    with progress.LiveView() as live:
        cells = run_cells(args, minors, live)
    console = Console()
    console.print(summary_table(cells))
    for c in cells:
        if c.run_dir is not None and (c.run_dir / "bundle").is_dir():
            decision = _results(c.run_dir).get("decision") or {}
            why = "; ".join(decision.get("reasons") or [])  # type: ignore[union-attr]
            console.print(f"{c.vendor} {c.minor}: {c.verdict}" + (f" ({why})" if why else ""), markup=False)
            console.print(f"bundle: {c.run_dir / 'bundle'}", markup=False)
    console.print(f"verdict: {_overall(cells)}", markup=False)
    return exit_code(cells)


def _overall(cells: list[Cell]) -> str:
    """The run's verdict in words, the worst cell's (the exit code says the same)."""
    code = exit_code(cells)
    if code == EXIT_BAD_INPUT:
        return BAD_INPUT
    if code == EXIT_NO_VERDICT:
        return ERROR
    return next(v for v, c in EXIT_CODES.items() if c == code)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "lab_command", None):  # provision, deploy, certify, teardown
        from conformance.backends.lab import main as lab_main

        return lab_main(args)
    if args.command == "verify":
        from reports.cli import main as reports_main

        forwarded = ["verify", args.bundle] + (["--key", args.key] if args.key else [])
        return reports_main(forwarded)
    if args.command == "selftest":
        from conformance.selftest import cmd_selftest

        return cmd_selftest(args)
    if args.command == "matrix":
        from reports.matrix_cli import main as matrix_main

        return matrix_main(args)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
