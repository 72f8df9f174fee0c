"""Kunlunxin XPUs through XPUML (``libxpuml.so``), as Kunlunxin's xpu/vxpu device plugins read them.

XPUML follows NVML's shape under its own prefix; declarations here are ours
(``testbed/hardware/src/famlib_xpuml.h`` on the testbed). A card's identity is its board serial
(XPUML has no UUID query), its index the minor number (``/dev/xpu<minor>``), its compute units the
attributes' cluster count, and it is unhealthy when ``xpumlDeviceGetState`` answers
``XPUML_DEVICE_STATE_ERROR`` (the plugin's health check).
"""

from __future__ import annotations

import ctypes

from ..hardware import Device
from . import call

LIBRARY = "libxpuml.so"

XPUML_SUCCESS = 0
XPUML_ERROR_NOT_SUPPORTED = 3
XPUML_DEVICE_STATE_ERROR = 207
XPUML_DEVICE_STATE_IN_EXCEPTION = 208
SERIAL_BUFFER = 16 + 1
NAME_BUFFER = 96


class PciInfo(ctypes.Structure):
    _fields_ = [
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("function", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
        ("reserved", ctypes.c_ulonglong * 9),
    ]


class Memory(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_ulonglong)
        for name in (
            "pageSizeGlobalMemory", "totalGlobalMemory", "freeGlobalMemory", "usedGlobalMemory",
            "pageSizeL3Memory", "totalL3Memory", "freeL3Memory", "usedL3Memory",
        )
    ] + [("reserved", ctypes.c_ulonglong * 8)]


class Attributes(ctypes.Structure):
    _fields_ = [
        ("archId", ctypes.c_int),
        ("boardId", ctypes.c_int),
        ("modelId", ctypes.c_int),
        ("clusterCount", ctypes.c_uint),
        ("sdnnCount", ctypes.c_uint),
        ("dmaEngineCount", ctypes.c_uint),
        ("decoderCount", ctypes.c_uint),
        ("encoderCount", ctypes.c_uint),
        ("imgProcCount", ctypes.c_uint),
        ("maxVFCount", ctypes.c_uint),
        ("globalMemorySizeMB", ctypes.c_ulonglong),
        ("l3MemorySizeMB", ctypes.c_ulonglong),
        ("sn", ctypes.c_ulonglong * 2),
        ("reserved", ctypes.c_ulonglong * 7),
    ]


Handle = ctypes.c_void_p
_U = ctypes.POINTER(ctypes.c_uint)
_SIGNATURES: dict[str, list[object]] = {
    "xpumlInit": [],
    "xpumlShutdown": [],
    "xpumlDeviceGetCount": [_U],
    "xpumlDeviceGetHandleByIndex": [ctypes.c_uint, ctypes.POINTER(Handle)],
    "xpumlDeviceGetAttributes": [Handle, ctypes.POINTER(Attributes)],
    "xpumlDeviceGetName": [Handle, ctypes.c_char_p, ctypes.c_uint],
    "xpumlDeviceGetSerial": [Handle, ctypes.c_char_p, ctypes.c_uint],
    "xpumlDeviceGetMinorNumber": [Handle, _U],
    "xpumlDeviceGetPciInfo": [Handle, ctypes.POINTER(PciInfo)],
    "xpumlDeviceGetMemoryInfo": [Handle, ctypes.POINTER(Memory)],
    "xpumlDeviceGetState": [Handle, ctypes.POINTER(ctypes.c_int)],
    "xpumlDeviceGetNumaNodeId": [Handle, _U],
    "xpumlSystemGetDriverVersion": [ctypes.c_char_p, ctypes.c_uint],
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the calls' types (idempotent; every call answers an xpumlReturn_t)."""
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    return lib


def _string(lib: ctypes.CDLL, fn: str, handle: Handle, size: int) -> str:
    buf = ctypes.create_string_buffer(size)
    call(lib, fn, handle, buf, size)
    return buf.value.decode()


def _bus_id(pci: PciInfo) -> str:
    """The sysfs spelling of the card's PCI address (``0000:1a:00.0``); empty when it has none."""
    if not pci.busId:
        return ""
    return f"{pci.domain:04x}:{pci.bus:02x}:{pci.device:02x}.{pci.function:x}"


def _device(lib: ctypes.CDLL, handle: Handle) -> Device:
    minor, numa, state = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_int()
    call(lib, "xpumlDeviceGetMinorNumber", handle, ctypes.byref(minor))
    attrs = Attributes()
    call(lib, "xpumlDeviceGetAttributes", handle, ctypes.byref(attrs))
    mem = Memory()
    call(lib, "xpumlDeviceGetMemoryInfo", handle, ctypes.byref(mem))
    pci = PciInfo()
    call(lib, "xpumlDeviceGetPciInfo", handle, ctypes.byref(pci))
    rc = lib.xpumlDeviceGetNumaNodeId(handle, ctypes.byref(numa))
    if rc not in (XPUML_SUCCESS, XPUML_ERROR_NOT_SUPPORTED):  # not supported: no NUMA affinity, node 0
        call(lib, "xpumlDeviceGetNumaNodeId", handle, ctypes.byref(numa))
    call(lib, "xpumlDeviceGetState", handle, ctypes.byref(state))
    return Device(
        uuid=_string(lib, "xpumlDeviceGetSerial", handle, SERIAL_BUFFER),
        index=minor.value,
        model=_string(lib, "xpumlDeviceGetName", handle, NAME_BUFFER),
        memory_mib=mem.totalGlobalMemory >> 20,
        compute_units=attrs.clusterCount,
        bus_id=_bus_id(pci),
        numa=numa.value if rc == XPUML_SUCCESS else 0,
        healthy=state.value not in (XPUML_DEVICE_STATE_ERROR, XPUML_DEVICE_STATE_IN_EXCEPTION),
    )


def devices(lib: ctypes.CDLL) -> list[Device]:
    """Every card XPUML shows this process (init, enumerate, shut down: each scan sees live state)."""
    bind(lib)
    call(lib, "xpumlInit")
    try:
        count = ctypes.c_uint()
        call(lib, "xpumlDeviceGetCount", ctypes.byref(count))
        out = []
        for i in range(count.value):
            handle = Handle()
            call(lib, "xpumlDeviceGetHandleByIndex", i, ctypes.byref(handle))
            out.append(_device(lib, handle))
        return out
    finally:
        lib.xpumlShutdown()
