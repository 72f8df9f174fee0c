"""Allocation: what the device plugin's Allocate gives a container, as the probe sees it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import ContainerSpec, Workloads, allocated, gpu_pod, pod_manifest
from conformance.suites.common import MIB, all_gpus, cuda_devices, idle_gpu, probe_limit_mib

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


# --- HAMi's documented pod shapes, each run end to end -----------------------------------------------------
def _run_shape(
    w: Workloads,
    name: str,
    container: ContainerSpec,
    rule_id: str,
    attach: Any,
    annotations: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[C.AssignedDevice]]:
    """Create, require the probe to finish, return its document and the container's assignment."""
    container.args = list(QUICK)
    w.create(pod_manifest(name, [container], annotations=annotations))
    doc = w.probe(name)
    attach(f"probe-{name}.json", json.dumps(doc, indent=2))
    pod = w.get(name)
    assert pod["status"].get("phase") == "Succeeded", violated(
        rule_id, f"pod {name} ended {pod['status'].get('phase')}: {w.describe(name, pod)}"
    )
    segs = allocated(pod)
    assert segs and segs[-1], violated(rule_id, f"pod {name} has no device in its assignment: {segs}")
    return doc, segs[-1]


def _totals_mib(doc: dict[str, Any], rule_id: str) -> list[int]:
    return [int(d["total_mem"]) // MIB for d in cuda_devices(doc)] or pytest.fail(
        violated(rule_id, f"CUDA lists no device: {doc.get('cuda')}")
    )


def _devmem(kube: Any, uuid: str) -> int:
    return next(g.devmem for g in all_gpus(kube) if g.uuid == uuid)


@rule(
    "ALLOC-SHAPE-1",
    "A plain nvidia.com/gpu: 1 pod (no gpumem) runs with one whole, exclusive GPU: all its memory, cores 100",
)
def test_shape_gpu_only(workloads: Workloads, kube: Any, attach: Any) -> None:
    doc, devs = _run_shape(workloads, "gpu-only", ContainerSpec(gpus=1), "ALLOC-SHAPE-1", attach)
    assert len(devs) == 1, violated("ALLOC-SHAPE-1", f"assignment {devs}")
    full = _devmem(kube, devs[0].uuid)
    assert devs[0].mem_mib == full and devs[0].cores == 100, violated(
        "ALLOC-SHAPE-1", f"assigned {devs[0].mem_mib} MiB / {devs[0].cores} cores of a {full} MiB GPU"
    )
    assert nvml_uuids(doc, "ALLOC-SHAPE-1") == [devs[0].uuid], violated(
        "ALLOC-SHAPE-1", f"NVML lists {nvml_uuids(doc, 'ALLOC-SHAPE-1')}, assigned {devs[0].uuid}"
    )
    assert _totals_mib(doc, "ALLOC-SHAPE-1") == [full], violated(
        "ALLOC-SHAPE-1", f"cuMemGetInfo totals {_totals_mib(doc, 'ALLOC-SHAPE-1')} MiB, GPU has {full}"
    )


@rule(
    "ALLOC-SHAPE-2",
    "A plain nvidia.com/gpu: 2 pod (no gpumem) runs with two distinct whole GPUs",
)
def test_shape_two_gpus(workloads: Workloads, kube: Any, attach: Any) -> None:
    doc, devs = _run_shape(workloads, "gpu-two", ContainerSpec(gpus=2), "ALLOC-SHAPE-2", attach)
    uuids = sorted(d.uuid for d in devs)
    assert len(set(uuids)) == 2, violated("ALLOC-SHAPE-2", f"assignment {devs}")
    assert sorted(nvml_uuids(doc, "ALLOC-SHAPE-2")) == uuids, violated(
        "ALLOC-SHAPE-2", f"NVML lists {nvml_uuids(doc, 'ALLOC-SHAPE-2')}, assigned {uuids}"
    )
    want = sorted(_devmem(kube, u) for u in uuids)
    assert sorted(_totals_mib(doc, "ALLOC-SHAPE-2")) == want, violated(
        "ALLOC-SHAPE-2", f"cuMemGetInfo totals {_totals_mib(doc, 'ALLOC-SHAPE-2')} MiB, want {want}"
    )


