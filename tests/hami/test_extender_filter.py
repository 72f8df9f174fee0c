"""Filter decisions on synthetic nodes: fit/reject reasons, policies, selection, cordon, multi-GPU,
multi-container, init containers, exclusive use, quota, the simulation path, concurrency."""

from __future__ import annotations

import threading

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.assignment import decode_pod_devices
from hami_stack.scheduler.cache import collapse, init_containers_done
from hami_stack.scheduler.wire import FilterArgs

from .extender_helpers import NV, add_node, extender, filt, gpu_limits, gpus, make_pod, node_obj


def picked(ext, pod) -> list:  # type: ignore[no-untyped-def]
    entry = ext.cache.pod(pod["metadata"]["uid"])
    assert entry is not None
    return entry.devices["NVIDIA"]


def test_fit_returns_exactly_one_node_and_reserves() -> None:
    ext = extender()
    add_node(ext.cache, "n1", gpus("n1"))
    add_node(ext.cache, "n2", gpus("n2"))
    pod = make_pod(gpu_limits(1, mem=3000))
    res = filt(ext, pod, ["n1", "n2"])
    assert res["Error"] == ""
    assert len(res["NodeNames"]) == 1
    node = res["NodeNames"][0]
    devs = picked(ext, pod)
    assert [[(d.type, d.usedmem, d.usedcores) for d in c] for c in devs] == [[("NVIDIA", 3000, 0)]]
    assert sum(d.usedmem for d in ext.cache.nodes[node].all_devices()) == 3000


def test_no_device_request_passes_node_names_through() -> None:
    ext = extender()
    pod = make_pod({"cpu": "1"})
    res = filt(ext, pod, ["a", "b"])
    assert res["NodeNames"] == ["a", "b"] and res["FailedNodes"] == {}


def test_reject_reasons_per_node() -> None:
    ext = extender()
    add_node(ext.cache, "small", gpus("small", n=2, mem=2000))
    add_node(ext.cache, "one", gpus("one", n=1))
    pod = make_pod(gpu_limits(2, mem=3000))
    res = filt(ext, pod, ["small", "one", "ghost"])
    assert res["NodeNames"] is None
    assert res["FailedNodes"] == {
        "small": "2/2 CardInsufficientMemory",  # nothing picked: no AllocatedCardsInsufficientRequest
        "one": "NodeInsufficientDevice",  # fewer GPUs than asked: refused before fit, bare
        "ghost": "node unregistered",
    }


def test_binpack_and_spread_node_policy_follow_scores() -> None:
    for policy, want in (("binpack", "busy"), ("spread", "idle")):
        ext = extender(node_policy=policy)
        add_node(ext.cache, "busy", gpus("busy"))
        add_node(ext.cache, "idle", gpus("idle"))
        first = make_pod(gpu_limits(1, mem=8000))
        ext.cache.reserve(first, "busy", {"NVIDIA": [[_cd("GPU-busy-0", 8000)]]})
        res = filt(ext, make_pod(gpu_limits(1, mem=1000)), ["busy", "idle"])
        assert res["NodeNames"] == [want], policy


def test_pod_annotation_overrides_node_policy() -> None:
    ext = extender(node_policy="binpack")
    add_node(ext.cache, "busy", gpus("busy"))
    add_node(ext.cache, "idle", gpus("idle"))
    ext.cache.reserve(make_pod(gpu_limits(1, mem=8000)), "busy", {"NVIDIA": [[_cd("GPU-busy-0", 8000)]]})
    pod = make_pod(gpu_limits(1, mem=1000), annotations={ann.NODE_SCHEDULER_POLICY: "spread"})
    assert filt(ext, pod, ["busy", "idle"])["NodeNames"] == ["idle"]


