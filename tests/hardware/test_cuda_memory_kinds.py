"""Arrays, mipmapped arrays, stream-ordered memory pools and page-locked host memory on the emulated
libcuda.so.1: device memory they use shows on the card (cuMemGetInfo), host memory never does."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from testbed.hardware.state import DeviceState

from .conftest import MIB, child_env, run_snippet

STRUCTS = r"""
class ArrDesc(ctypes.Structure):
    _fields_ = [("Width", c_size_t), ("Height", c_size_t), ("Format", c_int), ("NumChannels", c_uint)]
class Arr3D(ctypes.Structure):
    _fields_ = [("Width", c_size_t), ("Height", c_size_t), ("Depth", c_size_t), ("Format", c_int),
                ("NumChannels", c_uint), ("Flags", c_uint)]
class Loc(ctypes.Structure):
    _fields_ = [("type", c_int), ("id", c_int)]
class PoolProps(ctypes.Structure):
    _fields_ = [("allocType", c_int), ("handleTypes", c_int), ("location", Loc), ("win32", ctypes.c_void_p),
                ("maxSize", c_size_t), ("usage", ctypes.c_ushort), ("reserved", ctypes.c_ubyte * 54)]
FLOAT, U8 = 0x20, 0x01
def used():
    f, t = mem_info()
    return t - f
