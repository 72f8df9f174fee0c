"""Scheduling: HAMi's filter/bind decisions, read from pod annotations, events and placement."""

from __future__ import annotations

from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import (
    ContainerSpec,
    Workloads,
    allocated,
    gpu_nodes,
    gpu_pod,
    pod_manifest,
    registered_devices,
)

pytestmark = [pytest.mark.nvidia, pytest.mark.scheduling]


def _uuids_by_node(kube: Any) -> dict[str, list[str]]:
    return {n["metadata"]["name"]: [d.id for d in registered_devices(n)] for n in gpu_nodes(kube)}


def _expect_filter_failure(w: Workloads, name: str, reason: str, rule_id: str) -> None:
    ev = w.wait_event(name, C.FILTERING_FAILED)
    assert reason in (ev.get("message") or ""), violated(
        rule_id, f"FilteringFailed message {ev.get('message')!r} does not name {reason}"
    )
    assert not w.get(name)["spec"].get("nodeName"), violated(
        rule_id, f"pod {name} was bound although it does not fit"
    )


@rule("SCHED-FIT-1", "A fitting GPU pod is bound with hami.io/vgpu-node and a devices-allocated assignment")
def test_fit_and_bind(workloads: Workloads, kube: Any) -> None:
    workloads.create(gpu_pod("fit", gpus=1, mem=1000))
    pod = workloads.wait_scheduled("fit")
    node = pod["spec"]["nodeName"]
    ann = pod["metadata"].get("annotations") or {}
    assert ann.get(C.VGPU_NODE) == node, violated(
        "SCHED-FIT-1", f"{C.VGPU_NODE}={ann.get(C.VGPU_NODE)!r}, bound to {node}"
    )
    segs = allocated(pod)
    assert len(segs) == 1 and len(segs[0]) == 1, violated(
        "SCHED-FIT-1", f"assignment {ann.get(C.NVIDIA_ALLOCATED)!r}"
    )
    dev = segs[0][0]
    assert dev.uuid in _uuids_by_node(kube)[node], violated(
        "SCHED-FIT-1", f"assigned {dev.uuid} is not a GPU of {node}"
    )
    assert dev.mem_mib == 1000 and dev.vendor_word.upper() == "NVIDIA", violated(
        "SCHED-FIT-1", f"assigned {dev}"
    )
    workloads.wait_phase("fit", ("Running", "Succeeded"))
    phase = (workloads.get("fit")["metadata"].get("annotations") or {}).get(C.BIND_PHASE)
    assert phase == "success", violated("SCHED-FIT-1", f"{C.BIND_PHASE} is {phase!r} after the pod started")


@rule(
    "SCHED-REJECT-1",
    "A pod asking more memory than any GPU has stays Pending: FilteringFailed CardInsufficientMemory",
)
def test_reject_memory(workloads: Workloads) -> None:
    workloads.create(gpu_pod("toobig", gpus=1, mem=10_000_000))
    _expect_filter_failure(workloads, "toobig", "CardInsufficientMemory", "SCHED-REJECT-1")


@rule(
    "SCHED-REJECT-2",
    "A pod asking more GPUs than any node has stays Pending: FilteringFailed NodeInsufficientDevice",
)
def test_reject_count(workloads: Workloads, kube: Any) -> None:
    most = max(len(v) for v in _uuids_by_node(kube).values())
    workloads.create(gpu_pod("toomany", gpus=most + 1, mem=1000))
    _expect_filter_failure(workloads, "toomany", "NodeInsufficientDevice", "SCHED-REJECT-2")


