"""The deliberate faults the conformance harness uses to prove its suites catch a broken stack."""

from __future__ import annotations

from hami_stack import faults


def test_memory_skew_shifts_only_memory_limits():
    envs = {"CUDA_DEVICE_MEMORY_LIMIT_0": "3000m", "CUDA_DEVICE_MEMORY_LIMIT_1": "100m",
            "CUDA_DEVICE_SM_LIMIT": "30", "NVIDIA_VISIBLE_DEVICES": "GPU-x"}
    faults.skew_memory_limits(envs, 512)
    assert envs == {"CUDA_DEVICE_MEMORY_LIMIT_0": "3512m", "CUDA_DEVICE_MEMORY_LIMIT_1": "612m",
                    "CUDA_DEVICE_SM_LIMIT": "30", "NVIDIA_VISIBLE_DEVICES": "GPU-x"}
    faults.skew_memory_limits(envs, -1000)
    assert envs["CUDA_DEVICE_MEMORY_LIMIT_1"] == "0m"


def test_switches_are_off_unless_set(monkeypatch):
    monkeypatch.delenv(faults.WEBHOOK_SKIP_SCHEDULER_NAME, raising=False)
    monkeypatch.delenv(faults.MEMORY_LIMIT_SKEW_MIB, raising=False)
    assert not faults.webhook_skips_scheduler_name() and faults.memory_limit_skew_mib() == 0
    monkeypatch.setenv(faults.WEBHOOK_SKIP_SCHEDULER_NAME, "true")
    monkeypatch.setenv(faults.MEMORY_LIMIT_SKEW_MIB, "256")
    assert faults.webhook_skips_scheduler_name() and faults.memory_limit_skew_mib() == 256