def test_gpu_policy_binpack_vs_spread_on_one_node() -> None:
    for policy, want in (("binpack", "GPU-n-0"), ("spread", "GPU-n-1")):
        ext = extender(gpu_policy=policy)
        add_node(ext.cache, "n", gpus("n"))
        ext.cache.reserve(make_pod(gpu_limits(1, mem=4000)), "n", {"NVIDIA": [[_cd("GPU-n-0", 4000)]]})
        pod = make_pod(gpu_limits(1, mem=1000))
        filt(ext, pod, ["n"])
        assert picked(ext, pod)[0][0].uuid == want, policy


def test_type_and_uuid_selection() -> None:
    ext = extender()
    add_node(ext.cache, "a100", gpus("a100", type_="NVIDIA-A100"))
    add_node(ext.cache, "t4", gpus("t4", type_="NVIDIA-Tesla T4"))
    pod = make_pod(gpu_limits(1, mem=1000), annotations={ann.NVIDIA_USE_GPUTYPE: "T4"})
    res = filt(ext, pod, ["a100", "t4"])
    assert res["NodeNames"] == ["t4"]
    assert res["FailedNodes"]["a100"] == "2/2 CardTypeMismatch"
    pod = make_pod(gpu_limits(1, mem=1000), annotations={ann.NVIDIA_USE_GPUUUID: "GPU-a100-1"})
    assert filt(ext, pod, ["a100", "t4"])["NodeNames"] == ["a100"]
    assert picked(ext, pod)[0][0].uuid == "GPU-a100-1"
    pod = make_pod(gpu_limits(1, mem=1000), annotations={ann.NVIDIA_NOUSE_GPUTYPE: "A100,T4"})
    assert filt(ext, pod, ["a100", "t4"])["NodeNames"] is None


def test_cordoned_device_is_skipped() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n"), {ann.DEVICE_CORDON: "GPU-n-0,GPU-n-1"})
    res = filt(ext, make_pod(gpu_limits(1, mem=10)), ["n"])
    assert res["FailedNodes"]["n"] == "2/2 CardCordoned"
    # un-cordoning through a Node update is picked up (the node's memo is invalidated)
    ext.cache.on_node("MODIFIED", node_obj("n", gpus("n"), {ann.DEVICE_CORDON: "GPU-n-0"}))
    pod = make_pod(gpu_limits(1, mem=10))
    assert filt(ext, pod, ["n"])["NodeNames"] == ["n"]
    assert picked(ext, pod)[0][0].uuid == "GPU-n-1"


def test_multi_gpu_and_multi_container_encoding() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=4))
    pod = make_pod(gpu_limits(2, mem=1000, cores=30), {"cpu": "1"}, gpu_limits(1, mem=500))
    assert filt(ext, pod, ["n"])["NodeNames"] == ["n"]
    devs = picked(ext, pod)
    assert [len(c) for c in devs] == [2, 0, 1]
    assert len({d.uuid for d in devs[0]}) == 2
    assert all(d.usedcores == 30 for d in devs[0])


def test_init_container_usage_collapses() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=1, mem=10000))
    pod = make_pod(gpu_limits(1, mem=3000), init=(gpu_limits(1, mem=8000),))
    assert filt(ext, pod, ["n"])["NodeNames"] == ["n"]
    dev = ext.cache.nodes["n"].all_devices()[0]
    # max(init peak 8000, app sum 3000), one slot
    assert (dev.usedmem, dev.used) == (8000, 1)
    devs = picked(ext, pod)
    charges = collapse({"NVIDIA": devs}, 1, True)
    assert [(c.mem, c.slots) for c in charges] == [(3000, 1)]
    done = {
        "spec": {"initContainers": [{}]},
        "status": {"initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]},
    }
    assert init_containers_done(done)
    assert not init_containers_done({"spec": {"initContainers": [{}]}, "status": {}})


def test_exclusive_whole_gpu_and_mutex() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=1))
    ext.cache.reserve(make_pod(gpu_limits(1, mem=100)), "n", {"NVIDIA": [[_cd("GPU-n-0", 100)]]})
    whole = make_pod(gpu_limits(1, mem=100, cores=100))
    res = filt(ext, whole, ["n"])
    assert res["FailedNodes"]["n"] == "1/1 ExclusiveDeviceAllocateConflict"
    mutex = make_pod(gpu_limits(1, mem=10), annotations={ann.GPU_SCHEDULER_POLICY: "mutex"})
    assert "ExclusiveDeviceAllocateConflict" in filt(ext, mutex, ["n"])["FailedNodes"]["n"]


