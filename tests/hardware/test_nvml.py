"""pynvml (nvidia-ml-py) against the emulated libnvidia-ml.so.1, each run in a child process that has
the environment a container would get from the node agent."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from testbed.hardware.state import DeviceState

from .conftest import child_env, read_result, run_snippet, start_snippet

INVENTORY = textwrap.dedent("""
    import pynvml as n
    n.nvmlInit()
    out = {"driver": n.nvmlSystemGetDriverVersion(), "cuda": n.nvmlSystemGetCudaDriverVersion(),
           "cuda_v2": n.nvmlSystemGetCudaDriverVersion_v2(), "nvml": n.nvmlSystemGetNVMLVersion(), "gpus": []}
    for i in range(n.nvmlDeviceGetCount()):
        h = n.nvmlDeviceGetHandleByIndex(i)
        m1, m2 = n.nvmlDeviceGetMemoryInfo(h), n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2)
        pci = n.nvmlDeviceGetPciInfo(h)
        uuid = n.nvmlDeviceGetUUID(h)
        same = lambda a, b: ctypes.cast(a, ctypes.c_void_p).value == ctypes.cast(b, ctypes.c_void_p).value
        out["gpus"].append({
            "index": n.nvmlDeviceGetIndex(h), "name": n.nvmlDeviceGetName(h), "uuid": uuid,
            "serial": n.nvmlDeviceGetSerial(h), "minor": n.nvmlDeviceGetMinorNumber(h),
            "total": m1.total, "free": m1.free, "used": m1.used,
            "total_v2": m2.total, "reserved_v2": m2.reserved,
            "bus_id": pci.busId.decode() if isinstance(pci.busId, bytes) else pci.busId,
            "bus": pci.bus, "device_id": pci.pciDeviceId,
            "numa": n.nvmlDeviceGetNumaNodeId(h), "cc": list(n.nvmlDeviceGetCudaComputeCapability(h)),
            "mig": list(n.nvmlDeviceGetMigMode(h)), "affinity": list(n.nvmlDeviceGetCpuAffinity(h, 2)),
            "util": n.nvmlDeviceGetUtilizationRates(h).gpu,
            "procs": len(n.nvmlDeviceGetComputeRunningProcesses(h)),
            "temp": n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU),
            "power": n.nvmlDeviceGetPowerUsage(h),
            "max_sm_clock": n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM),
            "nvlink0": n.nvmlDeviceGetNvLinkState(h, 0),
            "by_uuid": same(n.nvmlDeviceGetHandleByUUID(uuid), h),
            "by_pci": same(n.nvmlDeviceGetHandleByPciBusId(pci.busId), h),
            "events": n.nvmlDeviceGetSupportedEventTypes(h),
        })
    hs = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
    out["topo"] = [[n.nvmlDeviceGetTopologyCommonAncestor(a, b) for b in hs] for a in hs]
    n.nvmlShutdown()
    emit(out)
""")

UUIDS = textwrap.dedent("""
    import pynvml as n
    n.nvmlInit()
    emit([n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i)) for i in range(n.nvmlDeviceGetCount())])
