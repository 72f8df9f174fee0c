"""A CUDA context occupies device memory as on a real driver: the model's context size (inventory
field context_bytes) shows in cuMemGetInfo and in NVML's used memory and process list while the
context lives, and goes back on destroy, primary-context reset and process exit."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from testbed.hardware.state import CONTEXT_MEMORY_MIB, DeviceState

from .conftest import MIB, child_env, run_snippet

NVML_USED = r"""
class Mem(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]
def nvml_used(i=0):
    m = Mem()
    rc, h = nvml_handle(i)
    ck(rc, "handle")
    ck(nv.nvmlDeviceGetMemoryInfo(h, byref(m)), "meminfo")
    return m.used
ck(nv.nvmlInit_v2(), "nvmlinit")
"""


def test_context_memory_follows_context_lifetime(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "H100-SXM5-80GB", "count": 1})
    ctx_bytes = CONTEXT_MEMORY_MIB["H100-SXM5-80GB"] * MIB
    assert st.gpus[0].context_bytes == ctx_bytes
    code = NVML_USED + textwrap.dedent("""
        res = {"before": nvml_used()}
        ctx = cuda_ctx()
        free, total = mem_info()
        res["primary"] = [nvml_used(), total - free]
        own = ctypes.c_void_p()
        ck(cu.cuCtxCreate_v2(byref(own), 0, 0), "create")
        free, total = mem_info()
        res["two"] = [nvml_used(), total - free]
        ck(cu.cuCtxDestroy_v2(own), "destroy")
        ck(cu.cuCtxSetCurrent(ctx), "current")
        res["destroyed"] = nvml_used()
        ck(cu.cuDevicePrimaryCtxReset_v2(0), "reset")
        res["reset"] = nvml_used()
        cuda_ctx()
        res["again"] = nvml_used()
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    assert res["before"] == 0
    assert res["primary"] == [ctx_bytes, ctx_bytes]
    assert res["two"] == [2 * ctx_bytes, 2 * ctx_bytes]
    assert res["destroyed"] == ctx_bytes
    assert res["reset"] == 0
    assert res["again"] == ctx_bytes
    # the process has exited: its context went with it
    assert st.usage(0).used_bytes == 0 and st.usage(0).processes == ()


def test_context_size_is_per_inventory_and_can_exhaust_a_card(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "Tesla T4", "count": 1, "memory_mib": 600, "context_mib": 250})
    code = textwrap.dedent("""
        ck(cu.cuInit(0), "init")
        a, b, c = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuCtxCreate_v2(byref(a), 0, 0), "first")
        ck(cu.cuCtxCreate_v2(byref(b), 0, 0), "second")
        res = {"third": cu.cuCtxCreate_v2(byref(c), 0, 0)}
        free, total = mem_info()
        res["free"] = free
        rc, _ = alloc(200 * 1024 * 1024)
        res["alloc_past_contexts"] = rc
        ck(cu.cuCtxDestroy_v2(b), "destroy")
        ck(cu.cuCtxSetCurrent(a), "current")
        rc, _ = alloc(200 * 1024 * 1024)
        res["alloc_after_destroy"] = rc
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    assert res["third"] == 2  # CUDA_ERROR_OUT_OF_MEMORY: no room for a third context
    assert res["free"] == 100 * MIB
    assert res["alloc_past_contexts"] == 2
    assert res["alloc_after_destroy"] == 0
