"""A small real device plugin (gRPC server on a unix socket) for tests and demos.

It behaves like a vendor plugin written against k8s.io/kubelet: serves ``DevicePlugin`` on
``<device-plugins dir>/<endpoint>``, registers with ``kubelet.sock``, streams its device list, and,
with ``watch_kubelet=True``, restarts and registers again when the kubelet socket is recreated (what
NVIDIA's and HAMi's plugins do).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kubeletapi import deviceplugin_v1beta1_pb2 as api
from kubeletapi import deviceplugin_v1beta1_pb2_grpc as api_grpc
from kubeletapi.sockets import unix_target

AllocateFn = Callable[[list[str]], api.ContainerAllocateResponse]


@dataclass
class StubDevice:
    id: str
    health: str = "Healthy"
    numa: int | None = None

    def to_proto(self) -> api.Device:
        dev = api.Device(ID=self.id, health=self.health)
        if self.numa is not None:
            dev.topology.nodes.add(ID=self.numa)
        return dev


@dataclass
class Calls:
    preferred: list[api.ContainerPreferredAllocationRequest] = field(default_factory=list)
    allocate: list[list[str]] = field(default_factory=list)
    pre_start: list[list[str]] = field(default_factory=list)
    list_and_watch: int = 0


def default_allocate(resource: str) -> AllocateFn:
    """Envs, a mount and a device node per allocation, like a GPU plugin would return."""

    def allocate(ids: list[str]) -> api.ContainerAllocateResponse:
        key = resource.split("/")[-1].upper().replace("-", "_").replace(".", "_")
        resp = api.ContainerAllocateResponse(envs={f"STUB_{key}_DEVICES": ",".join(ids)})
        resp.mounts.add(container_path="/usr/local/stub", host_path="/opt/stub", read_only=True)
        for i, _ in enumerate(ids):
            resp.devices.add(container_path=f"/dev/stub{i}", host_path="/dev/null", permissions="rw")
        resp.annotations["stub.example.com/devices"] = ",".join(ids)
        return resp

    return allocate


class _Servicer(api_grpc.DevicePluginServicer):
    def __init__(self, plugin: StubDevicePlugin) -> None:
        self.p = plugin

    async def GetDevicePluginOptions(self, request: api.Empty, context: Any) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(
            pre_start_required=self.p.pre_start_required,
            get_preferred_allocation_available=self.p.preferred_available,
        )

    async def ListAndWatch(self, request: api.Empty, context: Any) -> Any:
        self.p.calls.list_and_watch += 1
        sent = -1
        while True:
            if sent != self.p._version:
                sent = self.p._version
                yield api.ListAndWatchResponse(devices=[d.to_proto() for d in self.p.devices])
            async with self.p._changed:
                while sent == self.p._version:
                    await self.p._changed.wait()

    async def GetPreferredAllocation(
        self, request: api.PreferredAllocationRequest, context: Any
    ) -> api.PreferredAllocationResponse:
        out = api.PreferredAllocationResponse()
        for req in request.container_requests:
            self.p.calls.preferred.append(req)
            picked = list(req.must_include_deviceIDs)
            # Prefer from the end of the list, so a test can tell a preference from the default order.
            for dev in sorted(req.available_deviceIDs, reverse=True):
                if len(picked) >= req.allocation_size:
                    break
                if dev not in picked:
                    picked.append(dev)
            out.container_responses.add(deviceIDs=picked)
        return out

    async def Allocate(self, request: api.AllocateRequest, context: Any) -> api.AllocateResponse:
        out = api.AllocateResponse()
        for req in request.container_requests:
            ids = list(req.devices_ids)
            self.p.calls.allocate.append(ids)
            if self.p.fail_allocate:
                await context.abort(grpc.StatusCode.UNKNOWN, self.p.fail_allocate)
            out.container_responses.append(self.p.allocate_fn(ids))
        return out

    async def PreStartContainer(
        self, request: api.PreStartContainerRequest, context: Any
    ) -> api.PreStartContainerResponse:
        self.p.calls.pre_start.append(list(request.devices_ids))
        return api.PreStartContainerResponse()


class StubDevicePlugin:
    def __init__(
        self,
        plugin_dir: Path | str,
        resource: str,
        devices: Sequence[StubDevice],
        *,
        endpoint: str | None = None,
        version: str = "v1beta1",
        preferred_available: bool = False,
        pre_start_required: bool = False,
        allocate_fn: AllocateFn | None = None,
    ) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.resource = resource
        self.devices = list(devices)
        self.endpoint = endpoint or resource.replace("/", "-") + ".sock"
        self.version = version
        self.preferred_available = preferred_available
        self.pre_start_required = pre_start_required
        self.allocate_fn = allocate_fn or default_allocate(resource)
        self.fail_allocate = ""
        self.calls = Calls()
        self.registrations = 0
        self._version = 0
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def socket(self) -> Path:
        return self.plugin_dir / self.endpoint

    @property
    def kubelet_socket(self) -> Path:
        return self.plugin_dir / "kubelet.sock"

    async def serve(self) -> None:
        server = grpc.aio.server()
        api_grpc.add_DevicePluginServicer_to_server(_Servicer(self), server)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        server.add_insecure_port(unix_target(self.socket))
        await server.start()
        self._server = server

    async def register(self) -> None:
        """Register with the kubelet; raises grpc.aio.AioRpcError when it refuses."""
        async with grpc.aio.insecure_channel(unix_target(self.kubelet_socket)) as channel:
            stub = api_grpc.RegistrationStub(channel)
            await stub.Register(
                api.RegisterRequest(
                    version=self.version,
                    endpoint=self.endpoint,
                    resource_name=self.resource,
                    options=api.DevicePluginOptions(
                        pre_start_required=self.pre_start_required,
                        get_preferred_allocation_available=self.preferred_available,
                    ),
                ),
                timeout=10,
            )
        self.registrations += 1

    async def start(self, *, watch_kubelet: bool = False) -> None:
        await self.serve()
        await self.register()
        if watch_kubelet:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_kubelet())

    async def _watch_kubelet(self) -> None:
        # Polling stands in for fsnotify: a new kubelet.sock file means a new kubelet.
        def inode() -> tuple[int, int] | None:
            try:
                st = os.stat(self.kubelet_socket)
            except FileNotFoundError:
                return None
            return (st.st_ino, st.st_ctime_ns)  # inode numbers get reused; ctime tells them apart

        seen = inode()
        while True:
            await asyncio.sleep(0.05)
            now = inode()
            if now is not None and now != seen:
                await self._halt()
                await self.serve()
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self.register()
            seen = now

    async def set_health(self, device_id: str, health: str) -> None:
        for dev in self.devices:
            if dev.id == device_id:
                dev.health = health
        await self._bump()

    async def set_devices(self, devices: Sequence[StubDevice]) -> None:
        self.devices = list(devices)
        await self._bump()

    async def _bump(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    async def _halt(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(None)

    async def stop(self) -> None:
        """Stop serving (a crash, as far as the kubelet can tell): streams end, the socket goes."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._halt()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
