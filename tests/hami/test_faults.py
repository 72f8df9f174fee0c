"""The fault catalogue: well formed, every fault reachable only through the installer's switch, and
each hook does what its catalogue entry says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hami_stack import faults
from hami_stack.faults.catalogue import (
    CATALOGUE,
    CHART,
    MONITOR_PREFIXES,
    NAMES,
    PLUGIN_PREFIXES,
    RUNTIME,
    SCHEDULER_PREFIXES,
    SHIM,
    for_vendor,
)

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "hami_stack"
RULE_RE = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$")
COMPONENTS = {"webhook", "extender", "device-plugin", "shim", "monitor", "chart"}


@pytest.fixture
def active(monkeypatch: pytest.MonkeyPatch):
    """Switch faults on for this process the way the chart does (HAMI_FAULTS, read once)."""

    def switch(*names: str) -> None:
        monkeypatch.setenv(faults.ENV, ",".join(names))
        faults.reset_for_tests()

    yield switch
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset_for_tests()


def test_catalogue_is_well_formed_and_covers_every_component() -> None:
    nvidia = for_vendor("nvidia")
    assert len(nvidia) >= 40
    assert len(NAMES) == len(CATALOGUE)
    assert {f.component for f in nvidia} == COMPONENTS
    for f in CATALOGUE:
        assert f.expected_rules and all(RULE_RE.match(r) for r in f.expected_rules), f
        assert f.description and f.kind in (RUNTIME, SHIM, CHART), f
        # the name's prefix decides which stack container the chart hands it to
        assert f.name.startswith(
            (*SCHEDULER_PREFIXES, *PLUGIN_PREFIXES, *MONITOR_PREFIXES, "chart-", "ascend-")
        )
        assert (f.kind == SHIM) == f.name.startswith("shim-"), f
        assert (f.kind == CHART) == f.name.startswith("chart-"), f
    assert any(f.vendor != "nvidia" for f in CATALOGUE)  # the self-test refuses those for NVIDIA


def _hook_names() -> tuple[set[str], set[str]]:
    """(names passed to faults.on, every quoted catalogue name) in the stack outside the catalogue."""
    on, quoted = set(), set()
    for path in STACK.rglob("*.py"):
        if path.name == "catalogue.py":
            continue
        text = path.read_text()
        on |= set(re.findall(r'faults\.on\(\s*"([^"]+)"', text))
        quoted |= set(re.findall(r'"([a-z]+-[a-z0-9-]+)"', text)) & NAMES
    return on, quoted


def test_every_fault_has_a_hook_and_every_hook_a_fault() -> None:
    on, hooks = _hook_names()
    assert on and on <= NAMES, on - NAMES
    c_sources = "".join(p.read_text() for p in (STACK / "enforcer" / "src").glob("*.c"))
    templates = "".join(p.read_text() for p in (STACK / "chart" / "templates").rglob("*.yaml"))
    for f in CATALOGUE:
        if f.kind == SHIM:
            assert f"defined({f.shim_define})" in c_sources or f"#ifdef {f.shim_define}" in c_sources, f.name
        elif f.kind == CHART:
            assert f'"{f.name}"' in templates, f.name
        else:
            assert f.name in hooks, f"no hook switches {f.name}"


def test_unknown_names_are_rejected(active) -> None:
    active("webhook-skip-scheduler-name", "no-such-fault")
    with pytest.raises(faults.FaultError, match="no-such-fault"):
        faults.active()
    with pytest.raises(faults.FaultError, match="not in the catalogue"):
        faults.on("typo-in-a-hook")


def test_switch_is_read_once_per_process(active, monkeypatch: pytest.MonkeyPatch) -> None:
    active("plugin-no-core-limit")
    assert faults.on("plugin-no-core-limit")
    monkeypatch.setenv(faults.ENV, "")  # a later change of the environment is not seen
    assert faults.on("plugin-no-core-limit")


def test_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset_for_tests()
    assert faults.active() == frozenset()
    assert not any(faults.on(n) for n in NAMES)


def test_memory_skew_shifts_only_memory_limits():
    envs = {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "3000m",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "100m",
        "CUDA_DEVICE_SM_LIMIT": "30",
        "NVIDIA_VISIBLE_DEVICES": "GPU-x",
    }
    faults.skew_memory_limits(envs, 512)
    assert envs == {
        "CUDA_DEVICE_MEMORY_LIMIT_0": "3512m",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "612m",
        "CUDA_DEVICE_SM_LIMIT": "30",
        "NVIDIA_VISIBLE_DEVICES": "GPU-x",
    }
    faults.skew_memory_limits(envs, -1000)
    assert envs["CUDA_DEVICE_MEMORY_LIMIT_1"] == "0m"


def test_older_switches_still_work(monkeypatch, active):
    active()
    monkeypatch.delenv(faults.WEBHOOK_SKIP_SCHEDULER_NAME, raising=False)
    monkeypatch.delenv(faults.MEMORY_LIMIT_SKEW_MIB, raising=False)
    assert not faults.webhook_skips_scheduler_name() and faults.memory_limit_skew_mib() == 0
    monkeypatch.setenv(faults.WEBHOOK_SKIP_SCHEDULER_NAME, "true")
    monkeypatch.setenv(faults.MEMORY_LIMIT_SKEW_MIB, "256")
    assert faults.webhook_skips_scheduler_name() and faults.memory_limit_skew_mib() == 256
    monkeypatch.delenv(faults.MEMORY_LIMIT_SKEW_MIB)
    active("plugin-memory-limit-skew")
    assert faults.memory_limit_skew_mib() == faults.DEFAULT_SKEW_MIB


# --- hooks: each does what its entry says, and only when switched on ---------------------------------


def _gpu_pod(**spec: object) -> dict:
    ctr = {
        "name": "c",
        "image": "x",
        "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [ctr], **spec},
    }


def _admit(pod: dict) -> object:
    from hami_stack.webhook.admit import WebhookConfig, admit

    return admit({"uid": "u", "operation": "CREATE", "object": pod}, WebhookConfig())


def test_webhook_hooks(active) -> None:
    active()
    assert any(op["path"] == "/spec/schedulerName" for op in _admit(_gpu_pod()).patch)
    active("webhook-skip-scheduler-name")
    assert not any(op["path"] == "/spec/schedulerName" for op in _admit(_gpu_pod()).patch)
    privileged = _gpu_pod()
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    active()
    assert not _admit(privileged).allowed
    active("webhook-allows-privileged")
    assert _admit(privileged).allowed
    active()
    assert not _admit(_gpu_pod(nodeName="n1")).allowed
    active("webhook-allows-node-name")
    assert _admit(_gpu_pod(nodeName="n1")).allowed


def test_a_workload_cannot_switch_a_fault(active) -> None:
    """HAMI_FAULTS in a pod's own environment (or as an annotation) changes nothing."""
    active()
    pod = _gpu_pod()
    pod["spec"]["containers"][0]["env"] = [{"name": faults.ENV, "value": ",".join(sorted(NAMES))}]
    pod["metadata"]["annotations"] = {faults.ENV: "webhook-skip-scheduler-name"}
    privileged = _gpu_pod()
    privileged["spec"]["containers"][0]["env"] = [{"name": faults.ENV, "value": "webhook-allows-privileged"}]
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    assert any(op["path"] == "/spec/schedulerName" for op in _admit(pod).patch)
    assert not _admit(privileged).allowed
    assert faults.active() == frozenset()
    # the shim never reads the variable: a container's environment cannot reach a shim fault either
    for src in (STACK / "enforcer").rglob("*.[ch]"):
        assert "HAMI_FAULT" not in src.read_text(), src


def test_scheduler_fit_hooks(active) -> None:
    from hami_stack.scheduler import decide

    active("scheduler-gpu-policy-swapped", "scheduler-node-policy-swapped")
    assert decide._fault_swap("scheduler-gpu-policy-swapped", "binpack,numa") == "spread,numa"
    assert decide._fault_swap("scheduler-node-policy-swapped", "spread") == "binpack"
    active()
    assert decide._fault_swap("scheduler-gpu-policy-swapped", "binpack") == "binpack"


def test_monitor_hooks(active) -> None:
    from hami_stack.monitor.collector import _fault_view
    from hami_stack.monitor.region import DeviceUsage

    fields = DeviceUsage.__dataclass_fields__
    dev = DeviceUsage(**{name: (0 if f.type in ("int", int) else "") for name, f in fields.items()})
    dev = DeviceUsage(**{**dev.__dict__, "used": 100, "limit": 1000, "sm_util": 50})
    active("monitor-memory-used-zero", "monitor-utilization-zero", "monitor-limit-halved")
    seen = _fault_view(dev)
    assert (seen.used, seen.sm_util, seen.limit) == (0, 0, 500)
