"""/bind and /filter never give a device out twice, and never touch a pod that is not being scheduled.

Reproductions of issue 12 findings 1, 2 (the /bind and /filter halves) and 4 against an in-memory
apiserver (:mod:`.fake_apiserver`): one A100-80GB (81,920 MiB) per node, 60,000 MiB pods.
"""

from __future__ import annotations

from typing import Any

from hami_stack.protocol import annotations as ann
from hami_stack.scheduler.cache import UsageCache
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import BindArgs, FilterArgs

from .extender_helpers import NV, gpu_limits, gpus, node_obj
from .fake_apiserver import FakeKube

A100 = 81920


def world(nodes: tuple[str, ...] = ("n1",), n_gpus: int = 1) -> tuple[FakeKube, Extender]:
    kube = FakeKube()
    cache = UsageCache([NV])
    for n in nodes:
        devices = gpus(n, n=n_gpus, mem=A100, count=10)
        kube.add_node(node_obj(n, devices))
        cache.on_node("ADDED", kube.nodes[n])
        cache.set_node_family(n, "NVIDIA", devices)
    return kube, Extender(kube, [NV], ExtenderOptions(), cache=cache)  # type: ignore[arg-type]


def new_pod(kube: FakeKube, name: str, mem: int = 60000, scheduler: str = "hami-scheduler") -> dict[str, Any]:
    return kube.add_pod(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "uid": f"uid-{name}", "annotations": {}},
            "spec": {
                "schedulerName": scheduler,
                "containers": [{"name": "c", "image": "x", "resources": {"limits": gpu_limits(1, mem)}}],
            },
        }
    )


def live(kube: FakeKube, name: str) -> dict[str, Any]:
    return kube.pods[("default", name)]


