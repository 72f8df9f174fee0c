"""Upstream HAMi's documented NVIDIA example pods schedule on the testbed through the whole admission path.

The shapes below are facts taken from the 15 manifests under ``examples/nvidia/`` of upstream HAMi
(file name -> the resource limits/requests and annotations of each pod it creates; Deployments are
represented by their pod template, since scheduling is decided per pod). Each group is created in a
namespace whose pods go through this project's HAMi webhook (mutating admission, served by the
scheduler service as the chart deploys it), then the testbed kube-scheduler with the chart's
extender configuration, then the extender's bind. Defaults must be re-applied after the webhook's
patch (issue item 1), otherwise the later bind-phase annotation patch is rejected and the pod never
gets a node.

``dynamic_mig_example.yaml`` (``nvidia.com/vgpu-mode: mig``) is the one shape this project's HAMi
implementation refuses by design (hami_stack/devices/nvidia.py: MIG is off); the test asserts that
it stays unscheduled with the extender's reason rather than leaving it out.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.register import DeviceInfo
from kubeclient.client import ApiError, Kube
from testbed.embedded import EmbeddedTestbed
from testbed.scheduler import Scheduler, decode_config
from tests.hami.extender_helpers import RunningService, node_obj

UUID_D = "GPU-03f69c50-207a-2038-9b45-23cac89cb67d"
UUID_E = "GPU-03f69c50-207a-2038-9b45-23cac89cb67e"

# file -> pods: (limits, requests, annotations)
Shape = tuple[dict[str, str], dict[str, str], dict[str, str]]
SHAPES: dict[str, list[Shape]] = {
    "default_use.yaml": [({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"},
                          {}, {})],
    "default_use_legacy.yaml": [({"nvidia.com/gpu": "2"}, {}, {})],
    "example.yaml": [({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}, {}, {})],
    "mig_example.yaml": [({"nvidia.com/mig-3g.20gb": "1"}, {}, {})],
    "specify_card_type_not_use.yaml": [({"nvidia.com/gpu": "2"}, {},
                                        {"nvidia.com/nouse-gputype": "1080,2080"})],
    "specify_card_type_to_use.yaml": [({"nvidia.com/gpu": "2"}, {}, {"nvidia.com/use-gputype": "A100,V100"})],
    "specify_scheduling_policy.yaml": [({"nvidia.com/gpu": "1"}, {},
                                        {"hami.io/node-scheduler-policy": "spread",
                                         "hami.io/gpu-scheduler-policy": "binpack"})],
    "specify_uuid_not_use.yaml": [({"nvidia.com/gpu": "2"}, {}, {"nvidia.com/nouse-gpuuuid": UUID_D})],
    "specify_uuid_to_use.yaml": [({"nvidia.com/gpu": "1"}, {},
                                  {"nvidia.com/use-gpuuuid": f"{UUID_D},{UUID_E}"})],
    "use_as_normal.yaml": [({"nvidia.com/gpu": "1"}, {}, {}), ({"nvidia.com/gpu": "1"}, {}, {})],
    "use_exclusive_card.yaml": [({"nvidia.com/gpu": "2", "nvidia.com/gpumem-percentage": "100",
                                  "nvidia.com/gpucores": "100"}, {}, {})],
    "use_memory_fraction.yaml": [({"nvidia.com/gpu": "2", "nvidia.com/gpumem-percentage": "50",
                                   "nvidia.com/gpucores": "30"}, {}, {})],
    "use_sharing_card.yaml": [
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "40", "nvidia.com/gpucores": "60"}, {}, {}),
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "60", "nvidia.com/gpucores": "40"}, {}, {}),
    ],
    "vllm_cross_vgpu.yaml": [(
        {"cpu": "8", "memory": "20Gi", "nvidia.com/gpu": "2", "nvidia.com/gpumem-percentage": "30",
         "nvidia.com/gpucores": "30"},
        {"cpu": "2", "memory": "6Gi", "nvidia.com/gpu": "2", "nvidia.com/gpumem-percentage": "30",
         "nvidia.com/gpucores": "30"},
        {},
    )],
}
REFUSED_BY_DESIGN = {
    "dynamic_mig_example.yaml": ({"nvidia.com/gpu": "2", "nvidia.com/gpumem": "8000"}, {},
                                 {"nvidia.com/vgpu-mode": "mig", "hami.io/gpu-scheduler-policy": "binpack"}),
}
MANAGED = ["nvidia.com/gpu", "nvidia.com/gpumem", "nvidia.com/gpumem-percentage", "nvidia.com/gpucores",
           "nvidia.com/priority"]


def _config(port: int, svc: RunningService) -> str:
    managed = "".join(f"  - name: {r}\n    ignoredByScheduler: true\n" for r in MANAGED)
    return f"""apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: false
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 1
profiles:
- schedulerName: default-scheduler
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


def _gpus(node: str, type_: str, ids: list[str]) -> list[DeviceInfo]:
    return [DeviceInfo(id=i, index=n, count=10, devmem=16000, devcore=100, type=type_, numa=0)
            for n, i in enumerate(ids)]


