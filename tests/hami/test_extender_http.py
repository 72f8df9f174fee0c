"""The extender process over HTTPS against a live testbed apiserver: Go-field-name bodies, annotations
written before the answer, bind with the node lock (contention, expiry, dangling holder), events,
registration handshake, webhook route, metrics, body limit."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.nodelock import NodeLockContention, format_lock
from hami_stack.scheduler import nodelock
from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed

from .extender_helpers import RunningService, api_node, api_pod, events, gpu_limits, wait_for

NV_REGISTER = ann.NVIDIA_KEYS.register


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Iterator[Kube]:
    k = Kube.from_config(str(testbed.kubeconfig_path))
    yield k
    k.close()


@pytest.fixture(scope="module")
def svc(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    for name in ("h1", "h2"):
        api_node(kube, name)
    s = RunningService(kube, tmp_path_factory.mktemp("tls"))
    wait_for(lambda: {"h1", "h2"} <= set(s.service.cache.nodes))
    yield s
    s.stop()


def _pod_get(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/default/pods/{name}")


def _filter(svc: RunningService, pod: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    status, body = svc.post("/filter", {"Pod": pod, "Nodes": None, "NodeNames": nodes})
    assert status == 200
    return body


def _bind(svc: RunningService, pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    status, body = svc.post(
        "/bind",
        {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"], "Node": node},
    )
    assert status == 200
    return body


def _unlock(kube: Kube, node: str) -> None:
    kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": {ann.NODE_LOCK: None}}}, "merge")


def test_registration_writes_handshake(svc: RunningService, kube: Kube) -> None:
    node = kube.get("/api/v1/nodes/h1")
    assert node["metadata"]["annotations"][ann.NVIDIA_KEYS.handshake].startswith("Requesting_")
    assert svc.service.registrar.synced.is_set()


def test_filter_then_bind_over_https(svc: RunningService, kube: Kube) -> None:
    pod = api_pod(kube, "web-1", gpu_limits(1, mem=3000))
    res = _filter(svc, pod, ["h1", "h2", "nowhere"])
    assert set(res) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
    assert res["Error"] == "" and len(res["NodeNames"]) == 1
    assert res["FailedNodes"] == {"nowhere": "node unregistered"}
    node = res["NodeNames"][0]
    # the annotations are on the pod when the answer arrives
    meta = _pod_get(kube, "web-1")["metadata"]
    annos = meta["annotations"]
    assert annos[ann.VGPU_NODE] == node and meta["labels"][ann.VGPU_NODE] == node
    assert annos[ann.BIND_PHASE] == "allocating" and int(annos[ann.VGPU_TIME]) > 0
    assert annos[ann.NVIDIA_KEYS.to_allocate] == annos[ann.NVIDIA_KEYS.allocated]
    assert annos[ann.NVIDIA_KEYS.to_allocate].endswith(",NVIDIA,3000,0:;")
    assert wait_for(lambda: events(kube, "web-1", "FilteringSucceed"))[0]["message"].startswith(
        f"find fit node({node}), 1 nodes not fit, 2 nodes fit("
    )

    assert _bind(svc, pod, node) == {"Error": ""}
    bound = _pod_get(kube, "web-1")
    assert bound["spec"]["nodeName"] == node
    assert bound["metadata"]["annotations"][ann.BIND_PHASE] == "allocating"
    assert int(bound["metadata"]["annotations"][ann.BIND_TIME]) > 0
    lock = kube.get(f"/api/v1/nodes/{node}")["metadata"]["annotations"][ann.NODE_LOCK]
    assert lock.endswith(",default,web-1")
    ev = wait_for(lambda: events(kube, "web-1", "BindingSucceed"))
    assert ev[0]["message"] == f"Successfully binding node [{node}] to default/web-1"
    assert ev[0]["source"]["component"] == "hami-scheduler"

    # a second pod on the locked node: contention, BindingFailed, reservation released
    other = api_pod(kube, "web-2", gpu_limits(1, mem=1000))
    assert _filter(svc, other, [node])["NodeNames"] == [node]
    res = _bind(svc, other, node)
    assert res["Error"] == f"node {node} has been locked within 5m0s: node lock contention"
    assert svc.service.cache.pod(other["metadata"]["uid"]) is None
    # ...and the unbound pod no longer carries the withdrawn decision
    left = _pod_get(kube, "web-2")["metadata"]
    assert not [k for k in left.get("annotations") or {} if ann.is_scheduler_owned(k)]
    assert ann.VGPU_NODE not in (left.get("labels") or {})
    assert wait_for(lambda: events(kube, "web-2", "BindingFailed"))
    assert kube.get(f"/api/v1/nodes/{node}")["metadata"]["annotations"][ann.NODE_LOCK].endswith(
        ",default,web-1"
    )
    _unlock(kube, node)


def test_lowercase_keys_and_bad_bodies(svc: RunningService, kube: Kube) -> None:
    pod = api_pod(kube, "lower-1", gpu_limits(1, mem=100))
    status, res = svc.post("/filter", {"pod": pod, "nodenames": ["h2"]})
    assert status == 200 and res["NodeNames"] == ["h2"]
    status, res = svc.post("/filter", None, raw=b"{not json")
    assert status == 400 and res["Error"].startswith("decode ExtenderArgs")
    status, res = svc.post("/bind", {"podname": "missing", "podnamespace": "default", "node": "h2"})
    assert res == {"Error": "pod default/missing not found"}
    status, _ = svc.post("/filter", None, raw=b"x" * ((1 << 20) + 10))
    assert status == 413


def test_over_commit_gets_filtering_failed(svc: RunningService, kube: Kube) -> None:
    pod = api_pod(kube, "huge", gpu_limits(3, mem=1000))
    res = _filter(svc, pod, ["h1", "h2"])
    assert res["NodeNames"] is None
    # more GPUs than a node has: a bare NodeInsufficientDevice, as upstream (checked before the fit)
    assert res["FailedNodes"] == {"h1": "NodeInsufficientDevice", "h2": "NodeInsufficientDevice"}
    # FilteringFailed events: one per reason (decide.py's part), then this summary
    assert wait_for(
        lambda: "no available node, 2 nodes do not meet"
        in {e["message"] for e in events(kube, "huge", "FilteringFailed")}
    )


def test_lock_expiry_and_dangling_holder(svc: RunningService, kube: Kube) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    kube.patch(
        "/api/v1/nodes/h2",
        {"metadata": {"annotations": {ann.NODE_LOCK: format_lock(old, "default", "web-1")}}},
        "merge",
    )
    pod = api_pod(kube, "exp-1", gpu_limits(1, mem=100))
    assert _filter(svc, pod, ["h2"])["NodeNames"] == ["h2"]
    assert _bind(svc, pod, "h2") == {"Error": ""}
    # fresh lock, but its holder pod does not exist: released and taken
    kube.patch(
        "/api/v1/nodes/h2",
        {
            "metadata": {
                "annotations": {ann.NODE_LOCK: format_lock(dt.datetime.now(dt.UTC), "default", "ghost")}
            }
        },
        "merge",
    )
    pod = api_pod(kube, "dangle-1", gpu_limits(1, mem=100))
    assert _filter(svc, pod, ["h2"])["NodeNames"] == ["h2"]
    assert _bind(svc, pod, "h2") == {"Error": ""}
    assert kube.get("/api/v1/nodes/h2")["metadata"]["annotations"][ann.NODE_LOCK].endswith(
        ",default,dangle-1"
    )
    # re-entrant for the holder, released only by it
    assert nodelock.acquire(kube, "h2", "default", "dangle-1", lambda n, p: True).value == "reentrant"
    assert not nodelock.release(kube, "h2", "default", "someone-else")
    assert nodelock.release(kube, "h2", "default", "dangle-1")
    assert ann.NODE_LOCK not in (kube.get("/api/v1/nodes/h2")["metadata"].get("annotations") or {})


def test_concurrent_lock_acquire_has_one_winner(svc: RunningService, kube: Kube) -> None:
    for i in range(6):
        api_pod(kube, f"race-{i}", {"cpu": "1"})
    wins: list[str] = []
    losses: list[str] = []
    barrier = threading.Barrier(6)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            nodelock.acquire(kube, "h1", "default", f"race-{i}", lambda n, p: True)
            wins.append(f"race-{i}")
        except NodeLockContention:
            losses.append(f"race-{i}")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 5
    assert kube.get("/api/v1/nodes/h1")["metadata"]["annotations"][ann.NODE_LOCK].endswith(
        f",default,{wins[0]}"
    )
    _unlock(kube, "h1")


def test_health_webhook_and_metrics(svc: RunningService, kube: Kube) -> None:
    # an allocation of this test's own, so the allocated series exists whatever ran before
    res = _filter(svc, api_pod(kube, "metrics-1", gpu_limits(1, mem=1000)), ["h1", "h2"])
    assert res["Error"] == ""
    assert svc.get("/healthz") == (200, b"ok")
    assert svc.get("/readyz")[0] == 200
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "operation": "CREATE",
            "object": {
                "kind": "Pod",
                "metadata": {"name": "w", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
            },
        },
    }
    status, body = svc.post("/webhook", review)
    assert status == 200 and body["response"]["allowed"] is True and body["response"]["uid"] == "u1"
    status, text = svc.get("/metrics", metrics=True)
    assert status == 200
    assert (
        b'hami_gpu_memory_limit_bytes{device_index="0",device_type="NVIDIA-A100",device_uuid="GPU-h1-0",'
        b'node="h1",zone="vGPU"} 1.6777216e+10'
    ) in text
    assert b"hami_build_info{" in text and b"GPUDeviceMemoryLimit" not in text
    assert b'hami_vgpu_memory_allocated_bytes{container_index="0"' in text