def filt(ext: Extender, pod: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    return ext.filter(FilterArgs(pod, None, nodes))


def bind(ext: Extender, pod: dict[str, Any], node: str) -> str:
    meta = pod["metadata"]
    return ext.bind(BindArgs(meta["name"], "default", meta["uid"], node))["Error"]


def unlock(kube: FakeKube) -> None:  # the device plugin's part after Allocate
    for node in kube.nodes.values():
        node["metadata"].get("annotations", {}).pop(ann.NODE_LOCK, None)


def run(kube: FakeKube, ext: Extender, name: str, mem: int = 60000) -> str:
    """Create, filter and bind one pod; the node it landed on."""
    pod = new_pod(kube, name, mem)
    res = filt(ext, pod, sorted(kube.nodes))
    assert res["Error"] == "" and res["NodeNames"], res
    assert bind(ext, live(kube, name), res["NodeNames"][0]) == ""
    unlock(kube)
    return str(live(kube, name)["spec"]["nodeName"])


def used_mem(ext: Extender, node: str) -> int:
    return sum(d.usedmem for d in ext.cache.nodes[node].all_devices())


def scheduler_keys(pod: dict[str, Any]) -> list[str]:
    meta = pod["metadata"]
    keys = [k for k in meta.get("annotations") or {} if ann.is_scheduler_owned(k)]
    return keys + [f"label {k}" for k in meta.get("labels") or {} if k == ann.VGPU_NODE]


def test_finding1_stray_bind_for_a_running_pod_keeps_its_usage() -> None:
    kube, ext = world()
    run(kube, ext, "running")
    kube.set_phase("default", "running", "Running")
    # the stray /bind (same node, as a replayed request would name it)
    err = bind(ext, live(kube, "running"), "n1")
    assert err == "pod default/running is already bound to node n1"
    assert used_mem(ext, "n1") == 60000
    # an identical pod must not land on the same GPU (120,000 / 81,920 MiB before the fix)
    twin = new_pod(kube, "twin")
    res = filt(ext, twin, ["n1"])
    assert res["NodeNames"] is None and "n1" in res["FailedNodes"]
    assert bind(ext, live(kube, "twin"), "n1").endswith("it has no filter decision (it was not filtered, "
                                                        "or its decision was withdrawn)")
    assert not live(kube, "twin")["spec"].get("nodeName")
    # the running pod still carries its allocation (only unbound pods are cleaned)
    assert ann.NVIDIA_KEYS.allocated in live(kube, "running")["metadata"]["annotations"]


def test_finding1_scheduler_bind_retry_after_a_lost_answer() -> None:
    kube, ext = world()
    run(kube, ext, "first")
    # kube-scheduler did not see the answer and retries the same bind
    assert bind(ext, live(kube, "first"), "n1") == "pod default/first is already bound to node n1"
    # and an old informer event replayed after that does not change the count either
    for kind, pod in kube.events:
        ext.cache.on_pod(kind, pod)
    assert used_mem(ext, "n1") == 60000
    assert filt(ext, new_pod(kube, "second"), ["n1"])["NodeNames"] is None


def test_finding1_after_a_restart_usage_comes_from_the_apiserver() -> None:
    kube, ext = world()
    run(kube, ext, "first")
    cache = UsageCache([NV])  # a restarted extender lists nodes and pods
    cache.on_node("ADDED", kube.nodes["n1"])
    cache.set_node_family("n1", "NVIDIA", gpus("n1", n=1, mem=A100, count=10))
    for pod in kube.pods.values():
        cache.on_pod("ADDED", pod)
    ext2 = Extender(kube, [NV], ExtenderOptions(), cache=cache)  # type: ignore[arg-type]
    assert bind(ext2, live(kube, "first"), "n1") == "pod default/first is already bound to node n1"
    assert filt(ext2, new_pod(kube, "second"), ["n1"])["NodeNames"] is None


def test_burst_with_stray_binds_never_over_commits() -> None:
    """The 200-pod burst of finding 1, with a stray /bind for every running pod."""
    kube, ext = world(("n1", "n2"), n_gpus=8)
    placed = 0
    for i in range(40):
        pod = new_pod(kube, f"b{i}")
        res = filt(ext, pod, ["n1", "n2"])
        if res["NodeNames"]:
            node = res["NodeNames"][0]
            if bind(ext, live(kube, f"b{i}"), node) == "":
                placed += 1
                unlock(kube)
                assert bind(ext, live(kube, f"b{i}"), node).startswith("pod default/")  # the stray call
        else:
            assert not scheduler_keys(live(kube, f"b{i}"))
    assert placed == 16  # one 60,000 MiB pod per 81,920 MiB GPU
    per_gpu: dict[str, int] = {}
    for pod in kube.pods.values():
        for value in (pod["metadata"].get("annotations") or {}).get(ann.NVIDIA_KEYS.allocated, "").split(";"):
            if value and pod["spec"].get("nodeName"):
                uuid, _, mem, _ = value.rstrip(":").split(",")
                per_gpu[uuid] = per_gpu.get(uuid, 0) + int(mem)
    assert len(per_gpu) == 16 and max(per_gpu.values()) == 60000


def test_finding2_bind_without_a_filter_decision_is_refused() -> None:
    kube, ext = world()
    pod = new_pod(kube, "unfiltered", mem=80000)
    err = bind(ext, pod, "n1")
    assert err == (
        "pod default/unfiltered cannot be bound to node n1: it has no filter decision "
        "(it was not filtered, or its decision was withdrawn)"
    )
    assert not live(kube, "unfiltered")["spec"].get("nodeName")


def test_finding2_bind_to_another_node_than_the_filter_chose() -> None:
    kube, ext = world(("n1", "n2"))
    pod = new_pod(kube, "p")
    chosen = filt(ext, pod, ["n1", "n2"])["NodeNames"][0]
    other = "n2" if chosen == "n1" else "n1"
    err = bind(ext, live(kube, "p"), other)
    want = f"pod default/p cannot be bound to node {other}: its filter decision is node {chosen}, not {other}"
    assert err == want
    after = live(kube, "p")
    assert not after["spec"].get("nodeName")
    assert scheduler_keys(after) == []  # finding 4: the withdrawn decision is gone from the pod
    assert used_mem(ext, chosen) == 0


def test_finding2_bind_rechecks_the_fit_against_current_usage() -> None:
    kube, ext = world()
    pod = new_pod(kube, "late")
    assert filt(ext, pod, ["n1"])["NodeNames"] == ["n1"]
    # meanwhile a pod bound elsewhere shows up holding most of the GPU (e.g. after a forged write)
    foreign = new_pod(kube, "foreign", mem=50000)
    kube.patch(
        "/api/v1/namespaces/default/pods/foreign",
        {"metadata": {"annotations": {
            ann.VGPU_NODE: "n1",
            ann.NVIDIA_KEYS.allocated: "GPU-n1-0,NVIDIA,50000,0:;",
        }}},
        "merge",
    )
    kube.pods[("default", "foreign")]["spec"]["nodeName"] = "n1"
    ext.cache.on_pod("MODIFIED", kube.pods[("default", "foreign")])
    del foreign
    err = bind(ext, live(kube, "late"), "n1")
    assert err == (
        "pod default/late cannot be bound to node n1: device GPU-n1-0 on node n1 would be "
        "over-committed: memory 110000/81920 MiB"
    )
    assert not live(kube, "late")["spec"].get("nodeName")
    assert scheduler_keys(live(kube, "late")) == []
    assert ann.NODE_LOCK not in kube.nodes["n1"]["metadata"].get("annotations", {})  # lock released


def test_finding2_bind_refuses_annotations_changed_after_the_filter() -> None:
    kube, ext = world()
    pod = new_pod(kube, "p", mem=1000)
    assert filt(ext, pod, ["n1"])["NodeNames"] == ["n1"]
    kube.patch(
        "/api/v1/namespaces/default/pods/p",
        {"metadata": {"annotations": {ann.NVIDIA_KEYS.allocated: "GPU-n1-0,NVIDIA,81920,100:;"}}},
        "merge",
    )
    err = bind(ext, live(kube, "p"), "n1")
    assert err.endswith("its allocation annotations differ from the filter decision")
    assert not live(kube, "p")["spec"].get("nodeName")


def test_finding4_failed_binding_leaves_no_stale_annotations() -> None:
    kube, ext = world()
    pod = new_pod(kube, "p")
    assert filt(ext, pod, ["n1"])["NodeNames"] == ["n1"]
    assert scheduler_keys(live(kube, "p"))
    kube.fail_next_binding = "etcdserver: request timed out"
    assert bind(ext, live(kube, "p"), "n1") == "etcdserver: request timed out"
    after = live(kube, "p")
    assert not after["spec"].get("nodeName") and scheduler_keys(after) == []
    assert used_mem(ext, "n1") == 0
    # the lagging informer's copy from before the clean-up does not bring the decision back
    for kind, old in kube.events:
        ext.cache.on_pod(kind, old)
    assert used_mem(ext, "n1") == 0
    # and the retry of the whole cycle works
    assert filt(ext, live(kube, "p"), ["n1"])["NodeNames"] == ["n1"]
    assert bind(ext, live(kube, "p"), "n1") == ""
    assert used_mem(ext, "n1") == 60000


def test_failed_binding_of_a_pod_bound_meanwhile_keeps_it() -> None:
    kube, ext = world()
    pod = new_pod(kube, "p")
    assert filt(ext, pod, ["n1"])["NodeNames"] == ["n1"]
    original = kube.create

    def racing_create(path: str, body: dict[str, Any], **q: Any) -> Any:
        original(path, body)  # another binder won a moment earlier...
        return original(path, body)  # ...so this one is told "already assigned"

    kube.create = racing_create  # type: ignore[method-assign]
    err = bind(ext, live(kube, "p"), "n1")
    assert "already assigned" in err
    assert live(kube, "p")["spec"]["nodeName"] == "n1"
    assert used_mem(ext, "n1") == 60000
    assert scheduler_keys(live(kube, "p"))  # a bound pod keeps its allocation


def test_finding2_filter_patches_only_the_pod_being_scheduled() -> None:
    kube, ext = world()
    run(kube, ext, "bound")
    new_pod(kube, "other-sched", scheduler="default-scheduler")
    new_pod(kube, "victim")
    kube.pods[("default", "victim")]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    fresh = new_pod(kube, "fresh")
    forged_uid = {**fresh, "metadata": {**fresh["metadata"], "uid": "not-the-uid"}}
    ghost = {**fresh, "metadata": {**fresh["metadata"], "name": "ghost", "uid": "uid-ghost"}}
    writes_before = list(kube.writes)
    cases = {
        "bound": (live(kube, "bound"), "pod default/bound is already bound to node n1"),
        "other-sched": (
            live(kube, "other-sched"),
            "pod default/other-sched has schedulerName 'default-scheduler', not 'hami-scheduler'",
        ),
        "victim": (live(kube, "victim"), "pod default/victim is terminating"),
        "fresh": (forged_uid, "pod default/fresh has UID 'uid-fresh' in the apiserver, the request names "
                  "'not-the-uid'"),
        "ghost": (ghost, "pod default/ghost does not exist; nothing was patched"),
    }
    for name, (pod, message) in cases.items():
        res = filt(ext, pod, ["n1"])
        assert res["Error"] == message, name
        assert res["NodeNames"] is None
    assert kube.writes == writes_before  # nothing patched
    assert used_mem(ext, "n1") == 60000  # and the bound pod's usage was not dropped by a stray filter


def test_a_filter_patch_applied_but_unanswered_is_taken_back() -> None:
    """The shrunk counterexample hypothesis found: the patch lands, its answer is lost."""
    kube, ext = world()
    lost = new_pod(kube, "lost", mem=6000)
    kube.fail_next_pod_patch = "connection reset by peer"
    res = filt(ext, lost, ["n1"])
    assert res["Error"] == "patch pod default/lost annotations: connection reset by peer"
    assert scheduler_keys(live(kube, "lost")) == []  # taken off the pod again
    run(kube, ext, "next", mem=6000)
    for kind, pod in kube.events:  # even the informer's copy with the lost decision does not count
        ext.cache.on_pod(kind, pod)
    assert used_mem(ext, "n1") == 6000


def test_a_pod_asking_no_gpu_is_never_charged_for_forged_annotations() -> None:
    # the webhook checks forged assignments only on device pods: a CPU-only pod bound to the node with
    # a whole-GPU assignment in its annotations must not block that GPU for everyone else
    kube, ext = world()
    uuid = ext.cache.nodes["n1"].all_devices()[0].id
    forged = kube.add_pod({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cpu-only", "uid": "uid-cpu-only", "annotations": {
            ann.VGPU_NODE: "n1",
            ann.NVIDIA_KEYS.allocated: f"{uuid},NVIDIA,{A100},100:;",
        }},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running"},
    })
    ext.cache.on_pod("ADDED", forged)
    assert used_mem(ext, "n1") == 0
    assert run(kube, ext, "tenant", mem=A100) == "n1"  # a real GPU pod still gets the whole GPU
    assert used_mem(ext, "n1") == A100


