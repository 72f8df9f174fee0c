"""The NVIDIA device plugin: NVML discovery, kubelet endpoint, node registration and health.

:class:`NvidiaDevicePlugin` ties the pieces together:

* every ``register_interval_s`` (30 s; 5 s after an error) it re-reads the GPUs through NVML, updates
  the virtual device list streamed to the kubelet (``<uuid>-<i>`` for i < deviceSplitCount, unhealthy
  when the GPU is) and patches the Node: ``hami.io/node-nvidia-register`` (JSON) when it changed, and
  ``hami.io/node-handshake: Reported_<time>`` on every pass, which keeps the scheduler's 60-second
  handshake rule satisfied for schedulers that still apply it to NVIDIA;
* health (:mod:`.health`): every ``health_interval_s`` (5 s) each GPU ever seen is polled through
  NVML, and Xid events are waited on; any change of the unhealthy set is pushed at once (device list
  and annotation). Only the affected GPU's virtual devices turn Unhealthy, so the kubelet's allocatable
  drops by that GPU alone, and they turn Healthy again when it recovers. A GPU that vanished from
  NVML (lost, or the device count dropped) stays listed, unhealthy, until it is back;
* Allocate (:mod:`.allocate`) hands out devices only for the pod holding the scheduler's node lock,
  with a Warning event on the pod otherwise;
* the kubelet endpoint re-registers when ``kubelet.sock`` is recreated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from kubeclient.client import Kube

from .. import faults
from ..devices.nvidia import NvidiaFamily, register_device, virtual_device_ids
from ..protocol import annotations as ann
from ..protocol.handshake import reported, requesting
from ..protocol.register import DeviceInfo, encode_register_json
from ..scheduler.recorder import EventRecorder
from . import nvml
from .allocate import Allocator
from .health import HealthTracker
from .options import PluginOptions
from .server import PluginDevice, PluginServer

log = logging.getLogger("hami.device-plugin")


def register_entries(opts: PluginOptions, gpus: Sequence[nvml.Gpu], unhealthy: set[str]) -> list[DeviceInfo]:
    """The register annotation's devices (filtered GPUs and GPUs without a known memory size left out)."""
    out = []
    for g in gpus:
        if opts.filter_devices.excludes(g.uuid, g.index):
            continue
        info = register_device(
            opts.nvidia,
            uuid=g.uuid,
            index=g.index,
            nvml_name=g.name,
            memory_mib=g.memory_mib,
            numa=g.numa,
            healthy=g.healthy and g.uuid not in unhealthy,
        )
        if info is None:
            log.warning("GPU %s: memory size unknown and preConfiguredDeviceMemory is 0, skipping", g.uuid)
            continue
        out.append(info)
    return out


def plugin_devices(opts: PluginOptions, entries: Sequence[DeviceInfo]) -> list[PluginDevice]:
    numa = opts.nvidia.enable_numa_topology
    return [
        PluginDevice(vid, e.health and not faults.on("plugin-devices-unhealthy"), e.numa if numa else None)
        for e in entries
        for vid in virtual_device_ids(e.id, opts.nvidia.device_split_count)[
            : -1 if faults.on("plugin-capacity-short") else None
        ]
    ]


