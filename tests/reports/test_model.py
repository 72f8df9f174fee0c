"""The run contract: validation messages, the streaming writer, crash tolerance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reports.model import CaseResult, Run, RunInputError
from reports.runio import CASES_FILE, HEADER_FILE, RUN_FILE, load_run, read_cases
from tests.reports.helpers import CASES, write_run


def _case(**over: Any) -> dict[str, Any]:
    base = {
        "vendor": "nvidia",
        "minor": "1.33",
        "capability": "scheduling",
        "caseId": "test_fit",
        "ruleId": "SCHED-FIT-1",
        "ruleText": "a pod that fits is bound",
        "requirement": "required",
        "outcome": "passed",
        "durationSeconds": 0.5,
    }
    base.update(over)
    return base


def test_round_trip_preserves_every_field(run_dir: Path) -> None:
    run = load_run(run_dir)
    again = Run.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run
    assert len(run.cases) == len(CASES)
    assert run.metadata.complete
    assert run.environment.kubelet_versions == {"node-a": "v1.33.0"}
    assert run.minors == ["1.18", "1.29", "1.33"]  # numeric order, not string order
    assert run.vendors == ["nvidia", "ascend", "hygon"]


@pytest.mark.parametrize(
    ("override", "field", "words"),
    [
        ({"outcome": "passd"}, "outcome", 'Unsupported value: "passd"'),
        ({"capability": "magic"}, "capability", 'Unsupported value: "magic"'),
        ({"vendor": "nvida"}, "vendor", 'Unsupported value: "nvida"'),
        ({"requirement": "must"}, "requirement", 'Unsupported value: "must"'),
        ({"minor": "33"}, "minor", 'must be a Kubernetes minor like "1.33"'),
        ({"ruleId": "sched fit"}, "ruleId", 'must look like "SCHED-FIT-1"'),
        ({"durationSeconds": -1}, "durationSeconds", "greater than or equal to 0"),
        ({"durationSeconds": "1"}, "durationSeconds", "must be a number"),
        ({"outcome": "unknown", "message": " "}, "message", "must say why the case could not apply"),
        ({"aiRequirements": ["dra_support"]}, "aiRequirements[0]", 'Unsupported value: "dra_support"'),
        ({"attachments": "x.json"}, "attachments", "must be a list"),
    ],
)
def test_case_validation_names_the_field(override: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(RunInputError) as err:
        CaseResult.from_dict(_case(**override))
    assert err.value.field == field
    assert words in str(err.value)


def test_missing_required_field_is_named() -> None:
    raw = _case()
    del raw["ruleText"]
    with pytest.raises(RunInputError, match=r"^ruleText: Required value$"):
        CaseResult.from_dict(raw)


def test_error_in_run_json_names_file_and_path(run_dir: Path) -> None:
    doc = json.loads((run_dir / RUN_FILE).read_text())
    doc["cases"][3]["outcome"] = "green"
    (run_dir / RUN_FILE).write_text(json.dumps(doc))
    with pytest.raises(RunInputError) as err:
        load_run(run_dir)
    assert err.value.field == "cases[3].outcome"
    assert str(run_dir / RUN_FILE) in str(err.value)


def test_metadata_errors_are_prefixed(run_dir: Path) -> None:
    doc = json.loads((run_dir / RUN_FILE).read_text())
    doc["metadata"]["backend"] = "kind"
    doc["metadata"]["started"] = "yesterday"
    (run_dir / RUN_FILE).write_text(json.dumps(doc))
    with pytest.raises(RunInputError, match=r"metadata\.started: Invalid value: \"yesterday\""):
        load_run(run_dir)


def test_duplicate_case_is_rejected() -> None:
    doc = {
        "apiVersion": "hami-conformance/run/v1",
        "metadata": {
            "runId": "r",
            "projectCommit": "c",
            "started": "2026-01-01T00:00:00Z",
            "toolVersion": "0",
            "backend": "k3s",
            "hamiNamespace": "kube-system",
        },
        "cases": [_case(), _case(outcome="failed")],
    }
    with pytest.raises(RunInputError, match=r'cases\[1\]: Duplicate value: "nvidia/1.33/test_fit"'):
        Run.from_dict(doc)


def test_invalid_json_reports_position(tmp_path: Path) -> None:
    (tmp_path / RUN_FILE).write_text('{"apiVersion": ')
    with pytest.raises(RunInputError, match="not valid JSON"):
        load_run(tmp_path)


def test_missing_run_json(tmp_path: Path) -> None:
    with pytest.raises(RunInputError, match=r"run\.json: not found"):
        load_run(tmp_path)


def test_unfinished_run_is_refused_unless_allowed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, finalise=False)
    assert not (run_dir / RUN_FILE).exists()
    with pytest.raises(RunInputError, match="never finalised"):
        load_run(run_dir)
    run = load_run(run_dir, allow_unfinished=True)
    assert len(run.cases) == len(CASES)
    assert not run.metadata.complete


def test_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, finalise=False)
    cases_file = run_dir / CASES_FILE
    good = cases_file.read_bytes()
    cases_file.write_bytes(good + b'{"vendor": "nvid')  # crash in the middle of a write
    assert len(read_cases(cases_file)) == len(CASES)
    cases_file.write_bytes(b"{oops\n" + good)
    with pytest.raises(RunInputError, match="line 1"):
        read_cases(cases_file)


def test_writer_refuses_invalid_case_at_append(tmp_path: Path) -> None:
    writer = write_run(tmp_path / "run", finalise=False)
    bad = CaseResult.from_dict(_case())
    bad.outcome = "flaky"
    with pytest.raises(RunInputError, match="outcome"):
        writer.append(bad)
    assert b"flaky" not in (tmp_path / "run" / CASES_FILE).read_bytes()


def test_finalise_writes_complete_run_and_header_stays(run_dir: Path) -> None:
    doc = json.loads((run_dir / RUN_FILE).read_text())
    assert doc["metadata"]["finished"] == "2026-11-28T10:05:00Z"
    assert len(doc["cases"]) == len(CASES)
    assert (run_dir / HEADER_FILE).exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temp files left
