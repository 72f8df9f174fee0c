"""The bundle: what it contains, that its views agree, and that bad input leaves nothing behind."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from reports import allure, attest, bundle
from reports.bundle import ENVELOPE, PUBLIC_KEY, STATEMENT, BundleError
from reports.manifest import MANIFEST, parse, sha256_file
from reports.model import RunInputError
from reports.runio import RUN_FILE, load_run
from tests.reports.helpers import ATTACHED_CASE, write_run


@pytest.fixture
def built(run_dir: Path, tmp_path: Path, keypair: tuple[Path, Path]) -> Path:
    return bundle.build(run_dir, tmp_path / "bundle", signing_key=keypair[0])


def test_results_json_summary_and_cases(built: Path) -> None:
    results = json.loads((built / "results.json").read_text())
    assert results["summary"] == {"passed": 7, "failed": 1, "skipped": 1, "unknown": 1, "total": 10}
    assert results["verdict"] == "FAILED"  # a required case failed
    failed = [c for c in results["cases"] if c["outcome"] == "failed"]
    assert [(c["vendor"], c["minor"], c["capability"], c["ruleId"]) for c in failed] == [
        ("nvidia", "1.33", "enforcement", "ENF-MEM-1")
    ]
    assert {"vendor", "minor", "capability", "ruleId", "outcome", "durationSeconds"} <= set(failed[0])
    cell = next(m for m in results["matrix"] if (m["vendor"], m["minor"]) == ("nvidia", "1.18"))
    assert (cell["passed"], cell["skipped"]) == (2, 1)


def test_attachment_is_copied_and_linked(built: Path, run_dir: Path) -> None:
    results = json.loads((built / "results.json").read_text())
    case = next(c for c in results["cases"] if c["caseId"] == ATTACHED_CASE)
    assert len(case["attachments"]) == 1
    rel = case["attachments"][0]
    assert rel.startswith("attachments/nvidia/1.33/") and rel.endswith("/mem.json")
    assert (built / rel).read_bytes() == (run_dir / "probe" / "mem.json").read_bytes()
    assert f'href="{rel}"' in (built / "summary.html").read_text()


def test_summaries_show_matrix_failures_and_environment(built: Path) -> None:
    md = (built / "summary.md").read_text()
    assert "| vendor | 1.18 | 1.29 | 1.33 |" in md
    assert "| nvidia | 2/0/0/1 | – | 3/1/0/0 |" in md
    assert "| ascend | – | – | 1/0/1/0 |" in md
    assert "`ENF-MEM-1`" in md and "3001 MiB succeeded" in md
    assert "no enforcement emulation for ascend" in md
    assert "v1.33.0" in md and "550.54.15" in md
    html = (built / "summary.html").read_text()
    assert '<td class="failed">3/1/0/0</td>' in html
    assert "<svg" in html and "nvidia 1.33: 3 passed, 1 failed, 0 unknown, 0 skipped" in html
    assert "ENF-MEM-1" in html and "FAILED" in html
    svg = (built / "matrix.svg").read_text()
    assert svg.count("<rect") >= 9 and "#d1242f" in svg  # the failing cell is red
    ElementTree.fromstring(svg)  # well-formed, so browsers and viewers render it


def test_empty_run_builds_and_claims_nothing(run_dir: Path, tmp_path: Path) -> None:
    run = load_run(run_dir)
    run.cases = []
    out = bundle.build(run, tmp_path / "empty")
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["total"] == 0 and results["verdict"] == "INCOMPLETE"
    doc = yaml.safe_load((out / "self-assessment.yaml").read_text())
    assert {r["status"] for section in doc["spec"].values() for r in section} == {"N/A"}
    ElementTree.fromstring((out / "matrix.svg").read_text())


def test_html_escapes_case_text(tmp_path: Path, run_dir: Path) -> None:
    doc = json.loads((run_dir / RUN_FILE).read_text())
    doc["cases"][2]["message"] = "<script>alert(1)</script>"
    (run_dir / RUN_FILE).write_text(json.dumps(doc))
    html = (bundle.build(run_dir, tmp_path / "b") / "summary.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_statement_subjects_predicate_and_manifest(built: Path) -> None:
    stmt = json.loads((built / STATEMENT).read_text())
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    pred = stmt["predicate"]
    assert pred["result"] == "FAILED"
    assert len(pred["passedTests"]) == 7
    assert pred["failedTests"] == ["nvidia/1.33/test_mem_limit[nvidia-1.33] [ENF-MEM-1]"]
    # An unknown case is neither passed nor failed; it is warned unless the profile says n/a.
    assert pred["warnedTests"] == ["ascend/1.33/test_mem_limit[ascend-1.33] [ENF-MEM-1]"]
    assert {c["name"] for c in pred["configuration"]} >= {"hami-conformance", "environment.json"}
    subjects = {s["name"]: s["digest"]["sha256"] for s in stmt["subject"]}
    entries, problems = parse((built / MANIFEST).read_text())
    assert problems == []
    assert set(entries) - set(subjects) == {STATEMENT, ENVELOPE, PUBLIC_KEY}
    assert all(entries[name] == digest for name, digest in subjects.items())
    assert subjects["summary.html"] == sha256_file(built / "summary.html")


def test_dsse_envelope_signs_the_statement(built: Path, keypair: tuple[Path, Path]) -> None:
    env = json.loads((built / ENVELOPE).read_text())
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(env["payload"]) == (built / STATEMENT).read_bytes()
    public = attest.load_public_key(keypair[1])
    assert env["signatures"][0]["keyid"] == attest.keyid(public)
    assert attest.verify_envelope(env, public)
    assert (built / PUBLIC_KEY).read_bytes() == keypair[1].read_bytes()


def test_pae_matches_the_dsse_definition() -> None:
    assert attest.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_self_assessment_statuses_and_evidence(built: Path) -> None:
    doc = yaml.safe_load((built / "self-assessment.yaml").read_text())
    assert doc["metadata"]["kubernetesVersion"] == "v1.33"
    reqs = {r["id"]: r for section in doc["spec"].values() for r in section}
    assert set(reqs) == {"gpu_sharing", "virtualized_accelerator", "secure_accelerator_access"}
    assert reqs["secure_accelerator_access"]["status"] == "Implemented"
    assert reqs["secure_accelerator_access"]["level"] == "MUST"
    assert reqs["gpu_sharing"]["status"] == "Implemented"
    assert reqs["virtualized_accelerator"]["status"] == "Partially Implemented"
    evidence = reqs["virtualized_accelerator"]["evidence"]
    assert "summary.html#ai-virtualized_accelerator" in evidence
    html = (built / "summary.html").read_text()
    for link in evidence:
        path, _, fragment = link.partition("#")
        assert (built / path).is_file()  # every link resolves inside the bundle
        assert not fragment or f'id="{fragment}"' in html
    assert any(link.startswith("attachments/") for link in evidence)


def test_build_is_deterministic(run_dir: Path, tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    a = bundle.build(run_dir, tmp_path / "a", signing_key=keypair[0])
    b = bundle.build(run_dir, tmp_path / "b", signing_key=keypair[0])
    assert (a / MANIFEST).read_text() == (b / MANIFEST).read_text()


def test_unsigned_bundle_has_no_envelope(run_dir: Path, tmp_path: Path) -> None:
    out = bundle.build(run_dir, tmp_path / "u")
    assert (out / STATEMENT).exists()
    assert not (out / ENVELOPE).exists() and not (out / PUBLIC_KEY).exists()


def test_unfinished_run_is_never_passed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, finalise=False)
    run = load_run(run_dir, allow_unfinished=True)
    run.cases = [c for c in run.cases if c.outcome == "passed"]
    out = bundle.build(run, tmp_path / "b")
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "INCOMPLETE" and results["run"]["complete"] is False
    assert "incomplete" in (out / "summary.md").read_text()


# --- bad input: a clear error and no output directory ------------------------------------------


def _assert_nothing_left(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert [p.name for p in parent.iterdir() if p.name.startswith(f".{name}")] == []


def test_missing_run_json_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunInputError, match=r"run\.json: not found"):
        bundle.build(tmp_path / "empty", tmp_path / "out")
    _assert_nothing_left(tmp_path, "out")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("outcome", "passd", 'cases[0].outcome: Unsupported value: "passd"'),
        ("capability", "telepathy", 'cases[0].capability: Unsupported value: "telepathy"'),
    ],
)
def test_invalid_case_leaves_nothing(
    run_dir: Path, tmp_path: Path, field: str, value: str, words: str
) -> None:
    doc = json.loads((run_dir / RUN_FILE).read_text())
    doc["cases"][0][field] = value
    (run_dir / RUN_FILE).write_text(json.dumps(doc))
    with pytest.raises(RunInputError) as err:
        bundle.build(run_dir, tmp_path / "deep" / "out")
    assert words in str(err.value)
    assert not (tmp_path / "deep").exists()  # not even the parent it would have created


def test_missing_attachment_leaves_nothing(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "probe" / "mem.json").unlink()
    with pytest.raises(RunInputError, match=r"attachments\[0\]: Not found"):
        bundle.build(run_dir, tmp_path / "out")
    _assert_nothing_left(tmp_path, "out")


def test_failure_while_writing_leaves_nothing(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object, **__: object) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(bundle.selfassess, "render", boom)
    with pytest.raises(OSError, match="disk full"):
        bundle.build(run_dir, tmp_path / "out")
    _assert_nothing_left(tmp_path, "out")


def test_existing_bundle_is_kept_unless_overwrite(run_dir: Path, tmp_path: Path) -> None:
    out = bundle.build(run_dir, tmp_path / "out")
    before = (out / MANIFEST).read_text()
    with pytest.raises(BundleError, match="exists"):
        bundle.build(run_dir, out)
    assert (out / MANIFEST).read_text() == before
    (out / "stray.txt").write_text("old")
    bundle.build(run_dir, out, overwrite=True)
    assert not (out / "stray.txt").exists()
    _assert_nothing_left(tmp_path, "out.old")


def test_bad_signing_key_leaves_nothing(run_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("not a key")
    with pytest.raises(attest.KeyFileError, match="not an unencrypted PEM private key"):
        bundle.build(run_dir, tmp_path / "out", signing_key=key)
    _assert_nothing_left(tmp_path, "out")


# --- Allure helpers ----------------------------------------------------------------------------


def test_allure_environment_and_categories(run_dir: Path, tmp_path: Path) -> None:
    run = load_run(run_dir)
    path = allure.write_environment(tmp_path / "allure", run.environment, run.metadata)
    lines = path.read_text().splitlines()
    assert "kubernetes.server=v1.33.0" in lines
    assert "driver.nvidia=550.54.15" in lines
    assert "devices.nvidia=1 (NVIDIA-A100)" in lines
    assert "cluster.backend=testbed" in lines
    plain = allure.write_environment(tmp_path / "plain", {"a key": "x=y\nz"})
    assert plain.read_text() == "a\\ key=x=y\\nz\n"
    cats = json.loads(allure.write_categories(tmp_path / "allure").read_text())
    unknown = next(c for c in cats if c["name"] == "Unknown (could not apply)")
    assert re.match(unknown["messageRegex"], "could not apply: no emulation")
    assert not re.match(unknown["messageRegex"], "not selected")
    # Allure takes the first match: the unknown category must precede the plain skipped one.
    skipped = next(c for c in cats if c["matchedStatuses"] == ["skipped"])
    assert cats.index(unknown) < cats.index(skipped)