class NvidiaDevicePlugin:
    def __init__(self, opts: PluginOptions, kube: Kube) -> None:
        self.opts = opts
        self.kube = kube
        self.family = NvidiaFamily(
            opts.nvidia, hook_path=opts.hook_path, device_list_strategy=opts.device_list_strategy
        )
        self.gpus: list[nvml.Gpu] = []
        self.known: dict[str, nvml.Gpu] = {}  # every GPU seen since start, by UUID
        self.health = HealthTracker(opts.xid_recovery_s)
        self.unhealthy: dict[str, str] = {}  # as pushed by the last refresh: uuid -> why
        self.events = EventRecorder(kube, "hami-device-plugin")
        self.allocator = Allocator(
            kube,
            opts.node_name,
            self.family,
            hook_path=opts.hook_path,
            pass_device_specs=opts.pass_device_specs,
            minors=lambda: {g.uuid: g.minor for g in self.gpus},
            events=self.events.pod_event,
            # beside the shim on the node, outside every container mount (allocate.py: repeats)
            served_path=Path(opts.hook_path, "vgpu", "plugin-state", f"served-{opts.node_name}.json"),
        )
        self.server = PluginServer(opts.resource_name, opts.socket_dir, opts.endpoint, self.allocator)
        self.xids: nvml.XidWatcher | None = None
        self._registered: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._loop: threading.Thread | None = None
        self._health_loop: threading.Thread | None = None
        self._count = 0  # NVML's device count at the last refresh

    # --- state ---------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the GPUs, push the device list and patch the node (raises on API errors)."""
        with self._lock:
            self._count = nvml.device_count()
            found = nvml.discover()
            present = {g.uuid for g in found}
            for g in found:
                self.known[g.uuid] = g
            gone = [dataclasses.replace(g, healthy=False) for u, g in self.known.items() if u not in present]
            for g in gone:
                log.warning("GPU %s (index %d) is no longer visible to NVML: unhealthy", g.uuid, g.index)
            self.gpus = sorted(found + gone, key=lambda g: g.index)
            bad = self.health.unhealthy()
            if bad != self.unhealthy:
                for uuid in sorted(set(bad) - set(self.unhealthy)):
                    log.warning("GPU %s is unhealthy: %s", uuid, bad[uuid])
                for uuid in sorted(set(self.unhealthy) - set(bad)):
                    log.info("GPU %s is healthy again", uuid)
                self.unhealthy = bad
            entries = register_entries(self.opts, self.gpus, set(bad))
            if self.server.set_devices(plugin_devices(self.opts, entries)):
                healthy = sum(1 for e in entries if e.health)
                log.info(
                    "device list: %d GPUs (%d healthy), %d virtual devices",
                    len(entries),
                    healthy,
                    len(self.server.devices),
                )
            if faults.on("plugin-register-bad-encoding"):
                entries = [dataclasses.replace(e, index=e.index + 1) for e in entries]  # 1-based
            self._patch_node(encode_register_json(entries))

    def poll_health(self) -> bool:
        """Poll every known GPU once; True when the unhealthy set or the device count changed."""
        self.health.on_poll({uuid: nvml.probe(uuid) for uuid in list(self.known)})
        try:
            count_changed = nvml.device_count() != self._count
        except Exception:  # the count only hints at new GPUs; the probes decide health
            count_changed = False
        return set(self.health.unhealthy()) != set(self.unhealthy) or count_changed

    def _patch_node(self, register: str) -> None:
        values = {ann.NVIDIA_KEYS.handshake: reported(dt.datetime.now())}
        if faults.on("plugin-stale-handshake"):
            values = {ann.NVIDIA_KEYS.handshake: requesting(dt.datetime.now() - dt.timedelta(minutes=10))}
        if register != self._registered:
            values[ann.NVIDIA_KEYS.register] = register
        self.kube.patch(
            f"/api/v1/nodes/{self.opts.node_name}", {"metadata": {"annotations": values}}, "merge"
        )
        if register != self._registered:
            log.info("patched %s on node %s: %s", ann.NVIDIA_KEYS.register, self.opts.node_name, register)
        self._registered = register

    def _on_xid(self, uuid: str, xid: int) -> None:
        self.health.on_xid(uuid, xid)
        self._wake.set()

    # --- life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        nvml.init()
        self.refresh()
        ignored = nvml.disabled_xids()
        if ignored is not None:
            self.xids = nvml.XidWatcher(self._on_xid, ignored)
            self.xids.start()
        try:
            self.server.start()
        except Exception as e:  # the kubelet may not be up yet: the watcher registers once it is
            log.warning("registration with the kubelet failed, will retry: %s", e)
        self.server.watch_kubelet()
        self._loop = threading.Thread(target=self._run, name="register", daemon=True)
        self._loop.start()
        self._health_loop = threading.Thread(target=self._run_health, name="health", daemon=True)
        self._health_loop.start()

    def _run_health(self) -> None:
        while not self._stop.wait(self.opts.health_interval_s):
            try:
                if self.poll_health():
                    self._wake.set()
            except Exception as e:  # a driver hiccup must not end health checking
                log.warning("GPU health poll failed: %s", e)

    def _run(self) -> None:
        delay = self.opts.register_interval_s
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                delay = self.opts.register_interval_s
            except Exception as e:  # the loop must outlive API outages and driver hiccups
                log.warning("node registration failed, retrying in %.0fs: %s", self.opts.register_retry_s, e)
                delay = self.opts.register_retry_s

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join(timeout=5)
        if self._health_loop is not None:
            self._health_loop.join(timeout=5)
        self.events.flush(2.0)
        self.events.close()
        if self.xids is not None:
            self.xids.stop()
        self.server.stop()
        nvml.shutdown()
