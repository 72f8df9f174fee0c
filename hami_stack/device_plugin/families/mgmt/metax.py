"""MetaX GPUs through mx-smi's management library ``libmxsml.so``, as MetaX's own device plugins read
them (MetaX's Go binding go-mxsml wraps the same C calls).

Our own ctypes declarations of the subset of MxSml.h the plugin needs: ``mxSmlInit``,
``mxSmlGetDeviceCount``, ``mxSmlGetDeviceInfo`` (UUID, PCI BDF, name, the GPU's sequence label),
``mxSmlGetMemoryInfo`` (KB), ``mxSmlGetNodeAffinity`` (NUMA bitmask) and ``mxSmlGetDeviceState``
(1 available, 0 not). MxSml.h has no compute-unit query: MetaX's plugins count compute in percent of a
card (``vcore`` 100 per GPU), so every card reports 100.
"""

from __future__ import annotations

import ctypes

from ..hardware import Device, HardwareError
from . import call

LIBRARY = "libmxsml.so"

MXSML_SUCCESS = 0
MXSML_FAILURE = 1
MXSML_NO_DEVICE = 2
MXSML_INVALID_DEVICE_ID = 6
MXSML_INVALID_INPUT = 9
MXSML_INSUFFICIENT_SIZE = 10

COMPUTE_PERCENT = 100  # a whole card's compute, as MetaX's plugins count it
NODE_SET_WORDS = 4  # 128 NUMA nodes: more than any node has


class DeviceInfo(ctypes.Structure):
    _fields_ = [
        ("deviceId", ctypes.c_uint),
        ("type", ctypes.c_uint),
        ("bdfId", ctypes.c_char * 32),
        ("gpuId", ctypes.c_uint),
        ("nodeId", ctypes.c_uint),
        ("uuid", ctypes.c_char * 96),
        ("brand", ctypes.c_uint),
        ("mode", ctypes.c_uint),
        ("deviceName", ctypes.c_char * 32),
    ]


class MemoryInfo(ctypes.Structure):  # KB
    _fields_ = [
        ("visVramTotal", ctypes.c_long),
        ("visVramUse", ctypes.c_long),
        ("vramTotal", ctypes.c_long),
        ("vramUse", ctypes.c_long),
        ("xttTotal", ctypes.c_long),
        ("xttUse", ctypes.c_long),
    ]


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set the argument and result types of the calls we use (idempotent)."""
    u, p = ctypes.c_uint, ctypes.POINTER
    lib.mxSmlInit.argtypes, lib.mxSmlInit.restype = [], u
    lib.mxSmlGetDeviceCount.argtypes, lib.mxSmlGetDeviceCount.restype = [], u
    lib.mxSmlGetDeviceInfo.argtypes, lib.mxSmlGetDeviceInfo.restype = [u, p(DeviceInfo)], u
    lib.mxSmlGetMemoryInfo.argtypes, lib.mxSmlGetMemoryInfo.restype = [u, p(MemoryInfo)], u
    lib.mxSmlGetNodeAffinity.argtypes, lib.mxSmlGetNodeAffinity.restype = [u, u, p(u)], u
    lib.mxSmlGetDeviceState.argtypes, lib.mxSmlGetDeviceState.restype = [u, p(ctypes.c_int)], u
    lib.mxSmlGetBoardSerial.argtypes, lib.mxSmlGetBoardSerial.restype = [u, ctypes.c_char_p, p(u)], u
    lib.mxSmlGetErrorString.argtypes, lib.mxSmlGetErrorString.restype = [u], ctypes.c_char_p
    return lib


def _numa(lib: ctypes.CDLL, i: int) -> int:
    words = (ctypes.c_uint * NODE_SET_WORDS)()
    call(lib, "mxSmlGetNodeAffinity", i, NODE_SET_WORDS, words)
    for w, bits in enumerate(words):
        if bits:
            return w * 32 + (bits & -bits).bit_length() - 1  # the lowest ideal node
    return 0


def devices(lib: ctypes.CDLL) -> list[Device]:
    declare(lib)
    rc = lib.mxSmlInit()
    if rc == MXSML_NO_DEVICE:  # no device discovered (or no driver): nothing to advertise
        return []
    if rc != MXSML_SUCCESS:
        raise HardwareError(f"{LIBRARY}: mxSmlInit failed with code {rc}")
    out = []
    for i in range(lib.mxSmlGetDeviceCount()):
        info, mem, state = DeviceInfo(), MemoryInfo(), ctypes.c_int()
        call(lib, "mxSmlGetDeviceInfo", i, ctypes.byref(info))
        call(lib, "mxSmlGetMemoryInfo", i, ctypes.byref(mem))
        call(lib, "mxSmlGetDeviceState", i, ctypes.byref(state))
        out.append(
            Device(
                uuid=info.uuid.decode(),
                index=info.gpuId,
                model=info.deviceName.decode(),
                memory_mib=mem.vramTotal // 1024,
                compute_units=COMPUTE_PERCENT,
                bus_id=info.bdfId.decode(),
                numa=_numa(lib, i),
                healthy=state.value == 1,
            )
        )
    return out
