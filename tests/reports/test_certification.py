"""Certificates that cannot overstate: one decision for the verdict, INCOMPLETE for filtered or
interrupted runs, the system under test on every view, and the self-test's sensitivity carried,
covered and checked."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from reports import bundle, manifest
from reports import sensitivity as sens
from reports.bundle import STATEMENT
from reports.model import CaseResult, Environment, Run, RunInputError, RunMetadata
from reports.summary import EXIT_CODES, decide, worst
from reports.verify import verify

COMMIT = "c0ffee" + "0" * 34
REQUIRED = ["ENF-CORE-1", "MET-MON-1", "SCHED-FIT-1"]


def case(rule: str, outcome: str = "passed", requirement: str = "required", n: int = 0) -> CaseResult:
    return CaseResult(
        vendor="nvidia", minor="1.33", capability="scheduling", case_id=f"test_{rule.lower()}[{n}]",
        rule_id=rule, rule_text=f"{rule} holds", requirement=requirement, outcome=outcome,
        message="could not apply: x" if outcome == "unknown" else "",
    )


def make_run(cases: list[CaseResult], *, finished: bool = True, selection: dict[str, Any] | None = None,
             required: list[str] | None = REQUIRED, sut: dict[str, Any] | None = None) -> Run:
    meta = RunMetadata(
        run_id="r1", project_commit=COMMIT, started="2026-12-01T00:00:00Z",
        finished="2026-12-01T00:10:00Z" if finished else None, tool_version="0.1.0", backend="testbed",
        hami_namespace="hami-system", profile="nvidia", profile_version="1.1.0", required_rules=required,
        selection=selection or {}, system_under_test=sut or {},
    )
    return Run(meta, Environment(), cases)


ALL_PASS = [case(r) for r in REQUIRED] + [case("ADM-OPT-1", requirement="optional")]


def test_every_required_rule_passed_is_passed() -> None:
    d = decide(make_run(ALL_PASS))
    assert d.verdict == "PASSED" and d.exit_code == 0 and d.not_run == [] and d.failed_required == []


@pytest.mark.parametrize(
    ("cases", "kwargs", "verdict", "reason"),
    [
        # a required rule failed: FAILED, even when the run was also filtered
        ([*ALL_PASS[:2], case("SCHED-FIT-1", "failed")], {}, "FAILED",
         "required rule(s) failed: SCHED-FIT-1"),
        ([case("SCHED-FIT-1", "failed")], {"selection": {"filtered": True}}, "FAILED", "SCHED-FIT-1"),
        # filtered to one case (-k): never PASSED; what did not run is listed
        ([case("SCHED-FIT-1")], {"selection": {"filtered": True, "reasons": ["-k 'fit'"]}}, "INCOMPLETE",
         "2 required rule(s) did not run: ENF-CORE-1, MET-MON-1"),
        # filtered although every required rule ran (an optional case was deselected)
        (ALL_PASS, {"selection": {"filtered": True, "reasons": ["1 case(s) deselected"]}}, "INCOMPLETE",
         "the cases were filtered: 1 case(s) deselected"),
        # interrupted, unfinished
        (ALL_PASS, {"selection": {"interrupted": True, "interruptedBy": "stopped early: -x"}}, "INCOMPLETE",
         "interrupted (stopped early: -x)"),
        (ALL_PASS, {"finished": False}, "INCOMPLETE", "the run did not finish"),
        # a required case skipped (a parametrisation did not run) or missing
        ([*ALL_PASS, case("SCHED-FIT-1", "skipped", n=1)], {}, "INCOMPLETE", "did not run: SCHED-FIT-1"),
        ([], {}, "INCOMPLETE", "no case ran"),
        # short of proof but complete
        ([*ALL_PASS, case("ADM-OPT-2", "failed", "optional")], {}, "WARNED", "ADM-OPT-2 failed"),
        ([*ALL_PASS[:2], case("SCHED-FIT-1", "unknown")], {}, "WARNED", "SCHED-FIT-1 unknown"),
        # the profile said not-applicable: skipped cases of it do not matter
        ([*ALL_PASS, case("ENF-X-1", "skipped", "not-applicable")], {}, "PASSED", "every required rule"),
    ],
)
def test_decision(cases: list[CaseResult], kwargs: dict[str, Any], verdict: str, reason: str) -> None:
    d = decide(make_run(cases, **kwargs))
    assert d.verdict == verdict, d
    assert reason in "; ".join(d.reasons), d.reasons
    assert d.exit_code == EXIT_CODES[verdict]


def test_old_runs_without_required_rules_use_the_cases_requirements() -> None:
    assert decide(make_run([case("SCHED-FIT-1")], required=None)).verdict == "PASSED"


def test_exit_codes_and_worst() -> None:
    assert EXIT_CODES == {"PASSED": 0, "FAILED": 1, "INCOMPLETE": 2, "WARNED": 3}
    assert worst(["PASSED", "WARNED", "INCOMPLETE"]) == "INCOMPLETE"
    assert worst(["PASSED", "FAILED", "INCOMPLETE"]) == "FAILED"
    assert worst([]) == "INCOMPLETE"


# --- the bundle: one verdict everywhere ------------------------------------------------------------


def _reseal(root: Path) -> None:
    """What a forger who rewrote artifacts would do: fix the statement subjects and the manifest."""
    stmt = json.loads((root / STATEMENT).read_text())
    files = [f for f in manifest.walk(root)[0] if f not in (STATEMENT, manifest.MANIFEST)]
    stmt["subject"] = [
        {"name": f, "digest": {"sha256": manifest.sha256_file(root / f)}} for f in sorted(files)
    ]
    (root / STATEMENT).write_text(json.dumps(stmt))
    entries = {f: manifest.sha256_file(root / f) for f in manifest.walk(root)[0] if f != manifest.MANIFEST}
    (root / manifest.MANIFEST).write_text(manifest.render(entries))


def test_a_filtered_run_is_incomplete_everywhere(tmp_path: Path) -> None:
    run = make_run([case("SCHED-FIT-1")], selection={"filtered": True, "reasons": ["-k 'fit'"]})
    out = bundle.build(run, tmp_path / "b")
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "INCOMPLETE" and results["decision"]["exitCode"] == 2
    assert results["decision"]["requiredRulesNotRun"] == ["ENF-CORE-1", "MET-MON-1"]
    md = (out / "summary.md").read_text()
    assert "**Verdict: INCOMPLETE**" in md and "## Required rules that did not run" in md
    assert "- `ENF-CORE-1`" in md and "-k 'fit'" in md
    assert "INCOMPLETE" in (out / "summary.html").read_text()
    assert json.loads((out / STATEMENT).read_text())["predicate"]["result"] == "INCOMPLETE"
    result = verify(out)
    assert result.ok and result.verdict == "INCOMPLETE", result.report()
    # a forger who upgrades results.json, the statement and summary.md to PASSED, and reseals the
    # manifest, is caught by the verdict recomputed from run.json
    results["verdict"] = "PASSED"
    (out / "results.json").write_text(json.dumps(results))
    stmt = json.loads((out / STATEMENT).read_text())
    stmt["predicate"]["result"] = "PASSED"
    (out / STATEMENT).write_text(json.dumps(stmt))
    (out / "summary.md").write_text(md.replace("**Verdict: INCOMPLETE**", "**Verdict: PASSED**"))
    _reseal(out)
    forged = verify(out)
    assert not forged.ok
    assert any("verdict PASSED differs from INCOMPLETE recomputed from run.json" in e for e in forged.errors)
    assert any("summary.md: does not state the verdict INCOMPLETE" in e for e in forged.errors)


SUT = {"commit": COMMIT, "dirty": True, "diffSha256": "ab" * 32, "dirtyFiles": ["hami_stack/x.py"],
       "chartValuesSha256": "cd" * 32, "imageDigests": {"*/hami:*": "ef" * 32}, "shimSha256": "12" * 32,
       "runningImages": {"reg/hami:v1": "docker-pullable://reg/hami@sha256:" + "34" * 32, "reg/x:1": ""}}


def test_the_system_under_test_is_named(tmp_path: Path) -> None:
    out = bundle.build(make_run(ALL_PASS, sut=SUT), tmp_path / "b")
    md = (out / "summary.md").read_text()
    assert f"MODIFIED: uncommitted changes, diff sha256 {'ab' * 32}" in md and "hami_stack/x.py" in md
    assert f"Chart values sha256 (effective)**: {'cd' * 32}" in md and f"sha256 {'ef' * 32}" in md
    assert f"Shim libvgpu.so sha256**: {'12' * 32}" in md
    assert f"- **Image \\*/hami:\\***: sha256 {'ef' * 32}" in md  # a pattern's stars do not end the bold
    assert "MODIFIED" in (out / "summary.html").read_text()
    assert json.loads((out / "results.json").read_text())["run"]["systemUnderTest"] == SUT
    assert json.loads((out / "environment.json").read_text())["systemUnderTest"] == SUT
    config = {c["name"]: c for c in json.loads((out / STATEMENT).read_text())["predicate"]["configuration"]}
    assert config["hami-conformance"]["annotations"]["dirty"] == "true"
    assert config["hami-conformance"]["annotations"]["diffSha256"] == "ab" * 32
    assert config["chart-values"]["digest"]["sha256"] == "cd" * 32
    assert config["image/*/hami:*"]["digest"]["sha256"] == "ef" * 32
    assert config["libvgpu.so"]["digest"]["sha256"] == "12" * 32
    assert config["running-image/reg/hami:v1"]["digest"]["sha256"] == "34" * 32
    assert "running-image/reg/x:1" not in config  # no digest reported, nothing claimed
    assert "Running image reg/x:1**: (no image ID reported)" in md
    clean = bundle.build(make_run(ALL_PASS, sut={**SUT, "dirty": False, "diffSha256": ""}), tmp_path / "c")
    assert "clean (exactly the commit)" in (clean / "summary.md").read_text()


# --- sensitivity -------------------------------------------------------------------------------------


def sensitivity_doc(commit: str = COMMIT) -> dict[str, Any]:
    rows = [
        {"fault": "extender-ignores-used-memory", "component": "extender",
         "expected_rules": ["SCHED-USEDMEM-1"],
         "failed_cases": ["test_used_memory"], "verdict": "FAILED", "caught_by_expected_rule": True,
         "reason": ""},
        {"fault": "monitor-memory-zero", "component": "monitor", "expected_rules": ["MET-MON-2"],
         "failed_cases": [], "verdict": "PASSED", "caught_by_expected_rule": False,
         "reason": "no case reads the used-memory series"},
    ]
    return {"commit": commit, "faults": 2, "caught": 1, "sensitivity": 0.5, "rows": rows}


def test_sensitivity_is_written_covered_shown_and_verified(tmp_path: Path) -> None:
    doc = sensitivity_doc()
    out = bundle.build(make_run(ALL_PASS), tmp_path / "b", sensitivity=doc)
    assert json.loads((out / "sensitivity.json").read_text()) == doc
    assert "sensitivity.json" in (out / manifest.MANIFEST).read_text()
    stmt = json.loads((out / STATEMENT).read_text())
    assert "sensitivity.json" in {s["name"] for s in stmt["subject"]}
    assert any(c["name"] == "sensitivity.json" and c["annotations"]["sensitivity"] == "0.5"
               for c in stmt["predicate"]["configuration"])
    results = json.loads((out / "results.json").read_text())
    assert results["sensitivity"] == {"file": "sensitivity.json", "commit": COMMIT, "faults": 2, "caught": 1,
                                      "sensitivity": 0.5}
    md = (out / "summary.md").read_text()
    assert "Score **0.500**: 1 of 2 deliberate faults" in md
    assert "| fault | expected rules | failed cases | verdict | caught by right rule |" in md
    row = "| `monitor-memory-zero` | MET-MON-2 | - | PASSED | no: no case reads the used-memory series |"
    assert row in md
    assert "extender-ignores-used-memory" in (out / "summary.html").read_text()
    assert verify(out).ok
    # referenced but missing (removed with the manifest resealed): verify says so
    (out / "sensitivity.json").unlink()
    _reseal(out)
    broken = verify(out)
    assert any("references sensitivity.json, which is not in MANIFEST.sha256" in e for e in broken.errors)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"commit": "f" * 40}, "sensitivity.commit"),
        ({"caught": 2, "sensitivity": 1.0}, "sensitivity.caught"),  # overstated
        ({"sensitivity": 0.9}, "sensitivity.sensitivity"),
        ({"faults": 3}, "sensitivity.faults"),
        ({"rows": [{"fault": "x"}]}, "sensitivity.rows[0]"),
    ],
)
def test_a_bad_sensitivity_document_writes_nothing(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    doc = {**copy.deepcopy(sensitivity_doc()), **change}
    with pytest.raises(RunInputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        bundle.build(make_run(ALL_PASS), tmp_path / "b", sensitivity=doc)
    assert not (tmp_path / "b").exists()


def test_a_rounded_score_is_accepted() -> None:
    rows = [{**sensitivity_doc()["rows"][0], "caught_by_expected_rule": i < 4} for i in range(6)]
    doc = {"commit": COMMIT, "faults": 6, "caught": 4, "sensitivity": 0.6667, "rows": rows}
    assert sens.validate(doc)["sensitivity"] == 0.6667
    with pytest.raises(RunInputError, match=r"caught/faults is 0\.666667"):
        sens.validate({**doc, "sensitivity": 0.7})


def test_sensitivity_file_loading(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(sensitivity_doc()))
    assert sens.load(path, commit=COMMIT)["caught"] == 1
    with pytest.raises(RunInputError, match="another commit than this run"):
        sens.load(path, commit="1" * 40)
    path.write_text("{not json")
    with pytest.raises(RunInputError, match="not valid JSON"):
        sens.load(path)


def test_two_vendors_in_one_cell_need_only_their_own_rules() -> None:
    """--vendor nvidia,ascend: the run's required rules are both profiles'; a cell is not short of the
    other vendor's rules, but a required rule no vendor ran is still missing."""
    import dataclasses

    nv = [case(r) for r in REQUIRED]
    asc = [dataclasses.replace(case(r), vendor="ascend") for r in ("ASC-ENF-MEM-1", "ASC-REG-1")]
    both = [*REQUIRED, "ASC-ENF-MEM-1", "ASC-REG-1"]
    assert decide(make_run([*nv, *asc], required=both)).verdict == "PASSED"
    d = decide(make_run([*nv, asc[0]], required=both))
    assert d.verdict == "INCOMPLETE" and d.not_run == ["ASC-REG-1 (ascend 1.33)", "ASC-REG-1 (nvidia 1.33)"]
