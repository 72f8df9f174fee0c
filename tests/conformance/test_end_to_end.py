"""The main job end to end on the testbed: the NVIDIA suites pass against the stack, the bundle is
signed and verifies, and a deliberately broken stack fails exactly the cases whose rule it breaks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.clients import helm_path, helm_skip_reason

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.helm, pytest.mark.hardware, pytest.mark.slow,
              pytest.mark.skipif(helm_path() is None, reason=helm_skip_reason())]


def _run(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path, dict]:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--k8s", "1.33", "--out", str(out), *args],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    runs = sorted(out.iterdir())
    assert len(runs) == 1, (proc.stdout, proc.stderr)
    bundle = runs[0] / "bundle"
    return proc, bundle, json.loads((bundle / "results.json").read_text())


def test_suites_pass_and_the_signed_bundle_verifies(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    assert subprocess.run([sys.executable, "-m", "reports", "keygen", str(key)], cwd=REPO,
                          capture_output=True, text=True).returncode == 0
    proc, bundle, results = _run(tmp_path / "out", "--signing-key", str(key))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = results["summary"]
    assert s["failed"] == 0 and s["unknown"] == 0 and s["passed"] == s["total"] >= 30, s
    capabilities = {c["capability"] for c in results["cases"]}
    assert capabilities == {"registration", "admission", "scheduling", "allocation", "isolation",
                            "enforcement", "metrics", "versions"}
    verify = subprocess.run([sys.executable, "-m", "conformance", "verify", str(bundle)], cwd=REPO,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    (bundle / "results.json").write_text(json.dumps({**results, "summary": {**s, "failed": 0}}) + " ")
    tampered = subprocess.run([sys.executable, "-m", "conformance", "verify", str(bundle)], cwd=REPO,
                              capture_output=True, text=True)
    assert tampered.returncode == 1 and "results.json" in tampered.stdout + tampered.stderr


def test_a_plugin_giving_the_wrong_memory_limit_fails_the_memory_rules(tmp_path: Path) -> None:
    # switched the way an installer switches a catalogue fault (hami_stack/faults): a chart value
    proc, _bundle, results = _run(
        tmp_path / "out", "--chart-set", "faultInjection.faults={plugin-memory-limit-skew}"
    )
    assert proc.returncode == 1
    failed = {c["ruleId"]: c["message"] for c in results["cases"] if c["outcome"] == "failed"}
    assert {"ALLOC-ENV-1", "ENF-MEM-1", "ENF-MEM-2"} <= set(failed), failed
    assert "[ALLOC-ENV-1] CUDA_DEVICE_MEMORY_LIMIT_0='3512m', want '3000m'" in failed["ALLOC-ENV-1"]
    # nothing outside memory limits breaks (ISO-SHARE-1 checks each sharing pod's own limit)
    outside = sorted(r for r in failed if not r.startswith(("ALLOC-", "ENF-MEM", "MET-MON", "ISO-SHARE-")))
    assert outside == [], outside


def test_a_terminated_run_tears_its_cluster_down(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from testbed.procutil import pid_alive

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance", "run", "--k8s", "1.33", "--out", str(tmp_path / "out")],
        cwd=REPO, env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        states: list[Path] = []
        while not states and time.monotonic() < deadline:
            states = list(scratch.glob("hami-conformance-1.33-*/state.json"))
            time.sleep(0.2)
        assert states, "the testbed never came up"
        pid = json.loads(states[0].read_text())["pid"]
        assert pid_alive(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not pid_alive(pid), "the testbed outlived the terminated run"
    finally:
        if proc.poll() is None:
            proc.kill()