def test_over_commit_and_invalid_weights() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=1, mem=4000))
    assert filt(ext, make_pod(gpu_limits(1, mem=3000)), ["n"])["NodeNames"] == ["n"]
    res = filt(ext, make_pod(gpu_limits(1, mem=3000)), ["n"])
    assert res["FailedNodes"]["n"] == "1/1 CardInsufficientMemory"
    bad = make_pod(gpu_limits(1, mem=1), annotations={ann.DEVICE_SCORING_WEIGHTS: "slot=1"})
    assert "invalid hami.io/device-scoring-weights annotation" in filt(ext, bad, ["n"])["Error"]
    empty = make_pod(gpu_limits(1, mem=1), annotations={ann.DEVICE_SCORING_WEIGHTS: ""})
    assert "expected slot, core, and memory weights" in filt(ext, empty, ["n"])["Error"]


def test_refilter_drops_the_pods_earlier_decision() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=1, mem=4000))
    pod = make_pod(gpu_limits(1, mem=3000))
    assert filt(ext, pod, ["n"])["NodeNames"] == ["n"]
    assert filt(ext, pod, ["n"])["NodeNames"] == ["n"]  # its own 3000 MiB do not block it
    assert ext.cache.nodes["n"].all_devices()[0].usedmem == 3000


def test_quota_limits_memory() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n"))
    ext.quotas.on_quota(
        "ADDED",
        {
            "metadata": {"name": "q", "namespace": "team"},
            "spec": {"hard": {"limits.nvidia.com/gpumem": "5000", "requests.nvidia.com/gpucores": "1"}},
        },
    )
    assert filt(ext, make_pod(gpu_limits(1, mem=3000), namespace="team"), ["n"])["NodeNames"] == ["n"]
    res = filt(ext, make_pod(gpu_limits(1, mem=3000), namespace="team"), ["n"])
    assert "ResourceQuotaNotFit" in res["FailedNodes"]["n"]
    assert filt(ext, make_pod(gpu_limits(1, mem=3000), namespace="other"), ["n"])["NodeNames"] == ["n"]
    assert not ext.quotas.pod_fits(make_pod(gpu_limits(1, mem=2001), namespace="team"))
    assert ext.quotas.pod_fits(make_pod(gpu_limits(1, mem=2000), namespace="team"))


def test_informer_pod_replaces_reservation_and_terminal_pod_releases() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=1))
    pod = make_pod(gpu_limits(1, mem=3000))
    filt(ext, pod, ["n"])
    value = NV.pod_annotations(picked(ext, pod))[NV.keys.allocated]
    seen = {
        **pod,
        "metadata": {**pod["metadata"], "annotations": {ann.VGPU_NODE: "n", NV.keys.allocated: value}},
    }
    ext.cache.on_pod("MODIFIED", seen)
    assert ext.cache.nodes["n"].all_devices()[0].usedmem == 3000
    assert not ext.cache.pod(pod["metadata"]["uid"]).reserved  # type: ignore[union-attr]
    ext.cache.on_pod("MODIFIED", {**seen, "status": {"phase": "Succeeded"}})
    assert ext.cache.nodes["n"].all_devices()[0].usedmem == 0
    broken = {
        **seen,
        "metadata": {**seen["metadata"], "annotations": {ann.VGPU_NODE: "n", NV.keys.allocated: "x"}},
    }
    ext.cache.on_pod("MODIFIED", broken)
    assert ext.cache.pod(pod["metadata"]["uid"]) is None


