"""The Allure HTML report of a bundle (a cell's, or a matrix bundle from ``matrix merge``).

Which Allure: **Allure 3**, the npm package ``allure`` pinned at :data:`ALLURE_VERSION`, installed
with npm into ``~/.cache/hami-conformance/allure3`` (``$HAMI_ALLURE_HOME``) on first use. Why: npm
is already how the project fetches its clients (kubectl, helm), so no JRE and no Maven download
is needed; and Allure 3 has what a matrix needs: several *environments* in one report (here one
per vendor x minor cell, chosen by a ``cell`` label) and a history file of JSON lines that each
generation reads and extends (trends and flaky/regression marks across runs). Allure 2 would
need Java and shows one environment per report.

Input is the bundle, not pytest's allure-results: ``run.json`` and ``results.json`` say every
case, its cell, rule, outcome and message, and the bundle holds the attachments. So the report
shows exactly what was certified (flaky cases are failed, with the retry note in the message).

    hami-conformance matrix allure matrix -o allure-report --history allure-history/history.jsonl

The report is one ``index.html`` (Allure's single-file mode) that opens from disk.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import shutil
import subprocess
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from reports.matrix import FLAKY_NOTE
from reports.model import Run, RunInputError

ALLURE_VERSION = "3.18.0"
NPM_TIMEOUT_S = 600
GENERATE_TIMEOUT_S = 300
STATUS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "unknown": "unknown"}


class AllureError(RuntimeError):
    """Bad input (``tool`` False) or a missing/failing Allure generator (``tool`` True)."""

    def __init__(self, message: str, *, tool: bool = False) -> None:
        super().__init__(message)
        self.tool = tool


def allure_home() -> Path:
    env = os.environ.get("HAMI_ALLURE_HOME")
    return Path(env) if env else Path.home() / ".cache" / "hami-conformance" / "allure3"


def allure_cli(*, install: bool = True) -> Path:
    """The pinned Allure 3 CLI (``cli.js``), npm-installed into :func:`allure_home` when missing."""
    home = allure_home()
    cli = home / "node_modules" / "allure" / "cli.js"
    pkg = home / "node_modules" / "allure" / "package.json"
    if cli.is_file() and pkg.is_file() and json.loads(pkg.read_text()).get("version") == ALLURE_VERSION:
        return cli
    if not install:
        raise AllureError(f"Allure {ALLURE_VERSION} is not installed in {home}", tool=True)
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise AllureError("Allure 3 needs node and npm (Debian: apt-get install npm)", tool=True)
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(home), f"allure@{ALLURE_VERSION}"],
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
    )
    if proc.returncode != 0 or not cli.is_file():
        why = proc.stderr.strip()[-800:]
        raise AllureError(f"npm install allure@{ALLURE_VERSION} failed: {why}", tool=True)
    return cli


def cell_name(vendor: str, minor: str) -> str:
    return f"{vendor}-{minor}"


def env_id(cell: str) -> str:
    """Allure environment ids allow letters, digits, ``_`` and ``-``: ``nvidia-1.33`` -> ``nvidia-1_33``."""
    return cell.replace(".", "_")


def _ms(stamp: str) -> int:
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def write_results(bundle: Path, results_dir: Path) -> list[str]:
    """Allure result files for every case of ``bundle``; returns the cells (``vendor-minor``)."""
    try:
        run = Run.from_dict(json.loads((bundle / "run.json").read_bytes()), base_dir=bundle)
        results = json.loads((bundle / "results.json").read_bytes())
    except (OSError, ValueError, RunInputError) as e:
        raise AllureError(f"{bundle}: not a bundle with run.json and results.json ({e})") from None
    held = {(c["vendor"], c["minor"], c["caseId"]): c.get("attachments") or [] for c in results["cases"]}
    results_dir.mkdir(parents=True, exist_ok=True)
    clock = _ms(run.metadata.started)
    cells: list[str] = []
    for case in run.cases:
        cell = cell_name(case.vendor, case.minor)
        if cell not in cells:
            cells.append(cell)
        rid = str(uuid.uuid4())
        attachments = []
        for i, rel in enumerate(held.get(case.key, [])):
            src = bundle / rel
            if not src.is_file():
                continue
            ext = src.suffix or ".txt"
            name = f"{rid}-{i}-attachment{ext}"
            shutil.copyfile(src, results_dir / name)
            mime = mimetypes.guess_type(src.name)[0] or "text/plain"
            attachments.append({"name": src.name, "source": name, "type": mime})
        duration = int(case.duration_s * 1000)
        key = f"{case.vendor}/{case.minor}/{case.case_id}"
        doc: dict[str, Any] = {
            "uuid": rid,
            "historyId": hashlib.sha256(key.encode()).hexdigest()[:32],
            "testCaseId": hashlib.sha256(case.case_id.encode()).hexdigest()[:32],
            "fullName": key,
            "name": f"{case.rule_id}: {case.case_id.rsplit('::', 1)[-1]}",
            "description": case.rule_text,
            "status": STATUS[case.outcome],
            "statusDetails": {"message": case.message, "flaky": FLAKY_NOTE in case.message},
            "stage": "finished",
            "start": clock,
            "stop": clock + duration,
            "labels": [
                {"name": "cell", "value": cell},
                {"name": "parentSuite", "value": case.vendor},
                {"name": "suite", "value": case.capability},
                {"name": "subSuite", "value": case.minor},
                {"name": "epic", "value": case.vendor},
                {"name": "feature", "value": case.capability},
                {"name": "story", "value": case.rule_id},
                {"name": "tag", "value": case.requirement},
            ],
            "parameters": [{"name": "vendor", "value": case.vendor}, {"name": "minor", "value": case.minor}],
            "attachments": attachments,
        }
        clock += duration
        (results_dir / f"{rid}-result.json").write_text(json.dumps(doc, indent=1))
    return cells


def config_text(cells: list[str], output: Path, history: Path | None, name: str) -> str:
    """allurerc.mjs: one environment per cell, matched on the ``cell`` label."""
    static: dict[str, Any] = {
        "name": name,
        "output": str(output),
        "plugins": {"awesome": {"options": {"singleFile": True, "reportLanguage": "en", "reportName": name}}},
    }
    if history is not None:
        static.update(historyPath=str(history), appendHistory=True)
    envs = ",\n".join(
        f"    {json.dumps(env_id(c))}: {{ name: {json.dumps(c.replace('-', ' '))}, "
        f"matcher: ({{ labels }}) => labels.some((l) => l.name === 'cell' && l.value === {json.dumps(c)}) }}"
        for c in cells
    )
    # JSON is a JavaScript expression; only the matchers need to be functions
    return f"export default {{\n  ...{json.dumps(static)},\n  environments: {{\n{envs}\n  }},\n}};\n"


def generate(results_dir: Path, out_dir: Path, cells: list[str], *, history: Path | None, name: str) -> Path:
    cli = allure_cli()
    out_dir = out_dir.absolute()
    with tempfile.TemporaryDirectory(prefix="hami-allure-") as tmp:
        rc = Path(tmp) / "allurerc.mjs"
        rc.write_text(config_text(cells, out_dir, history.absolute() if history else None, name))
        proc = subprocess.run(
            ["node", str(cli), "generate", str(results_dir), "--config", str(rc), "--output", str(out_dir)],
            capture_output=True,
            text=True,
            timeout=GENERATE_TIMEOUT_S,
            env={**os.environ, "NO_COLOR": "1", "CI": os.environ.get("CI", "true")},
            cwd=tmp,
        )
    index = next(iter(sorted(out_dir.rglob("index.html"))), None) if out_dir.is_dir() else None
    if proc.returncode != 0 or index is None:
        raise AllureError(
            f"allure generate failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}",
            tool=True,
        )
    return index


def report_from_bundle(
    bundle: Path, out_dir: Path, *, history: Path | None = None, keep_results: Path | None = None
) -> Path:
    """Generate the report of ``bundle`` into ``out_dir``; returns its ``index.html``."""
    bundle = Path(bundle)
    if not (bundle / "run.json").is_file():
        raise AllureError(f"{bundle}: not a bundle (no run.json)")
    with tempfile.TemporaryDirectory(prefix="hami-allure-results-") as tmp:
        results = Path(keep_results) if keep_results else Path(tmp) / "allure-results"
        cells = write_results(bundle, results)
        if history is not None:
            Path(history).parent.mkdir(parents=True, exist_ok=True)
        return generate(results, Path(out_dir), cells, history=history, name="HAMi conformance")


def main(argv: list[str] | None = None) -> int:
    """``python -m reports.allure_report install``: fetch the pinned Allure 3 into the cache."""
    import sys

    args = argv if argv is not None else sys.argv[1:]
    if args != ["install"]:
        print("usage: python -m reports.allure_report install", file=sys.stderr)
        return 4
    try:
        print(allure_cli())
    except AllureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 5
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
