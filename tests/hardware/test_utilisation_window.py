"""NVML utilisation of the emulated device is the true busy time in the sampling window, however many
kernels ran in it (it used to count only the newest 128 kernel intervals: 3 % for a device kept busy
by 200 us kernels)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest

from testbed.hardware.state import DeviceState

from .conftest import child_env, run_snippet

IMAGE = "HAMIEMU-KERNEL name=spin duration_param=0 unit=us\\n"


@pytest.mark.parametrize("kernel_us", [200, 1000, 5000])
def test_utilisation_is_busy_time_in_window(make_state: Callable[..., DeviceState], kernel_us: int) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 1})
    # two kernels per synchronisation keep the device busy despite the interpreter's overhead: the
    # second is queued behind the first, so each pair is busy for twice the kernel length from its launch
    code = textwrap.dedent(f"""
        cuda_ctx()
        ck(nv.nvmlInit_v2())
        _, h = nvml_handle(0)
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuModuleLoadData(byref(mod), b"{IMAGE}"), "load")
        ck(cu.cuModuleGetFunction(byref(fn), mod, b"spin"), "getfn")
        us = c_u64({kernel_us})
        params = (ctypes.c_void_p * 1)(ctypes.cast(byref(us), ctypes.c_void_p))
        spans = []
        t0 = time.monotonic_ns()
        while time.monotonic_ns() - t0 < 1_300_000_000:
            a = time.monotonic_ns()
            ck(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, None, params, None), "launch")
            ck(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, None, params, None), "launch2")
            ck(cu.cuCtxSynchronize(), "sync")
            spans.append((a, time.monotonic_ns()))
        now = time.monotonic_ns()
        util = nvml_util(h)
        lo = now - 1_000_000_000
        busy = sum(max(0, min(a + 2 * {kernel_us} * 1000, now) - max(a, lo)) for a, _ in spans)
        wall = sum(max(0, min(b, now) - max(a, lo)) for a, b in spans)
        emit({{"util": util, "busy": busy / 1e7, "wall": wall / 1e7, "kernels": 2 * len(spans)}})
    """)
    res = run_snippet(code, child_env(st))
    # the window held far more than 128 intervals for the short kernels
    assert res["kernels"] >= 200, res
    # what NVML reports is the busy time the launches produced, within 2 points (clock rounding)
    assert abs(res["util"] - res["busy"]) <= 2, res
    assert res["busy"] >= 60, res  # the loop really kept the device busy, so a cap would show
