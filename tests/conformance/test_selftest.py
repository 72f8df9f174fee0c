"""``hami-conformance selftest``: input checked before anything runs, cases found by rule, the verdict
of each fault judged by its expected rules; and (slow) a representative subset of the catalogue, one
fault per component, is caught on the testbed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import selftest
from conformance.backends import stackfaults
from reports.matrix import STABLE_NOTE
from testbed.clients import helm_path, helm_skip_reason

REPO = Path(__file__).resolve().parents[2]

# one fault per component (webhook, extender, device plugin, shim, monitor, chart), each caught by a
# required rule of the NVIDIA profile
SUBSET = [
    "webhook-allows-privileged",
    "scheduler-gpu-policy-swapped",
    "plugin-memory-limit-skew",
    "shim-cuda-total-unclamped",
    "monitor-limit-halved",
    "chart-rbac-no-node-patch",
]


def _catalogue() -> list[dict]:
    return stackfaults.catalogue()


def test_unknown_and_foreign_faults_are_refused() -> None:
    with pytest.raises(selftest.SelftestInputError) as e:
        selftest.select_faults(
            _catalogue(), ["shim-limiter-of", "ascend-webhook-skip-scheduler-name"], "nvidia"
        )
    text = str(e.value)
    assert 'unknown fault "shim-limiter-of" (did you mean shim-limiter-off' in text
    assert 'fault "ascend-webhook-skip-scheduler-name" is for vendor ascend, not nvidia' in text
    everything = selftest.select_faults(_catalogue(), None, "nvidia")
    assert len(everything) >= 40 and all(f["vendor"] == "nvidia" for f in everything)
    assert [f["name"] for f in selftest.select_faults(_catalogue(), SUBSET, "nvidia")] == SUBSET


def test_bad_input_exits_4_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "selftest", "--faults", "no-such-fault", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert 'unknown fault "no-such-fault"' in proc.stderr
    assert not out.exists()  # no bundle, nothing provisioned


@pytest.mark.helm
@pytest.mark.skipif(helm_path() is None, reason=helm_skip_reason())
def test_a_fault_the_installed_chart_does_not_deliver_is_refused(tmp_path: Path, monkeypatch) -> None:
    unrouted = {
        "name": "ghost-not-in-this-chart",
        "component": "webhook",
        "vendor": "nvidia",
        "kind": "runtime",
        "description": "x",
        "expected_rules": ["ADM-SCHED-1"],
        "dirty": False,
        "uncatchable": "",
    }
    known = _catalogue()
    monkeypatch.setattr(stackfaults, "catalogue", lambda: [*known, unrouted])
    assert (
        stackfaults.chart_unknown(["webhook-allows-privileged", "chart-rbac-no-node-patch"], "1.33") == []
    )
    from conformance.cli import main

    out = tmp_path / "out"
    assert main(["selftest", "--faults", "ghost-not-in-this-chart", "--out", str(out)]) == 4
    assert not out.exists()


def test_cases_are_found_by_rule() -> None:
    cases = selftest.rule_cases()
    assert "conformance/suites/test_admission.py::test_scheduler_name_set" in cases["ADM-SCHED-1"]
    assert all(n.startswith("conformance/suites/test_") and "::" in n for ids in cases.values() for n in ids)


def test_every_nvidia_fault_can_be_caught_by_a_required_rule_with_a_case() -> None:
    """No fault survives for lack of a case: each names at least one rule that the nvidia profile
    requires and that some case checks (which rule really catches it is the self-test's question)."""
    import yaml

    profile = yaml.safe_load((REPO / "conformance" / "profiles" / "nvidia.yaml").read_text())
    required = {r for r, req in profile["rules"].items() if req == "required"}
    cases = selftest.rule_cases()
    for f in selftest.select_faults(_catalogue(), None, "nvidia"):
        assert not f["uncatchable"], f
        usable = [r for r in f["expected_rules"] if r in required and cases.get(r)]
        assert usable, f"{f['name']}: no required rule with a case among {f['expected_rules']}"


def _row(*rules: str) -> selftest.Row:
    return selftest.Row("f", "webhook", list(rules))


def test_judge_caught_only_by_a_required_expected_rule() -> None:
    def case(rule: str, outcome: str, requirement: str = "required") -> dict:
        return {"ruleId": rule, "name": "t", "outcome": outcome, "requirement": requirement}

    row = _row("ADM-SCHED-1")
    selftest.judge(row, {"cases": [case("ADM-SCHED-1", "failed"), case("ADM-SCHED-2", "passed")]})
    assert (row.verdict, row.caught_by_expected_rule, row.failed_cases) == ("FAILED", True, ["ADM-SCHED-1 t"])
    row = _row("ADM-SCHED-1")
    selftest.judge(row, {"cases": [case("ADM-SCHED-1", "passed"), case("ADM-DENY-1", "failed")]})
    assert (
        row.verdict == "FAILED"
        and not row.caught_by_expected_rule
        and "other rules (ADM-DENY-1)" in row.reason
    )
    row = _row("MET-MON-1")
    selftest.judge(row, {"cases": [case("MET-MON-1", "failed", "optional")]})
    assert row.verdict == "WARNED" and not row.caught_by_expected_rule and "optional" in row.reason
    row = _row("ADM-SCHED-1")
    selftest.judge(row, {"cases": [case("ADM-SCHED-1", "passed")]})
    assert row.verdict == "PASSED" and row.reason.startswith("survived")
    # a failure of the expected rule that passed when re-run once does not count as a catch
    row = _row("ADM-SCHED-1")
    flaky = {**case("ADM-SCHED-1", "failed"), "message": f"AssertionError: timed out {selftest.FLAKY}"}
    selftest.judge(row, {"cases": [flaky]})
    assert row.verdict == "FAILED" and not row.caught_by_expected_rule
    assert "failed once, passed when re-run" in row.reason
    stable = {**case("ADM-SCHED-1", "failed"), "message": f"AssertionError: denied {STABLE_NOTE}"}
    row = _row("ADM-SCHED-1")
    selftest.judge(row, {"cases": [stable]})
    assert row.caught_by_expected_rule


def test_sensitivity_counts_every_row() -> None:
    rows = [_row("A-1"), _row("B-1")]
    rows[0].caught_by_expected_rule = True
    doc = selftest.sensitivity_doc(rows, "abc", "1.33", 0)
    assert (doc["faults"], doc["caught"], doc["sensitivity"]) == (2, 1, 0.5)
    from reports.sensitivity import validate

    validate(doc, commit="abc")


@pytest.mark.helm
@pytest.mark.hardware
@pytest.mark.slow
@pytest.mark.skipif(helm_path() is None, reason=helm_skip_reason())
def test_representative_faults_are_all_caught(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "selftest",
            "--k8s",
            "1.33",
            "--out",
            str(out),
            "--quick",  # the clean baseline covers only these faults' cases: minutes, not a certificate
            "--faults",
            *SUBSET,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    docs = list(out.glob("*/1.33/selftest.json"))
    assert docs, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(docs[0].read_text())
    survivors = {r["fault"]: r["reason"] for r in doc["rows"] if not r["caught_by_expected_rule"]}
    assert survivors == {}, survivors
    # (whether the clean stack itself passes every case is test_end_to_end's question)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert doc["faults"] == len(SUBSET) and doc["sensitivity"] == 1.0
    bundle = docs[0].parent / "clean" / "bundle"
    carried = json.loads((bundle / "sensitivity.json").read_text())
    assert carried["caught"] == len(SUBSET)
    verify = subprocess.run(
        [sys.executable, "-m", "conformance", "verify", str(bundle)], cwd=REPO, capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
