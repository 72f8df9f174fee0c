"""The kubelet side of a device plugin: the ``DevicePlugin`` gRPC service on a unix socket, and
registration with ``kubelet.sock``.

Life cycle (what the kubelet expects of any plugin):

* serve ``<device-plugins dir>/<endpoint>`` and call ``Registration.Register`` on ``kubelet.sock``;
* stream the device list from ``ListAndWatch`` and send it again on every change;
* when ``kubelet.sock`` is recreated (a kubelet restart deletes every socket in the directory, ours
  too), serve again and register again; :meth:`PluginServer.watch_kubelet` polls for that.

The service logic (devices, preferred allocation, Allocate) comes from a :class:`Backend`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from kubeletapi import deviceplugin_v1beta1_pb2 as api
from kubeletapi import deviceplugin_v1beta1_pb2_grpc as api_grpc
from kubeletapi.constants import API_VERSION, HEALTHY, UNHEALTHY
from kubeletapi.sockets import unix_target

log = logging.getLogger("hami.device-plugin.server")

@dataclass(frozen=True)
class PluginDevice:
    id: str
    healthy: bool = True
    numa: int | None = None  # attached as topology only when set

    def to_proto(self) -> api.Device:
        dev = api.Device(ID=self.id, health=HEALTHY if self.healthy else UNHEALTHY)
        if self.numa is not None:
            dev.topology.nodes.add(ID=self.numa)
        return dev


class AllocateFailed(Exception):
    """Allocate cannot answer; the message goes back to the kubelet as the gRPC error text."""


class Backend(Protocol):
    def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]: ...

    def allocate(self, requests: Sequence[Sequence[str]]) -> list[api.ContainerAllocateResponse]: ...


class _Servicer(api_grpc.DevicePluginServicer):
    def __init__(self, server: PluginServer) -> None:
        self.s = server

    def GetDevicePluginOptions(self, request: api.Empty, context: Any) -> api.DevicePluginOptions:
        return api.DevicePluginOptions(get_preferred_allocation_available=True)

    def ListAndWatch(self, request: api.Empty, context: Any) -> Iterator[api.ListAndWatchResponse]:
        sent = -1
        while context.is_active() and not self.s.stopping.is_set():
            with self.s.changed:
                if sent == self.s.version:
                    self.s.changed.wait(timeout=1.0)
                    continue
                sent = self.s.version
                devices = list(self.s.devices)
            yield api.ListAndWatchResponse(devices=[d.to_proto() for d in devices])

    def GetPreferredAllocation(self, request: api.PreferredAllocationRequest, context: Any) -> Any:
        out = api.PreferredAllocationResponse()
        for req in request.container_requests:
            ids = self.s.backend.preferred(
                list(req.available_deviceIDs), list(req.must_include_deviceIDs), req.allocation_size
            )
            out.container_responses.add(deviceIDs=ids)
        return out

    def Allocate(self, request: api.AllocateRequest, context: Any) -> api.AllocateResponse:
        try:
            responses = self.s.backend.allocate([list(r.devices_ids) for r in request.container_requests])
        except AllocateFailed as e:
            context.abort(grpc.StatusCode.UNKNOWN, str(e))
        return api.AllocateResponse(container_responses=responses)

    def PreStartContainer(self, request: api.PreStartContainerRequest, context: Any) -> Any:
        return api.PreStartContainerResponse()


class PluginServer:
    """One resource's plugin endpoint."""

    def __init__(self, resource_name: str, socket_dir: Path, endpoint: str, backend: Backend) -> None:
        self.resource_name = resource_name
        self.socket_dir = Path(socket_dir)
        self.endpoint = endpoint
        self.backend = backend
        self.devices: list[PluginDevice] = []
        self.version = 0
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self._server: grpc.Server | None = None
        self._watch: threading.Thread | None = None
        self.registrations = 0
        self.registered = False  # the last registration attempt succeeded

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / self.endpoint

    @property
    def kubelet_socket(self) -> Path:
        return self.socket_dir / "kubelet.sock"

    def set_devices(self, devices: Sequence[PluginDevice]) -> bool:
        """Replace the device list; ListAndWatch streams send it when it differs. True when changed."""
        with self.changed:
            if list(devices) == self.devices:
                return False
            self.devices = list(devices)
            self.version += 1
            self.changed.notify_all()
            return True

    def serve(self) -> None:
        self._stop_server()
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dp-grpc"))
        api_grpc.add_DevicePluginServicer_to_server(_Servicer(self), server)
        server.add_insecure_port(unix_target(self.socket_path))
        server.start()
        self._server = server
        log.info("Starting GRPC server for '%s' on %s", self.resource_name, self.socket_path)

    def register(self, timeout: float = 10.0) -> None:
        """Register with the kubelet (raises ``grpc.RpcError`` when it is not there)."""
        with grpc.insecure_channel(unix_target(self.kubelet_socket)) as ch:
            grpc.channel_ready_future(ch).result(timeout=timeout)
            api_grpc.RegistrationStub(ch).Register(
                api.RegisterRequest(
                    version=API_VERSION,
                    endpoint=self.endpoint,
                    resource_name=self.resource_name,
                    options=api.DevicePluginOptions(get_preferred_allocation_available=True),
                ),
                timeout=timeout,
            )
        self.registrations += 1
        log.info("Registered device plugin for '%s' with Kubelet", self.resource_name)

    def start(self) -> None:
        self.registered = False
        self.serve()
        self.register()
        self.registered = True

    def _identity(self, path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_ino, int(st.st_ctime_ns)

    def watch_kubelet(self, poll_s: float = 0.5) -> None:
        """Restart and register again whenever kubelet.sock is recreated or our socket disappears."""

        def loop() -> None:
            seen = self._identity(self.kubelet_socket)
            while not self.stopping.wait(poll_s):
                now = self._identity(self.kubelet_socket)
                ours = self.socket_path.exists()
                if now is None or (now == seen and ours and self.registered):
                    continue
                log.info("inotify: %s created or plugin socket gone, restarting.", self.kubelet_socket)
                try:
                    self.start()
                    seen = now
                except (grpc.RpcError, grpc.FutureTimeoutError, OSError) as e:
                    log.warning("re-registration failed, retrying: %s", e)

        self._watch = threading.Thread(target=loop, name="kubelet-watch", daemon=True)
        self._watch.start()

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=0.5).wait()

    def stop(self) -> None:
        self.stopping.set()
        with self.changed:
            self.changed.notify_all()
        self._stop_server()
        if self._watch is not None:
            self._watch.join(timeout=2)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
