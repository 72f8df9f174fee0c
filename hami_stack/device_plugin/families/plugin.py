"""The generic family plugin: hardware files -> kubelet devices, node registration, Allocate.

Per pass (every ``register_interval_s``, 30 s as HAMi's plugins): read the emulated devices
(``$HAMI_FAMILY_HARDWARE_DIR/<vendor>/devices.json``), give the kubelet ``split_count`` virtual
devices per device (Unhealthy while the device is), and, for annotation families, patch the node
with the register annotation (CSV or JSON: id, count, devmem, devcore 100, type, numa, health) and
``<handshake>: Reported_<2006-01-02 15:04:05>``. Allocate goes through the shared
:class:`~hami_stack.device_plugin.allocate.Allocator` (node-lock vouched) and the family's
``allocate_response``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeclient.client import Kube
from kubeletapi.constants import DEVICE_PLUGINS_DIR

from ... import faults
from ...devices.base import DeviceFamily
from ...protocol.handshake import reported
from ...protocol.register import DeviceInfo, encode_register_csv, encode_register_json
from ..allocate import Allocator
from ..server import PluginDevice, PluginServer
from . import hardware as hw
from .specs import REGISTER_CAPACITY, REGISTER_CSV, PluginSpec

log = logging.getLogger("hami.family-device-plugin")


@dataclass(frozen=True)
class FamilyOptions:
    node_name: str
    hardware_dir: Path
    socket_dir: Path = Path(DEVICE_PLUGINS_DIR)
    hook_path: str = "/usr/local"
    register_interval_s: float = 30.0
    register_retry_s: float = 5.0


def _fault(name: str) -> bool:
    """A per-family fault hook; families without that fault in the catalogue never have it on."""
    return name in faults.NAMES and faults.on(name)


def register_entries(spec: PluginSpec, devices: Sequence[hw.Device]) -> list[DeviceInfo]:
    # the fault under-reports memory: the scheduler then places more than the card holds
    shrink = 2 if _fault(f"plugin-{spec.vendor}-register-half-memory") else 1
    return [
        DeviceInfo(
            id=d.uuid,
            index=d.index,
            count=spec.split_count,
            devmem=d.memory_mib // shrink,
            devcore=d.compute_units if spec.devcore_is_compute_units else 100,
            type=spec.type_prefix + d.model,
            numa=d.numa,
            health=d.healthy,
        )
        for d in devices
    ]


def encode(spec: PluginSpec, entries: Sequence[DeviceInfo]) -> str:
    return encode_register_csv(entries) if spec.register == REGISTER_CSV else encode_register_json(entries)


def extra_devices(spec: PluginSpec, kind: str, devices: Sequence[hw.Device]) -> list[PluginDevice]:
    """Kubelet devices of one extra capacity resource: one per unit a device gives."""
    out = []
    for d in devices:
        # the fault advertises half the memory: the scheduler synthesises smaller cards
        shrink = 2 if _fault(f"plugin-{spec.vendor}-capacity-half-memory") else 1
        units = spec.cores_per_device if kind == "cores" else d.memory_mib // spec.memory_unit_mib // shrink
        out.extend(PluginDevice(f"{d.uuid}-{kind}-{i}", d.healthy, d.numa) for i in range(units))
    return out


class _NoEnv:
    """Allocate of an extra capacity resource: the count resource's answer carries everything."""

    def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        return [*must_include, *[a for a in available if a not in must_include]][:size]

    def allocate(self, requests: Sequence[Sequence[str]]) -> list[Any]:
        from kubeletapi import deviceplugin_v1beta1_pb2 as api

        return [api.ContainerAllocateResponse() for _ in requests]


class FamilyDevicePlugin:
    def __init__(self, spec: PluginSpec, opts: FamilyOptions, kube: Kube, family: DeviceFamily) -> None:
        self.spec, self.opts, self.kube, self.family = spec, opts, kube, family
        self.devices: list[hw.Device] = []
        self.server: PluginServer | None = None
        self.extra: dict[str, PluginServer] = {}  # kind -> server of an extra capacity resource
        self._registered: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if hasattr(family, "devices_info"):  # Allocate reads the driver's view (index, bus, CUs, MiB)
            family.devices_info = lambda: {
                d.uuid: (d.index, d.bus_id, d.compute_units, d.memory_mib) for d in self.devices
            }

    def kubelet_devices(self) -> list[PluginDevice]:
        return [
            PluginDevice(f"{d.uuid}-{i}", d.healthy, d.numa)
            for d in self.devices
            for i in range(self.spec.slots(d) if self.spec.slots else self.spec.split_count)
        ]

    def refresh(self) -> None:
        """Re-read the hardware, push the device list and patch the node (raises on API errors)."""
        with self._lock:
            serves = self.spec.serves
            self.devices = [
                d for d in hw.devices(self.opts.hardware_dir, self.spec.vendor) if serves is None or serves(d)
            ]
            if self.server is not None and self.server.set_devices(self.kubelet_devices()):
                log.info(
                    "device list: %d devices (%d healthy)",
                    len(self.devices),
                    sum(d.healthy for d in self.devices),
                )
            for kind, server in self.extra.items():
                server.set_devices(extra_devices(self.spec, kind, self.devices))
            if self.spec.register == REGISTER_CAPACITY:
                return  # the scheduler derives devices from the node's capacity
            keys = self.family.keys
            if self.spec.encode_register is not None:  # a vendor's own node format (MetaX sGPU)
                value = self.spec.encode_register(self.spec, self.devices)
            else:
                value = encode(self.spec, register_entries(self.spec, self.devices))
            # families without a handshake key (MetaX sGPU) are healthy while they list devices
            values = {keys.handshake: reported(dt.datetime.now())} if keys.handshake else {}
            if value != self._registered:
                values[keys.register] = value
            self.kube.patch(
                f"/api/v1/nodes/{self.opts.node_name}", {"metadata": {"annotations": values}}, "merge"
            )
            self._registered = value

    def start(self) -> None:
        if _fault(f"plugin-{self.spec.vendor}-wrong-visible"):
            from .wrongvisible import install

            install(self.family, lambda: self.devices)
        allocator = Allocator(
            self.kube,
            self.opts.node_name,
            self.family,  # type: ignore[arg-type]
            hook_path=self.opts.hook_path,
        )
        self.server = PluginServer(
            self.family.count_resource, self.opts.socket_dir, f"hami-{self.spec.name}.sock", allocator
        )
        for attr, kind in self.spec.extra_resources:
            self.extra[kind] = PluginServer(
                getattr(self.family, attr),
                self.opts.socket_dir,
                f"hami-{self.spec.name}-{kind}.sock",
                _NoEnv(),
            )
        self.refresh()
        for server in (self.server, *self.extra.values()):
            try:
                server.start()
            except Exception as e:  # the kubelet may not be up yet: the watcher registers once it is
                log.warning("registration with the kubelet failed, will retry: %s", e)
            server.watch_kubelet()
        self._thread = threading.Thread(target=self._run, name="register", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = self.opts.register_interval_s
        while not self._stop.wait(delay):
            try:
                self.refresh()
                delay = self.opts.register_interval_s
            except Exception as e:  # the loop must outlive API outages
                log.warning("node registration failed, retrying in %.0fs: %s", self.opts.register_retry_s, e)
                delay = self.opts.register_retry_s

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for server in (self.server, *self.extra.values()):
            if server is not None:
                server.stop()