""")


def test_pynvml_reports_exact_inventory(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 4, "numa": [0, 0, 1, 1]})
    out = run_snippet(INVENTORY, child_env(st))
    assert (out["driver"], out["cuda"], out["cuda_v2"], out["nvml"]) == (
        "580.65.06",
        13000,
        13000,
        "13.580.65.06",
    )
    assert len(out["gpus"]) == 4
    for got, want in zip(out["gpus"], st.gpus, strict=True):
        assert got["index"] == want.index
        assert got["name"] == "NVIDIA A100-SXM4-80GB" == want.name
        assert got["uuid"] == want.uuid and len(want.uuid) == 40
        assert got["serial"] == want.serial and got["minor"] == want.minor_number
        assert got["total"] == got["total_v2"] == 81920 * 1024 * 1024
        assert (got["used"], got["free"], got["reserved_v2"]) == (0, got["total"], 0)
        assert got["bus_id"] == want.pci_bus_id and got["bus"] == int(want.pci_bus_id.split(":")[1], 16)
        assert got["device_id"] == 0x20B210DE
        assert got["numa"] == want.numa_node
        assert got["cc"] == [8, 0] and got["mig"] == [0, 0]
        assert got["affinity"] == [0xFFFFFFFF << (32 * want.numa_node), 0]
        assert got["util"] == 0 and got["procs"] == 0
        assert got["temp"] > 0 and got["power"] > 0 and got["max_sm_clock"] == 1410
        assert got["nvlink0"] == 1 and got["by_uuid"] and got["by_pci"]
        assert got["events"] & 0x8  # Xid critical errors
    assert [g["numa"] for g in out["gpus"]] == [0, 0, 1, 1]
    # same card, same PCIe switch, same NUMA node, across sockets
    assert out["topo"][0] == [0, 10, 50, 50]
    assert out["topo"][2] == [50, 50, 0, 10]


def test_other_models_and_catalog(make_state: Callable[..., DeviceState]) -> None:
    st = make_state(
        {
            "gpus": [{"model": "Tesla T4", "count": 1}, {"model": "H200", "count": 1, "memory_mib": 100000}],
            "driver_version": "560.35.03",
            "cuda_driver_version": 12060,
        }
    )
    code = textwrap.dedent("""
        import pynvml as n
        n.nvmlInit()
        res = {"driver": n.nvmlSystemGetDriverVersion(), "cuda": n.nvmlSystemGetCudaDriverVersion(),
               "gpus": []}
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            try:
                mig = n.nvmlDeviceGetMigMode(h)
            except n.NVMLError as e:
                mig = e.value
            try:
                link = n.nvmlDeviceGetNvLinkState(h, 0)
            except n.NVMLError as e:
                link = e.value
            res["gpus"].append([n.nvmlDeviceGetName(h), n.nvmlDeviceGetMemoryInfo(h).total,
                                list(n.nvmlDeviceGetCudaComputeCapability(h)), mig, link])
        emit(res)
    """)
    out = run_snippet(code, child_env(st))
    assert out["driver"] == "560.35.03" and out["cuda"] == 12060
    # a T4 has neither MIG nor NVLink: NOT_SUPPORTED (3), as on the real card
    assert out["gpus"][0] == ["Tesla T4", 15360 << 20, [7, 5], 3, 3]
    assert out["gpus"][1] == ["NVIDIA H200", 100000 << 20, [9, 0], [0, 0], 1]


def test_visibility_by_uuid_index_all_none(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "L4", "count": 3})
    uuids = [g.uuid for g in st.gpus]
    assert run_snippet(UUIDS, child_env(st, "all")) == uuids
    assert run_snippet(UUIDS, child_env(st, [uuids[2], uuids[0]])) == [uuids[2], uuids[0]]
    assert run_snippet(UUIDS, child_env(st, "1,2")) == [uuids[1], uuids[2]]
    assert run_snippet(UUIDS, child_env(st, "none")) == []
    # no variable at all: a container without a device request sees nothing, a host process everything
    assert run_snippet(UUIDS, child_env(st, None)) == []
    assert run_snippet(UUIDS, child_env(st, None, HAMI_EMU_GPU_ALL="1")) == uuids
    # re-indexed from 0 in the visible order; handles by UUID only find visible cards
    code = textwrap.dedent(f"""
        import pynvml as n
        n.nvmlInit()
        h = n.nvmlDeviceGetHandleByIndex(0)
        try:
            n.nvmlDeviceGetHandleByUUID({uuids[0]!r})
            hidden = 0
        except n.NVMLError as e:
            hidden = e.value
        emit([n.nvmlDeviceGetIndex(h), n.nvmlDeviceGetMinorNumber(h), hidden])
    """)
    assert run_snippet(code, child_env(st, uuids[2])) == [0, 2, 6]


def test_void_with_libraries_present_sees_no_gpu(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "L4", "count": 2})
    env = child_env(st, "all")
    env["NVIDIA_VISIBLE_DEVICES"] = "void"
    assert run_snippet(UUIDS, env) == []


FAULTS = textwrap.dedent("""
    import pynvml as n
    def code_of(fn, *a):
        try:
            fn(*a)
            return 0
        except n.NVMLError as e:
            return e.value
    n.nvmlInit()
    h = n.nvmlDeviceGetHandleByIndex(0)
    emit([code_of(n.nvmlDeviceGetName, h), code_of(n.nvmlDeviceGetUUID, h), code_of(n.nvmlDeviceGetName, h),
          code_of(n.nvmlDeviceGetMemoryInfo, h), code_of(n.nvmlDeviceGetMemoryInfo, h, n.nvmlMemory_v2)])
