"""Every failure names its rule: waits that time out say under which rule, what they waited for and
what they saw last; a probe without a result fails its rule with the raw log attached; the result
line is found in noisy, interleaved logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conformance import cases
from conformance.kube import WaitTimeout, Workloads, describe_pod, parse_probe_output, poll, wait_for
from conformance.probe.result import MARKER, PREFIX, find_result, result_line
from conformance.recording import PROP, CaseIdentity, Recorder
from kubeclient.client import ApiError
from reports.model import Environment, RunMetadata
from reports.runio import RunWriter, read_cases

REPO = Path(__file__).resolve().parents[2]
DOC = {"probe": {"version": "1", "hostname": "h", "pid": 7}, "env": {"A": "x{y}"},
       "cuda": {"alloc": {"ok": False, "error_name": "CUDA_ERROR_OUT_OF_MEMORY"}}}


@pytest.fixture
def in_rule() -> Any:
    token = cases.set_current_rule("SCHED-REJECT-1")
    yield "SCHED-REJECT-1"
    cases.reset_current_rule(token)


def test_wait_for_timeout_names_rule_what_and_last_state(in_rule: str) -> None:
    seen = iter(range(100))
    with pytest.raises(WaitTimeout) as err:
        wait_for("the answer", lambda: 0 if next(seen) < 0 else None, timeout=0.05, interval=0.01,
                 describe=lambda last: f"still {last!r}")
    want = "[SCHED-REJECT-1] timed out after 0s waiting for the answer; last seen: still None"
    assert str(err.value) == want
    assert isinstance(err.value, AssertionError)  # a case failure, not an error


def test_poll_reports_the_last_observation_and_api_errors() -> None:
    calls = {"n": 0}

    def observe() -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise ApiError(503, {"reason": "ServiceUnavailable", "message": "apiserver restarting"})
        return {"n": calls["n"]}

    with pytest.raises(WaitTimeout) as err:
        poll("n to reach 1000", observe, lambda o: o["n"] >= 1000, 0.05, interval=0.01, rule_id="REG-ANNOT-1")
    text = str(err.value)
    assert text.startswith("[REG-ANNOT-1] timed out after 0s waiting for n to reach 1000; last seen: {'n': ")
    # an explicit rule wins; no rule at all leaves the message unprefixed rather than inventing one
    with pytest.raises(WaitTimeout, match=r"^timed out after 0s waiting for x; last seen: nothing"):
        poll("x", lambda: (_ for _ in ()).throw(ApiError(500, {"message": "boom"})), bool, 0.0)


class FakeKube:
    """Just enough of kubeclient.Kube for Workloads: one pending pod, its events, its log."""

    def __init__(self, pod: dict[str, Any], events: list[dict[str, Any]], log: str = "") -> None:
        self.pod, self.evs, self.log_text = pod, events, log

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        if path.endswith("/events"):
            return {"items": self.evs}
        return self.pod

    def text(self, path: str, **_: Any) -> str:
        return self.log_text

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "spec": {**body["spec"], "schedulerName": "hami-scheduler"}}


PENDING = {
    "metadata": {"name": "toobig", "annotations": {"hami.io/bind-phase": "allocating"}},
    "spec": {},
    "status": {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/2 nodes are available: node lock held"}],
    },
}
EVENTS = [{"reason": "Scheduled", "message": "nothing yet", "involvedObject": {"kind": "Pod"}}]


def test_pod_waits_name_the_rule_and_show_the_pod(in_rule: str) -> None:
    w = Workloads(FakeKube(PENDING, EVENTS), "ns1", timeout=0.05)  # type: ignore[arg-type]
    with pytest.raises(WaitTimeout) as err:
        w.wait_scheduled("toobig")
    text = str(err.value)
    assert text.startswith(
        "[SCHED-REJECT-1] timed out after 0s waiting for pod ns1/toobig to be bound to a node;")
    assert "last seen: phase=Pending, node=-, PodScheduled=False (Unschedulable: 0/2 nodes are available: " \
           "node lock held)" in text
    assert "hami.io/bind-phase=allocating" in text and "events: Scheduled: nothing yet" in text
    with pytest.raises(WaitTimeout, match=r"waiting for event FilteringFailed on pod ns1/toobig; last seen: "
                                          r"phase=Pending.*events: Scheduled: nothing yet"):
        w.wait_event("toobig", "FilteringFailed")
    with pytest.raises(WaitTimeout, match=r"^\[SCHED-REJECT-1\] .*to reach phase Succeeded or Failed"):
        w.wait_phase("toobig", ("Succeeded", "Failed"))


def test_a_probe_without_result_fails_its_rule_with_the_raw_log_attached(in_rule: str) -> None:
    done = {**PENDING, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "main", "state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}}
    raw = "Traceback (most recent call last):\n  File x\nOSError: libcuda.so.1: cannot open\n"
    attached: dict[str, str] = {}
    w = Workloads(FakeKube(done, [], raw), "ns1", timeout=1,  # type: ignore[arg-type]
                  attach=lambda name, text: attached.__setitem__(name, text))
    with pytest.raises(AssertionError) as err:
        w.probe("toobig")
    text = str(err.value)
    assert text.startswith(f"[SCHED-REJECT-1] probe ns1/toobig container main printed no {MARKER} result")
    assert "main terminated (Error) exit 1" in text and "raw log attached as log-toobig-main.txt" in text
    assert attached == {"log-toobig-main.txt": raw}
    # with a result, interleaved with stderr, the same call returns the document
    w.kube.log_text = "warning: shim loaded\n" + result_line(DOC) + "\nwarning: bye\n"  # type: ignore[attr-defined]
    assert w.probe("toobig")["cuda"] == DOC["cuda"]


def test_describe_pod_without_a_pod() -> None:
    assert describe_pod(None) == "no pod"


# --- the result line and its parser ---------------------------------------------------------------


def test_result_line_is_one_compact_json_line_with_the_marker_first() -> None:
    line = result_line(DOC)
    assert "\n" not in line and line.startswith(PREFIX) and json.loads(line)["marker"] == MARKER
    assert {k: v for k, v in json.loads(line).items() if k not in ("marker", "digest")} == DOC
    assert find_result(line) == DOC


@pytest.mark.parametrize(
    "log",
    [
        # stderr before and after, with braces and JSON-looking junk
        "shim: {init} ok\n{\"probe\": \"not this\"\n" + result_line(DOC) + "\nstderr: } trailing {\n",
        # junk written on the same line before the result (a partial stderr line in a merged stream)
        "partial warning without newline" + result_line(DOC) + "\n",
        # multi-line junk, CRLF line ends
        "a\r\nb {\r\n  \"c\": [1,\r\n" + result_line(DOC) + "\r\n",
        # a result cut in two by the log pipeline with another stream's lines in between
        result_line(DOC)[:40] + "\nstderr: interleaved line\nanother one\n" + result_line(DOC)[40:] + "\n",
        # cut in three inside a string value
        result_line(DOC)[:60] + "\n" + result_line(DOC)[60:90] + "\nnoise\n" + result_line(DOC)[90:],
        # an older probe's indented document (no marker), nothing interleaved
        "starting\n" + json.dumps(DOC, indent=2) + "\n",
    ],
)
def test_parser_finds_the_result_in_noisy_logs(log: str) -> None:
    doc = parse_probe_output(log)
    assert doc is not None
    assert doc == DOC


@pytest.mark.parametrize(
    "log",
    ["", "no json here\n", result_line(DOC)[:-5] + "\n",  # truncated: no result, not a wrong one
     json.dumps({"other": 1}) + "\n"],
)
def test_parser_reports_no_result_rather_than_a_wrong_one(log: str) -> None:
    assert find_result(log) is None


def test_junk_glued_inside_a_string_is_not_believed() -> None:
    """Lines that happen to continue a cut string would decode, but the digest says it is not
    the document the probe printed: the rejoin leaves them out."""
    line = result_line(DOC)
    cut = line.index('"x{y}') + 2  # inside the string value "x{y}"
    doc = find_result(line[:cut] + "\nJUNK\n" + line[cut:] + "\n")
    assert doc is not None and doc["env"] == {"A": "x{y}"}


def test_the_last_result_wins() -> None:
    first, second = dict(DOC, env={"run": "1"}), dict(DOC, env={"run": "2"})
    doc = find_result(result_line(first) + "\nrestarted\n" + result_line(second) + "\n")
    assert doc is not None and doc["env"] == {"run": "2"}


def test_probe_cli_prints_one_marked_line(tmp_path: Path) -> None:
    """No driver library at all: the probe still prints exactly one result line (errors inside)."""
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.probe", "--alloc-mib", "0", "--kernel-seconds", "0"],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX)
    doc = json.loads(lines[0])
    assert "error" in doc["nvml"] and "error" in doc["cuda"]


# --- the rule of the running case -------------------------------------------------------------------


def test_recorder_names_the_rule_of_any_failure(tmp_path: Path) -> None:
    meta = RunMetadata(run_id="r", project_commit="c", started="2026-01-01T00:00:00Z", tool_version="0",
                       backend="testbed", hami_namespace="hami-system")
    rec = Recorder(RunWriter(tmp_path / "run", meta, Environment()))
    props = [(PROP, CaseIdentity("nvidia", "1.33", "scheduling", "SCHED-TYPE-1", "t", "required").__dict__)]
    crash = SimpleNamespace(reprcrash=SimpleNamespace(message="KeyError: 'nodeName'"))
    for when, outcome, longrepr in (("setup", "passed", None), ("call", "failed", crash),
                                    ("teardown", "failed", crash)):
        rec.on_report(SimpleNamespace(nodeid="s::t", when=when, outcome=outcome, user_properties=props,
                                      duration=0.1, longrepr=longrepr, longreprtext=""))
    case = read_cases(tmp_path / "run" / "cases.jsonl")[0]
    assert case.outcome == "failed"
    assert case.message == ("[SCHED-TYPE-1] KeyError: 'nodeName'; "
                            "[SCHED-TYPE-1] error in teardown: KeyError: 'nodeName'")


def test_plugin_makes_the_case_rule_current(tmp_path: Path) -> None:
    (tmp_path / "test_rule.py").write_text(
        "from conformance.cases import current_rule, rule\n"
        "from conformance.kube import wait_for\n"
        "@rule('ENF-MEM-9', 'a rule')\n"
        "def test_a():\n"
        "    assert current_rule() == 'ENF-MEM-9'\n"
        "    wait_for('godot', lambda: None, 0.01)\n"
        "def test_b():\n"
        "    assert current_rule() is None\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conformance.plugin", "-q",
         str(tmp_path / "test_rule.py"),
         "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    out = proc.stdout
    assert "1 failed, 1 passed" in out, out + proc.stderr
    assert "[ENF-MEM-9] timed out after 0s waiting for godot; last seen: None" in out


def test_metric_waits_name_the_rule_and_the_last_values(
    monkeypatch: pytest.MonkeyPatch, in_rule: str
) -> None:
    from conformance import metrics

    text = 'hami_vgpu_memory_limit_bytes{pod="p",deviceuuid="GPU-1"} 0\n'
    monkeypatch.setattr(metrics, "scrape_namespace", lambda kube, ns: {"service monitor:9394": text})
    with pytest.raises(WaitTimeout) as err:
        metrics.wait_series(None, "hami-system", ("hami_vgpu_memory_limit_bytes",),  # type: ignore[arg-type]
                            lambda s: any(v > 0 for *_, v in s), "a non-zero memory limit of pod p",
                            timeout=0.05, interval=0.01)
    assert str(err.value) == (
        "[SCHED-REJECT-1] timed out after 0s waiting for a non-zero memory limit of pod p; last seen: "
        '1 hami_vgpu_memory_limit_bytes sample(s) from service monitor:9394: '
        'hami_vgpu_memory_limit_bytes{deviceuuid="GPU-1",pod="p"} 0'
    )
    monkeypatch.setattr(metrics, "scrape_namespace", lambda kube, ns: {})
    with pytest.raises(pytest.skip.Exception, match="could not apply: no HAMi metrics endpoint"):
        metrics.wait_series(None, "hami-system", ("x",), bool, "x", timeout=0.02, interval=0.01)  # type: ignore[arg-type]
    monkeypatch.setattr(metrics, "scrape_namespace", lambda kube, ns: {"s": text.replace(" 0", " 5")})
    samples, scraped = metrics.wait_series(None, "ns", ("hami_vgpu_memory_limit_bytes",),  # type: ignore[arg-type]
                                           lambda s: any(v > 0 for *_, v in s), "w", timeout=1)
    assert samples[0][2] == 5 and list(scraped) == ["s"]