class _GatedKube(FakeKube):
    """Node writes (the bind's node lock) wait for ``gate`` once ``armed``: a bind held mid-way."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.gate, self.entered, self.armed = threading.Event(), threading.Event(), False

    def patch(self, path: str, body: Any, kind: str = "strategic") -> Any:
        if self.armed and path.startswith("/api/v1/nodes/"):
            self.entered.set()
            assert self.gate.wait(10), "test gate never opened"
        return super().patch(path, body, kind)


def test_a_second_cycle_during_a_bind_keeps_the_decision_being_bound() -> None:
    """kube-scheduler before 1.22 re-queues a pod updated during its scheduling cycle (the decision
    patch) and filters it again while the first bind runs (seen on a real 1.20 control plane: the pod
    was scheduled twice and given devices twice; a failed bind's withdrawal then cleared the second
    decision). That filter answers the node being bound and changes nothing; a second bind of the same
    pod meanwhile is refused; the first bind completes with the original decision."""
    import threading

    kube = _GatedKube()
    cache = UsageCache([NV])
    for n in ("n1", "n2"):
        devices = gpus(n, n=1, mem=A100, count=10)
        kube.add_node(node_obj(n, devices))
        cache.on_node("ADDED", kube.nodes[n])
        cache.set_node_family(n, "NVIDIA", devices)
    ext = Extender(kube, [NV], ExtenderOptions(), cache=cache)  # type: ignore[arg-type]
    pod = new_pod(kube, "p", mem=30000)
    first = filt(ext, pod, ["n1", "n2"])
    node = first["NodeNames"][0]
    decided = dict(live(kube, "p")["metadata"]["annotations"])
    entry = ext.cache.pod("uid-p")
    kube.armed = True
    answers: list[str] = []
    t = threading.Thread(target=lambda: answers.append(bind(ext, live(kube, "p"), node)))
    t.start()
    try:
        assert kube.entered.wait(10)
        again = filt(ext, live(kube, "p"), ["n1", "n2"])
        assert again["Error"] == "" and again["NodeNames"] == [node], again
        assert live(kube, "p")["metadata"]["annotations"] == decided  # no second decision written
        assert ext.cache.pod("uid-p") is entry
        other = next(n for n in ("n1", "n2") if n != node)
        elsewhere = filt(ext, live(kube, "p"), [other])
        assert elsewhere["NodeNames"] == [] and "under way" in elsewhere["FailedNodes"][other], elsewhere
        assert "under way" in bind(ext, live(kube, "p"), node)
    finally:
        kube.gate.set()
        t.join(10)
    assert answers == [""], answers
    assert live(kube, "p")["spec"]["nodeName"] == node
    assert ext.cache.pod("uid-p") is not None and used_mem(ext, node) == 30000
