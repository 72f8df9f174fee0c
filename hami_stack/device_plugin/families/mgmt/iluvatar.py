"""Iluvatar CoreX through IXML (``libixml.so``), as Iluvatar's ix-device-plugin reads its cards.

IXML keeps NVML's API shape and names (``nvmlInit_v2``, ``nvmlDeviceGetCount_v2``, ...) plus ``ixml*``
extensions; declarations here are ours (``testbed/hardware/src/famlib_ixml.h`` on the testbed). The
plugin's device index is the card's minor number (``/dev/iluvatar<minor>``), its PCI address the
lower-cased legacy bus id, and a card is unhealthy when ``ixmlDeviceGetHealth`` reports any error bit.
"""

from __future__ import annotations

import ctypes

from ..hardware import Device
from . import call

LIBRARY = "libixml.so"

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
UUID_BUFFER = 80
NAME_BUFFER = 64
# IXML has no core count: HAMi counts an Iluvatar card's cores in percent, 100 per card
CORE_PERCENT = 100


class Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class PciInfo(ctypes.Structure):
    _fields_ = [
        ("busIdLegacy", ctypes.c_char * 16),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
    ]


Handle = ctypes.c_void_p
_U = ctypes.POINTER(ctypes.c_uint)
_SIGNATURES: dict[str, list[object]] = {
    "nvmlInit_v2": [],
    "nvmlShutdown": [],
    "nvmlDeviceGetCount_v2": [_U],
    "nvmlDeviceGetHandleByIndex_v2": [ctypes.c_uint, ctypes.POINTER(Handle)],
    "nvmlDeviceGetHandleByUUID": [ctypes.c_char_p, ctypes.POINTER(Handle)],
    "nvmlDeviceGetIndex": [Handle, _U],
    "nvmlDeviceGetMinorNumber": [Handle, _U],
    "nvmlDeviceGetUUID": [Handle, ctypes.c_char_p, ctypes.c_uint],
    "nvmlDeviceGetName": [Handle, ctypes.c_char_p, ctypes.c_uint],
    "nvmlDeviceGetMemoryInfo": [Handle, ctypes.POINTER(Memory)],
    "nvmlDeviceGetPciInfo_v3": [Handle, ctypes.POINTER(PciInfo)],
    "nvmlDeviceGetNumaNodeId": [Handle, _U],
    "ixmlDeviceGetHealth": [Handle, ctypes.POINTER(ctypes.c_ulonglong)],
    "nvmlSystemGetDriverVersion": [ctypes.c_char_p, ctypes.c_uint],
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the calls' types (idempotent; every call answers an nvmlReturn_t)."""
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    return lib


def _string(lib: ctypes.CDLL, fn: str, handle: Handle, size: int) -> str:
    buf = ctypes.create_string_buffer(size)
    call(lib, fn, handle, buf, size)
    return buf.value.decode()


def _device(lib: ctypes.CDLL, handle: Handle) -> Device:
    minor, numa = ctypes.c_uint(), ctypes.c_uint()
    call(lib, "nvmlDeviceGetMinorNumber", handle, ctypes.byref(minor))
    mem = Memory()
    call(lib, "nvmlDeviceGetMemoryInfo", handle, ctypes.byref(mem))
    pci = PciInfo()
    call(lib, "nvmlDeviceGetPciInfo_v3", handle, ctypes.byref(pci))
    rc = lib.nvmlDeviceGetNumaNodeId(handle, ctypes.byref(numa))
    if rc not in (NVML_SUCCESS, NVML_ERROR_NOT_SUPPORTED):  # not supported: no NUMA affinity, node 0
        call(lib, "nvmlDeviceGetNumaNodeId", handle, ctypes.byref(numa))
    health = ctypes.c_ulonglong()
    call(lib, "ixmlDeviceGetHealth", handle, ctypes.byref(health))
    return Device(
        uuid=_string(lib, "nvmlDeviceGetUUID", handle, UUID_BUFFER),
        index=minor.value,
        model=_string(lib, "nvmlDeviceGetName", handle, NAME_BUFFER),
        memory_mib=mem.total >> 20,
        compute_units=CORE_PERCENT,
        bus_id=pci.busIdLegacy.decode().lower(),
        numa=numa.value if rc == NVML_SUCCESS else 0,
        healthy=health.value == 0,
    )


def devices(lib: ctypes.CDLL) -> list[Device]:
    """Every card IXML shows this process (init, enumerate, shut down: each scan sees live health)."""
    bind(lib)
    call(lib, "nvmlInit_v2")
    try:
        count = ctypes.c_uint()
        call(lib, "nvmlDeviceGetCount_v2", ctypes.byref(count))
        out = []
        for i in range(count.value):
            handle = Handle()
            call(lib, "nvmlDeviceGetHandleByIndex_v2", i, ctypes.byref(handle))
            out.append(_device(lib, handle))
        return out
    finally:
        lib.nvmlShutdown()
