"""Property: no sequence of filter, bind, bind retries, stray binds, failed binds, deletions, lagging
informer events and extender restarts ever gives a device out beyond its capacity.

The extender runs against an in-memory apiserver (:mod:`.fake_apiserver`). After every step:

* truth: over the pods the apiserver shows bound (and not finished), per device, the summed
  memory, cores and slots of their allocation annotations stay within the device's capacity;
* the cache's own counters stay within capacity;
* every such bound pod is counted in the cache with exactly its annotated usage (a bound pod is
  never forgotten, whatever error path ran);
* a pod that is not bound carries no allocation annotations right after a failed bind.

Lost answers are modelled too: a filter patch that the apiserver applied while the extender saw a
connection error (the pod then carries a decision the extender did not record).

A restart builds a new cache from the apiserver's current pods (what an informer's list gives).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hami_stack.protocol import annotations as ann
from hami_stack.scheduler.cache import UsageCache, pod_charges
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import BindArgs, FilterArgs

from .extender_helpers import NV, gpu_limits, gpus, node_obj
from .fake_apiserver import FakeKube

NODES = ("n1", "n2")
GPU_MEM = 10000
SLOTS = 3
GPUS = 1


class World:
    def __init__(self, gpu_policy: str) -> None:
        self.kube = FakeKube()
        self.policy = gpu_policy
        self.devices = {n: gpus(n, n=GPUS, mem=GPU_MEM, count=SLOTS) for n in NODES}
        for n in NODES:
            self.kube.add_node(node_obj(n, self.devices[n]))
        self.names: list[str] = []
        self.restart()

    def restart(self) -> None:
        """A fresh extender whose cache is listed from the apiserver, as after a process restart."""
        self.cache = UsageCache([NV])
        for n in NODES:
            self.cache.on_node("ADDED", self.kube.nodes[n])
            self.cache.set_node_family(n, "NVIDIA", self.devices[n])
        for pod in list(self.kube.pods.values()):
            self.cache.on_pod("ADDED", pod)
        self.seen = len(self.kube.events)  # the informer starts after its list
        self.ext = Extender(
            self.kube,  # type: ignore[arg-type]
            [NV],
            ExtenderOptions(gpu_policy=self.policy),
            cache=self.cache,
        )

    def deliver(self, k: int) -> None:
        for kind, pod in self.kube.events[self.seen : self.seen + k]:
            self.cache.on_pod(kind, pod)
        self.seen = min(len(self.kube.events), self.seen + k)

    def pod(self, i: int) -> dict[str, Any] | None:
        if not self.names:
            return None
        return self.kube.pods.get(("default", self.names[i % len(self.names)]))

    def create(self, mem: int, cores: int, ngpu: int) -> None:
        name = f"p{len(self.names)}"
        self.names.append(name)
        self.kube.add_pod(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "uid": f"uid-{name}", "annotations": {}},
                "spec": {
                    "schedulerName": "hami-scheduler",
                    "containers": [
                        {"name": "c", "image": "x", "resources": {"limits": gpu_limits(ngpu, mem, cores)}}
                    ],
                },
            }
        )

    def filter(self, i: int) -> None:
        pod = self.pod(i)
        if pod is not None:
            self.ext.filter(FilterArgs(pod, None, list(NODES)))

    def bind(self, i: int, node: str | None, fail: str = "") -> None:
        pod = self.pod(i)
        if pod is None:
            return
        meta = pod["metadata"]
        target = node or (meta.get("annotations") or {}).get(ann.VGPU_NODE) or NODES[0]
        self.kube.fail_next_binding = fail
        res = self.ext.bind(BindArgs(meta["name"], "default", meta["uid"], target))
        self.kube.fail_next_binding = ""
        after = self.kube.pods.get(("default", meta["name"]))
        if res["Error"] and after is not None and not after["spec"].get("nodeName"):
            left = [k for k in after["metadata"].get("annotations") or {} if ann.is_scheduler_owned(k)]
            assert not left, f"unbound pod {meta['name']} keeps {left} after: {res['Error']}"
            assert ann.VGPU_NODE not in (after["metadata"].get("labels") or {})
        # the device plugin's part: the lock is released once the pod's devices are handed out
        for n in NODES:
            self.kube.nodes[n]["metadata"].get("annotations", {}).pop(ann.NODE_LOCK, None)

    def check(self) -> None:
        capacity = {(n, d.id): d for n in NODES for d in self.devices[n]}
        used: dict[tuple[str, str], list[int]] = {key: [0, 0, 0] for key in capacity}
        for pod in self.kube.pods.values():
            node = pod["spec"].get("nodeName")
            if not node or pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            charges = pod_charges(pod, [NV])
            assert charges is not None
            for c in charges:
                acc = used[(node, c.device)]
                acc[0] += c.slots
                acc[1] += c.mem
                acc[2] += c.cores
            # a bound pod is counted in the cache with exactly its annotated usage
            entry = self.cache.pod(pod["metadata"]["uid"])
            assert entry is not None, f"bound pod {pod['metadata']['name']} is not counted"
            assert entry.node == node and sorted(map(repr, entry.charges)) == sorted(map(repr, charges))
        for key, (slots, mem, cores) in used.items():
            d = capacity[key]
            assert slots <= d.count and mem <= d.devmem and cores <= d.devcore, (
                f"{key}: slots {slots}/{d.count} memory {mem}/{d.devmem} cores {cores}/{d.devcore}"
            )
        for n in NODES:
            for d in self.cache.nodes[n].all_devices():
                assert d.used <= d.count and d.usedmem <= d.totalmem and d.usedcores <= d.totalcore, (
                    f"cache {n}/{d.id}: {d.used}/{d.count} {d.usedmem}/{d.totalmem} "
                    f"{d.usedcores}/{d.totalcore}"
                )


idx = st.integers(0, 7)  # few pods, so that operations often meet the same one
node_choice = st.sampled_from([None, None, None, *NODES, "elsewhere"])
CREATE = st.tuples(
    st.just("create"),
    st.sampled_from([2000, 4000, 6000, 9000]),
    st.sampled_from([0, 30, 60]),
    st.sampled_from([1, 1, 1, 2]),
)
FILTER_BIND = st.tuples(st.just("filter_bind"), idx)
BIND = st.tuples(st.just("bind"), idx, node_choice)  # retries, stray binds, other nodes, unfiltered pods
DELIVER = st.tuples(st.just("deliver"), st.integers(1, 8))
# weighted towards creating and placing pods, so that devices fill up and errors meet bound pods
OPS = st.one_of(
    CREATE, CREATE, CREATE,
    FILTER_BIND, FILTER_BIND, FILTER_BIND,
    BIND, BIND, DELIVER, DELIVER,
    st.tuples(st.just("filter"), idx),
    st.tuples(st.just("filter_lost_answer"), idx),
    st.tuples(st.just("bind_fail"), idx, st.sampled_from(["etcd timeout", "connection reset"])),
    st.tuples(st.just("delete"), idx),
    st.tuples(st.just("finish"), idx),
    st.tuples(st.just("restart")),
)


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["spread", "binpack"]), st.lists(OPS, min_size=5, max_size=60))
def test_no_sequence_over_commits_a_device(policy: str, ops: list[tuple[Any, ...]]) -> None:
    w = World(policy)
    for op in ops:
        kind = op[0]
        if kind == "create":
            w.create(op[1], op[2], op[3])
        elif kind == "filter":
            w.filter(op[1])
        elif kind == "filter_lost_answer":  # the annotation patch applied, its answer lost
            w.kube.fail_next_pod_patch = "connection reset by peer"
            w.filter(op[1])
            w.kube.fail_next_pod_patch = ""
        elif kind == "bind":
            w.bind(op[1], op[2])
        elif kind == "bind_fail":
            w.bind(op[1], None, fail=op[2])
        elif kind == "filter_bind":  # the common path, so that many pods really get bound
            w.filter(op[1])
            w.bind(op[1], None)
        elif kind == "delete":
            pod = w.pod(op[1])
            if pod is not None:
                w.kube.delete_pod("default", pod["metadata"]["name"])
        elif kind == "finish":
            pod = w.pod(op[1])
            if pod is not None and pod["spec"].get("nodeName"):
                w.kube.set_phase("default", pod["metadata"]["name"], "Succeeded")
        elif kind == "deliver":
            w.deliver(op[1])
        elif kind == "restart":
            w.restart()
        w.check()
    w.deliver(len(w.kube.events))
    w.check()
