"""Memory limits of one process on the emulated driver, through every resolution path."""

from __future__ import annotations

import pytest

from tests.enforcer.conftest import Runner

MIB = 1 << 20
OOM = 2


@pytest.mark.parametrize("mode", ["dlsym", "link", "gpa"])
def test_up_to_the_limit_then_oom_then_freed(run_probe: Runner, mode: str) -> None:
    r = run_probe(
        "info",
        "alloc",
        str(3 * MIB),
        "alloc",
        str(MIB),
        "alloc",
        "1",
        "info",
        "free",
        "alloc",
        "1",
        mode=mode,
        env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"},
    )
    assert r.rc == 0, r.stderr
    assert r.codes("alloc") == [0, 0, OOM, 0]  # exactly at the limit fits; one byte more does not
    assert r.line("info") == {"rc": "0", "free": str(4 * MIB), "total": str(4 * MIB)}
    assert r.line("info", 1) == {"rc": "0", "free": "0", "total": str(4 * MIB)}
    oom = r.errors()
    assert len(oom) == 1 and "device 0" in oom[0] and "exceeds limit 4194304" in oom[0]


def test_every_allocation_path_is_refused_over_the_limit(run_probe: Runner) -> None:
    r = run_probe(
        "alloc",
        str(2 * MIB),
        "managed",
        str(MIB),
        "async",
        str(MIB),
        "managed",
        "1",
        "async",
        "1",
        "alloc",
        "1",
        "pitch",
        "64",
        "1",
        "create",
        str(2 * MIB),
        env={"CUDA_DEVICE_MEMORY_LIMIT_0": "4m"},
    )
    assert r.rc == 0, r.stderr
    assert r.codes("alloc") == [0, OOM]
    assert r.codes("managed") == [0, OOM]
    assert r.codes("async") == [0, OOM]
    assert r.codes("pitch") == [OOM]
    assert r.codes("create") == [OOM]
    assert len(r.errors()) == 5


def test_frees_of_each_kind_give_memory_back(run_probe: Runner) -> None:
    r = run_probe(
        "async",
        str(4 * MIB),
        "freeasync",
        "create",
        str(4 * MIB),
        "release",
        "pitch",
        "1000",
        "1024",
        "free",
        "managed",
        str(4 * MIB),
        "free",
        "info",
        env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"},
    )
    assert r.rc == 0, r.stderr
    assert r.codes("async") == [0] and r.codes("create") == [0] and r.codes("managed") == [0]
    assert r.line("pitch")["rc"] == "0"
    assert r.line("info")["free"] == str(4 * MIB)


def test_pitch_is_charged_at_the_real_pitch(run_probe: Runner) -> None:
    # width 1000 -> the driver pads rows to 1024 bytes: 4096 rows take exactly 4 MiB
    r = run_probe("pitch", "1000", "4096", "alloc", "1", env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"})
    assert r.line("pitch") == {"rc": "0", "pitch": "1024"}
    assert r.codes("alloc") == [OOM]


def test_total_mem_reports_the_limit_and_unlimited_reports_the_device(run_probe: Runner) -> None:
    limited = run_probe("totalmem", env={"CUDA_DEVICE_MEMORY_LIMIT": "1g"})
    assert limited.line("totalmem")["total"] == str(1 << 30)
    free = run_probe("totalmem", "info")
    assert int(free.line("totalmem")["total"]) == 80 * (1 << 30)
    assert int(free.line("info")["total"]) == 80 * (1 << 30)


def test_limit_larger_than_the_device_reports_the_device(run_probe: Runner) -> None:
    r = run_probe("totalmem", "info", env={"CUDA_DEVICE_MEMORY_LIMIT": "1000g", "LIBCUDA_LOG_LEVEL": "2"})
    assert int(r.line("totalmem")["total"]) == 80 * (1 << 30)
    assert int(r.line("info")["total"]) == 80 * (1 << 30)
    assert "exceeds the device" in r.stderr


def test_per_device_limit_uses_the_container_index(run_probe: Runner, node) -> None:  # type: ignore[no-untyped-def]
    # the container is given GPU 1 only: it is index 0 inside, so _0 applies and _1 does not
    r = run_probe(
        "alloc",
        str(2 * MIB),
        "alloc",
        "1",
        visible=node.gpus[1].uuid,
        env={"CUDA_DEVICE_MEMORY_LIMIT_0": "2m", "CUDA_DEVICE_MEMORY_LIMIT_1": "1g"},
    )
    assert r.codes("alloc") == [0, OOM]


def test_cuda_visible_devices_keeps_the_container_index(run_probe: Runner) -> None:
    # CUDA ordinal 0 is container device 1 here: CUDA_DEVICE_MEMORY_LIMIT_1 must apply
    r = run_probe(
        "alloc",
        str(2 * MIB),
        "alloc",
        "1",
        env={
            "CUDA_VISIBLE_DEVICES": "1",
            "CUDA_DEVICE_MEMORY_LIMIT_0": "1g",
            "CUDA_DEVICE_MEMORY_LIMIT_1": "2m",
        },
    )
    assert r.codes("alloc") == [0, OOM]


def test_nvml_reports_the_container_view(run_probe: Runner, node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from tests.enforcer.conftest import probe_env

    snippet = r"""
import ctypes, sys
nv = ctypes.CDLL("libnvidia-ml.so.1")
class M(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]
class P(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("used", ctypes.c_ulonglong), ("g", ctypes.c_uint),
                ("c", ctypes.c_uint)]
cu = ctypes.CDLL("libcuda.so.1")
assert cu.cuInit(0) == 0
ctx = ctypes.c_void_p(); assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
assert cu.cuCtxSetCurrent(ctx) == 0
p = ctypes.c_uint64(); assert cu.cuMemAlloc_v2(ctypes.byref(p), 3 << 20) == 0
assert nv.nvmlInit_v2() == 0
h = ctypes.c_void_p(); assert nv.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(h)) == 0
m = M(); assert nv.nvmlDeviceGetMemoryInfo(h, ctypes.byref(m)) == 0
n = ctypes.c_uint(8); procs = (P * 8)()
rc = nv.nvmlDeviceGetComputeRunningProcesses_v3(h, ctypes.byref(n), procs)
print(m.total, m.used, m.free, rc, n.value, procs[0].pid, procs[0].used)
"""
    env = probe_env(
        node,
        __import__("hami_stack.enforcer").enforcer.ensure_built(),
        {
            "CUDA_DEVICE_MEMORY_LIMIT": "4m",
            "CUDA_DEVICE_SM_LIMIT": "50",
            "GPU_CORE_UTILIZATION_POLICY": "force",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "nv.cache"),
        },
    )
    out = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    total, used, free, rc, n, pid, pused = map(int, out.stdout.split())
    assert (total, used, free) == (4 << 20, 3 << 20, 1 << 20)
    # the process list shows this container's processes with the memory accounted to them
    assert rc == 0
    assert n == 1 and pused == 3 << 20 and pid > 0
