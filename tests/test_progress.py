"""Live progress of ``hami-conformance run`` (conformance.progress) and the one retry of failed cases
(conformance.retry): a real pytest session writes the events, the views read them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from conformance import cli, progress, retry

REPO = Path(__file__).resolve().parents[1]

CONFTEST = """
from conformance import progress, retry

def pytest_configure(config):
    config.addinivalue_line("markers", "rule(rule_id): conformance rule")
    if not hasattr(config, "workerinput"):  # as the plugin does: the controller reports
        config.pluginmanager.register(progress.Hooks(), "progress")
    if retry.enabled():
        config.pluginmanager.register(retry.RetryHooks(), "retry")
"""

CASES = """
import pathlib, pytest

COUNTER = pathlib.Path(__file__).with_name("attempts")

@pytest.mark.rule("DEMO-OK-1")
def test_ok():
    pass

@pytest.mark.rule("DEMO-FLAKY-1")
def test_flaky():
    n = int(COUNTER.read_text()) if COUNTER.exists() else 0
    COUNTER.write_text(str(n + 1))
    assert n >= 1, "[DEMO-FLAKY-1] first attempt fails"

@pytest.mark.rule("DEMO-BROKEN-1")
def test_broken():
    assert False, "[DEMO-BROKEN-1] always fails " + "x" * 3000

@pytest.mark.rule("DEMO-SKIP-1")
def test_unknown():
    pytest.skip("could not apply: no such device")

def test_unmarked_failure_is_not_retried():
    COUNTER.with_name("unmarked").write_text(COUNTER.with_name("unmarked").read_text() + "x"
                                              if COUNTER.with_name("unmarked").exists() else "x")
    assert False
