"""Allocation: what the device plugin's Allocate gives a container, as the probe sees it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conformance.cases import rule, violated
from conformance.kube import Workloads, allocated, gpu_pod

pytestmark = [pytest.mark.nvidia, pytest.mark.allocation]
QUICK = ["--alloc-mib", "0", "--kernel-seconds", "0"]


def nvml_uuids(doc: dict[str, Any], rule_id: str) -> list[str]:
    nvml = doc.get("nvml") or {}
    assert "error" not in nvml, violated(rule_id, f"NVML unusable in the container: {nvml.get('error')}")
    return [d["uuid"] for d in nvml.get("devices") or []]


def cuda_uuids(doc: dict[str, Any], rule_id: str) -> list[str]:
    cuda = doc.get("cuda") or {}
    assert "error" not in cuda, violated(rule_id, f"CUDA unusable in the container: {cuda.get('error')}")
    return [d["uuid"] for d in cuda.get("devices") or []]


@rule(
    "ALLOC-ENV-1",
    "The container sees exactly its assigned GPU, with CUDA_DEVICE_MEMORY_LIMIT_0 set to its gpumem",
)
def test_single_gpu_env(workloads: Workloads, attach: Any) -> None:
    workloads.create(gpu_pod("one", gpus=1, mem=3000, args=QUICK))
    doc = workloads.probe("one")
    attach("probe.json", json.dumps(doc, indent=2))
    uuid = allocated(workloads.get("one"))[0][0].uuid
    env = doc.get("env") or {}
    assert env.get("CUDA_DEVICE_MEMORY_LIMIT_0") == "3000m", violated(
        "ALLOC-ENV-1", f"CUDA_DEVICE_MEMORY_LIMIT_0={env.get('CUDA_DEVICE_MEMORY_LIMIT_0')!r}, want '3000m'"
    )
    assert nvml_uuids(doc, "ALLOC-ENV-1") == [uuid], violated(
        "ALLOC-ENV-1", f"NVML lists {nvml_uuids(doc, 'ALLOC-ENV-1')}, assigned {uuid}"
    )
    assert cuda_uuids(doc, "ALLOC-ENV-1") == [uuid], violated(
        "ALLOC-ENV-1", f"CUDA lists {cuda_uuids(doc, 'ALLOC-ENV-1')}, assigned {uuid}"
    )


@rule("ALLOC-MULTI-1", "A two-GPU container sees exactly its two assigned GPUs, with a memory limit for each")
def test_two_gpu_env(workloads: Workloads, attach: Any) -> None:
    workloads.create(gpu_pod("two", gpus=2, mem=2000, args=QUICK))
    doc = workloads.probe("two")
    attach("probe.json", json.dumps(doc, indent=2))
    want = sorted(d.uuid for d in allocated(workloads.get("two"))[0])
    assert sorted(nvml_uuids(doc, "ALLOC-MULTI-1")) == want, violated(
        "ALLOC-MULTI-1", f"NVML lists {nvml_uuids(doc, 'ALLOC-MULTI-1')}, assigned {want}"
    )
    env = doc.get("env") or {}
    limits = [env.get(f"CUDA_DEVICE_MEMORY_LIMIT_{i}") for i in range(2)]
    assert limits == ["2000m", "2000m"], violated("ALLOC-MULTI-1", f"memory limits {limits}, want 2000m each")
