"""The kubelet's device-plugin manager for one testbed node.

Serves ``Registration`` on ``<node root>/var/lib/kubelet/device-plugins/kubelet.sock``, keeps each
registered plugin's device list from ``ListAndWatch``, assigns device IDs per container at admission
(GetPreferredAllocation, Allocate, PreStartContainer), and checkpoints the assignments so that an agent
restart keeps them. The behaviour follows the kubelet's devicemanager for the node's minor version.

Threading: all gRPC work runs on the asyncio loop that called :meth:`DevicePluginManager.start`
(exposed as ``.loop``); ``capacity``, ``release`` and the read-only queries may be called from any
thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kubeletapi import deviceplugin_v1beta1_pb2 as api
from kubeletapi import deviceplugin_v1beta1_pb2_grpc as api_grpc
from kubeletapi.constants import API_VERSION, HEALTHY, KUBELET_SOCKET
from kubeletapi.constants import DEVICE_PLUGINS_DIR as DEVICE_PLUGINS_DIR_ABS
from kubeletapi.sockets import unix_target
from testbed.k8s.quantity import parse_quantity
from testbed.node.devices import checkpoint as ckpt
from testbed.node.devices.endpoint import DIAL_TIMEOUT_S, Endpoint, EndpointError
from testbed.node.devices.names import is_extended_resource_name
from testbed.node.devices.rpc import fire, remove_sockets
from testbed.node.devices_api import AllocationError, ContainerDevices

log = logging.getLogger("testbed.node.devices")

SUPPORTED_VERSIONS = (API_VERSION,)
# under the node root, which stands for the node's filesystem
DEVICE_PLUGINS_DIR = Path(DEVICE_PLUGINS_DIR_ABS.lstrip("/"))
# How long a resource whose plugin went away keeps its capacity before the kubelet drops it.
ENDPOINT_STOP_GRACE_S = 300.0


class AdmissionError(AllocationError):
    """The pod cannot get its devices. ``reason`` is what the kubelet puts in the pod status
    (UnexpectedAdmissionError at admission; CreateContainerConfigError when PreStartContainer fails)."""

    def __init__(self, message: str, reason: str = "UnexpectedAdmissionError") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass
class AllocatedDevices(ContainerDevices):
    """ContainerDevices plus CDI device names (DevicePluginCDIDevices: field 1.28, on by default 1.29+)."""

    cdi_devices: list[str] = field(default_factory=list)


@dataclass
class _Resource:
    endpoint: Endpoint | None = None
    options: api.DevicePluginOptions | None = None
    devices: dict[str, api.Device] = field(default_factory=dict)
    healthy: set[str] = field(default_factory=set)
    unhealthy: set[str] = field(default_factory=set)
    stopped_at: float | None = None  # set while no plugin serves the resource


@dataclass
class _Allocation:
    per_numa: dict[int, list[str]]
    response: api.ContainerAllocateResponse

    def ids(self) -> set[str]:
        return {d for ids in self.per_numa.values() for d in ids}


class _AllocateFailed(Exception):
    pass


def _uid(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")


def _device_limits(container: dict[str, Any]) -> dict[str, int]:
    # Extended resources cannot be overcommitted (requests == limits), so limits say it all; requests
    # are a fallback for callers that hand over an undefaulted spec.
    res = container.get("resources") or {}
    raw = res.get("limits") or res.get("requests") or {}
    out: dict[str, int] = {}
    for name, qty in raw.items():
        try:
            out[name] = int(parse_quantity(str(qty)).value())
        except (ValueError, TypeError):
            continue
    return out


class _Registration(api_grpc.RegistrationServicer):
    def __init__(self, manager: DevicePluginManager) -> None:
        self._m = manager

    async def Register(self, request: api.RegisterRequest, context: grpc.aio.ServicerContext) -> api.Empty:
        return await self._m._register(request, context)


class DevicePluginManager:
    """One node's device-plugin manager (implements ``testbed.node.devices_api.DeviceManager``)."""

    def __init__(
        self,
        node_root: Path | str,
        minor: int,
        *,
        active_pods: Callable[[], list[dict[str, Any]]] | None = None,
        feature_gates: dict[str, bool] | None = None,
        stop_grace_s: float = ENDPOINT_STOP_GRACE_S,
        dial_timeout_s: float = DIAL_TIMEOUT_S,
    ) -> None:
        self.minor = minor
        self.node_root = Path(node_root)
        self.socket_dir = self.node_root / DEVICE_PLUGINS_DIR
        self.socket_path = self.socket_dir / KUBELET_SOCKET
        self.checkpoint_path = self.socket_dir / ckpt.CHECKPOINT_NAME
        self._active_pods = active_pods
        # uids a restarted agent will resume but has not started yet: their assignments stay
        self.pending_uids: Callable[[], Iterable[str]] | None = None
        gates = dict(feature_gates or {})
        self.cdi_enabled = gates.get("DevicePluginCDIDevices", minor >= 29) and minor >= 28
        self.preferred_allocation = minor >= 19
        # Before 1.25 Register only queued the connection; from 1.25 it dials before answering.
        self.sync_register = minor >= 25
        self.stop_grace_s = stop_grace_s
        self.dial_timeout_s = dial_timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.RLock()
        self._alloc_lock: asyncio.Lock | None = None
        self._resources: dict[str, _Resource] = {}
        self._removed: set[str] = set()
        self._pods: dict[str, dict[str, dict[str, _Allocation]]] = {}  # uid -> container -> resource
        self._allocated: dict[str, set[str]] = {}
        self._reuse: dict[str, dict[str, set[str]]] = {}  # init containers' devices, per pod
        self._callbacks: list[Callable[[], None]] = []
        self._server: grpc.aio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._alloc_lock = asyncio.Lock()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._read_checkpoint()
        # Stale sockets go, plugins' included: plugins watch for kubelet.sock being recreated and
        # re-register, which is how a kubelet restart reaches them.
        remove_sockets(self.socket_dir, keep={ckpt.CHECKPOINT_NAME})
        server = grpc.aio.server()
        api_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(unix_target(self.socket_path))
        await server.start()
        self._server = server
        log.info("Serving device plugin registration server on %s", self.socket_path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(None)
        for task in list(self._tasks):
            task.cancel()
        with self._lock:
            endpoints = [r.endpoint for r in self._resources.values() if r.endpoint is not None]
        for ep in endpoints:
            await ep.close()
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    # ---- DeviceManager contract -----------------------------------------------------------------

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def capacity(self) -> dict[str, tuple[int, int]]:
        """Resource -> (capacity, allocatable). A resource whose plugin has been gone longer than the
        grace period is dropped and reported as (0, 0), as the kubelet zeroes its capacity."""
        now = time.monotonic()
        out: dict[str, tuple[int, int]] = {}
        dropped = False
        with self._lock:
            for name, res in list(self._resources.items()):
                if res.stopped_at is not None and now - res.stopped_at > self.stop_grace_s:
                    log.info("Set capacity for removed resource to 0 on device removal device=%s", name)
                    del self._resources[name]
                    self._removed.add(name)
                    dropped = True
                    continue
                out[name] = (len(res.healthy) + len(res.unhealthy), len(res.healthy))
            for name in self._removed:
                out.setdefault(name, (0, 0))
            if dropped:
                self._write_checkpoint()
        return out

    async def allocate(
        self, pod: dict[str, Any], container: dict[str, Any], *, init: bool | None = None
    ) -> AllocatedDevices:
        """Devices for one container, called at admission for init containers then app containers
        (and again when a container restarts: no new Allocate, same answer). Raises AdmissionError."""
        assert self._alloc_lock is not None, "DevicePluginManager.start() first"
        async with self._alloc_lock:
            uid, name = _uid(pod), str(container.get("name") or "")
            spec = pod.get("spec") or {}
            init_names = {c.get("name") for c in spec.get("initContainers") or []}
            is_init = (name in init_names) if init is None else init
            restartable = is_init and container.get("restartPolicy") == "Always"
            with self._lock:
                for other in [u for u in self._reuse if u != uid]:
                    del self._reuse[other]
                reuse = self._reuse.setdefault(uid, {})
            try:
                await self._allocate_container(uid, name, container, reuse)
            except _AllocateFailed as err:
                msg = f"Allocate failed due to {err}, which is unexpected"
                log.warning("Failed to admit pod %s - %s", uid, msg)
                raise AdmissionError(msg) from err
            with self._lock:
                held = self._pods.get(uid, {}).get(name, {})
                for resource, alloc in held.items():
                    if is_init and not restartable:
                        reuse.setdefault(resource, set()).update(alloc.ids())
                    else:
                        reuse.setdefault(resource, set()).difference_update(alloc.ids())
            await self._pre_start(uid, name, container)
            return self.container_options(uid, name)

    def release(self, pod_uid: str) -> None:
        with self._lock:
            self._reuse.pop(pod_uid, None)
            if self._pods.pop(pod_uid, None) is None:
                return
            self._recompute_allocated()
            self._write_checkpoint()

    # ---- queries (PodResources, tests) ----------------------------------------------------------

    def unrecorded(self, pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        """Device-plugin resources the container asks for that no checkpointed assignment covers (what
        an ``allocate`` would have to ask a plugin for)."""
        uid, name = _uid(pod), str(container.get("name") or "")
        with self._lock:
            held = self._pods.get(uid, {}).get(name, {})
        return sorted(r for r in _device_limits(container)
                      if self._is_device_plugin_resource(r) and r not in held)

    def container_options(self, pod_uid: str, container: str) -> AllocatedDevices:
        """The merged Allocate answers of one container; the first resource to set a key wins."""
        out = AllocatedDevices()
        mounts: set[str] = set()
        devs: set[str] = set()
        cdi: set[str] = set()
        with self._lock:
            held = dict(self._pods.get(pod_uid, {}).get(container, {}))
        for resource in sorted(held):
            resp = held[resource].response
            for k, v in sorted(resp.envs.items()):
                if k in out.envs:
                    if out.envs[k] != v:
                        log.error("Environment variable has conflicting setting envKey=%s", k)
                    continue
                out.envs[k] = v
            for m in resp.mounts:
                if m.container_path not in mounts:
                    mounts.add(m.container_path)
                    out.mounts.append((m.host_path, m.container_path, m.read_only))
            for d in resp.devices:
                if d.container_path not in devs:
                    devs.add(d.container_path)
                    out.devices.append((d.host_path, d.container_path, d.permissions))
            for k, v in sorted(resp.annotations.items()):
                out.annotations.setdefault(k, v)
            if self.cdi_enabled:
                for c in resp.cdi_devices:
                    if c.name not in cdi:
                        cdi.add(c.name)
                        out.cdi_devices.append(c.name)
        return out

    def container_devices(self, pod_uid: str, container: str) -> list[tuple[str, list[str], int | None]]:
        """(resource, device IDs, NUMA node or None) per resource and NUMA node, as PodResources v1 lists."""
        out = []
        with self._lock:
            held = self._pods.get(pod_uid, {}).get(container, {})
            for resource in sorted(held):
                for numa, ids in sorted(held[resource].per_numa.items()):
                    if ids:
                        out.append((resource, list(ids), None if numa == ckpt.NO_TOPOLOGY else numa))
        return out

    def allocatable_devices(self) -> list[tuple[str, str, list[int]]]:
        """(resource, device ID, NUMA nodes) for every healthy device."""
        out = []
        with self._lock:
            for name in sorted(self._resources):
                res = self._resources[name]
                for dev_id in sorted(res.healthy):
                    out.append((name, dev_id, _numa_nodes(res.devices.get(dev_id))))
        return out

    def device_ids(self, resource: str) -> tuple[set[str], set[str]]:
        """(healthy, unhealthy) device IDs of one resource."""
        with self._lock:
            res = self._resources.get(resource)
            return (set(res.healthy), set(res.unhealthy)) if res else (set(), set())

    def plugin_connected(self, resource: str) -> bool:
        with self._lock:
            res = self._resources.get(resource)
            return res is not None and res.endpoint is not None and res.stopped_at is None

    # ---- registration ---------------------------------------------------------------------------

    async def _register(self, request: api.RegisterRequest, context: grpc.aio.ServicerContext) -> api.Empty:
        name = request.resource_name
        log.info("Got registration request from device plugin with resource resourceName=%s", name)
        if request.version not in SUPPORTED_VERSIONS:
            err = (
                f"requested API version {_go_quote(request.version)} is not supported by kubelet. "
                f"Supported version is [{', '.join(_go_quote(v) for v in SUPPORTED_VERSIONS)}]"
            )
            log.info(
                "Bad registration request from device plugin with resource resourceName=%s err=%s", name, err
            )
            await context.abort(grpc.StatusCode.UNKNOWN, err)
        if not is_extended_resource_name(name):
            err = f"the ResourceName {_go_quote(name)} is invalid"
            log.info("Bad registration request from device plugin err=%s", err)
            await context.abort(grpc.StatusCode.UNKNOWN, err)
        socket = self.socket_dir / request.endpoint
        if self.sync_register:
            try:
                await self._connect(name, socket)
            except EndpointError as err:
                log.info("Error connecting to device plugin client err=%s", err)
                await context.abort(grpc.StatusCode.UNKNOWN, str(err))
        else:
            task = asyncio.get_running_loop().create_task(self._connect_logged(name, socket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return api.Empty()

    async def _connect_logged(self, name: str, socket: Path) -> None:
        try:
            await self._connect(name, socket)
        except EndpointError as err:
            log.error("Failed to dial device plugin resource=%s err=%s", name, err)

    async def _connect(self, name: str, socket: Path) -> None:
        ep = Endpoint(name, socket, self._on_devices, self._on_ended, dial_timeout=self.dial_timeout_s)
        options = await ep.connect()
        with self._lock:
            res = self._resources.setdefault(name, _Resource())
            old = res.endpoint
            res.endpoint, res.options, res.stopped_at = ep, options, None
            self._removed.discard(name)
        # A plugin that registers again replaces its previous endpoint; the old stream's end is ignored.
        if old is not None:
            await old.close()
        ep.start_watch()
        log.info("Registered device plugin resource=%s endpoint=%s", name, socket)

    def _on_devices(self, ep: Endpoint, devices: Sequence[api.Device]) -> None:
        with self._lock:
            res = self._resources.get(ep.resource)
            if res is None or res.endpoint is not ep:
                return
            before = (len(res.healthy), len(res.unhealthy))
            res.devices = {d.ID: d for d in devices}
            res.healthy = {d.ID for d in devices if d.health == HEALTHY}
            res.unhealthy = {d.ID for d in devices if d.health != HEALTHY}
            changed = before != (len(res.healthy), len(res.unhealthy))
            self._write_checkpoint()
        if changed:
            fire(self._callbacks, log)

    def _on_ended(self, ep: Endpoint, reason: str) -> None:
        with self._lock:
            res = self._resources.get(ep.resource)
            if res is None or res.endpoint is not ep:
                return
            log.info("Mark all resources Unhealthy for resource resourceName=%s", ep.resource)
            res.unhealthy |= res.healthy
            res.healthy = set()
            res.stopped_at = ep.stopped_at or time.monotonic()
            self._write_checkpoint()
        fire(self._callbacks, log)

    # ---- allocation -----------------------------------------------------------------------------

    def _is_device_plugin_resource(self, resource: str) -> bool:
        with self._lock:
            return resource in self._resources or bool(self._allocated.get(resource))

    async def _allocate_container(
        self, uid: str, name: str, container: dict[str, Any], reuse: dict[str, set[str]]
    ) -> None:
        gc_done = False
        for resource, needed in sorted(_device_limits(container).items()):
            if not self._is_device_plugin_resource(resource):
                continue
            if not gc_done:
                self._collect_garbage(keep=uid)
                gc_done = True
            chosen = await self._devices_to_allocate(uid, name, resource, needed, reuse.get(resource, set()))
            if not chosen:
                continue
            with self._lock:
                res = self._resources.get(resource)
                ep = res.endpoint if res is not None else None
            try:
                if res is None:
                    raise _AllocateFailed(f"unknown Device Plugin {resource}")
                if ep is None:
                    raise _AllocateFailed(f"endpoint {resource} has been stopped")
                log.debug(
                    "Making allocation request for device plugin devices=%s resource=%s", chosen, resource
                )
                resp = await ep.allocate(chosen)
            except EndpointError as err:
                self._restore_allocated()
                raise _AllocateFailed(str(err)) from err
            except _AllocateFailed:
                self._restore_allocated()
                raise
            if not resp.container_responses:
                self._restore_allocated()
                raise _AllocateFailed(
                    "no containers return in allocation response "
                    "&AllocateResponse{ContainerResponses:[]*ContainerAllocateResponse{},}"
                )
            with self._lock:
                per_numa: dict[int, list[str]] = {}
                for dev_id in chosen:
                    for numa in _numa_nodes(res.devices.get(dev_id)) or [ckpt.NO_TOPOLOGY]:
                        per_numa.setdefault(numa, []).append(dev_id)
                self._pods.setdefault(uid, {}).setdefault(name, {})[resource] = _Allocation(
                    per_numa, resp.container_responses[0]
                )
                self._recompute_allocated()
                self._write_checkpoint()

    async def _devices_to_allocate(
        self, uid: str, name: str, resource: str, required: int, reusable: set[str]
    ) -> list[str]:
        with self._lock:
            existing = self._pods.get(uid, {}).get(name, {}).get(resource)
        needed = required
        if existing is not None:
            # A restarting container (or an agent restart) keeps what it had; a changed request is a bug.
            held = existing.ids()
            needed = required - len(held)
            if needed != 0:
                raise _AllocateFailed(
                    f'pod "{uid}" container "{name}" changed request for resource "{resource}" '
                    f"from {len(held)} to {required}"
                )
        if needed <= 0:
            return []
        chosen: list[str] = []

        def take(candidates: Iterable[str]) -> bool:
            nonlocal needed
            with self._lock:
                in_use = self._allocated.setdefault(resource, set())
                for dev in sorted(set(candidates) - set(chosen)):
                    in_use.add(dev)
                    chosen.append(dev)
                    needed -= 1
                    if needed == 0:
                        return True
            return False

        if take(reusable):
            return chosen
        with self._lock:
            res = self._resources.get(resource)
            healthy = set(res.healthy) if res is not None else set()
            available = healthy - self._allocated.get(resource, set())
            options = res.options if res is not None else None
            ep = res.endpoint if res is not None else None
        if len(available) < needed:
            self._restore_allocated()
            raise _AllocateFailed(
                f"requested number of devices unavailable for {resource}. "
                f"Requested: {needed}, Available: {len(available)}"
            )
        # No topology manager policy: nothing is "aligned", so the plugin's preference comes first.
        if (
            self.preferred_allocation
            and options is not None
            and options.get_preferred_allocation_available
            and ep
        ):
            try:
                preferred = await ep.preferred(sorted(available | set(chosen)), list(chosen), required)
            except EndpointError as err:
                self._restore_allocated()
                raise _AllocateFailed(str(err)) from err
            if take(set(preferred) & available):
                return chosen
        if take(available):
            return chosen
        self._restore_allocated()
        raise _AllocateFailed(
            "unexpectedly allocated less resources than required. "
            f"Requested: {required}, Got: {required - needed}"
        )

    async def _pre_start(self, uid: str, name: str, container: dict[str, Any]) -> None:
        for resource, count in sorted(_device_limits(container).items()):
            if count == 0:
                continue
            with self._lock:
                res = self._resources.get(resource)
                held = self._pods.get(uid, {}).get(name, {}).get(resource)
                if res is None or res.options is None or not res.options.pre_start_required or held is None:
                    continue
                ep = res.endpoint
            if ep is None:
                continue
            try:
                await ep.pre_start(sorted(held.ids()))
            except EndpointError as err:
                raise AdmissionError(str(err), reason="CreateContainerConfigError") from err

    def _collect_garbage(self, keep: str) -> None:
        # The kubelet drops assignments of pods that are no longer active before each allocation.
        if self._active_pods is None:
            return
        try:
            active = {_uid(p) for p in self._active_pods()}
        except Exception:
            log.exception("active_pods() failed; keeping device assignments")
            return
        active.add(keep)
        if self.pending_uids is not None:
            active.update(self.pending_uids())
        with self._lock:
            gone = [u for u in self._pods if u not in active]
            for uid in gone:
                log.info("Removing device assignments of pod no longer active podUID=%s", uid)
                del self._pods[uid]
            if gone:
                self._recompute_allocated()
                self._write_checkpoint()

    def _recompute_allocated(self) -> None:
        allocated: dict[str, set[str]] = {}
        for containers in self._pods.values():
            for resources in containers.values():
                for resource, alloc in resources.items():
                    allocated.setdefault(resource, set()).update(alloc.ids())
        self._allocated = allocated

    def _restore_allocated(self) -> None:
        with self._lock:
            self._recompute_allocated()

    # ---- checkpoint -----------------------------------------------------------------------------

    def _write_checkpoint(self) -> None:
        data = ckpt.CheckpointData()
        for uid, containers in self._pods.items():
            for cname, resources in containers.items():
                for resource, alloc in resources.items():
                    data.entries.append(
                        ckpt.Entry(uid, cname, resource, alloc.per_numa, alloc.response.SerializeToString())
                    )
        # Like the kubelet: only healthy devices are recorded as registered.
        data.registered = {name: sorted(res.healthy) for name, res in self._resources.items()}
        try:
            ckpt.write(self.checkpoint_path, data, numa_keys=self.minor >= 20)
        except OSError as err:
            log.error("Failed to write device manager checkpoint err=%s", err)

    def _read_checkpoint(self) -> None:
        try:
            data = ckpt.read(self.checkpoint_path)
        except ckpt.CheckpointCorrupted as err:
            log.warning(
                "Continue after failing to read checkpoint file. "
                "Device allocation info may NOT be up-to-date. err=%s",
                err,
            )
            return
        if data is None:
            return
        now = time.monotonic()
        with self._lock:
            for e in data.entries:
                resp = api.ContainerAllocateResponse()
                resp.ParseFromString(e.alloc_resp)
                self._pods.setdefault(e.pod_uid, {}).setdefault(e.container, {})[e.resource] = _Allocation(
                    e.device_ids, resp
                )
            self._recompute_allocated()
            # Registered resources come back with no devices until their plugin registers again.
            for name in data.registered:
                self._resources[name] = _Resource(stopped_at=now)


def _numa_nodes(dev: api.Device | None) -> list[int]:
    return [n.ID for n in dev.topology.nodes] if dev is not None and dev.HasField("topology") else []


def _go_quote(value: str) -> str:
    """Go's %q for the plain strings plugins send (quotes and backslashes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