"""


def _session(tmp_path: Path, *, retry_on: bool, xdist: bool = False) -> tuple[list[dict], ET.Element, Path]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_demo.py").write_text(CASES)
    events = tmp_path / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), progress.ENV: str(events)}
    env.pop(retry.ENV, None)
    if retry_on:
        env[retry.ENV] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--junitxml",
            str(tmp_path / "junit.xml"),
            *(["-n", "2"] if xdist else []),
            "test_demo.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # two failures
    tail = progress.Tail(events)
    return tail.read(), ET.parse(tmp_path / "junit.xml").getroot(), tmp_path


def test_a_session_reports_phases_counts_and_each_case(tmp_path: Path) -> None:
    evs, _junit, _ = _session(tmp_path, retry_on=False)
    kinds = [e["event"] for e in evs]
    assert [e["phase"] for e in evs if e["event"] == "phase"] == ["provision", "suites", "report"]
    assert next(e for e in evs if e["event"] == "collected")["total"] == 5
    ends = [e for e in evs if e["event"] == "case-end"]
    assert [e["done"] for e in ends] == [1, 2, 3, 4, 5] and ends[-1]["failures"] == 3
    by_case = {e["case"].split("::")[-1]: e["outcome"] for e in ends}
    assert by_case == {
        "test_ok": "passed",
        "test_flaky": "failed",
        "test_broken": "failed",
        "test_unknown": "unknown",
        "test_unmarked_failure_is_not_retried": "failed",
    }
    assert kinds.count("case-start") == 5 and "retry" not in kinds
    board = progress.Board()
    for e in evs:
        board.apply("nvidia-1.33", e)
    st = board.cells["nvidia-1.33"]
    assert (st.phase, st.done, st.total, st.failures, st.current) == ("report", 5, 5, 3, "")


def test_a_failed_case_is_rerun_once_and_marked_never_passed(tmp_path: Path) -> None:
    evs, junit, where = _session(tmp_path, retry_on=True)
    retries = {e["case"].split("::")[-1]: e for e in evs if e["event"] == "retry"}
    assert set(retries) == {"test_flaky", "test_broken"}  # unmarked cases are not conformance cases
    assert retries["test_flaky"]["outcome"] == "passed" and retries["test_flaky"]["rule"] == "DEMO-FLAKY-1"
    assert retries["test_broken"]["outcome"] == "failed"
    assert (where / "attempts").read_text() == "2" and (where / "unmarked").read_text() == "x"
    # the flaky case stays failed (its first attempt), with the retry's result in its message
    ends = {e["case"].split("::")[-1]: e["outcome"] for e in evs if e["event"] == "case-end"}
    assert ends["test_flaky"] == "failed" and ends["test_ok"] == "passed"
    failures = {tc.get("name"): tc.find("failure") for tc in junit.iter("testcase")}
    assert failures["test_flaky"] is not None and retry.FLAKY in failures["test_flaky"].get("message", "")
    broken = failures["test_broken"].get("message", "")
    assert retry.STABLE in broken[:1500] and broken.startswith("AssertionError: [DEMO-BROKEN-1]")
    assert failures["test_flaky"].get("message", "").startswith("AssertionError: [DEMO-FLAKY-1]")
    assert len(list(junit.iter("testcase"))) == 5  # one entry per case, not per attempt


def test_emit_is_inert_without_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.emit("phase", phase="suites")  # nowhere to write: nothing happens
    monkeypatch.setenv(progress.ENV, str(tmp_path / "p.jsonl"))
    with pytest.raises(ValueError, match="unknown progress phase 'testing'"):
        progress.phase("testing")
    progress.phase("deploy")
    assert json.loads((tmp_path / "p.jsonl").read_text())["phase"] == "deploy"


def test_tail_returns_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    tail = progress.Tail(path)
    assert tail.read() == []  # not there yet
    path.write_text('{"event": "phase", "phase": "deploy"}\n{"event": "coll')
    assert [e["event"] for e in tail.read()] == ["phase"]
    with path.open("a") as f:
        f.write('ected", "total": 7}\nnot json\n')
    assert tail.read() == [{"event": "collected", "total": 7}]
    assert tail.read() == []


def test_live_view_shows_phase_counts_current_case_and_the_end(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=160, force_terminal=False)
    with progress.LiveView(console) as view:
        view.handle("nvidia-1.33", {"event": "cell-start", "t": 0})
        view.handle("nvidia-1.33", {"event": "phase", "phase": "suites"})
        view.handle("nvidia-1.33", {"event": "collected", "total": 12})
        view.handle(
            "nvidia-1.33",
            {"event": "case-end", "case": "a", "outcome": "failed", "done": 3, "total": 12, "failures": 1},
        )
        view.handle("nvidia-1.33", {"event": "case-start", "case": "suites/test_x.py::test_memory_limit"})
        view.handle("nvidia-1.34", {"event": "cell-start", "t": 0})
        frame = Console(file=io.StringIO(), width=160)
        frame.print(view._render())
        text = frame.file.getvalue()  # type: ignore[attr-defined]
        assert "suites" in text and "3/12" in text and "test_memory_limit" in text and "starting" in text
        view.handle("nvidia-1.33", {"event": "cell-end", "verdict": "FAILED", "bundle": "/x/bundle"})
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "FAILED  /x/bundle" in out


def test_run_json_prints_one_event_per_line_and_ends_with_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_cell(cmd: list[str], env: dict[str, str] | None = None, on_tick=None):  # type: ignore[no-untyped-def]
        assert env is not None and env[retry.ENV] == "1"
        with open(env[progress.ENV], "a") as f:
            for ev in (
                {"event": "phase", "phase": "provision"},
                {"event": "collected", "total": 2},
                {
                    "event": "case-end",
                    "case": "c1",
                    "outcome": "passed",
                    "done": 1,
                    "total": 2,
                    "failures": 0,
                },
            ):
                f.write(json.dumps(ev) + "\n")
        if on_tick:
            on_tick()
        out = Path(cmd[cmd.index("--bundle-dir") + 1]) / "bundle"
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"verdict": "PASSED", "summary": {"passed": 2}}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(cli, "_run_cell", fake_cell)
    monkeypatch.setattr(cli, "_INTERRUPTED", [])
    code = cli.main(["run", "--json", "--k8s", "1.34,1.35", "--out", str(tmp_path)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [(e["event"], e.get("cell")) for e in lines[:5]] == [
        ("cell-start", "nvidia-1.34"),
        ("phase", "nvidia-1.34"),
        ("collected", "nvidia-1.34"),
        ("case-end", "nvidia-1.34"),
        ("cell-end", "nvidia-1.34"),
    ]
    end = lines[-1]
    assert end["event"] == "run-end" and end["verdict"] == "PASSED" and end["exit_code"] == 0
    assert [c["minor"] for c in end["cells"]] == ["1.34", "1.35"]
    assert all(c["bundle"].endswith("/bundle") for c in end["cells"])
    assert all((Path(c["bundle"]).parent / "progress.jsonl").is_file() for c in end["cells"])


def test_under_xdist_the_controller_reports_the_workers_cases(tmp_path: Path) -> None:
    evs, _junit, _ = _session(tmp_path, retry_on=True, xdist=True)
    assert next(e for e in evs if e["event"] == "collected")["total"] == 5
    ends = [e for e in evs if e["event"] == "case-end"]
    assert sorted(e["done"] for e in ends) == [1, 2, 3, 4, 5] and max(e["failures"] for e in ends) == 3
    assert {e["case"].split("::")[-1] for e in evs if e["event"] == "retry"} == {"test_flaky", "test_broken"}