@rule(
    "ALLOC-SHAPE-3",
    "nvidia.com/gpu + gpumem-percentage 50 runs with half the GPU's memory as its limit",
)
def test_shape_percentage(workloads: Workloads, kube: Any, attach: Any) -> None:
    doc, devs = _run_shape(workloads, "gpu-pct", ContainerSpec(gpus=1, mem_pct=50), "ALLOC-SHAPE-3", attach)
    half = _devmem(kube, devs[0].uuid) // 2
    assert devs[0].mem_mib == half, violated("ALLOC-SHAPE-3", f"assigned {devs[0].mem_mib} MiB, want {half}")
    assert probe_limit_mib(doc) == half and _totals_mib(doc, "ALLOC-SHAPE-3") == [half], violated(
        "ALLOC-SHAPE-3",
        f"limit env {probe_limit_mib(doc)} MiB, cuMemGetInfo {_totals_mib(doc, 'ALLOC-SHAPE-3')} MiB, "
        f"want {half}",
    )


@rule(
    "ALLOC-SHAPE-4",
    "nvidia.com/gpu + gpucores 30 (no memory) runs with CUDA_DEVICE_SM_LIMIT=30 and 30 cores assigned",
)
def test_shape_cores(workloads: Workloads, attach: Any) -> None:
    doc, devs = _run_shape(workloads, "gpu-cores", ContainerSpec(gpus=1, cores=30), "ALLOC-SHAPE-4", attach)
    sm = (doc.get("env") or {}).get("CUDA_DEVICE_SM_LIMIT")
    assert devs[0].cores == 30 and sm == "30", violated(
        "ALLOC-SHAPE-4", f"assigned {devs[0].cores} cores, CUDA_DEVICE_SM_LIMIT={sm!r}"
    )


@rule(
    "ALLOC-SHAPE-5",
    "nvidia.com/gpu + gpumem 300 + gpucores 40 (HAMi's e2e pod) runs with a 300 MiB limit and 40 cores",
)
def test_shape_mem_and_cores(workloads: Workloads, attach: Any) -> None:
    spec = ContainerSpec(gpus=1, mem=300, cores=40)
    doc, devs = _run_shape(workloads, "gpu-memcores", spec, "ALLOC-SHAPE-5", attach)
    sm = (doc.get("env") or {}).get("CUDA_DEVICE_SM_LIMIT")
    assert (devs[0].mem_mib, devs[0].cores) == (300, 40), violated("ALLOC-SHAPE-5", f"assigned {devs[0]}")
    assert probe_limit_mib(doc) == 300 and sm == "40", violated(
        "ALLOC-SHAPE-5", f"limit env {probe_limit_mib(doc)} MiB, CUDA_DEVICE_SM_LIMIT={sm!r}"
    )


