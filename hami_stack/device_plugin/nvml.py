"""GPU discovery and health through NVML (``pynvml`` from ``nvidia-ml-py``).

Only public NVML calls are used, so the same code runs on a real driver and on any library that
implements the NVML ABI. Health has two sources, as in NVIDIA's plugin:

* queries: a GPU whose handle or basic queries fail (e.g. ``GPU_IS_LOST``) is unhealthy on that pass;
* Xid events: a critical Xid marks the GPU unhealthy until the plugin restarts, except the
  application-level Xids that say nothing about the device (13, 31, 43, 45, 68, 109), and those listed
  in ``DP_DISABLE_HEALTHCHECKS`` (``all`` turns event health checks off).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pynvml

log = logging.getLogger("hami.device-plugin.nvml")

APPLICATION_XIDS = frozenset({13, 31, 43, 45, 68, 109})
EVENT_WAIT_MS = 1000


class NvmlUnavailable(RuntimeError):
    """NVML could not be initialised (no driver, or no GPU visible to this process)."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int | None  # None when the driver does not report it
    numa: int
    minor: int
    pci_bus_id: str
    healthy: bool = True


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _addr(handle: object) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value  # type: ignore[arg-type]


def init() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise NvmlUnavailable(f"failed to initialize NVML: {e}") from e


def shutdown() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass


def _numa(handle: object, bus_id: str) -> int:
    try:
        return max(int(pynvml.nvmlDeviceGetNumaNodeId(handle)), 0)
    except (pynvml.NVMLError, AttributeError):
        pass
    # Older drivers: the PCI device's sysfs entry (lower-case, domain of 4 hex digits).
    short = bus_id.lower()
    if len(short.split(":")[0]) == 8:
        short = short[4:]
    try:
        return max(int(Path(f"/sys/bus/pci/devices/{short}/numa_node").read_text().strip()), 0)
    except (OSError, ValueError):
        return 0


def discover() -> list[Gpu]:
    """Every GPU NVML shows this process; one that fails its queries is listed unhealthy when its
    UUID is still known, and skipped otherwise."""
    out: list[Gpu] = []
    count = pynvml.nvmlDeviceGetCount()
    for i in range(count):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError as e:
            log.warning("GPU %d: cannot read its handle or UUID: %s", i, e)
            continue
        healthy = True
        try:
            name = _text(pynvml.nvmlDeviceGetName(handle))
            bus_id = _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)
            minor = int(pynvml.nvmlDeviceGetMinorNumber(handle))
        except pynvml.NVMLError as e:
            log.warning("GPU %d (%s): query failed, marking unhealthy: %s", i, uuid, e)
            name, bus_id, minor, healthy = "", "", i, False
        memory: int | None
        try:
            memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024)
        except pynvml.NVMLError_NotSupported:
            memory = None
        except pynvml.NVMLError as e:
            log.warning("GPU %d (%s): memory query failed, marking unhealthy: %s", i, uuid, e)
            memory, healthy = None, False
        out.append(Gpu(i, uuid, name, memory, _numa(handle, bus_id) if bus_id else 0, minor, bus_id, healthy))
    return out


def disabled_xids(env: dict[str, str] | None = None) -> frozenset[int] | None:
    """Xids ignored on top of the application ones; None means event health checks are off."""
    raw = (env if env is not None else os.environ).get("DP_DISABLE_HEALTHCHECKS", "")
    if raw.strip().lower() in ("all", "xids"):
        return None
    out = set()
    for part in raw.split(","):
        part = part.strip()
        if part.isdigit():
            out.add(int(part))
    return frozenset(out)


class XidWatcher:
    """A thread that waits on an NVML event set and reports GPUs hit by a critical Xid."""

    def __init__(
        self, on_unhealthy: Callable[[str, int], None], ignored: frozenset[int] = frozenset()
    ) -> None:
        self.on_unhealthy = on_unhealthy
        self.ignored = APPLICATION_XIDS | ignored
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._uuids: dict[int, str] = {}

    def start(self) -> None:
        event_set = pynvml.nvmlEventSetCreate()
        for i in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
                pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, event_set)
            except pynvml.NVMLError as e:
                log.warning("GPU %d: cannot watch Xid events: %s", i, e)
                continue
            self._uuids[i] = uuid
        self._thread = threading.Thread(target=self._run, args=(event_set,), name="xid-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=EVENT_WAIT_MS / 1000 + 2)

    def _uuid_of(self, handle: object) -> str:
        try:
            return _text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError:
            # a lost GPU no longer answers: find it by comparing handles
            for i, uuid in self._uuids.items():
                try:
                    if _addr(pynvml.nvmlDeviceGetHandleByIndex(i)) == _addr(handle):
                        return uuid
                except pynvml.NVMLError:
                    continue
            return ""

    def _run(self, event_set: object) -> None:
        try:
            while not self._stop.is_set():
                try:
                    data = pynvml.nvmlEventSetWait_v2(event_set, EVENT_WAIT_MS)
                except pynvml.NVMLError_Timeout:
                    continue
                except pynvml.NVMLError as e:
                    log.warning("waiting for NVML events failed: %s", e)
                    self._stop.wait(EVENT_WAIT_MS / 1000)
                    continue
                if data.eventType != pynvml.nvmlEventTypeXidCriticalError:
                    continue
                xid = int(data.eventData)
                if xid in self.ignored:
                    log.info("ignoring application Xid %d", xid)
                    continue
                uuid = self._uuid_of(data.device)
                log.warning("Xid %d on GPU %s: marking it unhealthy", xid, uuid or "<all>")
                self.on_unhealthy(uuid, xid)
        finally:
            try:
                pynvml.nvmlEventSetFree(event_set)
            except pynvml.NVMLError:
                pass
