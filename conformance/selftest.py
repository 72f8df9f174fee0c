"""``hami-conformance selftest``: score the suites against the stack's catalogue of deliberate faults.

For each Kubernetes minor: one testbed. First the clean stack runs every suite (that run's bundle is
the certificate); then, on the *same* testbed, each fault is switched on by ``helm upgrade`` of the
chart's ``faultInjection.faults`` (the way an installer switches it; the chart restarts only the
containers whose fault set changed), and only the cases of the fault's expected rules run (fast; the
table says so). Between faults the suites' leftovers (namespaces, a node lock) are cleaned up. With
``--workers N`` more testbeds take faults in parallel.

A fault is *caught* when a case of one of its expected rules failed, failed again when re-run once
(a failure that passed on the re-run is load, not the fault), and that rule is ``required`` by the
profile (so the verdict is FAILED because of it). Sensitivity = caught / faults; a fault no case
can catch (no case checks its rules) is listed with that reason and counts against the score. The
score and table go into the clean run's bundle as ``sensitivity.json``.

Exit code: 0 every fault caught, 1 some survived (or the clean run failed), 4 bad input (unknown fault,
a fault of another vendor, a fault the installed stack's chart does not deliver): nothing runs then.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import difflib
import json
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.backends import BackendError
from conformance.retry import ENV as RETRY_ENV
from reports.matrix import FLAKY_NOTE as FLAKY

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "conformance" / "suites"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 4
KEPT_RE = re.compile(r"cluster kept; kubeconfig (\S+)")
CASE_TIMEOUT_S = 900


class SelftestInputError(Exception):
    """Bad input: reported before anything runs (exit code 4)."""


@dataclass
class Row:
    fault: str
    component: str
    expected_rules: list[str]
    failed_cases: list[str] = field(default_factory=list)
    verdict: str = "NOT RUN"
    caught_by_expected_rule: bool = False
    reason: str = ""
    cases_run: int = 0
    wall_s: float = 0.0
    switch_s: float = 0.0  # helm upgrade to the fault and the nodes' re-registration
    suites_s: float = 0.0  # the fault's cases

    def doc(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "component": self.component,
            "expected_rules": self.expected_rules,
            "failed_cases": self.failed_cases,
            "verdict": self.verdict,
            "caught_by_expected_rule": self.caught_by_expected_rule,
            "reason": self.reason,
            "cases_run": self.cases_run,
            "wall_s": self.wall_s,
            "switch_s": self.switch_s,
            "suites_s": self.suites_s,
        }


# --- which cases check which rule -------------------------------------------------------------------


def rule_cases(suites: Path = SUITES) -> dict[str, list[str]]:
    """Rule id -> pytest node ids of the cases decorated ``@rule("<id>", ...)`` (read from the source)."""
    out: dict[str, list[str]] = {}
    for path in sorted(suites.glob("test_*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            funcs: list[tuple[str, ast.AST]] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                funcs.append((node.name, node))
            elif isinstance(node, ast.ClassDef):
                funcs += [
                    (f"{node.name}::{f.name}", f)
                    for f in node.body
                    if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
            for name, fn in funcs:
                for deco in fn.decorator_list:  # type: ignore[attr-defined]
                    if (
                        isinstance(deco, ast.Call)
                        and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == "rule"
                        and deco.args
                        and isinstance(deco.args[0], ast.Constant)
                    ):
                        nodeid = f"{path.relative_to(REPO).as_posix()}::{name}"
                        out.setdefault(str(deco.args[0].value), []).append(nodeid)
        # table-driven modules name their parametrized cases' rules themselves (ids are computed)
        if "def parametrized_rules(" in path.read_text():
            import importlib

            module = importlib.import_module(f"conformance.suites.{path.stem}")
            for rule_id, nodeids in module.parametrized_rules().items():
                out.setdefault(rule_id, []).extend(nodeids)
    return out


# --- input ------------------------------------------------------------------------------------------


def select_faults(
    catalogue: list[dict[str, Any]], names: list[str] | None, vendor: str
) -> list[dict[str, Any]]:
    """The faults to run, or SelftestInputError naming every bad name."""
    by_name = {f["name"]: f for f in catalogue}
    if not names:
        return [f for f in catalogue if f["vendor"] == vendor]
    problems = []
    for n in names:
        if n not in by_name:
            near = difflib.get_close_matches(n, list(by_name), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            problems.append(f'unknown fault "{n}"{hint}; list them with: python -m hami_stack.faults list')
        elif by_name[n]["vendor"] != vendor:
            problems.append(f'fault "{n}" is for vendor {by_name[n]["vendor"]}, not {vendor}')
    if problems:
        raise SelftestInputError("; ".join(problems))
    return [by_name[n] for n in dict.fromkeys(names)]


# --- running ----------------------------------------------------------------------------------------


def _pytest(
    args: list[str], out_dir: Path, tmp: Path | None = None, *, retry: bool = False
) -> subprocess.CompletedProcess[str]:
    """One pytest session; an interrupt is passed on as SIGTERM (the session then tears down).
    ``retry``: a failed case runs once more (``conformance.retry``), so a catch must reproduce."""
    import os

    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        # hypothesis' plugin imports hypothesis for its summary: seconds per session, ~60 sessions
        "-p",
        "no:hypothesispytest",
        "-q",
        "--bundle-dir",
        str(out_dir),
        *args,
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # the sessions compile (and assertion-rewrite) the same modules each time: let them reuse bytecode
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop(RETRY_ENV, None)
    if retry:
        env[RETRY_ENV] = "1"
    if tmp is not None:  # the testbed's data dir lands here, so an interrupted self-test can find it
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
    child = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = child.communicate(timeout=CASE_TIMEOUT_S)
        code = child.returncode
    except subprocess.TimeoutExpired:
        child.terminate()
        out, err = child.communicate()
        code, err = 124, f"{err}\ntimed out after {CASE_TIMEOUT_S}s"
    except BaseException:
        child.terminate()
        try:
            child.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    (out_dir / "pytest.log").write_text(out + err)
    return subprocess.CompletedProcess(cmd, code, out, err)


def _results(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / "bundle" / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def _case_label(c: dict[str, Any]) -> str:
    name = str(c.get("name", "")).split("::")[-1].split(" [")[0]
    return f"{c.get('ruleId')} {name}".strip()


def judge(row: Row, results: dict[str, Any], clean_failed: frozenset[str] = frozenset()) -> None:
    """Fill verdict, failed cases and whether an expected, required rule failed.

    A rule that already fails on the clean stack (``clean_failed``) proves nothing about the fault:
    its failure does not count as a catch.
    """
    cases = results.get("cases") or []
    failed = [c for c in cases if c.get("outcome") == "failed"]
    row.cases_run = len(cases)
    row.failed_cases = [_case_label(c) for c in failed]
    required_failed = [c for c in failed if c.get("requirement") == "required"]
    row.verdict = "FAILED" if required_failed else ("WARNED" if failed else "PASSED")
    expected = [c for c in required_failed if c.get("ruleId") in row.expected_rules]
    # a failure that passed when re-run once (the fault sessions retry) is load, not the fault
    flaky = {str(c.get("ruleId")) for c in expected if FLAKY in str(c.get("message", ""))}
    expected_failed = {str(c.get("ruleId")) for c in expected} - flaky
    row.caught_by_expected_rule = bool(expected_failed - clean_failed)
    if row.caught_by_expected_rule or row.reason:
        return
    if flaky and not expected_failed:
        row.reason = f"{', '.join(sorted(flaky))} failed once, passed when re-run: not a reproducible catch"
    elif expected_failed:
        row.reason = (
            f"{', '.join(sorted(expected_failed))} fail(s) on the clean stack too: not evidence of the fault"
        )
    elif required_failed:
        rules = sorted({str(c.get("ruleId")) for c in required_failed})
        row.reason = f"failed, but only by other rules ({', '.join(rules)})"
    elif failed:
        row.reason = "an expected rule failed but it is optional in the profile (verdict WARNED)"
    else:
        row.reason = "survived: every case of its expected rules passed"


@dataclass
class Testbed:
    kubeconfig: str
    baseline_namespaces: set[str]


class Selftest:
    def __init__(self, args: argparse.Namespace, faults: list[dict[str, Any]], minor: str, out: Path) -> None:
        from conformance.backends import stackfaults

        self.sf = stackfaults
        self.args = args
        self.faults = faults
        self.minor = minor
        self.out = out
        self.cases = rule_cases()
        self.clean_failed: frozenset[str] = frozenset()
        self.log_lock = threading.Lock()
        self.clean_wall_s = 0.0  # the clean run: provision, deploy, every suite

    def say(self, text: str) -> None:
        with self.log_lock:
            print(f"[selftest {self.minor}] {text}", file=sys.stderr, flush=True)

    def clean_run(self) -> tuple[subprocess.CompletedProcess[str], str]:
        args = [
            "conformance/suites",
            "--cluster",
            "testbed",
            "--k8s-version",
            self.minor,
            "--vendor",
            self.args.vendor,
            "--keep-cluster",
            "--hami-namespace",
            self.args.hami_namespace,
        ]
        if getattr(self.args, "quick", False):
            # only the cases the selected faults need: a baseline for them, not a certificate
            wanted = sorted(
                {n for f in self.faults for r in f["expected_rules"] for n in self.cases.get(r, [])}
            )
            args = [*wanted, *args[1:]] if wanted else args
        for kv in self.args.chart_set:
            args += ["--chart-set", kv]
        if self.args.signing_key:
            args += ["--signing-key", self.args.signing_key]
        proc = _pytest(args, self.out / "clean", tmp=self.out / "tmp")
        m = KEPT_RE.search(proc.stdout + proc.stderr)
        return proc, m.group(1) if m else ""

    def extra_testbed(self) -> str:
        from conformance.backends import Options
        from conformance.backends.testbed import TestbedBackend

        info = TestbedBackend().provision(
            Options(
                k8s_version=self.minor,
                vendor=self.args.vendor,
                hami_namespace=self.args.hami_namespace,
                keep_cluster=True,
                chart_set=list(self.args.chart_set),
            )
        )
        return info.kubeconfig

    def run_fault(self, bed: Testbed, fault: dict[str, Any]) -> Row:
        row = Row(fault["name"], fault["component"], list(fault["expected_rules"]))
        t = time.monotonic()
        if fault.get("uncatchable"):
            row.reason = f"cannot be caught by design: {fault['uncatchable']}"
            return row
        nodeids = sorted({n for r in row.expected_rules for n in self.cases.get(r, [])})
        if not nodeids:
            row.reason = f"no case in the suites checks {', '.join(row.expected_rules)}"
            return row
        note = self.sf.switch(
            bed.kubeconfig, self.minor, self.args.hami_namespace, [row.fault], list(self.args.chart_set)
        )
        if not note:
            note = self.sf.wait_ready(bed.kubeconfig, self.sf.gpu_nodes(), self.args.hami_namespace)
        if note:
            self.say(f"{row.fault}: {note} (running its cases anyway)")
        row.switch_s = round(time.monotonic() - t, 1)
        t_suites = time.monotonic()
        proc = _pytest(
            [
                *nodeids,
                "--cluster",
                "kubeconfig",
                "--kubeconfig",
                bed.kubeconfig,
                "--vendor",
                self.args.vendor,
                "--hami-namespace",
                self.args.hami_namespace,
            ],
            self.out / "faults" / row.fault,
            retry=True,
        )
        row.suites_s = round(time.monotonic() - t_suites, 1)
        results = _results(self.out / "faults" / row.fault)
        if not results:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-2:]
            row.reason = f"the suites did not run (exit {proc.returncode}): {' | '.join(tail)}"
        else:
            judge(row, results, self.clean_failed)
            if note and not row.caught_by_expected_rule:
                row.reason = f"{row.reason}; {note}"
        self.sf.cleanup(bed.kubeconfig, bed.baseline_namespaces)
        row.wall_s = round(time.monotonic() - t, 1)
        self.say(
            f"{row.fault}: {row.verdict}, caught={'yes' if row.caught_by_expected_rule else 'no'} "
            f"({row.wall_s}s: switch {row.switch_s}s, cases {row.suites_s}s)"
        )
        return row

    def run(self) -> tuple[list[Row], Path | None, int]:
        self.sf.prepare([f["name"] for f in self.faults])
        n_workers = max(1, min(int(self.args.workers or 1), len(self.faults)))
        # the other workers' testbeds come up while the clean run provisions and tests its own
        provisioner = concurrent.futures.ThreadPoolExecutor(max(1, n_workers - 1))
        extras = [provisioner.submit(self.extra_testbed) for _ in range(n_workers - 1)]
        beds: list[str] = []
        rows: list[Row | None] = [None] * len(self.faults)
        try:
            self.say("clean stack: every suite (provision, deploy, test)")
            t = time.monotonic()
            proc, kubeconfig = self.clean_run()
            self.clean_wall_s = round(time.monotonic() - t, 1)
            if kubeconfig:
                beds.append(kubeconfig)
            clean_dir = self.out / "clean"
            clean = _results(clean_dir)
            self.clean_failed = frozenset(
                str(c.get("ruleId")) for c in clean.get("cases") or [] if c.get("outcome") == "failed"
            )
            if self.clean_failed:
                self.say(
                    f"the clean stack fails {', '.join(sorted(self.clean_failed))}: "
                    "those rules cannot catch a fault"
                )
            if not kubeconfig:
                tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
                raise BackendError(
                    f"the clean run did not leave a testbed (exit {proc.returncode}): {' | '.join(tail)}"
                )
            work: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
            for i, f in enumerate(self.faults):
                work.put((i, f))

            def worker(kc: str) -> None:
                bed = Testbed(kc, self.sf.namespaces(kc))
                # what the clean run kept (its failed cases' pods) must not hold GPUs the faults' cases need
                self.sf.cleanup(kc, bed.baseline_namespaces)
                while True:
                    try:
                        i, f = work.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        rows[i] = self.run_fault(bed, f)
                    except Exception as e:
                        rows[i] = Row(
                            f["name"],
                            f["component"],
                            list(f["expected_rules"]),
                            reason=f"self-test error: {e}",
                        )

            def extra_worker(future: concurrent.futures.Future[str]) -> None:
                try:
                    kc = future.result()
                except Exception as e:  # the other workers take its share
                    self.say(f"an extra testbed did not come up: {e}")
                    return
                beds.append(kc)
                worker(kc)

            with concurrent.futures.ThreadPoolExecutor(n_workers) as pool:
                jobs = [pool.submit(worker, kubeconfig), *(pool.submit(extra_worker, f) for f in extras)]
                for job in jobs:
                    job.result()
        finally:
            provisioner.shutdown(wait=True)
            for f in extras:  # one still provisioning when the clean run failed
                if f.done() and not f.exception() and f.result() not in beds:
                    beds.append(f.result())
            if not self.args.keep_cluster:
                for kc in beds:
                    self.sf.teardown(kc)
                self.sf.teardown_all(self.out / "tmp")
        return [r for r in rows if r is not None], clean_dir, proc.returncode


def sensitivity_doc(rows: list[Row], commit: str, minor: str, clean_exit: int) -> dict[str, Any]:
    caught = sum(1 for r in rows if r.caught_by_expected_rule)
    return {
        "commit": commit,
        "faults": len(rows),
        "caught": caught,
        "sensitivity": round(caught / len(rows), 4) if rows else 0.0,
        "minor": minor,
        "clean_exit_code": clean_exit,
        "selection": "each fault ran only the cases of its expected rules",
        "rows": [r.doc() for r in rows],
    }


def table(rows: list[Row], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("fault", "expected rules", "cases that failed", "verdict", "caught by the right rule"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(
            r.fault,
            ", ".join(r.expected_rules),
            "\n".join(r.failed_cases) or "-",
            r.verdict,
            "yes" if r.caught_by_expected_rule else f"no: {r.reason}",
        )
    return t


def markdown(rows: list[Row], doc: dict[str, Any]) -> str:
    lines = [
        f"# Self-test, Kubernetes {doc['minor']}: sensitivity {doc['sensitivity']:.3f} "
        f"({doc['caught']}/{doc['faults']})",
        "",
        "Each fault ran only the cases of its expected rules.",
        "",
        "| fault | expected rules | cases that failed | verdict | caught by the right rule |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.fault} | {', '.join(r.expected_rules)} | {'<br>'.join(r.failed_cases) or '-'} | "
            f"{r.verdict} | {'yes' if r.caught_by_expected_rule else 'no: ' + r.reason} |"
        )
    return "\n".join(lines) + "\n"


def run_commit(clean_dir: Path) -> str:
    try:
        return str(json.loads((clean_dir / "run" / "run.json").read_text())["metadata"]["projectCommit"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def write_bundle(clean_dir: Path, doc: dict[str, Any], signing_key: str | None) -> Path | None:
    """Rebuild the clean run's bundle with ``sensitivity.json`` (the clean run wrote it without)."""
    from reports.bundle import build
    from reports.runio import load_run

    run_dir = clean_dir / "run"
    if not run_dir.is_dir():
        return None
    run = load_run(run_dir)
    return build(
        run,
        clean_dir / "bundle",
        signing_key=Path(signing_key) if signing_key else None,
        overwrite=True,
        sensitivity=doc,
    )


