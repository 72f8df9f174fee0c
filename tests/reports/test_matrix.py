"""``matrix merge``: the cells' bundles become one signed, verifiable matrix bundle; bad input
(a bundle that does not verify, another profile version, a cell twice) names the bundle and
writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import cli
from reports import bundle, matrix
from reports.model import CaseResult, Environment, RunMetadata
from reports.runio import RunWriter
from reports.verify import verify

COMMIT = "b" * 40
RULES = [("REG-ANNOT-1", "registration"), ("SCHED-FIT-1", "scheduling"), ("ENF-MEM-1", "enforcement")]


def cell_bundle(
    root: Path,
    minor: str,
    key: Path,
    *,
    fail: dict[str, str] | None = None,
    profile_version: str = "1.3.0",
    sensitivity: bool = False,
) -> Path:
    """A finished run of one nvidia cell, built into a signed bundle under ``root/<minor>/bundle``."""
    fail = fail or {}
    run_dir = root / minor / "run"
    meta = RunMetadata(
        run_id=f"run-{minor}",
        project_commit=COMMIT,
        started=f"2026-12-01T10:0{minor[-1]}:00Z",
        tool_version="0.1.0",
        backend="testbed",
        hami_namespace="hami-system",
        profile="nvidia",
        profile_version=profile_version,
        required_rules=[r for r, _ in RULES],
    )
    env = Environment(server_version={"gitVersion": f"v{minor}.2", "major": "1", "minor": minor[2:]})
    writer = RunWriter(run_dir, meta, env)
    (run_dir / "probe.json").write_text('{"allocated_mib": 3001}\n')
    for rule, cap in RULES:
        failed = rule in fail
        writer.append(
            CaseResult(
                vendor="nvidia",
                minor=minor,
                capability=cap,
                case_id=f"conformance/suites/test_{cap}.py::test_{rule.lower()}[nvidia-{minor}]",
                rule_id=rule,
                rule_text=f"{rule} holds",
                requirement="required",
                outcome="failed" if failed else "passed",
                duration_s=1.0,
                message=f"[{rule}] {fail[rule]}" if failed else "",
                attachments=["probe.json"] if failed else [],
            )
        )
    writer.finalise(f"2026-12-01T11:0{minor[-1]}:00Z")
    doc = None
    if sensitivity:
        doc = {
            "commit": COMMIT,
            "faults": 2,
            "caught": 1,
            "sensitivity": 0.5,
            "rows": [
                {
                    "fault": f,
                    "component": "scheduler",
                    "expected_rules": ["SCHED-FIT-1"],
                    "failed_cases": [],
                    "verdict": v,
                    "caught_by_expected_rule": c,
                    "reason": "",
                }
                for f, v, c in (("f1", "FAILED", True), ("f2", "PASSED", False))
            ],
        }
    return bundle.build(run_dir, root / minor / "bundle", signing_key=key, sensitivity=doc)


@pytest.fixture
def cells(tmp_path: Path, keypair: tuple[Path, Path]) -> list[Path]:
    key = keypair[0]
    return [
        cell_bundle(tmp_path / "cells", "1.33", key, sensitivity=True),
        cell_bundle(
            tmp_path / "cells", "1.34", key, fail={"ENF-MEM-1": f"3001 MiB allowed {matrix.FLAKY_NOTE}"}
        ),
        cell_bundle(
            tmp_path / "cells",
            "1.35",
            key,
            fail={"ENF-MEM-1": f"3001 MiB allowed {matrix.STABLE_NOTE}", "SCHED-FIT-1": "no node fits"},
        ),
    ]


def test_merge_is_a_signed_bundle_that_verifies(
    cells: list[Path], tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    out = matrix.merge(cells, tmp_path / "matrix", signing_key=keypair[0], public_key=keypair[1])
    result = verify(out, public_key=keypair[1])
    assert result.ok, result.report()
    assert result.signed and result.verdict == "FAILED"
    statement = json.loads((out / "statement.intoto.json").read_text())
    subjects = {s["name"] for s in statement["subject"]}
    assert {"matrix.json", "matrix.html", "matrix.svg", "summary.html", "results.json"} <= subjects
    # tampering with the matrix view is caught like any artifact
    (out / "matrix.json").write_text("{}")
    assert not verify(out, public_key=keypair[1]).ok


def test_matrix_document_rates_failures_flaky_and_sensitivity(cells: list[Path], tmp_path: Path) -> None:
    out = matrix.merge(cells, tmp_path / "matrix")
    doc = json.loads((out / "matrix.json").read_text())
    assert [(c["minor"], c["verdict"]) for c in doc["cells"]] == [
        ("1.33", "PASSED"),
        ("1.34", "FAILED"),
        ("1.35", "FAILED"),
    ]
    assert doc["verdict"] == doc["worstCellVerdict"] == "FAILED"
    rules = {r["rule"]: r for r in doc["rules"]}
    assert (rules["REG-ANNOT-1"]["cellsPassed"], rules["REG-ANNOT-1"]["passRate"]) == (3, 1.0)
    assert (rules["ENF-MEM-1"]["cellsPassed"], rules["ENF-MEM-1"]["cellsDecided"]) == (1, 3)
    assert rules["ENF-MEM-1"]["failedIn"] == ["nvidia 1.34", "nvidia 1.35"]
    assert rules["ENF-MEM-1"]["flakyIn"] == ["nvidia 1.34"] and rules["SCHED-FIT-1"]["passRate"] == 0.6667
    enf = doc["failuresByRule"]["ENF-MEM-1"]
    assert [(f["cell"], f["flaky"], f["reproduced"]) for f in enf] == [
        ("nvidia 1.34", True, False),
        ("nvidia 1.35", False, True),
    ]
    assert all(f["attachments"] and (out / f["attachments"][0]).is_file() for f in enf)
    assert len(doc["flakyCases"]) == 1 and "1.34" in doc["flakyCases"][0]
    sens = {c["minor"]: c["sensitivity"] for c in doc["cells"]}
    assert sens["1.33"]["caught"] == 1 and sens["1.34"] is None
    # the flaky case is counted failed everywhere, never passed
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["failed"] == 3 and results["summary"]["passed"] == 6


def test_heat_map_is_in_the_svg_and_both_html_views(cells: list[Path], tmp_path: Path) -> None:
    out = matrix.merge(cells, tmp_path / "matrix")
    svg = (out / "matrix.svg").read_text()
    for minor in ("1.33", "1.34", "1.35"):
        assert f">{minor}</text>" in svg
    for page in ("summary.html", "matrix.html"):
        html = (out / page).read_text()
        assert "<svg" in html and ">1.35</text>" in html
    html = (out / "matrix.html").read_text()
    assert "FLAKY" in html and "1/3 (33%)" in html and "1/2 (50%)" in html


def _nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "matrix").exists() and not list(tmp_path.glob(".matrix*"))


def test_a_bundle_that_does_not_verify_is_named(cells: list[Path], tmp_path: Path) -> None:
    (cells[1] / "summary.md").write_text("tampered")
    with pytest.raises(
        matrix.MatrixError, match=rf"{cells[1]}: does not verify: summary.md: sha256 mismatch"
    ):
        matrix.merge(cells, tmp_path / "matrix")
    assert _nothing_written(tmp_path)


def test_a_signature_by_another_key_is_refused(
    cells: list[Path], tmp_path: Path, other_keypair: tuple[Path, Path]
) -> None:
    with pytest.raises(
        matrix.MatrixError, match=rf"{cells[0]}: does not verify: .*signature does not verify"
    ):
        matrix.merge(cells, tmp_path / "matrix", public_key=other_keypair[1])
    assert _nothing_written(tmp_path)


def test_another_profile_version_is_named(
    cells: list[Path], tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    other = cell_bundle(tmp_path / "other", "1.32", keypair[0], profile_version="1.2.0")
    with pytest.raises(matrix.MatrixError, match=rf"{other}: profile nvidia 1.2.0 differs from nvidia 1.3.0"):
        matrix.merge([*cells, other], tmp_path / "matrix")
    assert _nothing_written(tmp_path)


def test_the_same_cell_twice_is_named(cells: list[Path], tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    again = cell_bundle(tmp_path / "again", "1.34", keypair[0])
    with pytest.raises(matrix.MatrixError, match=rf"{again}: cell nvidia 1.34 is also in {cells[1]}"):
        matrix.merge([*cells, again], tmp_path / "matrix")
    assert _nothing_written(tmp_path)


def test_cli_merge_and_bad_input_exit_codes(
    cells: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["matrix", "merge", *map(str, cells), "-o", str(tmp_path / "m1")])
    assert code == 0 and "matrix bundle written" in capsys.readouterr().out
    assert cli.main(["verify", str(tmp_path / "m1")]) == 0
    code = cli.main(["matrix", "merge", str(cells[0]), str(cells[0]), "-o", str(tmp_path / "m2")])
    err = capsys.readouterr().err
    assert code == 4 and "is also in" in err and "no matrix bundle was written" in err
    assert not (tmp_path / "m2").exists()
    code = cli.main(["matrix", "merge", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m3")])
    assert code == 4 and "nowhere: does not verify" in capsys.readouterr().err
