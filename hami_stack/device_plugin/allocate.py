"""The device-plugin half of HAMi's bind protocol (contract sections 4.3, 4.4 and 6.1).

The scheduler's ``/bind`` locks the node (``hami.io/mutex.lock`` names the pod), marks the pod
``hami.io/bind-phase: allocating`` and binds it; the kubelet then calls Allocate, which carries only
anonymous virtual device IDs. So Allocate:

1. finds *the* pending pod: the one the node lock names, else the first pod on this node that is
   Pending, has ``hami.io/bind-time``, a bind phase of ``allocating``/``success`` and
   ``hami.io/vgpu-node`` = this node (and still has devices to allocate);
2. for each container request pops the first non-empty segment of the to-allocate annotation
   (init containers first) and checks its device count against the kubelet's;
3. answers with the family's env and mounts, writes the emptied to-allocate value back, and when no
   segment names NVIDIA any more sets ``bind-phase: success`` and releases the lock. Any failure sets
   ``bind-phase: failed`` and releases the lock; the kubelet then reports ``UnexpectedAdmissionError``.

GetPreferredAllocation uses the same pod, without popping, to steer the kubelet to virtual IDs of the
GPUs the scheduler chose.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid as uuidlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubeclient.client import ApiError, Kube
from kubeletapi import deviceplugin_v1beta1_pb2 as api

from .. import faults
from ..devices.base import AllocateInput, ContainerAllocation, containers
from ..devices.nvidia import NvidiaFamily, physical_uuid
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import (
    ContainerDevices,
    decode_pod_devices,
    encode_pod_devices,
    has_devices,
    pop_first_nonempty,
)
from ..protocol.errors import ProtocolError
from ..protocol.nodelock import may_release, parse_lock
from .server import AllocateFailed

log = logging.getLogger("hami.device-plugin.allocate")

DEVICE_NUMBER_MISMATCH = "device number not matched"
_PENDING_PHASES = (ev.PHASE_ALLOCATING, ev.PHASE_SUCCESS)


def no_binding_pod_message(node: str) -> str:
    return f"no binding pod found on node {node}"


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


class Allocator:
    """Allocate and GetPreferredAllocation for one node's NVIDIA resource."""

    def __init__(
        self,
        kube: Kube,
        node: str,
        family: NvidiaFamily,
        *,
        hook_path: str = "/usr/local",
        pass_device_specs: bool = False,
        minors: Callable[[], dict[str, int]] = dict,
        cache_id: Callable[[], str] = lambda: str(uuidlib.uuid4()),
        memory_skew_mib: int | None = None,
    ) -> None:
        self.memory_skew_mib = faults.memory_limit_skew_mib() if memory_skew_mib is None else memory_skew_mib
        self.kube = kube
        self.node = node
        self.family = family
        self.keys = family.keys
        self.hook_path = hook_path
        self.pass_device_specs = pass_device_specs
        self.minors = minors
        self.cache_id = cache_id
        self._lock = threading.Lock()  # one Allocate at a time: they share the pod's annotation

    # --- finding the pod ---------------------------------------------------------------------------

    def _pod(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def _candidate(self, pod: dict[str, Any] | None) -> bool:
        if pod is None:
            return False
        a = _annotations(pod)
        return (
            (pod.get("status") or {}).get("phase", "Pending") == "Pending"
            and bool(a.get(ann.BIND_TIME))
            and a.get(ann.BIND_PHASE) in _PENDING_PHASES
            and a.get(ann.VGPU_NODE) == self.node
            and has_devices(a.get(self.keys.to_allocate, ""), [self.family.common_word])
        )

    def pending_pod(self) -> dict[str, Any]:
        node = self.kube.get(f"/api/v1/nodes/{self.node}")
        lock = _annotations(node).get(ann.NODE_LOCK)
        if lock:
            try:
                held = parse_lock(lock)
            except ProtocolError:
                held = None
            if held is not None and not held.legacy:
                pod = self._pod(held.namespace, held.name)
                if self._candidate(pod):
                    return pod  # type: ignore[return-value]
        pods = self.kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={self.node}")
        for pod in pods.get("items") or []:
            if self._candidate(pod):
                return pod
        raise AllocateFailed(no_binding_pod_message(self.node))

    # --- GetPreferredAllocation ----------------------------------------------------------------------

    def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        picked = list(must_include)[:size]
        wanted: ContainerDevices = []
        try:
            pod = self.pending_pod()
            value = _annotations(pod).get(self.keys.to_allocate, "")
            wanted = next((c for c in decode_pod_devices(value, trim_trailing=True) if c), [])
        except (AllocateFailed, ProtocolError, ApiError) as e:
            log.info("no preference (%s); taking the first available devices", e)
        for dev in wanted:
            if len(picked) >= size:
                break
            if any(physical_uuid(p) == dev.uuid for p in picked):
                continue
            for vid in available:
                if vid not in picked and physical_uuid(vid) == dev.uuid:
                    picked.append(vid)
                    break
        for vid in available:
            if len(picked) >= size:
                break
            if vid not in picked:
                picked.append(vid)
        return picked

    # --- Allocate ------------------------------------------------------------------------------------

    def allocate(self, requests: Sequence[Sequence[str]]) -> list[api.ContainerAllocateResponse]:
        with self._lock:
            try:
                pod = self.pending_pod()
            except ApiError as e:
                raise AllocateFailed(f"cannot read pods of node {self.node}: {e}") from e
            meta = pod.get("metadata") or {}
            ns, name = meta.get("namespace", "default"), meta.get("name", "")
            try:
                responses, remaining = self._allocate_pod(pod, requests)
                self._patch_pod(ns, name, {self.keys.to_allocate: remaining})
                if not has_devices(remaining, [self.family.common_word]):
                    self._patch_pod(ns, name, {ann.BIND_PHASE: ev.PHASE_SUCCESS})
                    self.release_lock(ns, name)
                log.info("Allocate for pod %s/%s: %d container(s)", ns, name, len(responses))
                return responses
            except (AllocateFailed, ProtocolError, ApiError, OSError) as e:
                log.error("Allocate for pod %s/%s failed: %s", ns, name, e)
                try:
                    self._patch_pod(ns, name, {ann.BIND_PHASE: ev.PHASE_FAILED})
                except ApiError as pe:
                    log.error("cannot mark pod %s/%s failed: %s", ns, name, pe)
                try:
                    self.release_lock(ns, name)
                except ApiError as le:
                    log.error("cannot release the lock of node %s: %s", self.node, le)
                raise AllocateFailed(str(e)) from e

    def _allocate_pod(
        self, pod: dict[str, Any], requests: Sequence[Sequence[str]]
    ) -> tuple[list[api.ContainerAllocateResponse], str]:
        value = _annotations(pod).get(self.keys.to_allocate, "")
        pod_devices = decode_pod_devices(value, trim_trailing=True)
        specs = containers(pod)
        uid = (pod.get("metadata") or {}).get("uid", "")
        out = []
        for ids in requests:
            index, devices, pod_devices = pop_first_nonempty(pod_devices)
            if len(devices) != len(ids):
                raise AllocateFailed(DEVICE_NUMBER_MISMATCH)
            spec = specs[index] if index < len(specs) else {}
            env = {e["name"]: str(e.get("value", "")) for e in spec.get("env") or [] if "name" in e}
            alloc = self.family.allocate_response(
                AllocateInput(
                    devices=devices,
                    pod_uid=uid,
                    container_name=spec.get("name", ""),
                    container_env=env,
                    cache_id=self.cache_id(),
                    hook_path=self.hook_path,
                    libvgpu_name=self._libvgpu_name(),
                    license_present=Path(self.hook_path, "vgpu", "license").exists(),
                )
            )
            faults.skew_memory_limits(alloc.envs, self.memory_skew_mib)
            if self.pass_device_specs:
                minors = self.minors()
                alloc.devices.extend(
                    self.family.device_specs([minors[d.uuid] for d in devices if d.uuid in minors])
                )
            self._make_dirs(alloc)
            out.append(to_proto(alloc))
        return out, encode_pod_devices(pod_devices)

    def _libvgpu_name(self) -> str:
        vgpu = Path(self.hook_path, "vgpu")
        versioned = sorted(p.name for p in vgpu.glob("libvgpu.so.*")) if vgpu.is_dir() else []
        return versioned[-1] if versioned else "libvgpu.so"

    @staticmethod
    def _make_dirs(alloc: ContainerAllocation) -> None:
        for d in alloc.host_dirs:
            path = Path(d)
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
            path.chmod(0o777)  # the container's processes may run as any user

    # --- API writes ----------------------------------------------------------------------------------

    def _patch_pod(self, ns: str, name: str, values: dict[str, str]) -> None:
        self.kube.patch(
            f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"annotations": values}}, "merge"
        )

    def release_lock(self, ns: str, name: str, attempts: int = 5) -> bool:
        """Delete the node lock if ``ns/name`` holds it (guarded by resourceVersion, retried on conflict)."""
        for _ in range(attempts):
            node = self.kube.get(f"/api/v1/nodes/{self.node}")
            current = _annotations(node).get(ann.NODE_LOCK)
            if not may_release(current, ns, name):
                return False
            patch = {
                "metadata": {
                    "annotations": {ann.NODE_LOCK: None},
                    "resourceVersion": (node.get("metadata") or {}).get("resourceVersion"),
                }
            }
            try:
                self.kube.patch(f"/api/v1/nodes/{self.node}", patch, "merge")
                return True
            except ApiError as e:
                if e.status != 409:
                    raise
        return False


def to_proto(alloc: ContainerAllocation) -> api.ContainerAllocateResponse:
    resp = api.ContainerAllocateResponse(envs=alloc.envs, annotations=alloc.annotations)
    for m in alloc.mounts:
        resp.mounts.add(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
    for d in alloc.devices:
        resp.devices.add(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions)
    return resp