def test_simulation_path_uses_request_nodes_and_writes_nothing() -> None:
    ext = extender()
    nodes = [node_obj("s1", gpus("s1", mem=2000)), node_obj("s2", gpus("s2", mem=8000))]
    pod = make_pod(gpu_limits(1, mem=4000))
    res = ext.filter(FilterArgs(pod, nodes, None))
    assert [n["metadata"]["name"] for n in res["Nodes"]["items"]] == ["s2"]
    assert "CardInsufficientMemory" in res["FailedNodes"]["s1"]
    assert ext.cache.pod(pod["metadata"]["uid"]) is None


def test_concurrent_filters_never_over_commit() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=2, mem=10000, count=100))
    ok: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            res = filt(ext, make_pod(gpu_limits(1, mem=1500, cores=20)), ["n"])
            if res["NodeNames"]:
                with lock:
                    ok.append(res["NodeNames"][0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    devs = ext.cache.nodes["n"].all_devices()
    assert len(ok) == 10  # 2 GPUs x min(10000 // 1500, 100 // 20) = 2 x 5
    assert all(d.usedmem <= d.totalmem and d.usedcores <= d.totalcore for d in devs)


def test_assignment_annotation_round_trips() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n"))
    pod = make_pod({"cpu": "1"}, gpu_limits(1, mem=1000))
    filt(ext, pod, ["n"])
    value = NV.pod_annotations(picked(ext, pod))[NV.keys.to_allocate]
    assert value.startswith(";GPU-n-") and value.endswith(",NVIDIA,1000,0:;")
    assert decode_pod_devices(value, trim_trailing=True) == picked(ext, pod)


def _cd(uuid: str, mem: int, cores: int = 0):  # type: ignore[no-untyped-def]
    from hami_stack.protocol.assignment import ContainerDevice

    return ContainerDevice(uuid, "NVIDIA", mem, cores)


def test_legacy_metrics_names_and_labels() -> None:
    from hami_stack.scheduler.metrics import make_registry, render

    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=1))
    filt(ext, make_pod(gpu_limits(1, mem=1000)), ["n"])
    new = render(make_registry(ext.cache, ext.quotas)).decode()
    assert 'hami_gpu_memory_allocated_bytes{device_cores="100",device_index="0"' in new
    assert "GPUDeviceMemoryAllocated" not in new
    old = render(make_registry(ext.cache, ext.quotas, legacy=True)).decode()
    assert (
        'GPUDeviceMemoryAllocated{devicecores="100",deviceidx="0",devicetype="NVIDIA-A100",'
        'deviceuuid="GPU-n-0",nodeid="n",zone="vGPU"} 1.048576e+09'
    ) in old
    assert 'vGPUMemoryAllocated{containeridx="0",deviceuuid="GPU-n-0",nodename="n",podname=' in old


# --- parity with HAMi (issue 12): quota over a pod's devices, events, NUMA ties ---------------


def _team_quota(ext, hard: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    ext.quotas.on_quota("ADDED", {"metadata": {"name": "q", "namespace": "team"}, "spec": {"hard": hard}})


def test_quota_adds_up_several_devices_of_one_container() -> None:
    # HAMi's fitQuota sums the container's picks so far plus the candidate: 2 x 3000 > 5000
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=2))
    _team_quota(ext, {"limits.nvidia.com/gpumem": "5000"})
    res = filt(ext, make_pod(gpu_limits(2, mem=3000), namespace="team"), ["n"])
    assert res["NodeNames"] is None
    assert res["FailedNodes"]["n"] == "1/2 AllocatedCardsInsufficientRequest, 1/2 ResourceQuotaNotFit"
    assert filt(ext, make_pod(gpu_limits(2, mem=2500), namespace="team"), ["n"])["NodeNames"] == ["n"]


