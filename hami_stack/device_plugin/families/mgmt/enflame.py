"""Enflame GCUs through the Enflame Management Library ``libefml.so``, as Enflame's GCU device plugin
reads them (through Enflame's Go binding go-efml, the legacy ``Efml*`` calls).

Our own ctypes declarations of the subset of efml.h the plugin needs: ``EfmlInit``/``EfmlShutdown``,
``EfmlGetDevCount``, ``EfmlGetDevUuid`` (the plugin names the card ``GCU-<uuid>``), ``EfmlGetDevSKU``
(the model), ``EfmlGetDevInfo`` (PCI domain/bus/device/function, logic id), ``EfmlGetDevMem`` (total
in bytes), ``EfmlGetClusterCount``, ``EfmlGetNumaNode`` and ``EfmlGetDevHealth``. String outputs are
caller buffers of ``MAX_CHAR_BUFF_LEN`` bytes.

DRS cards: ``EfmlGetMaxVdevCount`` gives the slices, ``EfmlGetDrsProfileCount`` /
``EfmlGetDrsProfileInfo`` the profiles (ours: no published EFML call lists them; see
``testbed/hardware/src/famlib_efml.h``).
"""

from __future__ import annotations

import ctypes

from ..hardware import Device, HardwareError
from . import call

LIBRARY = "libefml.so"

EFML_SUCCESS = 0
EFML_ERROR_UNINITIALIZED = 1
EFML_ERROR_INVALID_ARGUMENT = 2
EFML_ERROR_NOT_SUPPORTED = 3
EFML_ERROR_DRIVER_NOT_LOADED = 6
EFML_ERROR_INVALID_INPUT = 8
EFML_ERROR_FAIL = 254
MAX_CHAR_BUFF_LEN = 128
UUID_PREFIX = "GCU-"


class DeviceInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * MAX_CHAR_BUFF_LEN),
        ("vendor_id", ctypes.c_uint32),
        ("device_id", ctypes.c_uint32),
        ("domain_id", ctypes.c_uint32),
        ("bus_id", ctypes.c_uint32),
        ("dev_id", ctypes.c_uint32),
        ("func_id", ctypes.c_uint32),
        ("logic_id", ctypes.c_uint32),
    ]


class DevMemInfo(ctypes.Structure):
    _fields_ = [("mem_total_size", ctypes.c_uint64), ("mem_used", ctypes.c_uint32)]  # bytes, MB


class DrsProfileInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * MAX_CHAR_BUFF_LEN), ("id", ctypes.c_uint32)]


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set the argument and result types of the calls we use (idempotent)."""
    u32, p, s = ctypes.c_uint32, ctypes.POINTER, ctypes.c_char_p
    r = ctypes.c_int  # efmlReturn_t
    lib.EfmlInit.argtypes, lib.EfmlInit.restype = [ctypes.c_bool], r
    lib.EfmlShutdown.argtypes, lib.EfmlShutdown.restype = [], None
    lib.EfmlErrorString.argtypes, lib.EfmlErrorString.restype = [r, s], r
    lib.EfmlGetDevCount.argtypes, lib.EfmlGetDevCount.restype = [p(u32)], r
    for fn in ("EfmlGetDevName", "EfmlGetDevSKU", "EfmlGetDevUuid", "EfmlGetDevSn"):
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = [u32, s], r
    lib.EfmlGetDevInfo.argtypes, lib.EfmlGetDevInfo.restype = [u32, p(DeviceInfo)], r
    lib.EfmlGetDevMem.argtypes, lib.EfmlGetDevMem.restype = [u32, p(DevMemInfo)], r
    lib.EfmlGetNumaNode.argtypes, lib.EfmlGetNumaNode.restype = [u32, p(ctypes.c_int)], r
    for fn in ("EfmlGetDevHealth", "EfmlGetDevIsHealth"):
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = [u32, p(ctypes.c_bool)], r
    for fn in ("EfmlGetClusterCount", "EfmlGetMaxVdevCount", "EfmlGetDrsProfileCount"):
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = [u32, p(u32)], r
    lib.EfmlGetDrsProfileInfo.argtypes, lib.EfmlGetDrsProfileInfo.restype = [u32, u32, p(DrsProfileInfo)], r
    return lib


def _string(lib: ctypes.CDLL, fn: str, i: int) -> str:
    buf = ctypes.create_string_buffer(MAX_CHAR_BUFF_LEN)
    call(lib, fn, i, buf)
    return buf.value.decode()


def _u32(lib: ctypes.CDLL, fn: str, i: int) -> int:
    v = ctypes.c_uint32()
    call(lib, fn, i, ctypes.byref(v))
    return v.value


def _profiles(lib: ctypes.CDLL, i: int) -> dict[str, str]:
    out = {}
    for k in range(_u32(lib, "EfmlGetDrsProfileCount", i)):
        info = DrsProfileInfo()
        call(lib, "EfmlGetDrsProfileInfo", i, k, ctypes.byref(info))
        out[info.name.decode()] = str(info.id)
    return out


def _device(lib: ctypes.CDLL, i: int) -> Device:
    info, mem = DeviceInfo(), DevMemInfo()
    numa, health = ctypes.c_int(), ctypes.c_bool()
    call(lib, "EfmlGetDevInfo", i, ctypes.byref(info))
    call(lib, "EfmlGetDevMem", i, ctypes.byref(mem))
    call(lib, "EfmlGetNumaNode", i, ctypes.byref(numa))
    call(lib, "EfmlGetDevHealth", i, ctypes.byref(health))
    slices = _u32(lib, "EfmlGetMaxVdevCount", i)
    return Device(
        uuid=UUID_PREFIX + _string(lib, "EfmlGetDevUuid", i),
        index=info.logic_id,
        model=_string(lib, "EfmlGetDevSKU", i),
        memory_mib=mem.mem_total_size >> 20,
        compute_units=_u32(lib, "EfmlGetClusterCount", i),
        bus_id=f"{info.domain_id:04x}:{info.bus_id:02x}:{info.dev_id:02x}.{info.func_id:x}",
        numa=numa.value,
        healthy=health.value,
        drs_capacity=slices,
        drs_profiles=_profiles(lib, i) if slices else {},
    )


def devices(lib: ctypes.CDLL) -> list[Device]:
    declare(lib)
    rc = lib.EfmlInit(False)
    if rc == EFML_ERROR_DRIVER_NOT_LOADED:  # no driver on this node: nothing to advertise
        return []
    if rc != EFML_SUCCESS:
        raise HardwareError(f"{LIBRARY}: EfmlInit failed with code {rc}")
    try:
        return [_device(lib, i) for i in range(_u32_count(lib))]
    finally:
        lib.EfmlShutdown()


def _u32_count(lib: ctypes.CDLL) -> int:
    n = ctypes.c_uint32()
    call(lib, "EfmlGetDevCount", ctypes.byref(n))
    return n.value
