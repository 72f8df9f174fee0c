"""Cambricon MLUs through CNDev (``libcndev.so``), as Cambricon's cambricon-k8s-device-plugin reads them:
``cndevInit``, the count, a handle per index, then per card its UUID (which the plugin prefixes with
``MLU-``), name string, memory (V2, MB), core count, PCIe address (V2), NUMA node and health state.

Our own ctypes declarations of the published API (CNDEV_VERSION_6 structs; see
``testbed/hardware/src/famlib_cndev.h`` for the emulated library).
"""

from __future__ import annotations

import ctypes
from typing import TypeVar

from ..hardware import Device, HardwareError
from . import call

LIBRARY = "libcndev.so"

CNDEV_VERSION = 6  # what the plugin fills into each struct's version
UUID_SIZE = 37
UUID_PREFIX = "MLU-"  # the plugin's prefix to CNDev's UUID

# cndevRet_t values the binding acts on
SUCCESS = 0
ERROR_NO_DRIVER = 1
ERROR_UNSUPPORTED_API_VERSION = 3
ERROR_UNINITIALIZED = 4
ERROR_INVALID_ARGUMENT = 5
ERROR_INVALID_DEVICE_ID = 6
ERROR_INSUFFICIENT_SPACE = 9
ERROR_NOT_SUPPORTED = 10
ERROR_NO_DEVICES = 12

HEALTH_STATE_DEVICE_GOOD = 1


class CardInfo(ctypes.Structure):
    _fields_ = [("version", ctypes.c_int32), ("number", ctypes.c_uint32)]


class UUID(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_int32),
        ("uuid", ctypes.c_char * UUID_SIZE),
        ("ncsUUID64", ctypes.c_uint64),
    ]


class CardSN(ctypes.Structure):
    _fields_ = [("version", ctypes.c_int32), ("sn", ctypes.c_uint64), ("motherBoardSn", ctypes.c_uint64)]


class CardName(ctypes.Structure):
    _fields_ = [("version", ctypes.c_int32), ("id", ctypes.c_int)]


class MemoryInfoV2(ctypes.Structure):
    _fields_ = [
        ("physicalMemoryTotal", ctypes.c_int64),
        ("physicalMemoryUsed", ctypes.c_int64),
        ("reservedMemory", ctypes.c_int64),
        ("virtualMemoryTotal", ctypes.c_int64),
        ("virtualMemoryUsed", ctypes.c_int64),
        ("globalMemory", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 16),
    ]


class CardCoreCount(ctypes.Structure):
    _fields_ = [("version", ctypes.c_int32), ("count", ctypes.c_int32)]


class PCIeInfoV2(ctypes.Structure):
    _fields_ = [
        ("subsystemId", ctypes.c_uint32),
        ("deviceId", ctypes.c_uint32),
        ("vendor", ctypes.c_uint16),
        ("subsystemVendor", ctypes.c_uint16),
        ("domain", ctypes.c_uint32),
        ("bus", ctypes.c_uint32),
        ("device", ctypes.c_uint32),
        ("function", ctypes.c_uint32),
        ("moduleId", ctypes.c_uint16),
        ("slotId", ctypes.c_uint16),
        ("reserved", ctypes.c_uint32 * 8),
    ]


class NUMANodeId(ctypes.Structure):
    _fields_ = [("version", ctypes.c_int32), ("nodeId", ctypes.c_int32)]


class CardHealthState(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_int32),
        ("health", ctypes.c_int32),
        ("deviceState", ctypes.c_int),
        ("driverState", ctypes.c_int),
    ]