def _two(workloads: Workloads, policy: str, node: str) -> tuple[dict[str, Any], dict[str, Any]]:
    ann = {C.GPU_POLICY: policy, C.NODE_POLICY: "binpack"}
    pods = []
    for i in (1, 2):
        p = gpu_pod(
            f"{policy}-{i}",
            gpus=1,
            mem=1000,
            annotations=ann,
            args=["--alloc-mib", "0", "--kernel-seconds", "0", "--hold-seconds", "60"],
        )
        p["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
        workloads.create(p)
        pods.append(workloads.wait_scheduled(p["metadata"]["name"]))
    return pods[0], pods[1]


@rule("SCHED-BINPACK-1", "hami.io/gpu-scheduler-policy binpack puts two small pods on the same GPU")
def test_gpu_binpack(workloads: Workloads, kube: Any) -> None:
    node = sorted(_uuids_by_node(kube))[0]
    a, b = _two(workloads, "binpack", node)
    ua, ub = allocated(a)[0][0].uuid, allocated(b)[0][0].uuid
    assert ua == ub, violated("SCHED-BINPACK-1", f"binpack placed the pods on {ua} and {ub}")


@rule("SCHED-SPREAD-1", "hami.io/gpu-scheduler-policy spread puts two small pods on different GPUs")
def test_gpu_spread(workloads: Workloads, kube: Any) -> None:
    node = sorted(_uuids_by_node(kube))[-1]
    a, b = _two(workloads, "spread", node)
    ua, ub = allocated(a)[0][0].uuid, allocated(b)[0][0].uuid
    assert ua != ub, violated("SCHED-SPREAD-1", f"spread placed both pods on {ua}")


@rule("SCHED-TYPE-1", "nvidia.com/use-gputype and nouse-gputype select or reject devices by type")
def test_type_selection(workloads: Workloads, kube: Any) -> None:
    node = gpu_nodes(kube)[0]
    model = registered_devices(node)[0].type  # a type always contains itself
    workloads.create(gpu_pod("usetype", gpus=1, mem=1000, annotations={C.USE_GPUTYPE: model}))
    workloads.wait_scheduled("usetype")
    workloads.create(gpu_pod("wrongtype", gpus=1, mem=1000, annotations={C.USE_GPUTYPE: "NO-SUCH-GPU-MODEL"}))
    _expect_filter_failure(workloads, "wrongtype", "CardTypeMismatch", "SCHED-TYPE-1")
    workloads.create(gpu_pod("notype", gpus=1, mem=1000, annotations={C.NOUSE_GPUTYPE: "NVIDIA"}))
    _expect_filter_failure(workloads, "notype", "CardTypeMismatch", "SCHED-TYPE-1")


@rule("SCHED-UUID-1", "nvidia.com/use-gpuuuid places the container on exactly that GPU")
def test_uuid_selection(workloads: Workloads, kube: Any) -> None:
    by_node = _uuids_by_node(kube)
    node = sorted(by_node)[-1]
    uuid = by_node[node][1 % len(by_node[node])]
    workloads.create(gpu_pod("useuuid", gpus=1, mem=1000, annotations={C.USE_GPUUUID: uuid}))
    pod = workloads.wait_scheduled("useuuid")
    got = allocated(pod)[0][0].uuid
    assert got == uuid and pod["spec"]["nodeName"] == node, violated(
        "SCHED-UUID-1", f"asked for {uuid} on {node}, got {got} on {pod['spec']['nodeName']}"
    )


@rule("SCHED-CORDON-1", "A GPU listed in the node's hami.io/device-cordon receives no new allocation")
def test_cordon(workloads: Workloads, kube: Any) -> None:
    by_node = _uuids_by_node(kube)
    node = sorted(by_node)[0]
    uuid = by_node[node][-1]
    path = f"/api/v1/nodes/{node}"
    before = (kube.get(path)["metadata"].get("annotations") or {}).get(C.DEVICE_CORDON)
    cordoned = ",".join(x for x in [before, uuid] if x)
    kube.patch(path, {"metadata": {"annotations": {C.DEVICE_CORDON: cordoned}}}, kind="merge")
    try:
        workloads.create(gpu_pod("oncordoned", gpus=1, mem=1000, annotations={C.USE_GPUUUID: uuid}))
        _expect_filter_failure(workloads, "oncordoned", "CardCordoned", "SCHED-CORDON-1")
    finally:
        kube.patch(path, {"metadata": {"annotations": {C.DEVICE_CORDON: before}}}, kind="merge")


@rule("SCHED-MULTI-1", "A container asking nvidia.com/gpu: 2 is assigned two distinct GPUs in its segment")
def test_multi_gpu(workloads: Workloads) -> None:
    workloads.create(gpu_pod("two", gpus=2, mem=1000))
    segs = allocated(workloads.wait_scheduled("two"))
    uuids = [d.uuid for d in segs[0]] if segs else []
    assert len(uuids) == 2 and len(set(uuids)) == 2, violated("SCHED-MULTI-1", f"assignment {segs}")


@rule("SCHED-MULTICTR-1", "Each container has its own positional segment, empty for containers without GPU")
def test_multi_container(workloads: Workloads) -> None:
    manifest = pod_manifest(
        "multi",
        [
            ContainerSpec(name="a", gpus=1, mem=1000),
            ContainerSpec(name="b"),
            ContainerSpec(name="c", gpus=1, mem=2000),
        ],
    )
    workloads.create(manifest)
    segs = allocated(workloads.wait_scheduled("multi"))
    shape = [[d.mem_mib for d in s] for s in segs]
    assert shape == [[1000], [], [2000]], violated(
        "SCHED-MULTICTR-1", f"segments (MiB per device) {shape}, want [[1000], [], [2000]]"
    )


@rule("SCHED-INIT-1", "Init containers take the leading segments of the assignment, app containers follow")
def test_init_container(workloads: Workloads) -> None:
    manifest = pod_manifest(
        "withinit",
        [ContainerSpec(name="app", gpus=1, mem=1000)],
        init=[ContainerSpec(name="init", gpus=1, mem=500)],
    )
    workloads.create(manifest)
    segs = allocated(workloads.wait_scheduled("withinit"))
    shape = [[d.mem_mib for d in s] for s in segs]
    assert shape == [[500], [1000]], violated(
        "SCHED-INIT-1", f"segments (MiB per device) {shape}, want [[500], [1000]]"
    )


@rule("SCHED-EXCL-1", "An exclusive request (gpucores 100) does not land on a GPU that is already shared")
def test_exclusive(workloads: Workloads, kube: Any) -> None:
    by_node = _uuids_by_node(kube)
    uuid = by_node[sorted(by_node)[-1]][0]
    hold = ["--alloc-mib", "0", "--kernel-seconds", "0", "--hold-seconds", "60"]
    workloads.create(gpu_pod("sharer", gpus=1, mem=1000, annotations={C.USE_GPUUUID: uuid}, args=hold))
    workloads.wait_scheduled("sharer")
    workloads.create(gpu_pod("exclusive", gpus=1, mem=1000, cores=100, annotations={C.USE_GPUUUID: uuid}))
    _expect_filter_failure(workloads, "exclusive", "ExclusiveDeviceAllocateConflict", "SCHED-EXCL-1")


@rule(
    "SCHED-QUOTA-1",
    "A pod exceeding the namespace's limits.nvidia.com/gpumem quota is denied or not scheduled",
)
def test_quota(workloads: Workloads, kube: Any) -> None:
    kube.create(
        f"/api/v1/namespaces/{workloads.ns}/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "gpumem"},
            "spec": {"hard": {f"limits.{C.GPUMEM}": "2000"}},
        },
    )
    _pod, err = workloads.try_create(gpu_pod("overquota", gpus=1, mem=3000))
    if err is not None:
        assert C.DENY_QUOTA in str(err), violated("SCHED-QUOTA-1", f"denied, but with {str(err)!r}")
        return
    _expect_filter_failure(workloads, "overquota", "ResourceQuotaNotFit", "SCHED-QUOTA-1")