"""


def _run(st: DeviceState, body: str) -> dict:
    return run_snippet(STRUCTS + textwrap.dedent(body), child_env(st))


def test_arrays_and_mipmaps_use_device_memory(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-PCIE-40GB", "count": 1, "memory_mib": 4096})
    res = _run(st, """
        cuda_ctx()
        res = {}
        base = used()
        a = ctypes.c_void_p()
        ck(cu.cuArrayCreate_v2(byref(a), byref(ArrDesc(1024, 1024, FLOAT, 4))), "array2d")
        res["2d"] = used() - base
        b = ctypes.c_void_p()
        ck(cu.cuArray3DCreate_v2(byref(b), byref(Arr3D(256, 256, 64, U8, 1, 0))), "array3d")
        res["3d"] = used() - base
        m = ctypes.c_void_p()
        ck(cu.cuMipmappedArrayCreate(byref(m), byref(Arr3D(1024, 1024, 0, U8, 1, 0)), 11), "mip")
        res["mip"] = used() - base
        res["too_many_levels"] = cu.cuMipmappedArrayCreate(byref(ctypes.c_void_p()),
                                                           byref(Arr3D(1024, 1024, 0, U8, 1, 0)), 12)
        res["zero_width"] = cu.cuArrayCreate_v2(byref(ctypes.c_void_p()), byref(ArrDesc(0, 4, FLOAT, 1)))
        res["bad_channels"] = cu.cuArrayCreate_v2(byref(ctypes.c_void_p()), byref(ArrDesc(4, 4, FLOAT, 3)))
        big = ArrDesc(1 << 20, 1 << 20, FLOAT, 4)
        res["huge"] = cu.cuArrayCreate_v2(byref(ctypes.c_void_p()), byref(big))
        ck(cu.cuArrayDestroy(a), "destroy a")
        res["after_a"] = used() - base
        res["destroy_twice"] = cu.cuArrayDestroy(a)
        res["mip_as_array"] = cu.cuArrayDestroy(m)
        ck(cu.cuMipmappedArrayDestroy(m), "destroy m")
        ck(cu.cuArrayDestroy(b), "destroy b")
        res["end"] = used() - base
        # arrays belong to their context: a reset gives their memory back
        ck(cu.cuArrayCreate_v2(byref(a), byref(ArrDesc(1024, 1024, FLOAT, 4))), "again")
        ck(cu.cuDevicePrimaryCtxReset_v2(0), "reset")
        cuda_ctx()
        res["after_reset"] = used() - base
        emit(res)
    """)
    assert res["2d"] == 16 * MIB
    assert res["3d"] == 16 * MIB + 4 * MIB
    mip = sum((1024 >> i) ** 2 for i in range(11))  # 1024x1024 down to 1x1, one byte per texel
    assert res["mip"] == 20 * MIB + ((mip + 511) // 512) * 512
    assert res["too_many_levels"] == 1  # CUDA_ERROR_INVALID_VALUE
    assert res["zero_width"] == 1 and res["bad_channels"] == 1
    assert res["huge"] == 2  # 16 TiB: CUDA_ERROR_OUT_OF_MEMORY
    assert res["after_a"] == res["mip"] - 16 * MIB
    assert res["destroy_twice"] == 400 and res["mip_as_array"] == 400  # CUDA_ERROR_INVALID_HANDLE
    assert res["end"] == 0
    assert res["after_reset"] == 0


def test_memory_pools_hold_reserved_memory_on_the_card(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-PCIE-40GB", "count": 1, "memory_mib": 4096})
    res = _run(st, """
        cuda_ctx()
        res = {}
        base = used()
        dflt, cur = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuDeviceGetDefaultMemPool(byref(dflt), 0), "default")
        ck(cu.cuDeviceGetMemPool(byref(cur), 0), "current")
        res["current_is_default"] = dflt.value == cur.value
        def attr(pool, a):
            v = c_u64()
            ck(cu.cuMemPoolGetAttribute(pool, a, byref(v)), f"attr {a}")
            return v.value
        # the default pool: threshold 0, freed memory goes back to the card
        p = c_u64()
        ck(cu.cuMemAllocAsync(byref(p), c_size_t(8 * 1024 * 1024), None), "async")
        res["default_used"] = [attr(dflt, 7), attr(dflt, 5), used() - base]
        ck(cu.cuMemFreeAsync(p, None), "freeasync")
        res["default_after_free"] = [attr(dflt, 7), attr(dflt, 5), attr(dflt, 8), used() - base]
        # an explicit pool with a release threshold keeps freed memory reserved until trimmed
        props = PoolProps()
        props.allocType, props.location.type, props.location.id = 1, 1, 0
        pool = ctypes.c_void_p()
        ck(cu.cuMemPoolCreate(byref(pool), byref(props)), "create")
        thr = c_u64(64 * 1024 * 1024)
        ck(cu.cuMemPoolSetAttribute(pool, 4, byref(thr)), "threshold")
        ptrs = []
        for _ in range(3):
            q = c_u64()
            ck(cu.cuMemAllocFromPoolAsync(byref(q), c_size_t(16 * 1024 * 1024), pool, None), "frompool")
            ptrs.append(q)
        res["pool_live"] = [attr(pool, 7), attr(pool, 5), used() - base]
        for q in ptrs:
            ck(cu.cuMemFreeAsync(q, None), "free")
        res["pool_freed"] = [attr(pool, 7), attr(pool, 5), attr(pool, 6), used() - base]
        q = c_u64()
        ck(cu.cuMemAllocFromPoolAsync(byref(q), c_size_t(16 * 1024 * 1024), pool, None), "reuse")
        res["reuse"] = [attr(pool, 5), used() - base]
        ck(cu.cuMemFreeAsync(q, None), "free")
        ck(cu.cuMemPoolTrimTo(pool, c_size_t(16 * 1024 * 1024)), "trim")
        res["trimmed"] = [attr(pool, 5), used() - base]
        res["set_current_counter"] = cu.cuMemPoolSetAttribute(pool, 5, byref(c_u64(0)))
        # the pool as the device's current pool serves cuMemAllocAsync
        ck(cu.cuDeviceSetMemPool(0, pool), "setpool")
        ck(cu.cuMemAllocAsync(byref(q), c_size_t(1024 * 1024), None), "async2")
        res["async_in_pool"] = attr(pool, 7)
        # destroying with an allocation outstanding: released with the last free
        ck(cu.cuMemPoolDestroy(pool), "destroy")
        ck(cu.cuDeviceGetMemPool(byref(cur), 0), "current2")
        res["back_to_default"] = cur.value == dflt.value
        res["used_while_outstanding"] = used() - base
        ck(cu.cuMemFree_v2(q), "free last")
        res["end"] = used() - base
        res["destroy_default"] = cu.cuMemPoolDestroy(dflt)
        emit(res)
    """)
    mib = MIB
    assert res["current_is_default"]
    assert res["default_used"] == [8 * mib, 8 * mib, 8 * mib]
    assert res["default_after_free"] == [0, 0, 8 * mib, 0]
    assert res["pool_live"] == [48 * mib, 48 * mib, 48 * mib]
    assert res["pool_freed"] == [0, 48 * mib, 48 * mib, 48 * mib]
    assert res["reuse"] == [48 * mib, 48 * mib]
    assert res["trimmed"] == [16 * mib, 16 * mib]
    assert res["set_current_counter"] == 1
    assert res["async_in_pool"] == 1 * mib
    assert res["back_to_default"]
    assert res["used_while_outstanding"] == 16 * mib
    assert res["end"] == 0
    assert res["destroy_default"] == 1


def test_host_memory_is_not_device_memory(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-PCIE-40GB", "count": 1, "memory_mib": 4096})
    res = _run(st, """
        cuda_ctx()
        res = {}
        base = used()
        h1, h2 = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuMemAllocHost_v2(byref(h1), c_size_t(64 * 1024 * 1024)), "allochost")
        ck(cu.cuMemHostAlloc(byref(h2), c_size_t(1024 * 1024), 0x2 | 0x1), "hostalloc")
        res["used_after_host"] = used() - base
        flags = c_uint()
        ck(cu.cuMemHostGetFlags(byref(flags), h2), "flags")
        res["flags"] = flags.value
        dp = c_u64()
        ck(cu.cuMemHostGetDevicePointer_v2(byref(dp), c_u64(h1.value + 100), 0), "devptr")
        res["devptr_is_host_address"] = dp.value == h1.value + 100
        # the device pointer works for copies: write through the device, read on the host
        src = (ctypes.c_ubyte * 16)(*range(16))
        ck(cu.cuMemcpyHtoD_v2(c_u64(h1.value), src, c_size_t(16)), "htod")
        res["host_sees"] = list((ctypes.c_ubyte * 16).from_address(h1.value))
        # registering ordinary host memory
        buf = ctypes.create_string_buffer(1 << 20)
        addr = ctypes.addressof(buf)
        ck(cu.cuMemHostRegister_v2(ctypes.c_void_p(addr), c_size_t(1 << 20), 0), "register")
        res["register_twice"] = cu.cuMemHostRegister_v2(ctypes.c_void_p(addr + 4096), c_size_t(4096), 0)
        res["free_registered"] = cu.cuMemFreeHost(ctypes.c_void_p(addr))
        ck(cu.cuMemHostGetDevicePointer_v2(byref(dp), ctypes.c_void_p(addr), 0), "devptr2")
        res["flags_registered"] = cu.cuMemHostGetFlags(byref(flags), ctypes.c_void_p(addr))
        ck(cu.cuMemHostUnregister(ctypes.c_void_p(addr)), "unregister")
        res["unregister_twice"] = cu.cuMemHostUnregister(ctypes.c_void_p(addr))
        res["devptr_unknown"] = cu.cuMemHostGetDevicePointer_v2(byref(dp), ctypes.c_void_p(addr), 0)
        res["used_end"] = used() - base
        ck(cu.cuMemFreeHost(h1), "freehost")
        ck(cu.cuMemFreeHost(h2), "freehost2")
        res["free_twice"] = cu.cuMemFreeHost(h1)
        # without a context there is nothing to pin for
        ck(cu.cuCtxSetCurrent(None), "nocontext")
        res["no_context"] = cu.cuMemAllocHost_v2(byref(h1), c_size_t(4096))
        emit(res)
    """)
    assert res["used_after_host"] == 0
    assert res["flags"] == 0x3
    assert res["devptr_is_host_address"]
    assert res["host_sees"] == list(range(16))
    assert res["register_twice"] == 712  # CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED
    assert res["free_registered"] == 1
    assert res["flags_registered"] == 1
    assert res["unregister_twice"] == 713  # CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED
    assert res["devptr_unknown"] == 1
    assert res["used_end"] == 0
    assert res["free_twice"] == 1
    assert res["no_context"] == 201  # CUDA_ERROR_INVALID_CONTEXT
