"""Moore Threads GPUs through MTML (``libmtml.so``): a library object (``mtmlLibraryInit``), the
device count, a device object per index, then per GPU its index, UUID, name, GPU cores, memory total
(bytes), PCI info (SBDF), memory NUMA affinity and health.

MTML 2.2 publishes no health query: the emulated library (``testbed/hardware/src/famlib_mtml.c``)
fails ``mtmlDeviceInitGpu`` with ``MTML_ERROR_DRIVER_FAILURE`` for a faulted GPU, and this binding
reads that answer as unhealthy (unconfirmed how Moore Threads' own plugin decides health).
Our own ctypes declarations of the published API (mtml.h 2.2.0).
"""

from __future__ import annotations

import ctypes

from ..hardware import Device, HardwareError
from . import call

LIBRARY = "libmtml.so"

NAME_BUFFER_SIZE = 32
UUID_BUFFER_SIZE = 48
PCI_SBDF_BUFFER_SIZE = 32
SERIAL_NUMBER_BUFFER_SIZE = 64

# MtmlReturn values the binding acts on
SUCCESS = 0
ERROR_DRIVER_NOT_LOADED = 1
ERROR_DRIVER_FAILURE = 2
ERROR_INVALID_ARGUMENT = 3
ERROR_NOT_SUPPORTED = 4
ERROR_INSUFFICIENT_SIZE = 6
ERROR_NOT_FOUND = 7

MIB = 1 << 20