""")


def test_fail_next_calls_and_memory_unsupported(make_state: Callable[..., DeviceState]) -> None:
    st = make_state()
    st.fail_next(0, 2, nvml_code=14)  # corrupted infoROM, twice
    assert run_snippet(FAULTS, child_env(st)) == [14, 14, 0, 0, 0]
    st.set_memory_query_supported(0, False)
    assert run_snippet(FAULTS, child_env(st)) == [0, 0, 0, 3, 3]
    st.clear_faults(0)
    assert run_snippet(FAULTS, child_env(st)) == [0, 0, 0, 0, 0]
    # the other card never saw any of it
    assert st.usage(1).nvml_fail_count == 0 and st.usage(0).nvml_fail_count == 0


def test_xid_event_reaches_event_set_and_79_loses_the_gpu(make_state: Callable[..., DeviceState]) -> None:
    st = make_state()
    code = textwrap.dedent("""
        import pynvml as n
        n.nvmlInit()
        hs = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
        es = n.nvmlEventSetCreate()
        for h in hs:
            mask = n.nvmlEventTypeXidCriticalError | n.nvmlEventTypeDoubleBitEccError
            n.nvmlDeviceRegisterEvents(h, mask, es)
        try:
            n.nvmlEventSetWait(es, 0)
            idle = 0
        except n.NVMLError as e:
            idle = e.value
        emit({"ready": True, "idle": idle})
        sys.stdin.readline()
        got = []
        for _ in range(2):
            d = n.nvmlEventSetWait(es, 10000)
            which = [i for i, h in enumerate(hs) if ctypes.cast(h, ctypes.c_void_p).value ==
                     ctypes.cast(d.device, ctypes.c_void_p).value]
            got.append([which, d.eventType, d.eventData])
        def code_of(fn, *a):
            try:
                fn(*a)
                return 0
            except n.NVMLError as e:
                return e.value
        lost = [code_of(n.nvmlDeviceGetName, hs[1]), code_of(n.nvmlDeviceGetHandleByIndex, 1),
                code_of(n.nvmlDeviceGetName, hs[0])]
        n.nvmlEventSetFree(es)
        emit({"events": got, "lost": lost})
    """)
    proc = start_snippet(code, child_env(st))
    try:
        ready = read_result(proc)
        assert ready == {"ready": True, "idle": 10}  # NVML_ERROR_TIMEOUT while nothing happened
        st.raise_xid(1, 48)
        st.raise_xid(1, 79)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out = read_result(proc)
    finally:
        proc.kill()
        proc.wait()
    assert out["events"] == [[[1], 8, 48], [[1], 8, 79]]
    # after Xid 79 the card has fallen off the bus: GPU_IS_LOST (15); the other card is fine
    assert out["lost"] == [15, 15, 0]
    usage = st.usage(1)
    assert usage.health == "lost" and usage.xids == (48, 79)
    assert st.usage(0).health == "healthy"


def test_an_idle_event_wait_sleeps_instead_of_spinning(make_state: Callable[..., DeviceState]) -> None:
    """A plugin's health loop spends its life in nvmlEventSetWait: one second with nothing happening
    must cost tens of wakeups (the pause grows to 50 ms), not the ~500 of a fixed 2 ms poll, and an
    event raised during a long wait is still seen within a fraction of a second."""
    st = make_state()
    code = textwrap.dedent("""
        import resource, time
        import pynvml as n
        n.nvmlInit()
        es = n.nvmlEventSetCreate()
        for i in range(n.nvmlDeviceGetCount()):
            n.nvmlDeviceRegisterEvents(n.nvmlDeviceGetHandleByIndex(i), n.nvmlEventTypeXidCriticalError, es)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        t0 = time.monotonic()
        try:
            n.nvmlEventSetWait(es, 1000)
            code = 0
        except n.NVMLError as e:
            code = e.value
        waited = time.monotonic() - t0
        wakeups = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
        emit({"code": code, "waited": waited, "wakeups": wakeups})
        t0 = time.monotonic()
        d = n.nvmlEventSetWait(es, 20000)
        emit({"xid": d.eventData, "after": time.monotonic() - t0})
    """)
    proc = start_snippet(code, child_env(st))
    try:
        idle = read_result(proc)
        raised = time.monotonic()
        st.raise_xid(0, 13)
        seen = read_result(proc)
        latency = time.monotonic() - raised
    finally:
        proc.kill()
        proc.wait()
    assert idle["code"] == 10 and 0.99 <= idle["waited"] < 1.5  # NVML_ERROR_TIMEOUT, on time
    assert idle["wakeups"] < 100, idle
    assert seen["xid"] == 13 and latency < 1.0, (seen, latency)


BAD_INPUT = textwrap.dedent("""
    res = {}
    res["uninit_count"] = nv.nvmlDeviceGetCount_v2(byref(c_uint()))
    res["uninit_shutdown"] = nv.nvmlShutdown()
    res["init"] = nv.nvmlInit_v2()
    if res["init"] == 0:
        buf = ctypes.create_string_buffer(96)
        h = ctypes.c_void_p()
        res["index_oob"] = nv.nvmlDeviceGetHandleByIndex_v2(99, byref(h))
        res["null_out"] = nv.nvmlDeviceGetHandleByIndex_v2(0, None)
        res["null_count"] = nv.nvmlDeviceGetCount_v2(None)
        nobody = b"GPU-00000000-0000-0000-0000-000000000000"
        res["unknown_uuid"] = nv.nvmlDeviceGetHandleByUUID(nobody, byref(h))
        res["null_uuid"] = nv.nvmlDeviceGetHandleByUUID(None, byref(h))
        res["bad_pci"] = nv.nvmlDeviceGetHandleByPciBusId_v2(b"zz", byref(h))
        res["unknown_pci"] = nv.nvmlDeviceGetHandleByPciBusId_v2(b"0000:FF:00.0", byref(h))
        res["bogus_handle"] = nv.nvmlDeviceGetName(ctypes.c_void_p(12345), buf, 96)
        res["null_handle"] = nv.nvmlDeviceGetName(None, buf, 96)
        ck(nv.nvmlDeviceGetHandleByIndex_v2(0, byref(h)))
        res["small_name"] = nv.nvmlDeviceGetName(h, buf, 4)
        res["null_name"] = nv.nvmlDeviceGetName(h, None, 96)
        res["small_uuid"] = nv.nvmlDeviceGetUUID(h, buf, 40)
        res["exact_uuid"] = nv.nvmlDeviceGetUUID(h, buf, 41)
        res["small_driver"] = nv.nvmlSystemGetDriverVersion(buf, 3)
        mem2 = (ctypes.c_ubyte * 40)()
        res["mem_v2_no_version"] = nv.nvmlDeviceGetMemoryInfo_v2(h, mem2)
        res["null_mem"] = nv.nvmlDeviceGetMemoryInfo(h, None)
        res["bad_sensor"] = nv.nvmlDeviceGetTemperature(h, 7, byref(c_uint()))
        res["bad_clock"] = nv.nvmlDeviceGetClockInfo(h, 9, byref(c_uint()))
        res["bad_link"] = nv.nvmlDeviceGetNvLinkState(h, 99, byref(c_uint()))
        res["bad_affinity"] = nv.nvmlDeviceGetCpuAffinity(h, 0, None)
        cnt = c_uint(0)
        res["procs_none"] = nv.nvmlDeviceGetComputeRunningProcesses_v3(h, byref(cnt), None)
        res["procs_null_count"] = nv.nvmlDeviceGetComputeRunningProcesses_v3(h, None, None)
        res["event_bad_set"] = nv.nvmlEventSetWait_v2(None, None, 0)
        res["error_string"] = nv.nvmlErrorString(15).decode()
        res["shutdown"] = nv.nvmlShutdown()
        res["after_shutdown"] = nv.nvmlDeviceGetName(h, buf, 96)
    emit(res)
