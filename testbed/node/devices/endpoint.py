"""The kubelet's client side of one registered device plugin: dial, options, ListAndWatch, RPCs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from kubeletapi import deviceplugin_v1beta1_pb2 as api
from kubeletapi import deviceplugin_v1beta1_pb2_grpc as api_grpc
from kubeletapi.sockets import unix_target
from testbed.node.devices.rpc import close_channel, go_rpc_error

log = logging.getLogger("testbed.node.devices")

DIAL_TIMEOUT_S = 10.0  # the kubelet dials plugins with a blocking 10 s timeout
PRE_START_TIMEOUT_S = 30.0  # KubeletPreStartContainerRPCTimeoutInSecs

DevicesCallback = Callable[["Endpoint", Sequence[api.Device]], None]
EndedCallback = Callable[["Endpoint", str], None]


class EndpointError(Exception):
    """A failure talking to the plugin, worded as the kubelet words it."""


class Endpoint:
    def __init__(
        self,
        resource: str,
        socket: Path,
        on_devices: DevicesCallback,
        on_ended: EndedCallback,
        *,
        dial_timeout: float = DIAL_TIMEOUT_S,
    ) -> None:
        self.resource = resource
        self.dial_timeout = dial_timeout
        self.socket = socket
        self._on_devices = on_devices
        self._on_ended = on_ended
        self._channel: grpc.aio.Channel | None = None
        self._stub: api_grpc.DevicePluginStub | None = None
        self._watch: asyncio.Task[None] | None = None
        self.stopped_at: float | None = None

    def __repr__(self) -> str:
        return f"Endpoint({self.resource!r}, {str(self.socket)!r})"

    async def connect(self) -> api.DevicePluginOptions:
        """Dial the plugin and ask for its options (errors carry the kubelet's wording)."""
        self._channel = grpc.aio.insecure_channel(unix_target(self.socket))
        try:
            await asyncio.wait_for(self._channel.channel_ready(), self.dial_timeout)
        except (TimeoutError, grpc.aio.AioRpcError) as err:
            await self.close()
            raise EndpointError("failed to dial device plugin: context deadline exceeded") from err
        self._stub = api_grpc.DevicePluginStub(self._channel)
        try:
            return await self._stub.GetDevicePluginOptions(api.Empty(), timeout=self.dial_timeout)
        except grpc.aio.AioRpcError as err:
            await self.close()
            raise EndpointError(f"failed to get device plugin options: {go_rpc_error(err)}") from err

    def start_watch(self) -> None:
        self._watch = asyncio.get_running_loop().create_task(self._list_and_watch())

    async def _list_and_watch(self) -> None:
        assert self._stub is not None
        reason = "stream ended"
        try:
            async for resp in self._stub.ListAndWatch(api.Empty()):
                log.debug(
                    "State pushed for device plugin resource=%s devices=%d", self.resource, len(resp.devices)
                )
                self._on_devices(self, list(resp.devices))
        except asyncio.CancelledError:
            return  # closed by the manager: not a plugin failure
        except grpc.aio.AioRpcError as err:
            reason = go_rpc_error(err)
        self.stopped_at = time.monotonic()
        log.error(
            "listAndWatch ended unexpectedly for device plugin resource=%s err=%s", self.resource, reason
        )
        self._on_ended(self, reason)

    async def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        assert self._stub is not None
        req = api.PreferredAllocationRequest(
            container_requests=[
                api.ContainerPreferredAllocationRequest(
                    available_deviceIDs=list(available),
                    must_include_deviceIDs=list(must_include),
                    allocation_size=size,
                )
            ]
        )
        try:
            resp = await self._stub.GetPreferredAllocation(req)
        except grpc.aio.AioRpcError as err:
            raise EndpointError(
                f"device plugin GetPreferredAllocation rpc failed with err: {go_rpc_error(err)}"
            ) from err
        return list(resp.container_responses[0].deviceIDs) if resp.container_responses else []

    async def allocate(self, device_ids: Sequence[str]) -> api.AllocateResponse:
        if self._stub is None or self.stopped_at is not None:
            raise EndpointError(f"endpoint {self.resource} has been stopped")
        req = api.AllocateRequest(
            container_requests=[api.ContainerAllocateRequest(devices_ids=list(device_ids))]
        )
        try:
            return await self._stub.Allocate(req)
        except grpc.aio.AioRpcError as err:
            raise EndpointError(go_rpc_error(err)) from err

    async def pre_start(self, device_ids: Sequence[str]) -> None:
        if self._stub is None or self.stopped_at is not None:
            raise EndpointError(f"endpoint {self.resource} has been stopped")
        try:
            await self._stub.PreStartContainer(
                api.PreStartContainerRequest(devices_ids=list(device_ids)), timeout=PRE_START_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            raise EndpointError(
                f"device plugin PreStartContainer rpc failed with err: {go_rpc_error(err)}"
            ) from err

    async def close(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        watch, self._watch = self._watch, None
        if watch is not None and not watch.done() and watch is not asyncio.current_task():
            watch.cancel()
            try:
                await watch
            except (asyncio.CancelledError, Exception):
                pass
        channel, self._channel = self._channel, None
        self._stub = None
        await close_channel(channel)