@rule(
    "ALLOC-SHAPE-6",
    "An exclusive request (gpucores 100 with gpumem) runs alone on its GPU with its memory limit",
)
def test_shape_exclusive(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = idle_gpu(kube)
    spec = ContainerSpec(gpus=1, mem=2000, cores=100)
    doc, devs = _run_shape(workloads, "gpu-excl", spec, "ALLOC-SHAPE-6", attach, {C.USE_GPUUUID: gpu.uuid})
    assert [d.uuid for d in devs] == [gpu.uuid] and devs[0].cores == 100, violated(
        "ALLOC-SHAPE-6", f"assigned {devs}"
    )
    assert probe_limit_mib(doc) == 2000 and nvml_uuids(doc, "ALLOC-SHAPE-6") == [gpu.uuid], violated(
        "ALLOC-SHAPE-6", f"limit env {probe_limit_mib(doc)} MiB, NVML {nvml_uuids(doc, 'ALLOC-SHAPE-6')}"
    )


@rule(
    "ALLOC-SHAPE-7",
    "With nvidia.com/use-gputype and use-gpuuuid a pod runs on, and sees only, the selected GPU",
)
def test_shape_selected(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = all_gpus(kube)[-1]
    ann = {C.USE_GPUTYPE: gpu.type, C.USE_GPUUUID: gpu.uuid}
    doc, devs = _run_shape(
        workloads, "gpu-sel", ContainerSpec(gpus=1, mem=1000), "ALLOC-SHAPE-7", attach, ann
    )
    assert [d.uuid for d in devs] == [gpu.uuid], violated(
        "ALLOC-SHAPE-7", f"assigned {devs}, want {gpu.uuid}"
    )
    assert nvml_uuids(doc, "ALLOC-SHAPE-7") == [gpu.uuid] and cuda_uuids(doc, "ALLOC-SHAPE-7") == [
        gpu.uuid
    ], violated(
        "ALLOC-SHAPE-7", f"NVML {nvml_uuids(doc, 'ALLOC-SHAPE-7')}, CUDA {cuda_uuids(doc, 'ALLOC-SHAPE-7')}"
    )


@rule(
    "ALLOC-SHAPE-8",
    "nvidia.com/gpu: 2 + gpumem-percentage 100 + gpucores 100 (HAMi's exclusive-card example) runs with two "
    "whole GPUs",
)
def test_shape_exclusive_cards(workloads: Workloads, kube: Any, attach: Any) -> None:
    spec = ContainerSpec(gpus=2, mem_pct=100, cores=100)
    doc, devs = _run_shape(workloads, "gpu-excl2", spec, "ALLOC-SHAPE-8", attach)
    uuids = sorted(d.uuid for d in devs)
    want = sorted(_devmem(kube, u) for u in uuids)
    assert len(set(uuids)) == 2 and all(d.cores == 100 for d in devs), violated(
        "ALLOC-SHAPE-8", f"assignment {devs}"
    )
    assert sorted(d.mem_mib for d in devs) == want and sorted(_totals_mib(doc, "ALLOC-SHAPE-8")) == want, (
        violated(
            "ALLOC-SHAPE-8",
            f"assigned {devs}, cuMemGetInfo totals {_totals_mib(doc, 'ALLOC-SHAPE-8')} MiB, want {want}",
        )
    )


@rule(
    "ALLOC-SHAPE-9",
    "HAMi's sharing example: a 40 %/60-core pod and a 60 %/40-core pod run together on one GPU, each "
    "with its share of memory",
)
def test_shape_sharing_pair(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = idle_gpu(kube)
    hold = ["--alloc-mib", "0", "--kernel-seconds", "0", "--hold-seconds", "60"]
    for name, pct, cores in (("share-a", 40, 60), ("share-b", 60, 40)):
        spec = ContainerSpec(gpus=1, mem_pct=pct, cores=cores, args=hold)
        workloads.create(pod_manifest(name, [spec], annotations={C.USE_GPUUUID: gpu.uuid}))
    for name, pct in (("share-a", 40), ("share-b", 60)):
        workloads.wait_phase(name, ("Running",))
        doc = workloads.probe_running(name)
        attach(f"probe-{name}.json", json.dumps(doc, indent=2))
        want = gpu.devmem * pct // 100
        assert nvml_uuids(doc, "ALLOC-SHAPE-9") == [gpu.uuid], violated(
            "ALLOC-SHAPE-9", f"{name} sees {nvml_uuids(doc, 'ALLOC-SHAPE-9')}, want {gpu.uuid}"
        )
        assert probe_limit_mib(doc) == want and _totals_mib(doc, "ALLOC-SHAPE-9") == [want], violated(
            "ALLOC-SHAPE-9",
            f"{name} ({pct} %) has limit {probe_limit_mib(doc)} MiB, "
            f"total {_totals_mib(doc, 'ALLOC-SHAPE-9')}, want {want}",
        )


@rule(
    "ALLOC-SHAPE-10",
    "nvidia.com/priority 1 on a GPU container runs it with CUDA_TASK_PRIORITY=1",
)
def test_shape_priority(workloads: Workloads, attach: Any) -> None:
    spec = ContainerSpec(gpus=1, mem=1000, extra_limits={C.PRIORITY: "1"})
    doc, devs = _run_shape(workloads, "gpu-prio", spec, "ALLOC-SHAPE-10", attach)
    prio = (doc.get("env") or {}).get("CUDA_TASK_PRIORITY")
    assert prio == "1" and devs[0].mem_mib == 1000, violated(
        "ALLOC-SHAPE-10", f"CUDA_TASK_PRIORITY={prio!r}, assigned {devs[0]}"
    )
