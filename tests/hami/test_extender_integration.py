"""End to end on the testbed: the testbed kube-scheduler runs as ``hami-scheduler`` with the v1
KubeSchedulerConfiguration HAMi's chart renders, calling this extender in-process over HTTPS;
nodes carry a hand-written NVIDIA register annotation and capacity (no device plugin yet)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hami_stack.protocol import annotations as ann
from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.scheduler import Scheduler, decode_config

from .extender_helpers import RunningService, api_node, api_pod, events, gpu_limits, wait_for

MANAGED = [
    "nvidia.com/gpu",
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
    "nvidia.com/priority",
]


def scheduler_config(port: int, svc: Any) -> str:
    managed = "".join(f"  - name: {r}\n    ignoredByScheduler: true\n" for r in MANAGED)
    return f"""apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 2
profiles:
- schedulerName: hami-scheduler
extenders:
- urlPrefix: "https://127.0.0.1:{port}"
  filterVerb: filter
  bindVerb: bind
  nodeCacheCapable: true
  weight: 1
  httpTimeout: 30s
  enableHTTPS: true
  tlsConfig:
    serverName: 127.0.0.1
    caFile: {svc.tmp / "ca.crt"}
    certFile: {svc.client_cert}
    keyFile: {svc.client_key}
  managedResources:
{managed}"""


@pytest.fixture(scope="module")
def stack(testbed: EmbeddedTestbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, Any]]:
    kube = Kube.from_config(str(testbed.kubeconfig_path))
    api_node(kube, "gpu-a", n=2, mem=16000)
    api_node(kube, "gpu-b", n=2, mem=16000)
    svc = RunningService(kube, tmp_path_factory.mktemp("tls"))
    wait_for(lambda: {"gpu-a", "gpu-b"} <= set(svc.service.cache.nodes))
    sched = Scheduler(kube, decode_config(scheduler_config(svc.port, svc), 33), 33).start()
    yield kube, svc
    sched.stop()
    svc.stop()
    kube.close()


def test_pod_is_bound_with_assignment_and_lock(stack: tuple[Kube, Any]) -> None:
    kube, _svc = stack
    api_pod(kube, "gpu-pod", gpu_limits(1, mem=3000))
    pod = wait_for(
        lambda: (p := kube.get("/api/v1/namespaces/default/pods/gpu-pod"))["spec"].get("nodeName") and p,
        timeout=20,
    )
    node = pod["spec"]["nodeName"]
    annos = pod["metadata"]["annotations"]
    assert annos[ann.VGPU_NODE] == node
    assert annos[ann.BIND_PHASE] == "allocating"
    assignment = annos[ann.NVIDIA_KEYS.to_allocate]
    assert assignment.startswith(f"GPU-{node}-") and assignment.endswith(",NVIDIA,3000,0:;")
    assert annos[ann.NVIDIA_KEYS.allocated] == assignment
    lock = kube.get(f"/api/v1/nodes/{node}")["metadata"]["annotations"][ann.NODE_LOCK]
    assert lock.endswith(",default,gpu-pod")
    assert wait_for(lambda: events(kube, "gpu-pod", "BindingSucceed"))


def test_over_committed_pod_gets_filtering_failed(stack: tuple[Kube, Any]) -> None:
    kube, _svc = stack
    api_pod(kube, "too-big", gpu_limits(1, mem=20000))
    def messages() -> set[str]:
        return {e["message"] for e in events(kube, "too-big", "FilteringFailed")}

    # one event per reason, then the summary (the scheduler retries: the set, not the count)
    assert wait_for(lambda: {"no available node, 2 nodes do not meet"} < messages(), timeout=20)
    assert any("CardInsufficientMemory(gpu-a,gpu-b)" in m for m in messages())
    assert not kube.get("/api/v1/namespaces/default/pods/too-big")["spec"].get("nodeName")


def test_burst_with_stray_binds_never_gives_a_gpu_out_twice(stack: tuple[Kube, Any]) -> None:
    """Finding 1's burst in miniature through the real scheduler: 24 pods of 60,000 MiB for 8 GPUs
    of 81,920 MiB, while a client replays /bind for every pod already bound (the stray calls)."""
    import threading

    kube, svc = stack
    for name in ("burst-a", "burst-b"):
        api_node(kube, name, n=4, mem=81920)
    wait_for(lambda: {"burst-a", "burst-b"} <= set(svc.service.cache.nodes))
    stop = threading.Event()
    strays = [0]

    def plugin_and_stray_binder() -> None:
        while not stop.is_set():
            for pod in kube.get("/api/v1/namespaces/default/pods", labelSelector="burst=1")["items"]:
                node = pod["spec"].get("nodeName")
                if not node:
                    continue
                meta = pod["metadata"]
                status, res = svc.post("/bind", {"PodName": meta["name"], "PodNamespace": "default",
                                                 "PodUID": meta["uid"], "Node": node})
                assert status == 200 and "already bound" in res["Error"], res
                strays[0] += 1
            for name in ("burst-a", "burst-b"):  # the device plugin releases the lock after Allocate
                annotations = kube.get(f"/api/v1/nodes/{name}")["metadata"].get("annotations") or {}
                lock = annotations.get(ann.NODE_LOCK)
                if lock and _pod(kube, lock.rsplit(",", 1)[-1])["spec"].get("nodeName"):
                    unlock = {"metadata": {"annotations": {ann.NODE_LOCK: None}}}
                    kube.patch(f"/api/v1/nodes/{name}", unlock, "merge")
            stop.wait(0.05)

    helper = threading.Thread(target=plugin_and_stray_binder, daemon=True)
    helper.start()
    for i in range(24):
        api_pod(kube, f"burst-{i}", gpu_limits(1, mem=60000), labels={"burst": "1"})

    def per_gpu() -> dict[str, int]:
        out: dict[str, int] = {}
        for pod in kube.get("/api/v1/namespaces/default/pods", labelSelector="burst=1")["items"]:
            value = (pod["metadata"].get("annotations") or {}).get(ann.NVIDIA_KEYS.allocated, "")
            if pod["spec"].get("nodeName") and value:
                uuid, _, mem = value.split(",")[:3]
                out[uuid] = out.get(uuid, 0) + int(mem)
        assert all(v <= 81920 for v in out.values()), out  # never, at any moment sampled
        return out

    try:
        wait_for(lambda: len(per_gpu()) == 8, timeout=90)
    finally:
        stop.set()
        helper.join(5)
    assert max(per_gpu().values()) == 60000 and strays[0] > 0
    pending = [p for p in kube.get("/api/v1/namespaces/default/pods", labelSelector="burst=1")["items"]
               if not p["spec"].get("nodeName")]
    assert len(pending) == 16
    # the pending pods carry no allocation of their own once their failed attempts are withdrawn
    def clean(name: str) -> bool:
        return ann.NVIDIA_KEYS.allocated not in (_pod(kube, name)["metadata"].get("annotations") or {})

    wait_for(lambda: all(clean(p["metadata"]["name"]) for p in pending), timeout=30)


def _pod(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/default/pods/{name}")
