"""The vGPU monitor's ``hami_*`` metric families, computed from every container's shared region.

Layout (HAMi's): ``<containers-dir>/<podUID>_<containerName>/*.cache``, one directory per container
(the host side of the container's ``/usr/local/vgpu`` mount). Pod names and namespaces come from a
resolver (pod UID -> (namespace, name)); without one the pod label is the UID and the namespace empty.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hami_stack import faults
from hami_stack.monitor.region import RegionError, RegionSnapshot, read_region
from hami_stack.protocol.hamicore import split_container_dir_name

log = logging.getLogger(__name__)

DEFAULT_CONTAINERS_DIR = Path("/usr/local/vgpu/containers")
PodResolver = Callable[[str], "tuple[str, str] | None"]
CONTAINER_LABELS = ("namespace", "pod", "container", "vdevice_index", "device_uuid")


@dataclass(frozen=True)
class ContainerRegion:
    pod_uid: str
    container: str
    snapshot: RegionSnapshot


def scan(containers_dir: Path) -> Iterator[ContainerRegion]:
    if not containers_dir.is_dir():
        return
    for d in sorted(containers_dir.iterdir()):
        parts = split_container_dir_name(d.name) if d.is_dir() else None
        if parts is None:
            continue
        for cache in sorted(d.glob("*.cache")):
            try:
                yield ContainerRegion(parts[0], parts[1], read_region(cache))
            except (OSError, RegionError) as exc:
                # a region from another shim version must not hide the other containers
                log.warning("skipping %s: %s", cache, exc)


def pods_file_resolver(path: Path) -> PodResolver:
    """Resolver reading ``{"<uid>": {"namespace": ..., "name": ...}}``, re-read on every scrape."""

    def resolve(uid: str) -> tuple[str, str] | None:
        try:
            entry = json.loads(path.read_text()).get(uid)
        except (OSError, ValueError):
            return None
        return (entry.get("namespace", ""), entry.get("name", uid)) if isinstance(entry, dict) else None

    return resolve


def _fault_view(dev: Any) -> Any:
    """The monitor faults: what a broken monitor would report for one device of a container."""
    if faults.on("monitor-memory-used-zero"):
        dev = dataclasses.replace(dev, used=0)
    if faults.on("monitor-utilization-zero"):
        dev = dataclasses.replace(dev, sm_util=0)
    if faults.on("monitor-utilization-is-limit"):
        dev = dataclasses.replace(dev, sm_util=dev.sm_limit)
    if faults.on("monitor-limit-halved"):
        dev = dataclasses.replace(dev, limit=dev.limit // 2)
    return dev


class VGPUCollector(Collector):
    def __init__(self, containers_dir: Path, resolver: PodResolver | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        faults.active()  # an unknown name in HAMI_FAULTS stops the monitor as it starts
        self.containers_dir = containers_dir
        self.resolver = resolver
        self.clock = clock

    def _labels(self, cr: ContainerRegion, index: int, uuid: str) -> list[str]:
        resolved = self.resolver(cr.pod_uid) if self.resolver else None
        namespace, pod = resolved if resolved else ("", cr.pod_uid)
        return [namespace, pod, cr.container, str(index), uuid]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*CONTAINER_LABELS, "zone"])

        used = family("hami_vgpu_memory_used_bytes", "Device memory accounted to the container")
        limit = family("hami_vgpu_memory_limit_bytes", "Device memory limit of the container")
        ctr_mem = family("hami_container_device_memory_bytes", "Device memory used by the container")
        util = family("hami_container_device_utilization_ratio", "SM utilisation of the container (0-100)")
        last = family("hami_container_last_kernel_elapsed_seconds", "Seconds since the last kernel")
        ctx = family("hami_vgpu_memory_context_bytes", "Context memory (not charged by this shim)")
        mod = family("hami_vgpu_memory_module_bytes", "Module memory (not charged by this shim)")
        buf = family("hami_vgpu_memory_buffer_bytes", "Buffer (allocation) memory of the container")
        now = self.clock()
        for cr in scan(self.containers_dir):
            for dev in cr.snapshot.devices:
                labels = [*self._labels(cr, dev.index, dev.uuid), "vGPU"]
                if faults.active():
                    dev = _fault_view(dev)
                used.add_metric(labels, dev.used)
                limit.add_metric(labels, dev.limit)
                ctr_mem.add_metric(labels, dev.used)
                util.add_metric(labels, dev.sm_util)
                if dev.last_kernel_unix_s:
                    last.add_metric(labels, max(0.0, now - dev.last_kernel_unix_s))
                ctx.add_metric(labels, 0)
                mod.add_metric(labels, 0)
                buf.add_metric(labels, dev.used)
        yield from (used, limit, ctr_mem, util, last, ctx, mod, buf)