@pytest.fixture(scope="module")
def cluster(testbed: EmbeddedTestbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, str]]:
    kube = Kube.from_config(str(testbed.kubeconfig_path))
    ns = "hami-shapes"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.create("/api/v1/nodes", node_obj("gpu-a100", _gpus("gpu-a100", "NVIDIA-A100", [UUID_D, UUID_E])))
    kube.create("/api/v1/nodes", node_obj("gpu-v100", _gpus("gpu-v100", "NVIDIA-V100",
                                                            ["GPU-v100-0", "GPU-v100-1"])))
    mig = node_obj("mig-node", [])
    mig["metadata"]["annotations"] = {}
    for key in ("capacity", "allocatable"):
        mig["status"][key] = {"nvidia.com/mig-3g.20gb": "1", "cpu": "8", "memory": "32Gi", "pods": "110"}
    kube.create("/api/v1/nodes", mig)
    for node in ("gpu-a100", "gpu-v100"):  # enough CPU and memory for the vLLM shape
        kube.patch(f"/api/v1/nodes/{node}/status",
                   {"status": {"allocatable": {"cpu": "16", "memory": "64Gi"}}}, "merge")
    svc = RunningService(kube, tmp_path_factory.mktemp("tls"))
    _wait(lambda: {"gpu-a100", "gpu-v100"} <= set(svc.service.cache.nodes))
    hook = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "hami-webhook-shapes"},
        "webhooks": [{
            "name": "vgpu.hami.io",
            "clientConfig": {"url": f"https://127.0.0.1:{svc.port}/webhook",
                             "caBundle": base64.b64encode(svc.ca.cert_pem).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
            "timeoutSeconds": 10,
        }],
    }
    kube.create("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", hook)
    sched = Scheduler(kube, decode_config(_config(svc.port, svc), 33), 33).start()
    yield kube, ns
    sched.stop()
    kube.delete("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/hami-webhook-shapes")
    svc.stop()
    kube.close()


def _wait(fn: Any, timeout: float = 30.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def _pod(name: str, shape: Shape) -> dict[str, Any]:
    limits, requests, annotations = shape
    resources: dict[str, Any] = {"limits": limits}
    if requests:
        resources["requests"] = requests
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "ubuntu:22.04",
                                 "command": ["bash", "-c", "sleep 86400"], "resources": resources}]},
    }


def _release_locks(kube: Kube, ns: str) -> None:
    """What the device plugin does after Allocate: mark the pod allocated and drop the node lock."""
    for node in ("gpu-a100", "gpu-v100"):
        annotations = kube.get(f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
        lock = annotations.get(ann.NODE_LOCK)
        if not lock:
            continue
        holder = lock.rsplit(",", 1)[-1]
        try:
            pod = kube.get(f"/api/v1/namespaces/{ns}/pods/{holder}")
        except ApiError as e:  # the holder was deleted at the end of its test
            if e.status != 404:
                raise
            pod = None
        if pod is None or pod["spec"].get("nodeName"):
            if pod is not None:
                kube.patch(f"/api/v1/namespaces/{ns}/pods/{holder}",
                           {"metadata": {"annotations": {ann.BIND_PHASE: "success"}}}, "merge")
            kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": {ann.NODE_LOCK: None}}}, "merge")


@pytest.mark.parametrize("manifest", sorted(SHAPES))
def test_documented_nvidia_shape_schedules(cluster: tuple[Kube, str], manifest: str) -> None:
    kube, ns = cluster
    stem = manifest.removesuffix(".yaml").replace("_", "-")
    names = [f"{stem}-{i}" for i in range(len(SHAPES[manifest]))]
    for name, shape in zip(names, SHAPES[manifest], strict=True):
        kube.create(f"/api/v1/namespaces/{ns}/pods", _pod(name, shape))
    try:
        def all_bound() -> bool:
            _release_locks(kube, ns)
            return all(kube.get(f"/api/v1/namespaces/{ns}/pods/{n}")["spec"].get("nodeName") for n in names)

        _wait(all_bound)
        for name, shape in zip(names, SHAPES[manifest], strict=True):
            pod = kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
            if "nvidia.com/gpu" in shape[0]:
                # the webhook routed it to HAMi's scheduler and the default requests were re-applied
                assert pod["spec"]["schedulerName"] == "hami-scheduler"
                requests = pod["spec"]["containers"][0]["resources"]["requests"]
                assert set(shape[0]) <= set(requests), requests
                assert pod["metadata"]["annotations"][ann.NVIDIA_KEYS.allocated]
            else:
                assert pod["spec"]["nodeName"] == "mig-node"
    finally:
        for name in names:
            kube.delete(f"/api/v1/namespaces/{ns}/pods/{name}", gracePeriodSeconds=0)
        _wait(lambda: not kube.get(f"/api/v1/namespaces/{ns}/pods")["items"])
        _release_locks(kube, ns)


def test_dynamic_mig_shape_is_refused_with_the_extenders_reason(cluster: tuple[Kube, str]) -> None:
    kube, ns = cluster
    shape = REFUSED_BY_DESIGN["dynamic_mig_example.yaml"]
    kube.create(f"/api/v1/namespaces/{ns}/pods", _pod("dynamic-mig", shape))
    try:
        def failed() -> list[dict[str, Any]]:
            events = kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
            return [e for e in events if e["involvedObject"]["name"] == "dynamic-mig"
                    and e["reason"] in ("FilteringFailed", "FailedScheduling")]

        assert _wait(failed)
        assert not kube.get(f"/api/v1/namespaces/{ns}/pods/dynamic-mig")["spec"].get("nodeName")
    finally:
        kube.delete(f"/api/v1/namespaces/{ns}/pods/dynamic-mig", gracePeriodSeconds=0)
