"""GPU discovery and health through NVML (``pynvml`` from ``nvidia-ml-py``).

Only public NVML calls are used, so the same code runs on a real driver and on any library that
implements the NVML ABI. Health has two sources:

* a poll (:func:`probe`, every few seconds): a GPU whose handle can no longer be obtained by its UUID
  (``GPU_IS_LOST``, or gone from the device list) is lost; one whose memory query fails, or whose
  memory reports an unrepaired uncorrectable error (``nvmlDeviceGetRemappedRows``: remapping pending
  or failed, Ampere and later; ``nvmlDeviceGetRetiredPagesPendingStatus`` on older GPUs) is unhealthy.
  Queries a driver does not support say nothing;
* Xid events, as in NVIDIA's plugin: a critical Xid marks its GPU unhealthy at once, except the
  application-level Xids that say nothing about the device (13, 31, 43, 45, 68, 109), and those listed
  in ``DP_DISABLE_HEALTHCHECKS`` (``all`` turns event health checks off). The event names the GPU by
  its handle; a lost GPU no longer answers a UUID query, so handles are mapped to UUIDs when the
  watcher registers them, and an Xid is never blamed on every GPU of the node.
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


def device_count() -> int:
    return int(pynvml.nvmlDeviceGetCount())


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


@dataclass(frozen=True)
class Probe:
    """One health poll of one GPU."""

    present: bool  # a handle could be obtained by its UUID
    reason: str = ""  # empty: healthy

    @property
    def healthy(self) -> bool:
        return self.present and not self.reason


_UNSUPPORTED = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound)


def probe(uuid: str) -> Probe:
    """Poll one GPU's health by UUID (UUIDs stay stable when indexes shift)."""
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except pynvml.NVMLError as e:
        return Probe(False, f"handle not obtainable: {e}")
    try:
        pynvml.nvmlDeviceGetMemoryInfo(handle)
    except _UNSUPPORTED:
        pass
    except pynvml.NVMLError as e:
        return Probe(True, f"memory query failed: {e}")
    try:
        _, _, pending, failed = pynvml.nvmlDeviceGetRemappedRows(handle)
        if failed:
            return Probe(True, "row remapping failed (uncorrectable memory error)")
        if pending:
            return Probe(True, "row remapping pending (GPU reset required)")
        return Probe(True)
    except _UNSUPPORTED:
        pass  # before Ampere: page retirement instead
    except pynvml.NVMLError as e:
        return Probe(True, f"remapped rows query failed: {e}")
    try:
        if pynvml.nvmlDeviceGetRetiredPagesPendingStatus(handle) == pynvml.NVML_FEATURE_ENABLED:
            return Probe(True, "retired pages pending (GPU reset required)")
    except _UNSUPPORTED:
        pass
    except pynvml.NVMLError as e:
        return Probe(True, f"retired pages query failed: {e}")
    return Probe(True)


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
        self._uuids: dict[int, str] = {}  # handle address -> UUID, taken while the GPU answered

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
            addr = _addr(handle)
            if addr is not None:
                self._uuids[addr] = uuid
        self._thread = threading.Thread(target=self._run, args=(event_set,), name="xid-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=EVENT_WAIT_MS / 1000 + 2)

    def _uuid_of(self, handle: object) -> str:
        addr = _addr(handle)
        if addr is not None and addr in self._uuids:
            return self._uuids[addr]  # also for a lost GPU, which no longer answers a UUID query
        try:
            return _text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError:
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
                if not uuid:
                    # blaming every GPU would take the whole node out for one card: the health poll
                    # finds the card that failed
                    log.warning("Xid %d on a GPU that cannot be identified; left to the health poll", xid)
                    continue
                log.warning("Xid %d on GPU %s: marking it unhealthy", xid, uuid)
                self.on_unhealthy(uuid, xid)
        finally:
            try:
                pynvml.nvmlEventSetFree(event_set)
            except pynvml.NVMLError:
                pass
