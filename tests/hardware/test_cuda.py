"""ctypes programs against the emulated libcuda.so.1 (and NVML watching them), in child processes."""

from __future__ import annotations

import os
import signal
import textwrap
from collections.abc import Callable

from testbed.hardware.state import DeviceState

from .conftest import MIB, child_env, read_result, run_snippet, start_snippet

FILL_IMAGE = (
    "HAMIEMU-KERNEL name=fill op=fill\\n"
    "HAMIEMU-KERNEL name=spin duration_param=0 unit=ms\\n"
    "HAMIEMU-KERNEL name=nap duration_us=1000\\n"
)


def test_alloc_copy_kernel_and_nvml_view(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-PCIE-40GB", "count": 1, "memory_mib": 4096, "context_mib": 0})
    code = textwrap.dedent(f"""
        cuda_ctx()
        res = {{}}
        free0, total = mem_info()
        rc, p = alloc(3 * 1024 * 1024)
        ck(rc, "alloc")
        free1, _ = mem_info()
        src = (ctypes.c_ubyte * 4096)(*range(256) * 16) if False else (ctypes.c_ubyte * 4096)(*([7] * 4096))
        ck(cu.cuMemcpyHtoD_v2(c_u64(p), src, c_size_t(4096)), "htod")
        rc2, q = alloc(4096)
        ck(cu.cuMemcpyDtoD_v2(c_u64(q), c_u64(p), c_size_t(4096)), "dtod")
        out = (ctypes.c_ubyte * 4096)()
        ck(cu.cuMemcpyDtoH_v2(out, c_u64(q), c_size_t(4096)), "dtoh")
        res["roundtrip"] = bytes(out) == bytes(src)
        ck(cu.cuMemsetD8_v2(c_u64(q), 0xAB, c_size_t(100)), "memset")
        ck(cu.cuMemcpyDtoH_v2(out, c_u64(q), c_size_t(4096)), "dtoh2")
        res["memset"] = [out[0], out[99], out[100]]
        # an emulated kernel that writes device memory
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuModuleLoadData(byref(mod), b"{FILL_IMAGE}"), "load")
        ck(cu.cuModuleGetFunction(byref(fn), mod, b"fill"), "getfn")
        dst, n, val = c_u64(p), c_size_t(1000), c_uint(0x42)
        params = (ctypes.c_void_p * 3)(*[ctypes.cast(byref(x), ctypes.c_void_p) for x in (dst, n, val)])
        ck(cu.cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, None, params, None), "launch")
        ck(cu.cuCtxSynchronize(), "sync")
        ck(cu.cuMemcpyDtoH_v2(out, c_u64(p), c_size_t(4096)), "dtoh3")
        res["filled"] = [out[0], out[999], out[1000]]
        # NVML in the same process sees this process and its memory
        ck(nv.nvmlInit_v2())
        rc, h = nvml_handle(0)
        class P(ctypes.Structure):
            _fields_ = [("pid", c_uint), ("used", ctypes.c_ulonglong), ("gi", c_uint), ("ci", c_uint)]
        cnt = c_uint(0)
        res["procs_probe"] = nv.nvmlDeviceGetComputeRunningProcesses_v3(h, byref(cnt), None)
        arr = (P * 4)()
        cnt = c_uint(4)
        ck(nv.nvmlDeviceGetComputeRunningProcesses_v3(h, byref(cnt), arr), "procs")
        res["procs"] = [[arr[i].pid, arr[i].used, arr[i].gi] for i in range(cnt.value)]
        res["pid"] = os.getpid()
        ck(cu.cuMemFree_v2(c_u64(p)), "free")
        ck(cu.cuMemFree_v2(c_u64(q)), "free2")
        free2, _ = mem_info()
        res["mem"] = [free0, total, free1, free2]
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    total = 4096 * MIB
    assert res["mem"] == [total, total, total - 3 * MIB, total]
    assert res["roundtrip"] is True
    assert res["memset"] == [0xAB, 0xAB, 7]
    assert res["filled"] == [0x42, 0x42, 7]
    assert res["procs_probe"] == 7  # INSUFFICIENT_SIZE tells the caller how many to expect
    assert res["procs"] == [[res["pid"], 3 * MIB + 4096, 0xFFFFFFFF]]
    # the process has exited: its context and memory are gone from the card
    assert st.usage(0).used_bytes == 0 and st.usage(0).processes == ()


def test_kernel_time_shows_as_utilisation(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "H100-SXM5-80GB", "count": 2})
    code = textwrap.dedent(f"""
        cuda_ctx(1)
        ck(nv.nvmlInit_v2())
        _, h0 = nvml_handle(0)
        _, h1 = nvml_handle(1)
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuModuleLoadData(byref(mod), b"{FILL_IMAGE}"), "load")
        ck(cu.cuModuleGetFunction(byref(fn), mod, b"spin"), "getfn")
        ms = c_u64(1500)
        params = (ctypes.c_void_p * 1)(ctypes.cast(byref(ms), ctypes.c_void_p))
        start, end = ctypes.c_void_p(), ctypes.c_void_p()
        ck(cu.cuEventCreate(byref(start), 0)); ck(cu.cuEventCreate(byref(end), 0))
        before = nvml_util(h1)
        ck(cu.cuEventRecord(start, None), "rec")
        ck(cu.cuLaunchKernel(fn, 132, 1, 1, 256, 1, 1, 0, None, params, None), "launch")
        ck(cu.cuEventRecord(end, None), "rec2")
        pending = cu.cuEventQuery(end)
        busy = 0
        while busy < 100:           # the 200 ms window fills up while the kernel runs
            time.sleep(0.02)
            busy = nvml_util(h1)
        other = nvml_util(h0)
        class Sample(ctypes.Structure):
            _fields_ = [("pid", c_uint), ("ts", ctypes.c_ulonglong), ("sm", c_uint), ("mem", c_uint),
                        ("enc", c_uint), ("dec", c_uint)]
        cnt = c_uint(0)
        probe = nv.nvmlDeviceGetProcessUtilization(h1, None, byref(cnt), ctypes.c_ulonglong(0))
        samples = (Sample * 4)()
        cnt = c_uint(4)
        ck(nv.nvmlDeviceGetProcessUtilization(h1, samples, byref(cnt), ctypes.c_ulonglong(0)), "procutil")
        per_pid = [[samples[i].pid, samples[i].sm] for i in range(cnt.value)]
        none_other = nv.nvmlDeviceGetProcessUtilization(h0, None, byref(cnt), ctypes.c_ulonglong(0))
        ck(cu.cuEventSynchronize(end), "evsync")
        ms_out = ctypes.c_float()
        ck(cu.cuEventElapsedTime(byref(ms_out), start, end), "elapsed")
        idle = busy
        while idle > 0:             # and drains after it finished
            time.sleep(0.02)
            idle = nvml_util(h1)
        emit({{"before": before, "busy": busy, "other": other, "pending": pending, "elapsed": ms_out.value,
              "idle": idle, "probe": probe, "per_pid": per_pid, "none_other": none_other,
              "pid": os.getpid()}})
    """)
    res = run_snippet(code, child_env(st, HAMI_EMU_UTIL_WINDOW_MS="200"))
    assert res["before"] == 0 and res["busy"] == 100 and res["idle"] == 0
    assert res["other"] == 0  # the kernel ran on the second card only
    # per-process SM utilisation (what the enforcement shim's limiter samples)
    assert res["probe"] == 7 and res["per_pid"] == [[res["pid"], 100]] and res["none_other"] == 6
    assert res["pending"] == 600  # CUDA_ERROR_NOT_READY while the kernel is still running
    assert res["elapsed"] >= 1500.0
    assert st.usage(1).kernel_launches == 1 and st.usage(0).kernel_launches == 0


def test_out_of_memory_at_card_size(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "Tesla T4", "count": 1, "memory_mib": 1024, "context_mib": 0})
    code = textwrap.dedent("""
        cuda_ctx()
        ok = 0
        while True:
            rc, p = alloc(128 * 1024 * 1024)
            if rc:
                break
            ok += 1
        free, total = mem_info()
        emit({"ok": ok, "rc": rc, "free": free, "total": total, "over": alloc(total + 1)[0],
              "small_after": alloc(1)[0]})
    """)
    res = run_snippet(code, child_env(st))
    assert res == {"ok": 8, "rc": 2, "free": 0, "total": 1024 * MIB, "over": 2, "small_after": 2}


HOLDER = textwrap.dedent("""
    cuda_ctx()
    rc, p = alloc(int(sys.argv[1]) if len(sys.argv) > 1 else 600 * 1024 * 1024)
    emit({"rc": rc, "pid": os.getpid()})
    sys.stdin.readline()
""")


def test_two_processes_share_one_card(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "L4", "count": 1, "memory_mib": 1000, "context_mib": 0})
    holder = start_snippet(HOLDER, child_env(st))
    try:
        first = read_result(holder)
        assert first["rc"] == 0
        code = textwrap.dedent("""
            cuda_ctx()
            res = {"too_much": alloc(600 * 1024 * 1024)[0], "fits": alloc(300 * 1024 * 1024)[0]}
            res["free"] = mem_info()[0]
            ck(nv.nvmlInit_v2())
            _, h = nvml_handle(0)
            class M(ctypes.Structure):
                _fields_ = [(k, ctypes.c_ulonglong) for k in ("total", "free", "used")]
            m = M()
            ck(nv.nvmlDeviceGetMemoryInfo(h, byref(m)))
            res["nvml_used"] = m.used
            emit(res)
        """)
        res = run_snippet(code, child_env(st))
        assert res == {"too_much": 2, "fits": 0, "free": 100 * MIB, "nvml_used": 900 * MIB}
        usage = st.usage(0)
        assert [p.pid for p in usage.processes] == [first["pid"]]  # the second process has exited
        assert usage.used_bytes == 600 * MIB
    finally:
        holder.kill()  # SIGKILL: no exit handler runs, the dead pid must be reclaimed
        holder.wait()
    assert st.usage(0).used_bytes == 0
    res = run_snippet("cuda_ctx()\nemit([alloc(900 * 1024 * 1024)[0], mem_info()[0]])", child_env(st))
    assert res == [0, 100 * MIB]


def test_vmm_streams_and_async_allocations(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "H200", "count": 1, "memory_mib": 2048, "context_mib": 0})
    code = textwrap.dedent("""
        cuda_ctx()
        res = {}
        class Prop(ctypes.Structure):
            _fields_ = [("type", c_int), ("handleTypes", c_int), ("loc_type", c_int), ("loc_id", c_int),
                        ("win32", ctypes.c_void_p), ("flags", ctypes.c_ubyte * 8)]
        class Access(ctypes.Structure):
            _fields_ = [("loc_type", c_int), ("loc_id", c_int), ("flags", c_int)]
        prop = Prop(1, 0, 1, 0)
        gran = c_size_t()
        ck(cu.cuMemGetAllocationGranularity(byref(gran), byref(prop), 0), "gran")
        res["gran"] = gran.value
        size = 4 * gran.value
        handle = ctypes.c_ulonglong()
        odd = c_size_t(gran.value + 1)
        res["create_odd"] = cu.cuMemCreate(byref(handle), odd, byref(prop), ctypes.c_ulonglong(0))
        ck(cu.cuMemCreate(byref(handle), c_size_t(size), byref(prop), ctypes.c_ulonglong(0)), "create")
        va = c_u64()
        zero = ctypes.c_ulonglong(0)
        ck(cu.cuMemAddressReserve(byref(va), c_size_t(size), c_size_t(0), c_u64(0), zero), "reserve")
        res["copy_unmapped"] = cu.cuMemsetD8_v2(va, 1, c_size_t(16))
        ck(cu.cuMemMap(va, c_size_t(size), c_size_t(0), handle, ctypes.c_ulonglong(0)), "map")
        acc = Access(1, 0, 3)
        ck(cu.cuMemSetAccess(va, c_size_t(size), byref(acc), c_size_t(1)), "access")
        ck(cu.cuMemsetD8_v2(va, 9, c_size_t(size)), "memset")
        out = (ctypes.c_ubyte * 8)()
        ck(cu.cuMemcpyDtoH_v2(out, c_u64(va.value + size - 8), c_size_t(8)), "dtoh")
        res["vmm_data"] = list(out)
        res["used_mapped"] = st_used = 2048 * 1024 * 1024 - mem_info()[0]
        ck(cu.cuMemUnmap(va, c_size_t(size)), "unmap")
        ck(cu.cuMemRelease(handle), "release")
        ck(cu.cuMemAddressFree(va, c_size_t(size)), "addrfree")
        res["used_released"] = 2048 * 1024 * 1024 - mem_info()[0]
        # streams, async and managed allocations
        s = ctypes.c_void_p()
        ck(cu.cuStreamCreate(byref(s), 1), "stream")
        p = c_u64()
        ck(cu.cuMemAllocAsync(byref(p), c_size_t(5 * 1024 * 1024), s), "allocasync")
        m = c_u64()
        ck(cu.cuMemAllocManaged(byref(m), c_size_t(1024 * 1024), 1), "managed")
        pitch = c_size_t()
        pp = c_u64()
        ck(cu.cuMemAllocPitch_v2(byref(pp), byref(pitch), c_size_t(1000), c_size_t(10), c_uint(4)), "pitch")
        res["pitch"] = pitch.value
        res["used_async"] = 2048 * 1024 * 1024 - mem_info()[0]
        ck(cu.cuMemFreeAsync(p, s), "freeasync")
        ck(cu.cuStreamSynchronize(s), "ssync")
        res["stream_query"] = cu.cuStreamQuery(s)
        ck(cu.cuStreamDestroy_v2(s), "sdestroy")
        res["stream_again"] = cu.cuStreamDestroy_v2(s)
        # a regular context: its allocations go when it is destroyed
        ctx = ctypes.c_void_p()
        ck(cu.cuCtxCreate_v2(byref(ctx), 0, 0), "ctxcreate")
        ck(alloc(64 * 1024 * 1024)[0], "ctxalloc")
        before = mem_info()[0]
        ck(cu.cuCtxDestroy_v2(ctx), "ctxdestroy")
        cur = ctypes.c_void_p()
        ck(cu.cuCtxGetCurrent(byref(cur)))
        res["ctx_freed"] = before
        res["current_after_destroy_is_primary"] = cur.value is not None
        res["after_destroy"] = mem_info()[0] - before
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    two = 2 * MIB
    assert res["gran"] == two and res["create_odd"] == 1 and res["copy_unmapped"] == 1
    assert res["vmm_data"] == [9] * 8
    assert res["used_mapped"] == 4 * two and res["used_released"] == 0
    assert res["pitch"] == 1024
    assert res["used_async"] == 5 * MIB + MIB + 1024 * 10
    assert res["stream_query"] == 0 and res["stream_again"] == 400
    assert res["after_destroy"] == 64 * MIB and res["current_after_destroy_is_primary"] is True


def test_get_proc_address_versions_and_error_names(make_state: Callable[..., DeviceState]) -> None:
    st = make_state()
    code = textwrap.dedent("""
        res = {}
        addr = lambda name: ctypes.cast(getattr(cu, name), ctypes.c_void_p).value
        def gpa(sym, ver, v2=True):
            fn, status = ctypes.c_void_p(), c_int(-1)
            if v2:
                rc = cu.cuGetProcAddress_v2(sym, byref(fn), ver, c_u64(0), byref(status))
            else:
                rc = cu.cuGetProcAddress(sym, byref(fn), ver, c_u64(0))
            return rc, fn.value, status.value
        res["alloc12"] = gpa(b"cuMemAlloc", 12040)[1] == addr("cuMemAlloc_v2")
        res["ctx12_4"] = gpa(b"cuCtxCreate", 12040)[1] == addr("cuCtxCreate_v2")
        res["ctx13"] = gpa(b"cuCtxCreate", 13000)[1] == addr("cuCtxCreate_v4")
        res["uuid11"] = gpa(b"cuDeviceGetUuid", 11000)[1] == addr("cuDeviceGetUuid")
        res["uuid12"] = gpa(b"cuDeviceGetUuid", 12000)[1] == addr("cuDeviceGetUuid_v2")
        res["gpa_v1"] = gpa(b"cuGetProcAddress", 11080, False)[1] == addr("cuGetProcAddress")
        res["too_old"] = gpa(b"cuMemAllocAsync", 11000)
        res["unknown"] = gpa(b"cuNoSuchThing", 12000)
        res["versioned_name"] = gpa(b"cuMemAlloc_v2", 12000)[0]
        res["null"] = cu.cuGetProcAddress_v2(None, None, 12000, c_u64(0), None)
        s = ctypes.c_char_p()
        res["name"] = [cu.cuGetErrorName(2, byref(s)), s.value.decode()]
        res["string"] = [cu.cuGetErrorString(100, byref(s)), s.value.decode()]
        res["bad_code"] = cu.cuGetErrorName(12345, byref(s))
        v = c_int()
        res["version_before_init"] = [cu.cuDriverGetVersion(byref(v)), v.value]
        emit(res)
    """)
    res = run_snippet(code, child_env(st))
    assert res == {
        "alloc12": True,
        "ctx12_4": True,
        "ctx13": True,
        "uuid11": True,
        "uuid12": True,
        "gpa_v1": True,
        "too_old": [500, None, 2],
        "unknown": [500, None, 1],
        "versioned_name": 500,
        "null": 1,
        "name": [0, "CUDA_ERROR_OUT_OF_MEMORY"],
        "string": [0, "no CUDA-capable device is detected"],
        "bad_code": 1,
        "version_before_init": [0, 13000],
    }


def test_cuda_bad_input_faults_and_visibility(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 3, "memory_mib": 1024, "context_mib": 0})
    code = textwrap.dedent("""
        res = {"before_init": cu.cuDeviceGetCount(byref(c_int())), "bad_flags": cu.cuInit(1)}
        ck(cu.cuInit(0))
        n = c_int()
        ck(cu.cuDeviceGetCount(byref(n)))
        res["count"] = n.value
        names = []
        for i in range(n.value):
            u = (ctypes.c_ubyte * 16)()
            ck(cu.cuDeviceGetUuid_v2(u, i))
            names.append(bytes(u).hex())
        res["uuids"] = names
        dev = c_int()
        res["bad_ordinal"] = cu.cuDeviceGet(byref(dev), 7)
        res["null_out"] = cu.cuDeviceGet(None, 0)
        nm = ctypes.create_string_buffer(8)
        res["short_name"] = [cu.cuDeviceGetName(nm, 8, 0), nm.value.decode()]
        res["attr_bad_dev"] = cu.cuDeviceGetAttribute(byref(c_int()), 16, 9)
        res["attr_bad"] = cu.cuDeviceGetAttribute(byref(c_int()), 99999, 0)
        sm = c_int()
        ck(cu.cuDeviceGetAttribute(byref(sm), 16, 0))
        res["sm"] = sm.value
        res["alloc_no_ctx"] = alloc(1024)[0]
        cuda_ctx()
        res["alloc_zero"] = alloc(0)[0]
        res["alloc_null"] = cu.cuMemAlloc_v2(None, c_size_t(16))
        res["alloc_huge"] = alloc(1 << 40)[0]
        res["free_bogus"] = cu.cuMemFree_v2(c_u64(0x1234))
        rc, p = alloc(4096)
        buf = (ctypes.c_ubyte * 8192)()
        res["copy_overrun"] = cu.cuMemcpyHtoD_v2(c_u64(p), buf, c_size_t(8192))
        res["copy_null_host"] = cu.cuMemcpyHtoD_v2(c_u64(p), None, c_size_t(16))
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        res["bad_image"] = cu.cuModuleLoadData(byref(mod), b"not a kernel")
        res["bad_kernel_line"] = cu.cuModuleLoadData(byref(mod), b"HAMIEMU-KERNEL op=fill")
        ck(cu.cuModuleLoadData(byref(mod), b"HAMIEMU-KERNEL name=k duration_param=0"), "load")
        res["no_such_fn"] = cu.cuModuleGetFunction(byref(fn), mod, b"other")
        ck(cu.cuModuleGetFunction(byref(fn), mod, b"k"))
        res["launch_no_params"] = cu.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, None, None, None)
        res["launch_zero_grid"] = cu.cuLaunchKernel(fn, 0, 1, 1, 1, 1, 1, 0, None, None, None)
        res["launch_big_block"] = cu.cuLaunchKernel(fn, 1, 1, 1, 1025, 1, 1, 0, None, None, None)
        res["launch_bad_fn"] = cu.cuLaunchKernel(ctypes.c_void_p(64), 1, 1, 1, 1, 1, 1, 0, None, None, None)
        sys.stdout.write("RESULT " + json.dumps({"stage": 1}) + "\\n"); sys.stdout.flush()
        sys.stdin.readline()
        res["fault1"] = alloc(16)[0]
        res["fault2"] = alloc(16)[0]
        res["fault_over"] = alloc(16)[0]
        sys.stdout.write("RESULT " + json.dumps({"stage": 2}) + "\\n"); sys.stdout.flush()
        sys.stdin.readline()
        res["lost_alloc"] = alloc(16)[0]
        res["lost_info"] = cu.cuMemGetInfo_v2(byref(c_size_t()), byref(c_size_t()))
        emit(res)
    """)
    env = child_env(st, "2,0", CUDA_VISIBLE_DEVICES="1")  # CUDA narrows what the container was given
    proc = start_snippet(code, env)
    try:
        assert read_result(proc) == {"stage": 1}
        st.fail_next(0, 2, cuda_code=2)
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert read_result(proc) == {"stage": 2}
        st.raise_xid(0, 79)
        proc.stdin.write("\n")
        proc.stdin.flush()
        res = read_result(proc)
    finally:
        proc.kill()
        proc.wait()
    assert res.pop("uuids") == [st.gpus[0].uuid[4:].replace("-", "")]
    assert res == {
        "before_init": 3,
        "bad_flags": 1,
        "count": 1,
        "bad_ordinal": 101,
        "null_out": 1,
        "short_name": [0, "NVIDIA "],
        "attr_bad_dev": 101,
        "attr_bad": 1,
        "sm": 108,
        "alloc_no_ctx": 201,
        "alloc_zero": 1,
        "alloc_null": 1,
        "alloc_huge": 2,
        "free_bogus": 1,
        "copy_overrun": 1,
        "copy_null_host": 1,
        "bad_image": 200,
        "bad_kernel_line": 200,
        "no_such_fn": 500,
        "launch_no_params": 1,
        "launch_zero_grid": 1,
        "launch_big_block": 1,
        "launch_bad_fn": 400,
        "fault1": 2,
        "fault2": 2,
        "fault_over": 0,
        "lost_alloc": 999,
        "lost_info": 999,
    }


def test_no_visible_device_means_no_device(make_state: Callable[..., DeviceState]) -> None:
    st = make_state()
    code = "emit([cu.cuInit(0), cu.cuDeviceGetCount(byref(c_int())), nv.nvmlInit_v2()])"
    assert run_snippet(code, child_env(st, "none")) == [100, 3, 0]


def test_dead_process_memory_is_reclaimed_by_nvml_reader(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "L4", "count": 1, "memory_mib": 1000, "context_mib": 0})
    holder = start_snippet(HOLDER, child_env(st))
    first = read_result(holder)
    assert first["rc"] == 0 and st.usage(0).used_bytes == 600 * MIB
    os.kill(first["pid"], signal.SIGKILL)
    holder.wait()
    code = textwrap.dedent("""
        ck(nv.nvmlInit_v2())
        _, h = nvml_handle(0)
        cnt = c_uint(0)
        emit([nv.nvmlDeviceGetComputeRunningProcesses_v3(h, byref(cnt), None), cnt.value])
    """)
    assert run_snippet(code, child_env(st)) == [0, 0]
    assert st.usage(0).used_bytes == 0