_P = ctypes.POINTER
_DEV = ctypes.c_int32  # cndevDevice_t
_SIGNATURES: dict[str, tuple[list[object], object]] = {
    "cndevInit": ([ctypes.c_int32], ctypes.c_int),
    "cndevRelease": ([], ctypes.c_int),
    "cndevGetErrorString": ([ctypes.c_int], ctypes.c_char_p),
    "cndevGetDeviceCount": ([_P(CardInfo)], ctypes.c_int),
    "cndevGetDeviceHandleByIndex": ([ctypes.c_int32, _P(_DEV)], ctypes.c_int),
    "cndevGetUUID": ([_P(UUID), _DEV], ctypes.c_int),
    "cndevGetCardSN": ([_P(CardSN), _DEV], ctypes.c_int),
    "cndevGetCardName": ([_P(CardName), _DEV], ctypes.c_int),
    "cndevGetCardNameStringByDevId": ([_DEV], ctypes.c_char_p),
    "cndevGetMemoryUsageV2": ([_P(MemoryInfoV2), _DEV], ctypes.c_int),
    "cndevGetCoreCount": ([_P(CardCoreCount), _DEV], ctypes.c_int),
    "cndevGetPCIeInfoV2": ([_P(PCIeInfoV2), _DEV], ctypes.c_int),
    "cndevGetNUMANodeIdByDevId": ([_P(NUMANodeId), _DEV], ctypes.c_int),
    "cndevGetCardHealthState": ([_P(CardHealthState), _DEV], ctypes.c_int),
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set argtypes/restype of the CNDev calls used here (idempotent)."""
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


_S = TypeVar("_S", bound=ctypes.Structure)


def _versioned(cls: type[_S]) -> _S:
    s = cls()
    s.version = CNDEV_VERSION
    return s


def _device(lib: ctypes.CDLL, index: int) -> Device:
    handle = _DEV()
    call(lib, "cndevGetDeviceHandleByIndex", index, ctypes.byref(handle))
    h = handle.value
    uuid = _versioned(UUID)
    call(lib, "cndevGetUUID", ctypes.byref(uuid), h)
    mem = MemoryInfoV2()
    call(lib, "cndevGetMemoryUsageV2", ctypes.byref(mem), h)
    cores = _versioned(CardCoreCount)
    call(lib, "cndevGetCoreCount", ctypes.byref(cores), h)
    pci = PCIeInfoV2()
    rc = lib.cndevGetPCIeInfoV2(ctypes.byref(pci), h)
    if rc not in (SUCCESS, ERROR_NOT_SUPPORTED):  # NOT_SUPPORTED: a card without a PCI address
        raise HardwareError(f"{lib._name}: cndevGetPCIeInfoV2 failed with code {rc}")
    bus_id = f"{pci.domain:04x}:{pci.bus:02x}:{pci.device:02x}.{pci.function:x}" if rc == SUCCESS else ""
    numa = _versioned(NUMANodeId)
    call(lib, "cndevGetNUMANodeIdByDevId", ctypes.byref(numa), h)
    health = _versioned(CardHealthState)
    call(lib, "cndevGetCardHealthState", ctypes.byref(health), h)
    model = lib.cndevGetCardNameStringByDevId(h) or b""
    return Device(
        uuid=UUID_PREFIX + uuid.uuid.decode(),
        index=index,
        model=model.decode(),
        memory_mib=int(mem.physicalMemoryTotal),
        compute_units=int(cores.count),
        bus_id=bus_id,
        numa=int(numa.nodeId),
        healthy=health.health == 1 and health.deviceState == HEALTH_STATE_DEVICE_GOOD,
    )


def devices(lib: ctypes.CDLL) -> list[Device]:
    """The node's MLUs as CNDev reports them (none when CNDev finds no device; HardwareError when the
    driver is not loaded, as the real plugin cannot start then)."""
    bind(lib)
    rc = lib.cndevInit(0)
    if rc == ERROR_NO_DEVICES:
        return []
    if rc != SUCCESS:
        raise HardwareError(f"{lib._name}: cndevInit failed with code {rc}")
    try:
        info = _versioned(CardInfo)
        call(lib, "cndevGetDeviceCount", ctypes.byref(info))
        return [_device(lib, i) for i in range(info.number)]
    finally:
        lib.cndevRelease()
