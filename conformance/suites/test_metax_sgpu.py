"""MetaX sGPU placement by app class and QoS policy (marker ``metax``).

HAMi's MetaX sGPU backend places a pod by the pods already on a device: pods annotated
``metax-tech.com/sgpu-app-class`` (``online``/``offline``) and pods without a class never share a
device, an offline pod never joins a device that runs an online pod, and an online pod with a choice
takes the device with fewer online pods. A device shared by non-online pods runs one QoS policy
(``metax-tech.com/sgpu-qos-policy``): a pod asking another is refused it. Refusals name upstream's
reasons (``CardAppClassMismatch``, ``CardQosPolicyMismatch``).

Each case pins its pods to devices no live pod holds (``metax-tech.com/use-gpuuuid``), so what it
sees comes from its own pods; the holding pods run the probe idle until the case ends.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conformance.cases import rule, unknown, violated
from conformance.kube import ContainerSpec, Workloads, pod_manifest, poll
from conformance.suites.common import HOLD, LIVE_PHASES, expect_filter_failure

pytestmark = [pytest.mark.metax, pytest.mark.scheduling]

NODE_DEVICES = "metax-tech.com/node-gpu-devices"
ALLOCATED = "hami.io/metax-sgpu-devices-allocated"
APP_CLASS = "metax-tech.com/sgpu-app-class"
QOS = "metax-tech.com/sgpu-qos-policy"
USE_UUID = "metax-tech.com/use-gpuuuid"
GPU_POLICY = "hami.io/gpu-scheduler-policy"
APP_CLASS_MISMATCH = "CardAppClassMismatch"
QOS_MISMATCH = "CardQosPolicyMismatch"
# a tenth of one sGPU: two such pods always fit one device by capacity
SHARED = {"metax-tech.com/sgpu": "1", "metax-tech.com/vcore": "10", "metax-tech.com/vmemory": "1"}


def _devices_by_node(kube: Any) -> dict[str, list[str]]:
    """node -> the sGPU uuids its MetaX node JSON lists (healthy ones)."""
    out: dict[str, list[str]] = {}
    for n in kube.get("/api/v1/nodes").get("items") or []:
        value = (n["metadata"].get("annotations") or {}).get(NODE_DEVICES)
        if not value:
            continue
        try:
            devices = json.loads(value)
        except ValueError:
            continue
        uuids = [d["uuid"] for d in devices if isinstance(d, dict) and d.get("uuid") and d.get("healthy")]
        if uuids:
            out[n["metadata"]["name"]] = uuids
    return out


def _assigned(pod: dict[str, Any]) -> list[str]:
    value = (pod["metadata"].get("annotations") or {}).get(ALLOCATED, "")
    return [d.split(",")[0] for seg in value.split(";") for d in seg.split(":") if "," in d]


def _busy(kube: Any) -> set[str]:
    """sGPUs some live pod (anywhere in the cluster) holds: earlier cases' pods may still be going."""
    out: set[str] = set()
    for p in kube.get("/api/v1/pods").get("items") or []:
        if (p.get("status") or {}).get("phase") in LIVE_PHASES:
            out.update(_assigned(p))
    return out


def _idle(kube: Any, n: int, timeout: float = 90) -> tuple[str, list[str]]:
    """A node with ``n`` sGPUs no live pod holds, and those sGPUs (waits for leftovers to go)."""
    nodes = _devices_by_node(kube)
    if not any(len(u) >= n for u in nodes.values()):
        unknown(f"no node lists {n} healthy sGPUs in {NODE_DEVICES} (the cluster has no MetaX sGPU node)")

    def pick() -> tuple[str, list[str]] | None:
        busy = _busy(kube)
        for node, uuids in sorted(nodes.items()):
            free = [u for u in uuids if u not in busy]
            if len(free) >= n:
                return node, free[:n]
        return None

    found: tuple[str, list[str]] = poll(f"{n} idle sGPUs on one node", pick, bool, timeout)
    return found


def _create(w: Workloads, prefix: str, annotations: dict[str, str]) -> str:
    spec = ContainerSpec(args=HOLD, extra_limits=dict(SHARED))
    return str(w.create(pod_manifest(prefix, [spec], annotations=annotations))["metadata"]["name"])