def test_quota_adds_up_containers_and_collapses_init_containers() -> None:
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=2))
    _team_quota(ext, {"limits.nvidia.com/gpucores": "100"})
    two = make_pod(gpu_limits(1, mem=100, cores=60), gpu_limits(1, mem=100, cores=60), namespace="team")
    assert "ResourceQuotaNotFit" in filt(ext, two, ["n"])["FailedNodes"]["n"]
    # an init container runs before the app containers: per device its peak counts, not a sum
    init = make_pod(
        gpu_limits(1, mem=100, cores=60), init=(gpu_limits(1, mem=100, cores=60),), namespace="team"
    )
    assert filt(ext, init, ["n"])["NodeNames"] == ["n"]


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def pod_event(self, pod: dict, etype: str, reason: str, message: str) -> None:
        self.seen.append((etype, reason, message))


def test_filtering_failed_one_event_per_reason_then_summary() -> None:
    ext = extender()
    events = _Events()
    ext.recorder = events  # type: ignore[assignment]
    add_node(ext.cache, "a", gpus("a", n=1, mem=1000))
    add_node(ext.cache, "b", gpus("b", n=1, mem=1000))
    add_node(ext.cache, "c", gpus("c", n=1, mem=8000), {ann.DEVICE_CORDON: "GPU-c-0"})
    add_node(ext.cache, "d", gpus("d", n=1))
    res = filt(ext, make_pod(gpu_limits(1, mem=4000), gpu_limits(2, mem=10)), ["a", "b", "c", "d"])
    assert res["NodeNames"] is None and res["FailedNodes"]["d"] == "NodeInsufficientDevice"
    assert events.seen == [
        ("Warning", "FilteringFailed", "1 nodes CardCordoned(c)"),
        ("Warning", "FilteringFailed", "2 nodes CardInsufficientMemory(a,b)"),
        ("Warning", "FilteringFailed", "no available node, 4 nodes do not meet"),
    ]


def test_equal_gpus_numa_one_first_and_numa_chains() -> None:
    def first_pick(policy: str, numa_bind: str | None = None, nums: int = 1) -> list[str]:
        ext = extender(gpu_policy=policy)
        add_node(ext.cache, "n", gpus("n", n=4, numa=(0, 0, 1, 1)))
        annotations = {ann.NVIDIA_NUMA_BIND: numa_bind} if numa_bind is not None else {}
        pod = make_pod(gpu_limits(nums, mem=1000), annotations=annotations)
        assert filt(ext, pod, ["n"])["NodeNames"] == ["n"]
        return [d.uuid for d in picked(ext, pod)[0]]

    # single policies: equal scores -> NUMA ascending in the list, the walk from the end takes NUMA 1
    assert first_pick("spread") == ["GPU-n-3"]
    assert first_pick("binpack") == ["GPU-n-3"]
    # a chain (or bare numa): NUMA ascending, then index ascending; the last is taken first
    assert first_pick("numa") == ["GPU-n-3"]
    assert first_pick("binpack,numa") == ["GPU-n-3"]
    # spread + numa-bind: NUMA ascending then score; binpack + numa-bind: NUMA descending
    assert first_pick("spread", "true", nums=2) == ["GPU-n-3", "GPU-n-2"]
    assert first_pick("binpack", "T", nums=2) == ["GPU-n-1", "GPU-n-0"]


def test_numa_bind_go_parse_bool() -> None:
    from hami_stack.protocol.policy import numa_bind_requested

    for v in ("1", "t", "T", "TRUE", "true", "True"):
        assert numa_bind_requested(v), v
    for v in ("0", "f", "F", "FALSE", "false", "False", "yes", " true", "tRUE", "", None):
        assert not numa_bind_requested(v), v
    # a bound 2-GPU request never spans NUMA nodes
    ext = extender()
    add_node(ext.cache, "n", gpus("n", n=3, numa=(0, 1, 1)))
    ext.cache.reserve(make_pod(gpu_limits(1, mem=100)), "n", {"NVIDIA": [[_cd("GPU-n-2", 16000)]]})
    pod = make_pod(gpu_limits(2, mem=1000), annotations={ann.NVIDIA_NUMA_BIND: "1"})
    res = filt(ext, pod, ["n"])
    assert res["NodeNames"] is None and "NumaNotFit" in res["FailedNodes"]["n"]
