"""Scheduling against what is already allocated: a GPU filled by memory, cores or slots (by pods and
by containers), node-level binpack and spread between two candidate nodes, selection by exclusion,
and the scheduler's success events.

Each capacity case starts from a GPU no live pod holds and pins its pods to it with
``nvidia.com/use-gpuuuid`` (never a nodeSelector), so what decides is the usage HAMi tracks.
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import ContainerSpec, Workloads, allocated, pod_manifest
from conformance.suites.common import (
    HOLD,
    all_gpus,
    expect_bound_to,
    expect_filter_failure,
    idle_gpu,
    idle_node_gpus,
    on_gpu,
)

pytestmark = [pytest.mark.nvidia, pytest.mark.scheduling]


# --- memory -----------------------------------------------------------------------------------------
@rule(
    "SCHED-USEDMEM-1",
    "A pod asking 1 MiB more than a GPU has left after another pod's allocation is refused there: "
    "CardInsufficientMemory",
)
def test_memory_left_refused(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("filler", gpu.uuid, mem=gpu.devmem - 1000))
    expect_bound_to(workloads, "filler", gpu.uuid, "SCHED-USEDMEM-1")
    workloads.create(on_gpu("over", gpu.uuid, mem=1001))
    expect_filter_failure(workloads, "over", "CardInsufficientMemory", "SCHED-USEDMEM-1")


@rule("SCHED-USEDMEM-2", "A pod asking exactly the memory a GPU has left is placed on it")
def test_memory_left_exact_fit(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("filler", gpu.uuid, mem=gpu.devmem - 1000))
    expect_bound_to(workloads, "filler", gpu.uuid, "SCHED-USEDMEM-2")
    workloads.create(on_gpu("exact", gpu.uuid, mem=1000))
    expect_bound_to(workloads, "exact", gpu.uuid, "SCHED-USEDMEM-2")


@rule(
    "SCHED-USEDMEM-3",
    "Memory of several pods on one GPU adds up: four quarter-GPU pods fill it, a fifth pod is refused",
)
def test_memory_sums_over_pods(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    quarter = gpu.devmem // 4
    for i in range(4):
        workloads.create(on_gpu(f"q{i}", gpu.uuid, mem=quarter))
        expect_bound_to(workloads, f"q{i}", gpu.uuid, "SCHED-USEDMEM-3")
    workloads.create(on_gpu("fifth", gpu.uuid, mem=gpu.devmem - 4 * quarter + 100))
    expect_filter_failure(workloads, "fifth", "CardInsufficientMemory", "SCHED-USEDMEM-3")


@rule(
    "SCHED-USEDMEM-4",
    "Memory of a pod's containers on one GPU adds up: two containers of just over half a GPU each "
    "do not fit on it",
)
def test_memory_sums_over_containers(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    half = gpu.devmem // 2 + 1
    workloads.create(on_gpu("halves", gpu.uuid, mem=half, containers=2))
    expect_filter_failure(workloads, "halves", "CardInsufficientMemory", "SCHED-USEDMEM-4")


@rule(
    "SCHED-USEDMEM-5",
    "nvidia.com/gpumem-percentage counts as used memory: a 60 % pod leaves no room for a second 60 % pod",
)
def test_memory_percentage_counts(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("pct-a", gpu.uuid, mem_pct=60))
    pod = expect_bound_to(workloads, "pct-a", gpu.uuid, "SCHED-USEDMEM-5")
    mem = allocated(pod)[0][0].mem_mib
    assert mem == gpu.devmem * 60 // 100, violated(
        "SCHED-USEDMEM-5", f"60 % of {gpu.devmem} MiB was assigned as {mem} MiB"
    )
    workloads.create(on_gpu("pct-b", gpu.uuid, mem_pct=60))
    expect_filter_failure(workloads, "pct-b", "CardInsufficientMemory", "SCHED-USEDMEM-5")


# --- cores ------------------------------------------------------------------------------------------
@rule(
    "SCHED-USEDCORE-1",
    "Cores of pods on one GPU add up: after 60 cores, 60 more are refused (CardInsufficientCore), 40 fit",
)
def test_cores_left(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("c60", gpu.uuid, mem=1000, cores=60))
    expect_bound_to(workloads, "c60", gpu.uuid, "SCHED-USEDCORE-1")
    workloads.create(on_gpu("c60-more", gpu.uuid, mem=1000, cores=60))
    expect_filter_failure(workloads, "c60-more", "CardInsufficientCore", "SCHED-USEDCORE-1")
    workloads.create(on_gpu("c40", gpu.uuid, mem=1000, cores=40))
    expect_bound_to(workloads, "c40", gpu.uuid, "SCHED-USEDCORE-1")


@rule(
    "SCHED-USEDCORE-2",
    "Cores of a pod's containers on one GPU add up: two 60-core containers do not fit on one GPU",
)
def test_cores_sum_over_containers(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("two60", gpu.uuid, mem=1000, cores=60, containers=2))
    expect_filter_failure(workloads, "two60", "CardInsufficientCore", "SCHED-USEDCORE-2")


@rule(
    "SCHED-USEDCORE-3",
    "A GPU whose cores are all allocated takes no pod without cores: CardComputeUnitsExhausted",
)
def test_cores_exhausted(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("allcores", gpu.uuid, mem=1000, cores=100))
    expect_bound_to(workloads, "allcores", gpu.uuid, "SCHED-USEDCORE-3")
    workloads.create(on_gpu("coreless", gpu.uuid, mem=1000))
    expect_filter_failure(workloads, "coreless", "CardComputeUnitsExhausted", "SCHED-USEDCORE-3")


# --- slots ------------------------------------------------------------------------------------------
@rule(
    "SCHED-SLOTS-1",
    "A GPU shared by as many pods as its registered split count takes no further pod: "
    "CardTimeSlicingExhausted",
)
def test_slots_filled_by_pods(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    for i in range(gpu.count):
        workloads.create(on_gpu(f"s{i}", gpu.uuid, mem=100))
    for i in range(gpu.count):
        expect_bound_to(workloads, f"s{i}", gpu.uuid, "SCHED-SLOTS-1")
    workloads.create(on_gpu("extra", gpu.uuid, mem=100))
    expect_filter_failure(workloads, "extra", "CardTimeSlicingExhausted", "SCHED-SLOTS-1")


@rule(
    "SCHED-SLOTS-2",
    "Each container takes a slot: a pod with split-count containers on one GPU fills it for the next pod",
)
def test_slots_filled_by_containers(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("many", gpu.uuid, mem=100, containers=gpu.count))
    expect_bound_to(workloads, "many", gpu.uuid, "SCHED-SLOTS-2")
    workloads.create(on_gpu("extra", gpu.uuid, mem=100))
    expect_filter_failure(workloads, "extra", "CardTimeSlicingExhausted", "SCHED-SLOTS-2")


# --- node policy between two candidate nodes (no nodeSelector) ----------------------------------------
def _two_idle_nodes(kube: Any, rule_id: str) -> list[str]:
    """Two or more GPU nodes, with no live GPU pod left on any (so only this case's pods score them)."""
    gpus = all_gpus(kube)
    nodes = sorted({g.node for g in gpus})
    assert len(nodes) >= 2, violated(rule_id, f"node policies need two GPU nodes; registered: {nodes}")
    for node in nodes:
        idle_node_gpus(kube, node)
    return nodes


@rule(
    "SCHED-NODEPOLICY-1",
    "hami.io/node-scheduler-policy binpack puts a second pod on the node the first one made busier, "
    "with two candidate nodes",
)
def test_node_binpack(workloads: Workloads, kube: Any) -> None:
    _two_idle_nodes(kube, "SCHED-NODEPOLICY-1")
    ann = {C.NODE_POLICY: "binpack", C.GPU_POLICY: "spread"}
    big = pod_manifest("big", [ContainerSpec(gpus=2, mem=20000, cores=50, args=HOLD)], annotations=ann)
    workloads.create(big)
    first = workloads.wait_scheduled("big")["spec"]["nodeName"]
    workloads.create(pod_manifest("small", [ContainerSpec(gpus=1, mem=1000, args=HOLD)], annotations=ann))
    second = workloads.wait_scheduled("small")["spec"]["nodeName"]
    assert second == first, violated(
        "SCHED-NODEPOLICY-1", f"binpack placed the first pod on {first} and the second on {second}"
    )


@rule(
    "SCHED-NODEPOLICY-2",
    "hami.io/node-scheduler-policy spread puts a second pod on the other node, with two candidate nodes",
)
def test_node_spread(workloads: Workloads, kube: Any) -> None:
    _two_idle_nodes(kube, "SCHED-NODEPOLICY-2")
    ann = {C.NODE_POLICY: "spread", C.GPU_POLICY: "spread"}
    # the first pod makes its node far busier than anything a finished case can leave behind
    big = pod_manifest("big", [ContainerSpec(gpus=3, mem=60000, cores=80, args=HOLD)], annotations=ann)
    workloads.create(big)
    first = workloads.wait_scheduled("big")["spec"]["nodeName"]
    workloads.create(pod_manifest("small", [ContainerSpec(gpus=1, mem=1000, args=HOLD)], annotations=ann))
    second = workloads.wait_scheduled("small")["spec"]["nodeName"]
    assert second != first, violated(
        "SCHED-NODEPOLICY-2", f"spread placed both pods on {first} although another node was emptier"
    )


# --- selection by exclusion -------------------------------------------------------------------------
@rule("SCHED-NOUUID-1", "nvidia.com/nouse-gpuuuid keeps a pod off every GPU it lists")
def test_nouse_uuid(workloads: Workloads, kube: Any) -> None:
    gpus = all_gpus(kube)
    keep = idle_gpu(kube)
    excluded = ",".join(g.uuid for g in gpus if g.uuid != keep.uuid)
    workloads.create(
        pod_manifest(
            "avoid", [ContainerSpec(gpus=1, mem=1000, args=HOLD)], annotations={C.NOUSE_GPUUUID: excluded}
        )
    )
    pod = expect_bound_to(workloads, "avoid", keep.uuid, "SCHED-NOUUID-1")
    assert pod["spec"]["nodeName"] == keep.node, violated(
        "SCHED-NOUUID-1", f"bound to {pod['spec']['nodeName']}, the only allowed GPU is on {keep.node}"
    )


# --- events -----------------------------------------------------------------------------------------
@rule("SCHED-EVENT-1", "A scheduled pod gets a FilteringSucceed event naming the node it was bound to")
def test_filtering_succeed_event(workloads: Workloads) -> None:
    workloads.create(pod_manifest("evented", [ContainerSpec(gpus=1, mem=1000)]))
    node = workloads.wait_scheduled("evented")["spec"]["nodeName"]
    ev = workloads.wait_event("evented", C.FILTERING_SUCCEED)
    assert node in (ev.get("message") or ""), violated(
        "SCHED-EVENT-1", f"FilteringSucceed message {ev.get('message')!r} does not name node {node}"
    )


@rule("SCHED-EVENT-2", "A bound pod gets a BindingSucceed event naming its node and the pod")
def test_binding_succeed_event(workloads: Workloads) -> None:
    workloads.create(pod_manifest("evt-bind", [ContainerSpec(gpus=1, mem=1000)]))
    node = workloads.wait_scheduled("evt-bind")["spec"]["nodeName"]
    ev = workloads.wait_event("evt-bind", C.BINDING_SUCCEED)
    msg = ev.get("message") or ""
    assert node in msg and "evt-bind" in msg, violated(
        "SCHED-EVENT-2", f"BindingSucceed message {msg!r} does not name node {node} and pod evt-bind"
    )