def _hold(w: Workloads, rid: str, prefix: str, annotations: dict[str, str], want: str) -> None:
    """A pod that asks ``annotations`` is placed on ``want`` and keeps running there."""
    name = _create(w, prefix, annotations)
    pod = w.wait_scheduled(name)
    got = _assigned(pod)
    assert got == [want], violated(rid, f"pod {name} ({annotations}) was given {got}, want the idle {want}")
    pod = w.wait_phase(name, ("Running", "Succeeded", "Failed"))
    phase = (pod.get("status") or {}).get("phase")
    assert phase == "Running", violated(
        rid, f"pod {name}, which holds {want} for this case, is {phase}: {w.describe(name, pod)}"
    )


def _refused(w: Workloads, rid: str, prefix: str, annotations: dict[str, str], reason: str) -> None:
    """A pod that asks ``annotations`` stays unscheduled, refused for ``reason``."""
    expect_filter_failure(w, _create(w, prefix, annotations), reason, rid)


@rule("METAX-SGPU-APPCLASS-1", "An offline sGPU pod is never given a device that runs an online pod")
def test_offline_pod_never_joins_an_online_one(workloads: Workloads, kube: Any) -> None:
    rid = "METAX-SGPU-APPCLASS-1"
    _, (dev,) = _idle(kube, 1)
    _hold(workloads, rid, "mx-online", {APP_CLASS: "online", USE_UUID: dev}, dev)
    _refused(
        workloads,
        rid,
        "mx-offline",
        {APP_CLASS: "offline", QOS: "best-effort", USE_UUID: dev},
        APP_CLASS_MISMATCH,
    )


@rule(
    "METAX-SGPU-APPCLASS-2",
    "sGPU pods with an app class and pods without one never share a device",
)
def test_app_class_pods_and_plain_pods_never_share(workloads: Workloads, kube: Any) -> None:
    rid = "METAX-SGPU-APPCLASS-2"
    _, (with_class, plain) = _idle(kube, 2)
    _hold(workloads, rid, "mx-online", {APP_CLASS: "online", USE_UUID: with_class}, with_class)
    _hold(workloads, rid, "mx-plain", {QOS: "best-effort", USE_UUID: plain}, plain)
    _refused(workloads, rid, "mx-plain-join", {QOS: "best-effort", USE_UUID: with_class}, APP_CLASS_MISMATCH)
    _refused(workloads, rid, "mx-online-join", {APP_CLASS: "online", USE_UUID: plain}, APP_CLASS_MISMATCH)


@rule("METAX-SGPU-QOS-1", "A shared sGPU runs one QoS policy: a pod asking another is refused it")
def test_a_shared_device_runs_one_qos_policy(workloads: Workloads, kube: Any) -> None:
    rid = "METAX-SGPU-QOS-1"
    _, (dev,) = _idle(kube, 1)
    _hold(workloads, rid, "mx-best-effort", {QOS: "best-effort", USE_UUID: dev}, dev)
    _refused(workloads, rid, "mx-fixed-share", {QOS: "fixed-share", USE_UUID: dev}, QOS_MISMATCH)
    # the same policy joins it: the refusal was the policy, not the device's capacity
    _hold(workloads, rid, "mx-best-effort-2", {QOS: "best-effort", USE_UUID: dev}, dev)


@rule(
    "METAX-SGPU-ONLINE-1",
    "An online sGPU pod is given the device with fewer online pods, even under the binpack GPU policy",
)
def test_online_pods_spread_over_devices(workloads: Workloads, kube: Any) -> None:
    rid = "METAX-SGPU-ONLINE-1"
    _, (first, second) = _idle(kube, 2)
    _hold(workloads, rid, "mx-online-a", {APP_CLASS: "online", USE_UUID: first}, first)
    # binpack alone would stack the second pod on the used device; online placement takes the idle one
    both = f"{first},{second}"
    _hold(workloads, rid, "mx-online-b", {APP_CLASS: "online", GPU_POLICY: "binpack", USE_UUID: both}, second)
