"""The emulated libraries export every function upstream HAMi-core hooks (tests/hardware/data lists them,
names read from its hook tables), with real semantics where the emulated model has the feature and a
clear NOT_SUPPORTED otherwise; plus the public calls added for that surface."""

from __future__ import annotations

import ctypes
import re
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.hardware.build import SRC
from testbed.hardware.state import DeviceState

from .conftest import child_env, run_snippet

DATA = Path(__file__).parent / "data"


def _names(file: str) -> list[str]:
    lines = (DATA / file).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _exported(lib: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    return {parts[2] for parts in (ln.split() for ln in out.stdout.splitlines()) if len(parts) == 3}


@pytest.mark.parametrize(
    ("lib", "facts", "minimum"),
    [
        ("libcuda.so.1", "hami_core_cuda_hooks.txt", 200),
        ("libnvidia-ml.so.1", "hami_core_nvml_hooks.txt", 240),
    ],
)
def test_every_hooked_function_is_exported(lib_dir: Path, lib: str, facts: str, minimum: int) -> None:
    wanted = _names(facts)
    assert len(wanted) >= minimum  # the fact file is the whole table, not a sample
    missing = sorted(set(wanted) - _exported(lib_dir / lib))
    assert missing == [], f"{lib} lacks {len(missing)} hooked functions: {missing}"


def _stub_names(header: str) -> list[str]:
    return re.findall(r"^X\((\w+)\)$", (SRC / header).read_text(), flags=re.M)


def test_unsupported_stubs_refuse_and_real_ones_are_not_stubs(lib_dir: Path) -> None:
    cuda_stubs, nvml_stubs = _stub_names("cuda_unsupported_list.h"), _stub_names("nvml_unsupported_list.h")
    assert "cuGraphCreate" in cuda_stubs and "nvmlUnitGetLedState" in nvml_stubs
    # a stub must not shadow a function implemented for real (duplicate definitions would not link,
    # but a name in both the proc table and the stub list would hide the real one from dlsym users)
    real = set(re.findall(r'E\("\w+", \d+, (\w+)\)', (SRC / "cuda.c").read_text()))
    assert real.isdisjoint(cuda_stubs)
    cu = ctypes.CDLL(str(lib_dir / "libcuda.so.1"))
    nv = ctypes.CDLL(str(lib_dir / "libnvidia-ml.so.1"))
    assert {getattr(cu, n)() for n in cuda_stubs} == {801}  # CUDA_ERROR_NOT_SUPPORTED
    assert {getattr(nv, n)() for n in nvml_stubs} == {3}  # NVML_ERROR_NOT_SUPPORTED


def test_public_surface_semantics(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 2})
    code = textwrap.dedent("""
        ctx = cuda_ctx()
        res = {}
        v = c_uint()
        ck(cu.cuCtxGetApiVersion(None, byref(v)), "apiversion")
        res["api"] = v.value
        lim = c_size_t()
        ck(cu.cuCtxSetLimit(2, c_size_t(64 << 20)), "setlimit")
        ck(cu.cuCtxGetLimit(byref(lim), 2), "getlimit")
        res["heap"] = lim.value
        res["bad_limit"] = cu.cuCtxGetLimit(byref(lim), 99)
        lo, hi = c_int(), c_int()
        ck(cu.cuCtxGetStreamPriorityRange(byref(lo), byref(hi)), "prio")
        res["prio"] = [lo.value, hi.value]
        can = c_int()
        ck(cu.cuDeviceCanAccessPeer(byref(can), 0, 1), "peer")
        res["peer"] = can.value
        bus = ctypes.create_string_buffer(32)
        ck(cu.cuDeviceGetPCIBusId(bus, 32, 1), "busid")
        d = c_int(-1)
        ck(cu.cuDeviceGetByPCIBusId(byref(d), bus.value), "bybus")
        res["bybus"] = d.value
        res["bybus_unknown"] = cu.cuDeviceGetByPCIBusId(byref(d), b"0000:ff:1f.7")
        flags, active = c_uint(), c_int()
        ck(cu.cuDevicePrimaryCtxGetState(1, byref(flags), byref(active)), "state1")
        res["dev1_active"] = active.value
        ck(cu.cuDevicePrimaryCtxSetFlags_v2(1, 4), "setflags")
        ck(cu.cuDevicePrimaryCtxGetState(1, byref(flags), byref(active)), "state1b")
        res["dev1_flags"] = flags.value
        ck(cu.cuDevicePrimaryCtxGetState(0, byref(flags), byref(active)), "state0")
        res["dev0_active"] = active.value
        # async copies and memsets on the default stream, checked through synchronous reads
        rc, p = alloc(4096)
        ck(rc, "alloc")
        ck(cu.cuMemsetD16Async(c_u64(p), ctypes.c_ushort(0xBEEF), c_size_t(8), None), "memset16")
        out = (ctypes.c_ushort * 8)()
        ck(cu.cuMemcpyDtoHAsync_v2(out, c_u64(p), c_size_t(16), None), "dtohasync")
        res["d16"] = list(out)
        base, size = c_u64(), c_size_t()
        ck(cu.cuMemGetAddressRange_v2(byref(base), byref(size), c_u64(p + 100)), "range")
        res["range"] = [base.value == p, size.value]
        mt = c_uint()
        ck(cu.cuPointerGetAttribute(byref(mt), 2, c_u64(p)), "memtype")
        res["memtype_dev"] = mt.value
        h = ctypes.c_void_p()
        ck(cu.cuMemAllocHost_v2(byref(h), c_size_t(4096)), "hostalloc")
        ck(cu.cuPointerGetAttribute(byref(mt), 2, c_u64(h.value)), "memtype host")
        res["memtype_host"] = mt.value
        res["unknown_ptr"] = cu.cuPointerGetAttribute(byref(mt), 2, c_u64(12345))
        res["bad_stream"] = cu.cuMemcpyAsync(c_u64(p), c_u64(p), c_size_t(4), ctypes.c_void_p(0xdead0))
        # stubs are what cuGetProcAddress hands out for names the model lacks
        fn, status = ctypes.c_void_p(), c_int(-1)
        ck(cu.cuGetProcAddress_v2(b"cuGraphCreate", byref(fn), 12000, c_u64(0), byref(status)), "gpa")
        res["graph_via_gpa"] = ctypes.CFUNCTYPE(c_int)(fn.value)()
        res["export_table"] = cu.cuGetExportTable(byref(ctypes.c_void_p()), (ctypes.c_char * 16)())
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    assert res["api"] == 3020
    assert res["heap"] == 64 << 20 and res["bad_limit"] == 1
    assert res["prio"] == [0, -5]
    assert res["peer"] == 1
    assert res["bybus"] == 1 and res["bybus_unknown"] == 101
    assert res["dev1_active"] == 0 and res["dev1_flags"] == 4 and res["dev0_active"] == 1
    assert res["d16"] == [0xBEEF] * 8
    assert res["range"] == [True, 4096]
    assert res["memtype_dev"] == 2 and res["memtype_host"] == 1 and res["unknown_ptr"] == 1
    assert res["bad_stream"] == 400
    assert res["graph_via_gpa"] == 801
    assert res["export_table"] == 801


def test_trace_records_proc_queries_and_export_tables(
    tmp_path: Path, make_state: Callable[..., DeviceState]
) -> None:
    """HAMI_EMU_CUDA_TRACE is how one learns what a client (libcudart) asks of the driver."""
    st = make_state({"model": "L4", "count": 1})
    trace = tmp_path / "trace.log"
    code = textwrap.dedent("""
        fn, status = ctypes.c_void_p(), c_int(-1)
        for name in (b"cuMemAlloc", b"cuGraphCreate", b"cuNoSuchThing"):
            cu.cuGetProcAddress_v2(name, byref(fn), 13000, c_u64(0), byref(status))
        table_id = (ctypes.c_char * 16)(*range(16))
        emit(cu.cuGetExportTable(byref(ctypes.c_void_p()), table_id))
    """)
    assert run_snippet(code, child_env(st, HAMI_EMU_CUDA_TRACE=str(trace))) == 801
    assert trace.read_text().splitlines() == [
        "proc cuMemAlloc 13000 0 -> found",
        "proc cuGraphCreate 13000 0 -> unsupported-stub",
        "proc cuNoSuchThing 13000 0 -> missing",
        "export-table 000102030405060708090a0b0c0d0e0f -> 801",
    ]


def test_nvml_board_properties(make_state: Callable[..., DeviceState]) -> None:
    st = make_state(
        {"gpus": [{"model": "H100-SXM5-80GB", "count": 1}, {"model": "Tesla T4", "count": 1}]}, name="mixed"
    )
    st.raise_xid(0, 48)
    st.raise_xid(0, 48)
    st.raise_xid(0, 31)
    code = textwrap.dedent("""
        ck(nv.nvmlInit_v2(), "init")
        res = {}
        def u(fn, h, *extra):
            v = c_uint(0xdead)
            rc = getattr(nv, fn)(h, *extra, byref(v))
            return [rc, v.value]
        for i in range(2):
            rc, h = nvml_handle(i)
            ck(rc, "handle")
            r = {n: u(n, h) for n in ("nvmlDeviceGetArchitecture", "nvmlDeviceGetPersistenceMode",
                                      "nvmlDeviceGetComputeMode", "nvmlDeviceGetPerformanceState",
                                      "nvmlDeviceGetMaxPcieLinkGeneration", "nvmlDeviceGetCurrPcieLinkWidth",
                                      "nvmlDeviceGetPowerManagementLimit", "nvmlDeviceGetMaxMigDeviceCount",
                                      "nvmlDeviceIsMigDeviceHandle", "nvmlDeviceGetMultiGpuBoard")}
            lo, hi = c_uint(), c_uint()
            r["constraints"] = [nv.nvmlDeviceGetPowerManagementLimitConstraints(h, byref(lo), byref(hi)),
                                lo.value, hi.value]
            cnt = ctypes.c_ulonglong(99)
            r["dbe"] = [nv.nvmlDeviceGetTotalEccErrors(h, 1, 0, byref(cnt)), cnt.value]
            ck(nv.nvmlDeviceGetTotalEccErrors(h, 0, 0, byref(cnt)), "corrected")
            r["corrected"] = cnt.value
            res[str(i)] = r
        name = ctypes.create_string_buffer(64)
        res["self_name"] = [nv.nvmlSystemGetProcessName(os.getpid(), name, 64), name.value.decode()]
        res["tiny_buffer"] = nv.nvmlSystemGetProcessName(os.getpid(), name, 2)
        n = c_uint(5)
        res["units"] = [nv.nvmlUnitGetCount(byref(n)), n.value]
        rc, h = nvml_handle(0)
        lists = []
        for fn in ("nvmlDeviceGetGraphicsRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses_v2",
                   "nvmlDeviceGetMPSComputeRunningProcesses"):
            n = c_uint(5)
            lists.append([getattr(nv, fn)(h, byref(n), None), n.value])
        res["empty_lists"] = lists
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    h100, t4 = res["0"], res["1"]
    assert h100["nvmlDeviceGetArchitecture"] == [0, 9] and t4["nvmlDeviceGetArchitecture"] == [0, 6]
    assert h100["nvmlDeviceGetPersistenceMode"] == [0, 1] and h100["nvmlDeviceGetComputeMode"] == [0, 0]
    assert h100["nvmlDeviceGetPerformanceState"] == [0, 0]
    assert h100["nvmlDeviceGetMaxPcieLinkGeneration"] == [0, 5]
    assert t4["nvmlDeviceGetMaxPcieLinkGeneration"] == [0, 3]
    assert h100["nvmlDeviceGetCurrPcieLinkWidth"] == [0, 16]
    assert h100["nvmlDeviceGetPowerManagementLimit"] == [0, st.gpus[0].power_limit_mw]
    assert h100["constraints"] == [0, st.gpus[0].power_limit_mw // 4, st.gpus[0].power_limit_mw]
    assert h100["nvmlDeviceGetMaxMigDeviceCount"] == [0, 7]
    assert t4["nvmlDeviceGetMaxMigDeviceCount"][0] == 3  # NVML_ERROR_NOT_SUPPORTED: no MIG on a T4
    assert h100["nvmlDeviceIsMigDeviceHandle"] == [0, 0] and h100["nvmlDeviceGetMultiGpuBoard"] == [0, 0]
    assert h100["dbe"] == [0, 2] and t4["dbe"] == [0, 0] and h100["corrected"] == 0
    assert res["self_name"][0] == 0 and res["self_name"][1].startswith("python")
    assert res["tiny_buffer"] == 7  # NVML_ERROR_INSUFFICIENT_SIZE
    assert res["units"] == [0, 0]
    assert res["empty_lists"] == [[0, 0]] * 3


def test_every_entry_point_libcudart_asks_for_resolves(make_state: Callable[..., DeviceState]) -> None:
    """libcudart resolves its whole driver table before it asks for the export tables; every public entry
    point it names (data/cudart13_driver_queries.txt) resolves here, to a real function or a stub."""
    names = _names("cudart13_driver_queries.txt")
    assert len(names) > 300
    st = make_state({"model": "A100-SXM4-80GB", "count": 1})
    code = textwrap.dedent(f"""
        fn, status = ctypes.c_void_p(), c_int(-1)
        bad = []
        for name in {names!r}:
            rc = cu.cuGetProcAddress_v2(name.encode(), byref(fn), 13000, c_u64(0), byref(status))
            if rc or not fn.value or status.value:
                bad.append([name, rc, status.value])
        emit(bad)
    """)
    assert run_snippet(code, child_env(st)) == []


def test_stream_queries_and_array_descriptors(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 1})
    code = textwrap.dedent("""
        cuda_ctx()
        res = {}
        s = ctypes.c_void_p()
        ck(cu.cuStreamCreateWithPriority(byref(s), 1, -9), "stream")
        prio, flags, dev, sid = c_int(), c_uint(), c_int(-1), ctypes.c_ulonglong()
        ck(cu.cuStreamGetPriority(s, byref(prio)), "prio")
        ck(cu.cuStreamGetFlags(s, byref(flags)), "flags")
        ck(cu.cuStreamGetDevice(s, byref(dev)), "dev")
        ck(cu.cuStreamGetId(s, byref(sid)), "id")
        res["stream"] = [prio.value, flags.value, dev.value, sid.value > 2]
        # a host function runs after the stream's queued kernels
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuModuleLoadData(byref(mod), b"HAMIEMU-KERNEL name=nap duration_us=50000\\n"), "load")
        ck(cu.cuModuleGetFunction(byref(fn), mod, b"nap"), "getfn")
        name = ctypes.c_char_p()
        ck(cu.cuFuncGetName(byref(name), fn), "name")
        res["name"] = name.value.decode()
        t0 = time.monotonic()
        ck(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, s, None, None), "launch")
        seen = []
        HOSTFN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        cb = HOSTFN(lambda _: seen.append(time.monotonic() - t0))
        ck(cu.cuLaunchHostFunc(s, cb, None), "hostfn")
        res["host_after_kernel"] = seen[0] >= 0.045
        # another stream waiting on an event recorded behind the kernel inherits its completion time
        other, ev = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuStreamCreate(byref(other), 0), "other")
        ck(cu.cuEventCreate(byref(ev), 0), "event")
        ck(cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, s, None, None), "launch2")
        ck(cu.cuEventRecordWithFlags(ev, s, 0), "record")
        ck(cu.cuStreamWaitEvent(other, ev, 0), "wait")
        res["other_busy"] = cu.cuStreamQuery(other)
        blocks = c_int()
        ck(cu.cuOccupancyMaxActiveBlocksPerMultiprocessor(byref(blocks), fn, 256, c_size_t(0)), "occ")
        res["occupancy"] = blocks.value
        class Arr3D(ctypes.Structure):
            _fields_ = [("Width", c_size_t), ("Height", c_size_t), ("Depth", c_size_t), ("Format", c_int),
                        ("NumChannels", c_uint), ("Flags", c_uint)]
        a, d = ctypes.c_void_p(), Arr3D()
        ck(cu.cuArray3DCreate_v2(byref(a), byref(Arr3D(64, 32, 8, 0x20, 2, 0))), "array")
        ck(cu.cuArray3DGetDescriptor_v2(byref(d), a), "desc")
        res["desc"] = [d.Width, d.Height, d.Depth, d.Format, d.NumChannels]
        mode = c_int()
        ck(cu.cuModuleGetLoadingMode(byref(mode)), "mode")
        res["lazy"] = mode.value
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    assert res["stream"] == [-5, 1, 0, True]
    assert res["name"] == "nap"
    assert res["host_after_kernel"]
    assert res["other_busy"] == 600  # CUDA_ERROR_NOT_READY until the awaited kernel ends
    assert res["occupancy"] == 8  # 2048 threads per SM / 256
    assert res["desc"] == [64, 32, 8, 0x20, 2]
    assert res["lazy"] == 2


def test_2d_memsets_pointer_attributes_and_managed_hints(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 2})
    code = textwrap.dedent("""
        cuda_ctx()
        res = {}
        rc, p = alloc(4096)
        ck(rc, "alloc")
        ck(cu.cuMemsetD8_v2(c_u64(p), 0, c_size_t(4096)), "clear")
        # 3 rows of 4 shorts at a pitch of 16 bytes
        pitch, width, height = c_size_t(16), c_size_t(4), c_size_t(3)
        ck(cu.cuMemsetD2D16_v2(c_u64(p), pitch, ctypes.c_ushort(0x0101), width, height), "2d16")
        out = (ctypes.c_ubyte * 48)()
        ck(cu.cuMemcpyDtoH_v2(out, c_u64(p), c_size_t(48)), "dtoh")
        res["rows"] = [list(out[r * 16:(r + 1) * 16]) for r in range(3)]
        res["overlap"] = cu.cuMemsetD2D32_v2(c_u64(p), c_size_t(8), c_uint(1), c_size_t(4), c_size_t(2))
        res["past_end"] = cu.cuMemsetD2D8Async(c_u64(p), c_size_t(4096), ctypes.c_ubyte(1), c_size_t(1),
                                               c_size_t(2), None)
        # several attributes at once; a plain host pointer reads as unknown memory instead of failing
        mt, managed, ordinal = c_uint(9), c_int(9), c_int(9)
        attrs = (c_int * 3)(2, 8, 9)
        data = (ctypes.c_void_p * 3)(*[ctypes.addressof(x) for x in (mt, managed, ordinal)])
        ck(cu.cuPointerGetAttributes(3, attrs, data, c_u64(p)), "attrs")
        res["device_ptr"] = [mt.value, managed.value, ordinal.value]
        host = ctypes.create_string_buffer(64)
        ck(cu.cuPointerGetAttributes(3, attrs, data, c_u64(ctypes.addressof(host))), "attrs host")
        res["host_ptr"] = [mt.value, ordinal.value]
        m = c_u64()
        ck(cu.cuMemAllocManaged(byref(m), c_size_t(1 << 20), 1), "managed")
        ck(cu.cuPointerGetAttributes(3, attrs, data, m), "attrs managed")
        res["managed_flag"] = managed.value
        class Loc(ctypes.Structure):
            _fields_ = [("type", c_int), ("id", c_int)]
        res["advise"] = cu.cuMemAdvise_v2(m, c_size_t(4096), 3, Loc(1, 1))
        res["advise_plain"] = cu.cuMemAdvise_v2(c_u64(p), c_size_t(4096), 3, Loc(1, 0))
        res["advise_bad_dev"] = cu.cuMemAdvise_v2(m, c_size_t(4096), 3, Loc(1, 7))
        res["prefetch"] = cu.cuMemPrefetchAsync_v2(m, c_size_t(1 << 20), Loc(2, 0), 0, None)
        res["prefetch_too_long"] = cu.cuMemPrefetchAsync_v2(m, c_size_t(2 << 20), Loc(1, 0), 0, None)
        v = c_int(-1)
        ck(cu.cuDeviceGetP2PAttribute(byref(v), 2, 0, 1), "p2p")
        res["p2p_access"] = v.value
        res["p2p_self"] = cu.cuDeviceGetP2PAttribute(byref(v), 2, 0, 0)
        mod = ctypes.c_void_p()
        ck(cu.cuModuleLoadData(byref(mod), b"HAMIEMU-KERNEL name=k duration_us=1\\n"), "load")
        res["global"] = cu.cuModuleGetGlobal_v2(byref(c_u64()), byref(c_size_t()), mod, b"counter")
        cfg = c_int(-1)
        ck(cu.cuCtxGetSharedMemConfig(byref(cfg)), "smem")
        res["smem"] = cfg.value
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    row = [1] * 8 + [0] * 8
    assert res["rows"] == [row, row, row]
    assert res["overlap"] == 1 and res["past_end"] == 1
    assert res["device_ptr"] == [2, 0, 0]
    assert res["host_ptr"] == [0, -2]
    assert res["managed_flag"] == 1
    assert res["advise"] == 0 and res["advise_plain"] == 1 and res["advise_bad_dev"] == 101
    assert res["prefetch"] == 0 and res["prefetch_too_long"] == 1
    assert res["p2p_access"] == 1 and res["p2p_self"] == 101
    assert res["global"] == 500
    assert res["smem"] == 1