class PciInfo(ctypes.Structure):
    _fields_ = [
        ("sbdf", ctypes.c_char * PCI_SBDF_BUFFER_SIZE),
        ("segment", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubsystemId", ctypes.c_uint),
        ("busWidth", ctypes.c_uint),
        ("pciMaxSpeed", ctypes.c_float),
        ("pciCurSpeed", ctypes.c_float),
        ("pciMaxWidth", ctypes.c_uint),
        ("pciCurWidth", ctypes.c_uint),
        ("pciMaxGen", ctypes.c_uint),
        ("pciCurGen", ctypes.c_uint),
        ("rsvd", ctypes.c_int * 6),
    ]


_H = ctypes.c_void_p  # MtmlLibrary* / MtmlDevice* / MtmlGpu* / MtmlMemory* (opaque)
_P = ctypes.POINTER
_U = ctypes.c_uint
_SIGNATURES: dict[str, tuple[list[object], object]] = {
    "mtmlLibraryInit": ([_P(_H)], ctypes.c_int),
    "mtmlLibraryShutDown": ([_H], ctypes.c_int),
    "mtmlLibraryCountDevice": ([_H, _P(_U)], ctypes.c_int),
    "mtmlLibraryInitDeviceByIndex": ([_H, _U, _P(_H)], ctypes.c_int),
    "mtmlLibraryFreeDevice": ([_H], ctypes.c_int),
    "mtmlDeviceGetIndex": ([_H, _P(_U)], ctypes.c_int),
    "mtmlDeviceGetUUID": ([_H, ctypes.c_char_p, _U], ctypes.c_int),
    "mtmlDeviceGetName": ([_H, ctypes.c_char_p, _U], ctypes.c_int),
    "mtmlDeviceGetSerialNumber": ([_H, _U, ctypes.c_char_p], ctypes.c_int),
    "mtmlDeviceGetPciInfo": ([_H, _P(PciInfo)], ctypes.c_int),
    "mtmlDeviceCountGpuCores": ([_H, _P(_U)], ctypes.c_int),
    "mtmlDeviceGetMemoryAffinityWithinNode": ([_H, _U, _P(ctypes.c_ulong)], ctypes.c_int),
    "mtmlDeviceInitGpu": ([_H, _P(_H)], ctypes.c_int),
    "mtmlDeviceFreeGpu": ([_H], ctypes.c_int),
    "mtmlDeviceInitMemory": ([_H, _P(_H)], ctypes.c_int),
    "mtmlDeviceFreeMemory": ([_H], ctypes.c_int),
    "mtmlMemoryGetTotal": ([_H, _P(ctypes.c_ulonglong)], ctypes.c_int),
    "mtmlErrorString": ([ctypes.c_int], ctypes.c_char_p),
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set argtypes/restype of the MTML calls used here (idempotent)."""
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


def _string(lib: ctypes.CDLL, fn: str, dev: _H, size: int) -> str:
    buf = ctypes.create_string_buffer(size)
    call(lib, fn, dev, buf, size)
    return buf.value.decode()


def _healthy(lib: ctypes.CDLL, dev: _H) -> bool:
    gpu = _H()
    rc = lib.mtmlDeviceInitGpu(dev, ctypes.byref(gpu))
    if rc == ERROR_DRIVER_FAILURE:
        return False
    if rc != SUCCESS:
        raise HardwareError(f"{lib._name}: mtmlDeviceInitGpu failed with code {rc}")
    lib.mtmlDeviceFreeGpu(gpu)
    return True


def _numa(lib: ctypes.CDLL, dev: _H) -> int:
    nodes = (ctypes.c_ulong * 1)()
    rc = lib.mtmlDeviceGetMemoryAffinityWithinNode(dev, 1, nodes)
    if rc == ERROR_NOT_SUPPORTED:
        return 0
    if rc != SUCCESS:
        raise HardwareError(f"{lib._name}: mtmlDeviceGetMemoryAffinityWithinNode failed with code {rc}")
    mask = nodes[0]
    return (mask & -mask).bit_length() - 1 if mask else 0  # the lowest node of the affinity


def _device(lib: ctypes.CDLL, dev: _H) -> Device:
    index = _U()
    call(lib, "mtmlDeviceGetIndex", dev, ctypes.byref(index))
    cores = _U()
    call(lib, "mtmlDeviceCountGpuCores", dev, ctypes.byref(cores))
    mem = _H()
    call(lib, "mtmlDeviceInitMemory", dev, ctypes.byref(mem))
    try:
        total = ctypes.c_ulonglong()
        call(lib, "mtmlMemoryGetTotal", mem, ctypes.byref(total))
    finally:
        lib.mtmlDeviceFreeMemory(mem)
    pci = PciInfo()
    rc = lib.mtmlDeviceGetPciInfo(dev, ctypes.byref(pci))
    if rc not in (SUCCESS, ERROR_NOT_SUPPORTED):  # NOT_SUPPORTED: a GPU without a PCI address
        raise HardwareError(f"{lib._name}: mtmlDeviceGetPciInfo failed with code {rc}")
    return Device(
        uuid=_string(lib, "mtmlDeviceGetUUID", dev, UUID_BUFFER_SIZE),
        index=index.value,
        model=_string(lib, "mtmlDeviceGetName", dev, NAME_BUFFER_SIZE),
        memory_mib=total.value // MIB,
        compute_units=cores.value,
        bus_id=pci.sbdf.decode() if rc == SUCCESS else "",
        numa=_numa(lib, dev),
        healthy=_healthy(lib, dev),
    )


def devices(lib: ctypes.CDLL) -> list[Device]:
    """The node's GPUs as MTML reports them (HardwareError when the driver is not loaded, as the real
    plugin cannot start then)."""
    bind(lib)
    handle = _H()
    call(lib, "mtmlLibraryInit", ctypes.byref(handle))
    try:
        count = _U()
        call(lib, "mtmlLibraryCountDevice", handle, ctypes.byref(count))
        out = []
        for i in range(count.value):
            dev = _H()
            call(lib, "mtmlLibraryInitDeviceByIndex", handle, i, ctypes.byref(dev))
            try:
                out.append(_device(lib, dev))
            finally:
                lib.mtmlLibraryFreeDevice(dev)
        return out
    finally:
        lib.mtmlLibraryShutDown(handle)