""")


def test_bad_input_returns_real_codes(make_state: Callable[..., DeviceState]) -> None:
    st = make_state()
    res = run_snippet(BAD_INPUT, child_env(st))
    assert res == {
        "uninit_count": 1,
        "uninit_shutdown": 1,
        "init": 0,
        "index_oob": 2,
        "null_out": 2,
        "null_count": 2,
        "unknown_uuid": 6,
        "null_uuid": 2,
        "bad_pci": 2,
        "unknown_pci": 6,
        "bogus_handle": 2,
        "null_handle": 2,
        "small_name": 7,
        "null_name": 2,
        "small_uuid": 7,
        "exact_uuid": 0,
        "small_driver": 7,
        "mem_v2_no_version": 25,
        "null_mem": 2,
        "bad_sensor": 2,
        "bad_clock": 2,
        "bad_link": 2,
        "bad_affinity": 2,
        "procs_none": 0,
        "procs_null_count": 2,
        "event_bad_set": 2,
        "error_string": "GPU is lost",
        "shutdown": 0,
        "after_shutdown": 1,
    }


def test_missing_and_corrupt_state(make_state: Callable[..., DeviceState], tmp_path: Path) -> None:
    code = "emit([nv.nvmlInit_v2(), cu.cuInit(0), cu.cuDeviceGetCount(byref(c_int()))])"
    st = make_state()
    # no state directory at all: "driver not loaded" / "no device"
    assert run_snippet(code, child_env(tmp_path / "nowhere")) == [9, 100, 3]
    env = child_env(st)
    env.pop("HAMI_EMU_GPU_STATE_DIR")
    assert run_snippet(code, env) == [9, 100, 3]
    # garbled inventory
    conf = st.path / "gpus.conf"
    good = conf.read_text()
    conf.write_text(good.replace("memory_bytes=", "memory_bytes=lots"))
    assert run_snippet(code, child_env(st)) == [999, 999, 3]
    conf.write_text(good.replace("gpu_count=2", "gpu_count=3"))
    assert run_snippet(code, child_env(st)) == [999, 999, 3]
    conf.write_text("\x00\xff garbage")
    assert run_snippet(code, child_env(st)) == [999, 999, 3]
    conf.write_text(good)
    # a shared region from another layout version: NVML/RM version mismatch, driver mismatch
    shared = st.path / "shared.bin"
    data = bytearray(shared.read_bytes())
    data[8] = 99
    shared.write_bytes(bytes(data))
    assert run_snippet(code, child_env(st)) == [18, 803, 3]
    shared.write_bytes(b"short")
    assert run_snippet(code, child_env(st)) == [999, 999, 3]
    shared.unlink()
    assert run_snippet(code, child_env(st)) == [999, 999, 3]