def cmd_selftest(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conformance.cli import parse_minors

    try:
        from conformance.backends import stackfaults

        minors = parse_minors(args.k8s)
        faults = select_faults(stackfaults.catalogue(), args.faults, args.vendor)
        unknown = stackfaults.chart_unknown([f["name"] for f in faults], minors[-1])
        if unknown:
            raise SelftestInputError(
                f"the installed stack's chart does not deliver fault(s) {', '.join(unknown)} "
                "(faultInjection.faults renders no switch for them)"
            )
    except (SelftestInputError, BackendError) as e:
        print(f"hami-conformance selftest: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    import signal

    def _terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, _terminate)  # finally-clauses tear the testbeds down
    console = Console()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(args.out).resolve() / f"{stamp}-selftest-{args.vendor}"
    code = EXIT_OK
    for minor in minors:
        out = base / minor
        t = time.monotonic()
        st = Selftest(args, faults, minor, out)
        try:
            rows, clean_dir, clean_exit = st.run()
        except BackendError as e:
            print(f"hami-conformance selftest: {minor}: {e}", file=sys.stderr)
            return EXIT_FAILED
        wall = round(time.monotonic() - t, 1)
        doc = sensitivity_doc(rows, run_commit(clean_dir) if clean_dir else "", minor, clean_exit)
        doc["selftest_wall_s"] = wall
        doc["clean_wall_s"] = st.clean_wall_s
        doc["workers"] = int(args.workers or 1)
        bundle = None
        try:
            bundle = write_bundle(clean_dir, doc, args.signing_key) if clean_dir else None
        except Exception as e:
            print(f"hami-conformance selftest: no bundle with sensitivity.json: {e}", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        (out / "selftest.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / "selftest.md").write_text(markdown(rows, doc))
        console.print(
            table(
                rows,
                f"HAMi self-test {args.vendor} {minor}: sensitivity {doc['sensitivity']:.3f} "
                f"({doc['caught']}/{doc['faults']}; each fault ran only its expected "
                f"rules' cases; {wall}s)",
            )
        )
        if bundle is not None:
            console.print(f"bundle: {bundle}")
        console.print(f"table: {out / 'selftest.md'}")
        # the clean run's own verdict: PASSED 0, WARNED 3, INCOMPLETE 2 (expected with --quick)
        clean_ok = clean_exit in (0, 3) or (clean_exit == 2 and getattr(args, "quick", False))
        if not clean_ok or doc["caught"] != doc["faults"]:
            code = EXIT_FAILED
    return code


def add_parser(sub: Any, parser_class: Any, default_minor: str, default_out: str) -> None:
    s = sub.add_parser("selftest", help="run the clean stack, then each deliberate fault; score the suites")
    s.add_argument("--vendor", default="nvidia")
    s.add_argument("--k8s", default=default_minor, help="minor or comma list (default %(default)s)")
    s.add_argument(
        "--faults", nargs="+", metavar="NAME", help="only these faults (default: the whole catalogue)"
    )
    s.add_argument("--out", default=default_out, help="parent of the self-test folder")
    s.add_argument("--workers", default="1", help="testbeds running faults in parallel (default 1)")
    s.add_argument("--hami-namespace", default="hami-system")
    s.add_argument("--signing-key", help="Ed25519 private key (PEM) to sign the bundle")
    s.add_argument("--chart-set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--keep-cluster", action="store_true")
    s.add_argument(
        "--quick",
        action="store_true",
        help="the clean run covers only the selected faults' cases (a baseline, not a certificate: "
        "its bundle is INCOMPLETE)",
    )
