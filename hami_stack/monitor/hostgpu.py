"""The vGPU monitor's host GPU series (``hami_host_gpu_*``): what NVML says about each GPU of the node.

HAMi's monitor exports, per GPU NVML shows it, the device's used memory, its core and memory-controller
utilisation, and (newer releases) its temperature and power draw, labelled ``node``, ``device_index``,
``device_uuid`` and ``device_type`` (``NVIDIA-`` + the NVML name); the memory-controller series has no
``node`` label. A query a driver does not support leaves that one series out for that GPU; a GPU whose
handle, UUID or name cannot be read is left out, and the other GPUs are still reported. Without NVML
(no driver library, or no GPU visible to the monitor) there are no host series at all, and the
per-container series are served as before.

NVML is initialised for each scrape and shut down after it, as upstream does: a driver reloaded (or an
emulated node's devices re-created) since the last scrape is then read afresh, not through a stale
handle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pynvml
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hami_stack import faults

log = logging.getLogger(__name__)

HOST_LABELS = ("node", "device_index", "device_uuid", "device_type")
MEMCTL_LABELS = ("device_index", "device_uuid", "device_type")  # upstream's has no node label
_UNSUPPORTED = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound)


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


class HostGPUCollector(Collector):
    """Reads NVML on every scrape; ``node`` is this node's name (the monitor's ``$NODE_NAME``)."""

    def __init__(self, node: str) -> None:
        faults.active()  # an unknown name in HAMI_FAULTS stops the monitor as it starts
        self.node = node
        self._lock = threading.Lock()  # scrapes may arrive on several server threads at once
        self._warned = False

    def _init(self) -> bool:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            if not self._warned:  # once: a node without a driver is a normal place for the monitor
                log.warning("NVML unavailable (%s): no hami_host_gpu_* series", e)
                self._warned = True
            return False
        return True

    def collect(self) -> Iterator[GaugeMetricFamily]:
        def family(name: str, doc: str, labels: tuple[str, ...] = HOST_LABELS) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*labels, "zone"])

        used = family("hami_host_gpu_memory_used_bytes", "Device memory in use on the GPU (NVML), bytes")
        util = family("hami_host_gpu_utilization_ratio", "GPU core utilisation (NVML, 0-100)")
        memctl = family(
            "hami_host_gpu_memory_controller_utilization_ratio",
            "GPU memory controller utilisation (NVML, 0-100)",
            MEMCTL_LABELS,
        )
        temp = family("hami_host_gpu_temperature_celsius", "GPU temperature (NVML), degrees Celsius")
        power = family("hami_host_gpu_power_usage_watts", "GPU power draw (NVML), watts")
        with self._lock:
            if self._init():
                try:
                    count = int(pynvml.nvmlDeviceGetCount())
                    for i in range(count):
                        self._device(i, used, util, memctl, temp, power)
                except pynvml.NVMLError as e:
                    log.warning("NVML device count failed: %s", e)
                finally:
                    try:
                        pynvml.nvmlShutdown()
                    except pynvml.NVMLError:
                        pass
        yield from (used, util, memctl, temp, power)

    def _device(self, index: int, used: Any, util: Any, memctl: Any, temp: Any, power: Any) -> None:
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            kind = "NVIDIA-" + _text(pynvml.nvmlDeviceGetName(handle))
        except pynvml.NVMLError as e:
            log.warning("GPU %d: handle, UUID or name unreadable, not reported: %s", index, e)
            return
        labels = [self.node, str(index), uuid, kind, "vGPU"]
        try:
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            value = mem.total if faults.on("monitor-host-memory-is-total") else mem.used
            used.add_metric(labels, float(value))
        except _UNSUPPORTED:
            pass  # e.g. unified-memory boards: no memory series, as upstream
        except pynvml.NVMLError as e:
            log.warning("GPU %d (%s): memory query failed: %s", index, uuid, e)
        try:
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            util.add_metric(labels, float(rates.gpu))
            memctl.add_metric(labels[1:], float(rates.memory))
        except _UNSUPPORTED:
            pass
        except pynvml.NVMLError as e:
            log.warning("GPU %d (%s): utilisation query failed: %s", index, uuid, e)
        try:
            celsius = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
            temp.add_metric(labels, float(celsius))
        except pynvml.NVMLError:
            pass  # optional: not every board or driver reports it
        try:
            power.add_metric(labels, pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)  # mW -> W
        except pynvml.NVMLError:
            pass
