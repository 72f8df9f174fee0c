"""Short constructors for the upstream tables: Go zero values as defaults, as the Go tests rely on."""

from __future__ import annotations

from typing import Any

from hami_stack.devices.base import ContainerDeviceRequest, DeviceUsage, FitContext
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.policy import gpu_policy, numa_bind_requested


def D(
    id: str,
    *,
    index: int = 0,
    used: int = 0,
    count: int = 0,
    usedmem: int = 0,
    totalmem: int = 0,
    totalcore: int = 0,
    usedcores: int = 0,
    numa: int = 0,
    type: str = "",
    health: bool = False,
    mode: str = "",
) -> DeviceUsage:
    return DeviceUsage(
        id=id,
        type=type,
        count=count,
        totalmem=totalmem,
        totalcore=totalcore,
        index=index,
        numa=numa,
        health=health,
        mode=mode,
        used=used,
        usedmem=usedmem,
        usedcores=usedcores,
    )


def R(*, nums: int = 0, type: str = "", mem: int = 0, pct: int = 0, cores: int = 0) -> ContainerDeviceRequest:
    return ContainerDeviceRequest(type, nums, mem, pct, cores)


def pod(annotations: dict[str, str] | None = None, namespace: str = "", init: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c"}]}
    if init:
        spec["initContainers"] = [{"name": f"i{i}"} for i in range(init)]
    return {
        "metadata": {"name": "p", "namespace": namespace, "annotations": dict(annotations or {})},
        "spec": spec,
    }


def ctx_for(p: dict[str, Any], node: dict[str, Any] | None = None, **kw: Any) -> FitContext:
    """The FitContext the scheduler would build: the pod's GPU policy (default spread) and numa-bind."""
    annotations = p["metadata"]["annotations"]
    policy = gpu_policy(
        annotations.get(ann.GPU_SCHEDULER_POLICY),
        numa_bind=numa_bind_requested(annotations.get(ann.NVIDIA_NUMA_BIND)),
    )
    return FitContext(p, node, policy, **kw)


def node_with(annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "n", "annotations": annotations}}
