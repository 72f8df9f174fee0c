"""The scheduler's Prometheus metrics (section 7.1), read from the usage and quota caches at scrape time.

Every family except ``hami_build_info`` carries the constant label ``zone="vGPU"``. With
``legacy=True`` the pre-v2.9 names are served as well, with their old label names.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import faults
from .cache import UsageCache
from .quota import QuotaCache

ZONE = "vGPU"
MIB = 1 << 20

# name -> (help, labels); legacy twin -> (new name, legacy labels)
_DEVICE = ["node", "device_uuid", "device_index", "device_type"]
_DEVICE_CORES = ["node", "device_uuid", "device_index", "device_cores", "device_type"]
_OVERVIEW = ["node", "device_uuid", "device_index", "device_cores", "device_memory_limit", "device_type"]
_MIG = [
    "node",
    "device_uuid",
    "device_index",
    "mig_uuid",
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
    "placement_start",
    "placement_size",
]
_VGPU = ["namespace", "node", "pod", "container_index", "device_uuid"]
_QUOTA_USED = ["namespace", "quota_name", "limit"]
_QUOTA_LIMIT = ["namespace", "quota_name"]
LEGACY_LABELS = {
    "node": "nodeid",
    "device_uuid": "deviceuuid",
    "device_index": "deviceidx",
    "device_type": "devicetype",
    "device_cores": "devicecores",
    "device_memory_limit": "devicememorylimit",
    "profile": "migname",
    "quota_name": "quotaName",
    "container_index": "containeridx",
    "pod": "podname",
}
LEGACY_NAMES = {
    "hami_gpu_memory_limit_bytes": "GPUDeviceMemoryLimit",
    "hami_gpu_core_limit_ratio": "GPUDeviceCoreLimit",
    "hami_gpu_memory_allocated_bytes": "GPUDeviceMemoryAllocated",
    "hami_gpu_shared_count": "GPUDeviceSharedNum",
    "hami_gpu_core_allocated_ratio": "GPUDeviceCoreAllocated",
    "hami_node_gpu_overview": "nodeGPUOverview",
    "hami_node_gpu_memory_allocated_ratio": "nodeGPUMemoryPercentage",
    "hami_node_gpu_mig_instance_info": "nodeGPUMigInstance",
    "hami_resource_quota_used": "QuotaUsed",
    "hami_vgpu_memory_allocated_bytes": "vGPUMemoryAllocated",
    "hami_vgpu_core_allocated_ratio": "vGPUCoreAllocated",
}


def _legacy_label(metric: str, label: str) -> str:
    if metric.startswith("hami_resource_quota") and label == "namespace":
        return "quotanamespace"
    if metric.startswith("hami_vgpu_"):
        return {"namespace": "podnamespace", "node": "nodename"}.get(label, LEGACY_LABELS.get(label, label))
    return LEGACY_LABELS.get(label, label)


def build_info() -> dict[str, str]:
    try:
        from importlib.metadata import version

        ver = version("hami-conformance")
    except Exception:
        ver = "dev"
    return {
        "version": ver,
        "revision": "",
        "build_date": "",
        "go_version": f"python{sys.version.split()[0]}",
        "compiler": platform.python_implementation(),
        "platform": f"{sys.platform}/{platform.machine()}",
    }


class SchedulerCollector(Collector):
    def __init__(self, cache: UsageCache, quotas: QuotaCache, legacy: bool = False) -> None:
        self.cache = cache
        self.quotas = quotas
        self.legacy = legacy

    def _families(self) -> dict[str, tuple[str, list[str]]]:
        return {
            "hami_gpu_memory_limit_bytes": ("GPU device memory limit in bytes", _DEVICE),
            "hami_gpu_core_limit_ratio": ("GPU device core limit", _DEVICE),
            "hami_gpu_memory_allocated_bytes": ("GPU device memory allocated in bytes", _DEVICE_CORES),
            "hami_gpu_shared_count": ("Number of containers sharing the GPU device", _DEVICE),
            "hami_gpu_core_allocated_ratio": ("GPU device cores allocated", _DEVICE),
            "hami_node_gpu_overview": ("GPU device overview per node", _OVERVIEW),
            "hami_node_gpu_memory_allocated_ratio": ("GPU memory allocated ratio", _DEVICE),
            "hami_node_gpu_mig_instance_info": ("MIG instances on the node", _MIG),
            "hami_resource_quota_used": ("Resource quota used", _QUOTA_USED),
            "hami_resource_quota_limit": ("Resource quota limit", _QUOTA_LIMIT),
            "hami_vgpu_memory_allocated_bytes": ("vGPU memory allocated per container in bytes", _VGPU),
            "hami_vgpu_core_allocated_ratio": ("vGPU cores allocated per container", _VGPU),
        }

    def samples(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        out: dict[str, list[tuple[dict[str, str], float]]] = {k: [] for k in self._families()}
        with self.cache.lock:
            for name, entry in sorted(self.cache.nodes.items()):
                for dev in entry.all_devices():
                    base = {
                        "node": name,
                        "device_uuid": dev.id,
                        "device_index": str(dev.index),
                        "device_type": dev.type,
                    }
                    cores = {**base, "device_cores": str(dev.totalcore)}
                    out["hami_gpu_memory_limit_bytes"].append((base, dev.totalmem * MIB))
                    out["hami_gpu_core_limit_ratio"].append((base, dev.totalcore))
                    out["hami_gpu_memory_allocated_bytes"].append((cores, dev.usedmem * MIB))
                    out["hami_gpu_shared_count"].append((base, dev.used))
                    out["hami_gpu_core_allocated_ratio"].append((base, dev.usedcores))
                    out["hami_node_gpu_overview"].append(
                        ({**cores, "device_memory_limit": str(dev.totalmem)}, dev.usedmem * MIB)
                    )
                    ratio = dev.usedmem / dev.totalmem if dev.totalmem else 0.0
                    out["hami_node_gpu_memory_allocated_ratio"].append((base, ratio))
            for pod in self.cache.pods.values():
                for pod_devices in pod.devices.values():
                    for ci, ctr in enumerate(pod_devices):
                        for d in ctr:
                            labels = {
                                "namespace": pod.namespace,
                                "node": pod.node,
                                "pod": pod.name,
                                "container_index": str(ci),
                                "device_uuid": d.uuid,
                            }
                            out["hami_vgpu_memory_allocated_bytes"].append((labels, d.usedmem * MIB))
                            out["hami_vgpu_core_allocated_ratio"].append((labels, d.usedcores))
        for q in self.quotas.all_limits():
            out["hami_resource_quota_used"].append(
                ({"namespace": q.namespace, "quota_name": q.quota, "limit": q.resource}, self.quotas.used(q))
            )
            out["hami_resource_quota_limit"].append(
                ({"namespace": q.namespace, "quota_name": q.quota}, q.limit)
            )
        return out

    def collect(self) -> Iterator[Metric]:
        info = build_info()
        bi = GaugeMetricFamily("hami_build_info", "HAMi scheduler build information", labels=list(info))
        bi.add_metric(list(info.values()), 1)
        yield bi
        families = self._families()
        data = self.samples()
        if faults.on("scheduler-metrics-memory-zero"):
            data = {k: [(lab, 0) for lab, _ in v] if "memory_allocated" in k else v for k, v in data.items()}
        for name, (doc, labels) in families.items():
            fam = GaugeMetricFamily(name, doc, labels=[*labels, "zone"])
            for lab, value in data[name]:
                fam.add_metric([lab.get(k, "") for k in labels] + [ZONE], value)
            yield fam
            legacy = LEGACY_NAMES.get(name)
            if self.legacy and legacy:
                old = [_legacy_label(name, k) for k in labels]
                lfam = GaugeMetricFamily(legacy, doc, labels=[*old, "zone"])
                for lab, value in data[name]:
                    lfam.add_metric([lab.get(k, "") for k in labels] + [ZONE], value)
                yield lfam


def make_registry(cache: UsageCache, quotas: QuotaCache, legacy: bool = False) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SchedulerCollector(cache, quotas, legacy))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


__all__ = ["SchedulerCollector", "make_registry", "render"]
