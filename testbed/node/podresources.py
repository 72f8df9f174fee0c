"""The kubelet's PodResources API on ``<node root>/var/lib/kubelet/pod-resources/kubelet.sock``.

Versions and RPCs per minor: v1alpha1 List everywhere (1.18-1.33); v1 List from 1.20;
GetAllocatableResources from 1.21 (gate KubeletPodResourcesGetAllocatable: on by default from 1.23);
Get from 1.27 (gate KubeletPodResourcesGet: off by default through 1.33). A method the minor does not
have answers Unimplemented as grpc-go does; a method whose gate is off answers the kubelet's error.
Devices come from the device-plugin manager; CPU and memory assignments are always empty (the
testbed has no CPU or memory manager).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import grpc

from kubeletapi import podresources_v1_pb2 as v1
from kubeletapi import podresources_v1alpha1_pb2 as v1alpha1
from kubeletapi.sockets import unix_target
from testbed.node.devices.rpc import UnknownMethodHandler

log = logging.getLogger("testbed.node.podresources")

POD_RESOURCES_DIR = Path("var/lib/kubelet/pod-resources")
SOCKET_NAME = "kubelet.sock"


class DeviceSource(Protocol):
    def container_devices(self, pod_uid: str, container: str) -> list[tuple[str, list[str], int | None]]: ...

    def allocatable_devices(self) -> list[tuple[str, str, list[int]]]: ...


class _NoDevices:
    def container_devices(self, pod_uid: str, container: str) -> list[tuple[str, list[str], int | None]]:
        return []

    def allocatable_devices(self) -> list[tuple[str, str, list[int]]]:
        return []


class PodResourcesServer:
    def __init__(
        self,
        node_root: Path | str,
        minor: int,
        *,
        active_pods: Callable[[], list[dict[str, Any]]],
        devices: DeviceSource | None = None,
        feature_gates: dict[str, bool] | None = None,
    ) -> None:
        self.minor = minor
        self.socket_path = Path(node_root) / POD_RESOURCES_DIR / SOCKET_NAME
        self._active_pods = active_pods
        self._devices: DeviceSource = devices or _NoDevices()
        gates = feature_gates or {}
        self.has_v1 = minor >= 20
        self.has_allocatable = minor >= 21
        self.allocatable_enabled = gates.get("KubeletPodResourcesGetAllocatable", minor >= 23)
        self.has_get = minor >= 27
        self.get_enabled = gates.get("KubeletPodResourcesGet", False)
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = grpc.aio.server()
        handlers: list[grpc.GenericRpcHandler] = [
            grpc.method_handlers_generic_handler(
                "v1alpha1.PodResourcesLister",
                {"List": _unary(self._list_v1alpha1, v1alpha1.ListPodResourcesRequest)},
            )
        ]
        services = {"v1alpha1.PodResourcesLister"}
        if self.has_v1:
            methods = {"List": _unary(self._list_v1, v1.ListPodResourcesRequest)}
            if self.has_allocatable:
                methods["GetAllocatableResources"] = _unary(self._allocatable, v1.AllocatableResourcesRequest)
            if self.has_get:
                methods["Get"] = _unary(self._get, v1.GetPodResourcesRequest)
            handlers.append(grpc.method_handlers_generic_handler("v1.PodResourcesLister", methods))
            services.add("v1.PodResourcesLister")
        handlers.append(UnknownMethodHandler(services))
        server.add_generic_rpc_handlers(tuple(handlers))
        server.add_insecure_port(unix_target(self.socket_path))
        await server.start()
        self._server = server
        log.info("Serving pod resources API on %s", self.socket_path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(None)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    # ---- v1 -------------------------------------------------------------------------------------

    def _pod_resources(self, pod: dict[str, Any]) -> v1.PodResources:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        out = v1.PodResources(name=meta.get("name", ""), namespace=meta.get("namespace", ""))
        for c in (pod.get("spec") or {}).get("containers") or []:
            cres = out.containers.add(name=c.get("name", ""))
            for resource, ids, numa in self._devices.container_devices(uid, c.get("name", "")):
                dev = cres.devices.add(resource_name=resource, device_ids=ids)
                if numa is not None:
                    dev.topology.nodes.add(ID=numa)
        return out

    async def _list_v1(
        self, request: v1.ListPodResourcesRequest, context: Any
    ) -> v1.ListPodResourcesResponse:
        return v1.ListPodResourcesResponse(
            pod_resources=[self._pod_resources(p) for p in self._active_pods()]
        )

    async def _allocatable(
        self, request: v1.AllocatableResourcesRequest, context: grpc.aio.ServicerContext
    ) -> v1.AllocatableResourcesResponse:
        if not self.allocatable_enabled:
            await context.abort(grpc.StatusCode.UNKNOWN, "PodResources API GetAllocatableResources disabled")
        out = v1.AllocatableResourcesResponse()
        for resource, dev_id, numa in self._devices.allocatable_devices():
            # One entry per device and NUMA node, as the kubelet reports them.
            for node in numa or [None]:
                dev = out.devices.add(resource_name=resource, device_ids=[dev_id])
                if node is not None:
                    dev.topology.nodes.add(ID=node)
        return out

    async def _get(
        self, request: v1.GetPodResourcesRequest, context: grpc.aio.ServicerContext
    ) -> v1.GetPodResourcesResponse:
        if not self.get_enabled:
            await context.abort(grpc.StatusCode.UNKNOWN, "PodResources API Get method disabled")
        for pod in self._active_pods():
            meta = pod.get("metadata") or {}
            if meta.get("name") == request.pod_name and meta.get("namespace") == request.pod_namespace:
                return v1.GetPodResourcesResponse(pod_resources=self._pod_resources(pod))
        await context.abort(
            grpc.StatusCode.UNKNOWN, f"pod {request.pod_name} in namespace {request.pod_namespace} not found"
        )
        raise AssertionError("unreachable")

    # ---- v1alpha1 -------------------------------------------------------------------------------

    async def _list_v1alpha1(
        self, request: v1alpha1.ListPodResourcesRequest, context: Any
    ) -> v1alpha1.ListPodResourcesResponse:
        out = v1alpha1.ListPodResourcesResponse()
        for pod in self._active_pods():
            meta = pod.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            pres = out.pod_resources.add(name=meta.get("name", ""), namespace=meta.get("namespace", ""))
            for c in (pod.get("spec") or {}).get("containers") or []:
                cres = pres.containers.add(name=c.get("name", ""))
                entries = self._devices.container_devices(uid, c.get("name", ""))
                if self.minor < 20:
                    # Before NUMA-aware checkpoints there was one entry per resource.
                    merged: dict[str, list[str]] = {}
                    for resource, ids, _ in entries:
                        merged.setdefault(resource, []).extend(ids)
                    for resource, ids in merged.items():
                        cres.devices.add(resource_name=resource, device_ids=ids)
                else:
                    for resource, ids, _ in entries:
                        cres.devices.add(resource_name=resource, device_ids=ids)
        return out


def _unary(fn: Callable[..., Any], request_type: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request_type.FromString,
        response_serializer=lambda msg: msg.SerializeToString(),
    )
