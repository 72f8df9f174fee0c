"""Scheduling: HAMi's filter/bind decisions, read from pod annotations, events and placement."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, unknown, violated
from conformance.kube import (
    ContainerSpec,
    Workloads,
    allocated,
    gpu_nodes,
    gpu_pod,
    pod_manifest,
    poll,
    registered_devices,
    summarize_events,
)
from conformance.suites.common import (
    HOLD,
    NodeAnnotationWatch,
    all_gpus,
    expect_bound_to,
    expect_filter_failure,
    idle_gpu,
    idle_node_gpus,
    on_gpu,
)
from kubeclient.client import ApiError

pytestmark = [pytest.mark.nvidia, pytest.mark.scheduling]


def _uuids_by_node(kube: Any) -> dict[str, list[str]]:
    return {n["metadata"]["name"]: [d.id for d in registered_devices(n)] for n in gpu_nodes(kube)}


@rule(
    "SCHED-FIT-1",
    "A fitting GPU pod is bound with hami.io/vgpu-node, an assignment of one of its node's GPUs with its "
    "memory, and bind-phase success once started",
)
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
    "A pod asking more memory than any GPU has stays Pending, its scheduling failure naming "
    "CardInsufficientMemory",
)
def test_reject_memory(workloads: Workloads) -> None:
    workloads.create(gpu_pod("toobig", gpus=1, mem=10_000_000))
    expect_filter_failure(workloads, "toobig", "CardInsufficientMemory", "SCHED-REJECT-1")


@rule(
    "SCHED-REJECT-2",
    "A pod asking more GPUs than any node has stays Pending, its scheduling failure naming "
    "NodeInsufficientDevice",
)
def test_reject_count(workloads: Workloads, kube: Any) -> None:
    most = max(len(v) for v in _uuids_by_node(kube).values())
    workloads.create(gpu_pod("toomany", gpus=most + 1, mem=1000))
    expect_filter_failure(workloads, "toomany", "NodeInsufficientDevice", "SCHED-REJECT-2")


def _two(workloads: Workloads, policy: str, node: str) -> tuple[dict[str, Any], dict[str, Any]]:
    # only this case's pods may score the node's GPUs: start from an idle node, whatever ran before
    idle_node_gpus(workloads.kube, node)
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


@rule(
    "SCHED-BINPACK-1", "hami.io/gpu-scheduler-policy binpack puts two small pods on one node on the same GPU"
)
def test_gpu_binpack(workloads: Workloads, kube: Any) -> None:
    node = sorted(_uuids_by_node(kube))[0]
    a, b = _two(workloads, "binpack", node)
    ua, ub = allocated(a)[0][0].uuid, allocated(b)[0][0].uuid
    assert ua == ub, violated("SCHED-BINPACK-1", f"binpack placed the pods on {ua} and {ub}")


@rule(
    "SCHED-SPREAD-1", "hami.io/gpu-scheduler-policy spread puts two small pods on one node on different GPUs"
)
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
    expect_filter_failure(workloads, "wrongtype", "CardTypeMismatch", "SCHED-TYPE-1")
    workloads.create(gpu_pod("notype", gpus=1, mem=1000, annotations={C.NOUSE_GPUTYPE: "NVIDIA"}))
    expect_filter_failure(workloads, "notype", "CardTypeMismatch", "SCHED-TYPE-1")


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


@rule(
    "SCHED-CORDON-1",
    "A pod pinned to a GPU listed in the node's hami.io/device-cordon is refused: CardCordoned",
)
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
        expect_filter_failure(workloads, "oncordoned", "CardCordoned", "SCHED-CORDON-1")
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


@rule(
    "SCHED-EXCL-1",
    "An exclusive request (gpucores 100) pinned to a GPU already shared is refused: "
    "ExclusiveDeviceAllocateConflict",
)
def test_exclusive(workloads: Workloads, kube: Any) -> None:
    by_node = _uuids_by_node(kube)
    uuid = by_node[sorted(by_node)[-1]][0]
    hold = ["--alloc-mib", "0", "--kernel-seconds", "0", "--hold-seconds", "60"]
    workloads.create(gpu_pod("sharer", gpus=1, mem=1000, annotations={C.USE_GPUUUID: uuid}, args=hold))
    workloads.wait_scheduled("sharer")
    workloads.create(gpu_pod("exclusive", gpus=1, mem=1000, cores=100, annotations={C.USE_GPUUUID: uuid}))
    expect_filter_failure(workloads, "exclusive", "ExclusiveDeviceAllocateConflict", "SCHED-EXCL-1")


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
    expect_filter_failure(workloads, "overquota", "ResourceQuotaNotFit", "SCHED-QUOTA-1")


# --- against what is already allocated ------------------------------------------------------------
# Each capacity case starts from a GPU no live pod holds and pins its pods to it with
# nvidia.com/use-gpuuuid (never a nodeSelector), so what decides is the usage HAMi tracks.
# --- memory -----------------------------------------------------------------------------------------
@rule(
    "SCHED-USEDMEM-1",
    "A pod asking 1 MiB more than a GPU has left after another pod's allocation is refused there: "
    "CardInsufficientMemory",
)
def test_memory_left_refused(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("filler", gpu.uuid, mem=gpu.devmem - 1000))
    expect_bound_to(workloads, "filler", gpu.uuid, "SCHED-USEDMEM-1", running=True)
    workloads.create(on_gpu("over", gpu.uuid, mem=1001))
    expect_filter_failure(workloads, "over", "CardInsufficientMemory", "SCHED-USEDMEM-1")


@rule("SCHED-USEDMEM-2", "A pod asking exactly the memory a GPU has left is placed on it")
def test_memory_left_exact_fit(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("filler", gpu.uuid, mem=gpu.devmem - 1000))
    expect_bound_to(workloads, "filler", gpu.uuid, "SCHED-USEDMEM-2", running=True)
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
        expect_bound_to(workloads, f"q{i}", gpu.uuid, "SCHED-USEDMEM-3", running=True)
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
    pod = expect_bound_to(workloads, "pct-a", gpu.uuid, "SCHED-USEDMEM-5", running=True)
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
    expect_bound_to(workloads, "c60", gpu.uuid, "SCHED-USEDCORE-1", running=True)
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
    expect_bound_to(workloads, "allcores", gpu.uuid, "SCHED-USEDCORE-3", running=True)
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
        expect_bound_to(workloads, f"s{i}", gpu.uuid, "SCHED-SLOTS-1", running=True)
    workloads.create(on_gpu("extra", gpu.uuid, mem=100))
    expect_filter_failure(workloads, "extra", "CardTimeSlicingExhausted", "SCHED-SLOTS-1")


@rule(
    "SCHED-SLOTS-2",
    "Each container takes a slot: a pod with split-count containers on one GPU fills it for the next pod",
)
def test_slots_filled_by_containers(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(on_gpu("many", gpu.uuid, mem=100, containers=gpu.count))
    expect_bound_to(workloads, "many", gpu.uuid, "SCHED-SLOTS-2", running=True)
    workloads.create(on_gpu("extra", gpu.uuid, mem=100))
    expect_filter_failure(workloads, "extra", "CardTimeSlicingExhausted", "SCHED-SLOTS-2")


# --- node policy between two candidate nodes (no nodeSelector) ----------------------------------------
# Each case sets up its own precondition, whatever ran before: no live GPU pod on any node (as the API
# shows it), and then, from the scheduler's own FilteringSucceed message, that both nodes really were
# candidates for the first pod (a scheduler still counting a just-deleted pod of an earlier case would
# otherwise decide on a node the case cannot see). The first pod takes three GPUs nearly whole, so its
# node is far busier than anything that still fits the same pod elsewhere.
BIG = ContainerSpec(gpus=3, mem=60000, cores=80, args=HOLD)
FIT_COUNT_RE = re.compile(r"(\d+) nodes fit\(")
CANDIDATES_WAIT_S = 60


def _two_idle_nodes(kube: Any, rule_id: str) -> list[str]:
    """Two or more GPU nodes, with no live GPU pod left on any (so only this case's pods score them)."""
    gpus = all_gpus(kube)
    nodes = sorted({g.node for g in gpus})
    assert len(nodes) >= 2, violated(rule_id, f"node policies need two GPU nodes; registered: {nodes}")
    for node in nodes:
        idle_node_gpus(kube, node)
    return nodes


def _wait_gone(workloads: Workloads, name: str) -> None:
    def exists() -> bool:
        try:
            workloads.get(name)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    poll(f"pod {workloads.ns}/{name} to be deleted", exists, lambda there: not there, workloads.timeout)


def _fit_count(workloads: Workloads, name: str) -> int | None:
    """How many nodes the scheduler found fit for pod ``name`` (its FilteringSucceed message), None
    when it records no such message."""
    try:
        ev = workloads.wait_event(name, C.FILTERING_SUCCEED, timeout=10)
    except AssertionError:
        return None
    m = FIT_COUNT_RE.search(ev.get("message") or "")
    return int(m.group(1)) if m else None


def _first_on_two_candidates(
    workloads: Workloads, kube: Any, ann: dict[str, str], rule_id: str
) -> tuple[str, str]:
    """Place the big first pod while both nodes are candidates; (its name, its node)."""
    nodes = _two_idle_nodes(kube, rule_id)
    deadline = time.monotonic() + CANDIDATES_WAIT_S
    attempt, fits = 0, None
    while True:
        attempt += 1
        name = f"big-{attempt}"
        workloads.create(pod_manifest(name, [BIG], annotations=ann))
        node = workloads.wait_scheduled(name)["spec"]["nodeName"]
        fits = _fit_count(workloads, name)
        if fits is None or fits >= 2:
            return name, node
        if time.monotonic() > deadline:
            break
        # the scheduler still counted usage the API no longer shows: try again once it has caught up
        workloads.delete(name)
        _wait_gone(workloads, name)
        time.sleep(2)
    raise AssertionError(
        violated(
            rule_id,
            f"for {CANDIDATES_WAIT_S}s the scheduler found only {fits} of nodes {nodes} fit for a 3-GPU pod "
            f"although no live GPU pod was on any of them (events: {workloads.event_summary(name)})",
        )
    )


@rule(
    "SCHED-NODEPOLICY-1",
    "hami.io/node-scheduler-policy binpack puts a second pod on the node the first one made busier, "
    "with two candidate nodes",
)
def test_node_binpack(workloads: Workloads, kube: Any) -> None:
    ann = {C.NODE_POLICY: "binpack", C.GPU_POLICY: "spread"}
    _, first = _first_on_two_candidates(workloads, kube, ann, "SCHED-NODEPOLICY-1")
    workloads.create(pod_manifest("small", [ContainerSpec(gpus=1, mem=1000, args=HOLD)], annotations=ann))
    second = workloads.wait_scheduled("small")["spec"]["nodeName"]
    assert second == first, violated(
        "SCHED-NODEPOLICY-1",
        f"binpack placed the first pod on {first} and the second on {second} "
        f"(events: {workloads.event_summary('small')})",
    )


@rule(
    "SCHED-NODEPOLICY-2",
    "hami.io/node-scheduler-policy spread puts a second pod on the other node, with two candidate nodes",
)
def test_node_spread(workloads: Workloads, kube: Any) -> None:
    ann = {C.NODE_POLICY: "spread", C.GPU_POLICY: "spread"}
    _, first = _first_on_two_candidates(workloads, kube, ann, "SCHED-NODEPOLICY-2")
    workloads.create(pod_manifest("small", [ContainerSpec(gpus=1, mem=1000, args=HOLD)], annotations=ann))
    second = workloads.wait_scheduled("small")["spec"]["nodeName"]
    assert second != first, violated(
        "SCHED-NODEPOLICY-2",
        f"spread placed both pods on {first} although another node was emptier "
        f"(events: {workloads.event_summary('small')})",
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


NO_AVAILABLE_NODE = "no available node"  # HAMi's FilteringFailed summary message starts so
EVENT_GRACE_S = 10


@rule(
    "SCHED-EVENT-3",
    "A GPU pod that fits on no node gets a FilteringFailed event from the HAMi scheduler whose message "
    "says no available node",
)
def test_filtering_failed_event(workloads: Workloads) -> None:
    # what upstream HAMi's own e2e test checks for an overcommitted pod; the refusal cases accept the
    # reason from kube-scheduler's FailedScheduling too, so only this case notices a silent extender
    workloads.create(pod_manifest("evt-fail", [ContainerSpec(gpus=1, mem=10_000_000)]))

    def failing(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in evs if e.get("reason") == C.FILTERING_FAILED]

    def summary(evs: list[dict[str, Any]]) -> bool:
        return any(NO_AVAILABLE_NODE in (e.get("message") or "") for e in failing(evs))

    # the extender records its event before it answers the refusal kube-scheduler then reports: once
    # FailedScheduling shows, a FilteringFailed that has not come within a short grace never will
    refused_at: list[float] = []

    def settled(evs: list[dict[str, Any]]) -> bool:
        if summary(evs):
            return True
        if not refused_at and any(e.get("reason") == "FailedScheduling" for e in evs):
            refused_at.append(time.monotonic())
        return bool(refused_at) and time.monotonic() - refused_at[0] > EVENT_GRACE_S

    evs = poll(
        f"event {C.FILTERING_FAILED} on pod {workloads.ns}/evt-fail",
        lambda: workloads.events("evt-fail"),
        settled,
        workloads.timeout,
        describe=lambda items: f"events: {summarize_events(items or [])}",
        rule_id="SCHED-EVENT-3",
    )
    assert summary(evs), violated(
        "SCHED-EVENT-3",
        f"no {C.FILTERING_FAILED} event saying {NO_AVAILABLE_NODE!r} for pod evt-fail {EVENT_GRACE_S}s after "
        f"kube-scheduler reported it unschedulable; events: {summarize_events(evs)}",
    )
    node = (workloads.get("evt-fail").get("spec") or {}).get("nodeName")
    assert not node, violated("SCHED-EVENT-3", f"pod evt-fail was bound to {node} although it fits nowhere")
    assert all(e.get("type") == "Warning" for e in failing(evs)), violated(
        "SCHED-EVENT-3", f"FilteringFailed events not of type Warning: {summarize_events(failing(evs))}"
    )


# --- the node lock (hami.io/mutex.lock on the Node) ---------------------------------------------------
# Taken for a pod while it is bound, released once its devices are allocated, honoured while another
# live pod holds it, taken over once expired. The cases write the annotation themselves to stage a
# held or an expired lock, and remove what they staged.
EXPIRED_AGE = timedelta(minutes=30)  # well past HAMi's 5-minute default lock timeout
BLOCKED_FOR_S = 8  # how long a pod must stay unbound while another live pod holds the lock


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lock_of(node: dict[str, Any]) -> str | None:
    return (node["metadata"].get("annotations") or {}).get(C.NODE_LOCK)


def _set_lock(kube: Any, node: str, value: str | None) -> None:
    kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": {C.NODE_LOCK: value}}}, kind="merge")


def _holder(workloads: Workloads, name: str = "holder") -> str:
    """A live pod without devices, to name as the lock's holder."""
    workloads.create(pod_manifest(name, [ContainerSpec(args=HOLD)]))
    workloads.wait_phase(name, ("Running",))
    return name


@rule(
    "SCHED-LOCK-1",
    "Binding a pod takes the node lock naming <namespace>,<pod> and allocation releases it afterwards",
)
def test_lock_taken_and_released(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    watch = NodeAnnotationWatch(kube, gpu.node, C.NODE_LOCK)
    workloads.create(on_gpu("locker", gpu.uuid, mem=1000))
    workloads.wait_phase("locker", ("Running",))
    suffix = f",{workloads.ns},locker"
    final = poll(
        f"the node lock on {gpu.node} to stop naming {workloads.ns}/locker after the pod started",
        lambda: _lock_of(kube.get(f"/api/v1/nodes/{gpu.node}")) or "",
        lambda v: not v.endswith(suffix),
        20,
        describe=lambda v: f"{C.NODE_LOCK}={v!r}",
    )
    time.sleep(0.5)  # let the watch deliver the release it has seen
    held = [v for v in watch.values if v and v.endswith(suffix)]
    assert held, violated(
        "SCHED-LOCK-1",
        f"{C.NODE_LOCK} on {gpu.node} never named {workloads.ns}/locker during the bind "
        f"(values seen: {watch.values})",
    )
    stamp = held[0].split(",", 1)[0]
    try:
        datetime.strptime(stamp.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        pytest.fail(violated("SCHED-LOCK-1", f"lock value {held[0]!r} does not start with an RFC3339 time"))
    assert not (final or "").endswith(suffix), violated("SCHED-LOCK-1", f"lock still held: {final!r}")


def _staged(kube: Any, node: str, value: str) -> str | None:
    before = _lock_of(kube.get(f"/api/v1/nodes/{node}"))
    _set_lock(kube, node, value)
    return before


@rule(
    "SCHED-LOCK-2",
    "An expired node lock naming a pod that does not exist does not stop a new pod from binding and running",
)
def test_expired_lock_of_missing_pod(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    old = _rfc3339(datetime.now(UTC) - EXPIRED_AGE)
    _staged(kube, gpu.node, f"{old},{workloads.ns},no-such-pod")
    try:
        workloads.create(on_gpu("after-expiry", gpu.uuid, mem=1000))
        expect_bound_to(workloads, "after-expiry", gpu.uuid, "SCHED-LOCK-2")
        workloads.wait_phase("after-expiry", ("Running",))
    finally:
        _release_if(kube, gpu.node, f",{workloads.ns},no-such-pod")


@rule(
    "SCHED-LOCK-3",
    "An expired node lock is taken over even while the pod it names still exists",
)
def test_expired_lock_of_live_pod(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    holder = _holder(workloads)
    old = _rfc3339(datetime.now(UTC) - EXPIRED_AGE)
    _staged(kube, gpu.node, f"{old},{workloads.ns},{holder}")
    try:
        workloads.create(on_gpu("takeover", gpu.uuid, mem=1000))
        expect_bound_to(workloads, "takeover", gpu.uuid, "SCHED-LOCK-3")
        workloads.wait_phase("takeover", ("Running",))
    finally:
        _release_if(kube, gpu.node, f",{workloads.ns},{holder}")


@rule(
    "SCHED-LOCK-4",
    "A fresh node lock held by another live pod keeps a new pod off that node until it is released",
)
def test_fresh_lock_blocks(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    holder = _holder(workloads)
    _staged(kube, gpu.node, f"{_rfc3339(datetime.now(UTC))},{workloads.ns},{holder}")
    try:
        workloads.create(on_gpu("waiter", gpu.uuid, mem=1000))
        deadline = time.monotonic() + BLOCKED_FOR_S
        while time.monotonic() < deadline:
            node = workloads.get("waiter")["spec"].get("nodeName")
            assert not node, violated(
                "SCHED-LOCK-4",
                f"pod waiter was bound to {node} while {workloads.ns}/{holder} held its node lock "
                f"(events: {workloads.event_summary('waiter')})",
            )
            time.sleep(0.5)
    finally:
        _release_if(kube, gpu.node, f",{workloads.ns},{holder}")
    # released: the pod goes on (kube-scheduler retries after its backoff)
    expect_bound_to(workloads, "waiter", gpu.uuid, "SCHED-LOCK-4")


def _release_if(kube: Any, node: str, suffix: str) -> None:
    """Remove a lock this case staged (only if it still names the staged holder)."""
    value = _lock_of(kube.get(f"/api/v1/nodes/{node}"))
    if value and value.endswith(suffix):
        _set_lock(kube, node, None)


# --- NUMA binding ---------------------------------------------------------------------------------------
NUMA_BIND = "nvidia.com/numa-bind"  # pod annotation: the devices of one container share a NUMA node


@rule(
    "SCHED-NUMA-1",
    "With nvidia.com/numa-bind: true a two-GPU container gets GPUs of one NUMA node, even where binpack "
    "would pair across NUMA nodes",
)
def test_numa_bind(workloads: Workloads, kube: Any) -> None:
    node = idle_gpu(kube).node
    idle_node_gpus(kube, node)
    gpus = [g for g in all_gpus(kube) if g.node == node]
    by_numa: dict[int, list[Any]] = {}
    for g in sorted(gpus, key=lambda g: g.index):
        by_numa.setdefault(g.numa, []).append(g)
    groups = [v for v in by_numa.values() if len(v) >= 2]
    if len(groups) < 2:
        unknown(f"node {node} needs two NUMA nodes with two GPUs each; has {dict(sorted(by_numa.items()))}")
    busy, full = groups[0][0], groups[0][1]
    # one GPU of the first NUMA node partly used (binpack's first choice), its NUMA sibling full
    workloads.create(on_gpu("part", busy.uuid, mem=1000))
    workloads.create(on_gpu("full", full.uuid, mem=full.devmem))
    expect_bound_to(workloads, "part", busy.uuid, "SCHED-NUMA-1", running=True)
    expect_bound_to(workloads, "full", full.uuid, "SCHED-NUMA-1", running=True)
    others = ",".join(g.uuid for g in all_gpus(kube) if g.node != node)
    ann = {NUMA_BIND: "true", C.GPU_POLICY: "binpack", C.NODE_POLICY: "binpack"}
    if others:
        ann[C.NOUSE_GPUUUID] = others  # keep the pod on this node without a nodeSelector
    workloads.create(
        pod_manifest("numa", [ContainerSpec(gpus=2, mem=busy.devmem // 2, args=HOLD)], annotations=ann)
    )
    pod = workloads.wait_scheduled("numa")
    numa_of = {g.uuid: g.numa for g in gpus}
    got = [(d.uuid, numa_of.get(d.uuid)) for d in allocated(pod)[0]]
    assert len(got) == 2 and len({n for _, n in got}) == 1, violated(
        "SCHED-NUMA-1", f"numa-bind pod was given {got} (uuid, NUMA node)"
    )
