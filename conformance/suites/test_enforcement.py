"""Enforcement: the in-container limits (HAMi-core semantics) as CUDA reports and applies them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conformance.cases import rule, violated
from conformance.kube import Workloads, gpu_pod

pytestmark = [pytest.mark.nvidia, pytest.mark.enforcement]
MIB = 1 << 20
LIMIT = 3000
CORE_LIMIT = 30
CORE_BAND = 15  # the limiter is a token bucket: accept +-15 points around the limit


def _cuda(doc: dict[str, Any], rule_id: str) -> dict[str, Any]:
    cuda = doc.get("cuda") or {}
    assert "error" not in cuda and cuda.get("devices"), violated(
        rule_id, f"CUDA unusable in the container: {cuda}"
    )
    return cuda


@rule(
    "ENF-MEM-1",
    "cuMemGetInfo reports the container's memory limit as the device total",
    ai=("virtualized_accelerator",),
)
def test_reported_total(workloads: Workloads, attach: Any) -> None:
    workloads.create(gpu_pod("total", gpus=1, mem=LIMIT, args=["--alloc-mib", "0", "--kernel-seconds", "0"]))
    doc = workloads.probe("total")
    attach("probe.json", json.dumps(doc, indent=2))
    total = _cuda(doc, "ENF-MEM-1")["mem_before"]["total"]
    assert total == LIMIT * MIB, violated(
        "ENF-MEM-1", f"cuMemGetInfo total {total // MIB} MiB, limit {LIMIT} MiB"
    )


@rule(
    "ENF-MEM-2",
    "Allocating past the memory limit fails with CUDA_ERROR_OUT_OF_MEMORY; within it succeeds",
    ai=("virtualized_accelerator",),
)
def test_oom_at_limit(workloads: Workloads, attach: Any) -> None:
    workloads.create(
        gpu_pod("under", gpus=1, mem=LIMIT, args=["--alloc-mib", str(LIMIT - 100), "--kernel-seconds", "0"])
    )
    workloads.create(
        gpu_pod("over", gpus=1, mem=LIMIT, args=["--alloc-mib", str(LIMIT + 1), "--kernel-seconds", "0"])
    )
    under, over = workloads.probe("under"), workloads.probe("over")
    attach("probe-under.json", json.dumps(under, indent=2))
    attach("probe-over.json", json.dumps(over, indent=2))
    a_under, a_over = (
        _cuda(under, "ENF-MEM-2").get("alloc") or {},
        _cuda(over, "ENF-MEM-2").get("alloc") or {},
    )
    assert a_under.get("ok"), violated(
        "ENF-MEM-2", f"{LIMIT - 100} MiB under a {LIMIT} MiB limit was refused: {a_under}"
    )
    assert not a_over.get("ok") and a_over.get("error_name") == "CUDA_ERROR_OUT_OF_MEMORY", violated(
        "ENF-MEM-2", f"{LIMIT + 1} MiB over a {LIMIT} MiB limit gave {a_over}, want CUDA_ERROR_OUT_OF_MEMORY"
    )


@rule(
    "ENF-CORE-1",
    "20 ms kernels under gpucores 30 with GPU_CORE_UTILIZATION_POLICY=force achieve 30 +-15 % utilisation",
)
def test_core_limit_band(workloads: Workloads, attach: Any) -> None:
    args = ["--alloc-mib", "16", "--kernel-seconds", "0", "--load-seconds", "4", "--slice-ms", "20"]
    workloads.create(
        gpu_pod(
            "cores",
            gpus=1,
            mem=1000,
            cores=CORE_LIMIT,
            args=args,
            env={"GPU_CORE_UTILIZATION_POLICY": "force"},
        )
    )
    doc = workloads.probe("cores", timeout=90)
    attach("probe.json", json.dumps(doc, indent=2))
    load = _cuda(doc, "ENF-CORE-1").get("load") or {}
    achieved = float(load.get("achieved_utilization", -1))
    assert abs(achieved - CORE_LIMIT) <= CORE_BAND, violated(
        "ENF-CORE-1", f"achieved {achieved:.1f}% under a {CORE_LIMIT}% gpucores limit (band +-{CORE_BAND})"
    )


# --- every allocation path, cumulative use, other processes, NVML ---------------------------------------
# The probe's --op list (conformance/probe/ops.py) allocates through each path HAMi-core hooks and keeps
# what it got until "free"; a refusal is an outcome with the CUDA error name and the call that failed.
NO_KERNEL = ["--alloc-mib", "0", "--kernel-seconds", "0"]
NVML_OVERHEAD_MIB = 600  # context and module memory a real driver adds to what the container allocated


def _ops(
    w: Workloads,
    name: str,
    ops: list[str],
    attach: Any,
    *,
    gpus: int = 1,
    extra: list[str] | None = None,
    rule_id: str,
) -> list[dict[str, Any]]:
    args = [*NO_KERNEL, *(extra or [])]
    for op in ops:
        args += ["--op", op]
    w.create(gpu_pod(name, gpus=gpus, mem=LIMIT, args=args))
    doc = w.probe(name, timeout=90)
    attach(f"probe-{name}.json", json.dumps(doc, indent=2))
    results = _cuda(doc, rule_id).get("ops") or []
    assert len(results) == len(ops), violated(
        rule_id, f"the probe ran {len(results)} of {len(ops)} operations {ops}: {results}"
    )
    return list(results)


def _refused(r: dict[str, Any]) -> bool:
    return not r.get("ok") and r.get("error_name") == "CUDA_ERROR_OUT_OF_MEMORY"


def _path_case(w: Workloads, name: str, path: str, rule_id: str, attach: Any) -> list[dict[str, Any]]:
    within, past = f"{path}:{LIMIT - 200}", f"{path}:{LIMIT + 1}"
    res = _ops(w, name, [within, "free", past], attach, rule_id=rule_id)
    if res[0].get("unsupported") and res[2].get("unsupported"):
        return res  # the caller decides whether the driver lacking this path is acceptable
    assert res[0].get("ok"), violated(
        rule_id, f"{within} MiB under a {LIMIT} MiB limit was refused: {res[0]}"
    )
    assert _refused(res[2]), violated(
        rule_id, f"{past} MiB over a {LIMIT} MiB limit gave {res[2]}, want CUDA_ERROR_OUT_OF_MEMORY"
    )
    return res


@rule(
    "ENF-MEM-MANAGED-1",
    "cuMemAllocManaged counts against the memory limit: within it succeeds, past it CUDA_ERROR_OUT_OF_MEMORY",
    ai=("virtualized_accelerator",),
)
def test_managed_limited(workloads: Workloads, attach: Any) -> None:
    res = _path_case(workloads, "managed", "managed", "ENF-MEM-MANAGED-1", attach)
    assert not res[0].get("unsupported"), violated("ENF-MEM-MANAGED-1", f"driver lacks the path: {res[0]}")


@rule(
    "ENF-MEM-PITCH-1",
    "cuMemAllocPitch counts against the memory limit: within it succeeds, past it CUDA_ERROR_OUT_OF_MEMORY",
    ai=("virtualized_accelerator",),
)
def test_pitch_limited(workloads: Workloads, attach: Any) -> None:
    res = _path_case(workloads, "pitch", "pitch", "ENF-MEM-PITCH-1", attach)
    assert not res[0].get("unsupported"), violated("ENF-MEM-PITCH-1", f"driver lacks the path: {res[0]}")


@rule(
    "ENF-MEM-ASYNC-1",
    "Stream-ordered allocation (cuMemAllocAsync, and cuMemAllocFromPoolAsync where the driver has pools) "
    "counts against the memory limit",
    ai=("virtualized_accelerator",),
)
def test_async_limited(workloads: Workloads, attach: Any) -> None:
    res = _path_case(workloads, "async", "async", "ENF-MEM-ASYNC-1", attach)
    assert not res[0].get("unsupported"), violated("ENF-MEM-ASYNC-1", f"driver lacks the path: {res[0]}")
    pool = _ops(
        workloads,
        "pool",
        [f"pool:{LIMIT - 200}", "free", f"pool:{LIMIT + 1}"],
        attach,
        rule_id="ENF-MEM-ASYNC-1",
    )
    if pool[0].get("unsupported"):
        attach("pool.txt", f"the driver has no memory pools: {pool[0].get('detail')}")
        return
    assert pool[0].get("ok") and _refused(pool[2]), violated(
        "ENF-MEM-ASYNC-1", f"pool allocations under/over a {LIMIT} MiB limit gave {pool[0]} / {pool[2]}"
    )


@rule(
    "ENF-MEM-VMM-1",
    "Virtual memory management (cuMemCreate, reserve, map) counts against the memory limit",
    ai=("virtualized_accelerator",),
)
def test_vmm_limited(workloads: Workloads, attach: Any) -> None:
    res = _path_case(workloads, "vmm", "vmm", "ENF-MEM-VMM-1", attach)
    assert not res[0].get("unsupported"), violated("ENF-MEM-VMM-1", f"driver lacks the path: {res[0]}")
    assert res[0].get("step") == "cuMemSetAccess", violated(
        "ENF-MEM-VMM-1", f"memory within the limit was created but not mapped and made accessible: {res[0]}"
    )


@rule(
    "ENF-MEM-CUMUL-1",
    "The limit applies to cumulative use: after 25 allocations of 100 MiB under a 3000 MiB limit, at most "
    "5 more succeed",
    ai=("virtualized_accelerator",),
)
def test_cumulative_small_allocations(workloads: Workloads, attach: Any) -> None:
    res = _ops(workloads, "many", ["mem:100x25", "mem:100x10"], attach, rule_id="ENF-MEM-CUMUL-1")
    assert res[0].get("ok"), violated("ENF-MEM-CUMUL-1", f"25 x 100 MiB under {LIMIT} MiB: {res[0]}")
    assert res[1].get("succeeded", 99) <= (LIMIT - 2500) // 100 and res[1].get("error_name") == (
        "CUDA_ERROR_OUT_OF_MEMORY"
    ), violated(
        "ENF-MEM-CUMUL-1",
        f"after 2500 MiB, {res[1].get('succeeded')} more 100 MiB allocations succeeded under a {LIMIT} MiB "
        f"limit ({res[1]})",
    )


@rule(
    "ENF-MEM-CUMUL-2",
    "Allocations through different paths add up against one limit (plain+managed+VMM, then async refused)",
    ai=("virtualized_accelerator",),
)
def test_cumulative_across_paths(workloads: Workloads, attach: Any) -> None:
    ops = ["mem:800", "managed:800", "vmm:800", "async:700"]
    res = _ops(workloads, "mixed", ops, attach, rule_id="ENF-MEM-CUMUL-2")
    assert all(r.get("ok") for r in res[:3]), violated(
        "ENF-MEM-CUMUL-2", f"2400 MiB in three paths under {LIMIT} MiB: {res[:3]}"
    )
    assert _refused(res[3]), violated(
        "ENF-MEM-CUMUL-2", f"700 MiB more after 2400 MiB under a {LIMIT} MiB limit gave {res[3]}"
    )


@rule(
    "ENF-MEM-FREE-1",
    "Freed memory is given back to the limit: near-limit allocations freed in turn through each path all "
    "succeed",
    ai=("virtualized_accelerator",),
)
def test_free_gives_back(workloads: Workloads, attach: Any) -> None:
    big = LIMIT - 200
    ops = [
        f"mem:{big}",
        "free",
        f"managed:{big}",
        "free",
        f"vmm:{big}",
        "free",
        f"async:{big}",
        "free",
        f"mem:{big}",
    ]
    res = _ops(workloads, "cycle", ops, attach, rule_id="ENF-MEM-FREE-1")
    allocs = [r for r in res if r.get("op") != "free"]
    assert all(r.get("ok") for r in allocs), violated(
        "ENF-MEM-FREE-1", f"allocations of {big} MiB after freeing the previous one: {allocs}"
    )


@rule(
    "ENF-MEM-MULTIPROC-1",
    "Processes of one container share its memory limit: three processes holding 2800 MiB leave no room "
    "for 600 MiB more in a fourth",
    ai=("virtualized_accelerator",),
)
def test_processes_share_limit(workloads: Workloads, attach: Any) -> None:
    ops = ["mem:1000", "proc:mem:1000", "proc:mem:800", "proc:mem:600"]
    res = _ops(workloads, "procs", ops, attach, rule_id="ENF-MEM-MULTIPROC-1")
    assert all(r.get("ok") for r in res[:3]), violated(
        "ENF-MEM-MULTIPROC-1", f"2800 MiB over three processes under {LIMIT} MiB: {res[:3]}"
    )
    assert _refused(res[3]), violated(
        "ENF-MEM-MULTIPROC-1", f"a fourth process asking 600 MiB after 2800 MiB gave {res[3]}"
    )


@rule(
    "ENF-MEM-NVML-1",
    "NVML reports the container's memory limit as the device's total memory",
    ai=("virtualized_accelerator",),
)
def test_nvml_total(workloads: Workloads, attach: Any) -> None:
    workloads.create(gpu_pod("nvmltotal", gpus=1, mem=LIMIT, args=NO_KERNEL))
    doc = workloads.probe("nvmltotal")
    attach("probe.json", json.dumps(doc, indent=2))
    nvml = doc.get("nvml") or {}
    assert "error" not in nvml and nvml.get("devices"), violated("ENF-MEM-NVML-1", f"NVML unusable: {nvml}")
    total = nvml["devices"][0]["memory_total"]
    assert total == LIMIT * MIB, violated(
        "ENF-MEM-NVML-1", f"nvmlDeviceGetMemoryInfo total {total / MIB:.0f} MiB, limit {LIMIT} MiB"
    )


@rule(
    "ENF-MEM-NVML-2",
    "Memory in use shows in NVML and CUDA: after 1000 MiB, NVML used is 1000 to 1600 MiB and both report "
    "free <= limit - 1000 MiB",
    ai=("virtualized_accelerator",),
)
def test_nvml_used_follows_allocations(workloads: Workloads, attach: Any) -> None:
    res = _ops(workloads, "nvmlused", ["mem:1000", "meminfo"], attach, rule_id="ENF-MEM-NVML-2")
    assert res[0].get("ok"), violated("ENF-MEM-NVML-2", f"1000 MiB under {LIMIT} MiB refused: {res[0]}")
    cuda, nvml = res[1].get("cuda") or {}, res[1].get("nvml") or {}
    assert "error" not in nvml, violated("ENF-MEM-NVML-2", f"NVML memory info unusable: {nvml}")
    room = (LIMIT - 1000) * MIB
    used_ok = 1000 * MIB <= nvml.get("used", 0) <= (1000 + NVML_OVERHEAD_MIB) * MIB
    assert used_ok and nvml.get("free", room + 1) <= room, violated(
        "ENF-MEM-NVML-2",
        f"after 1000 MiB of {LIMIT} MiB, NVML says used {nvml.get('used', 0) / MIB:.0f} MiB, "
        f"free {nvml.get('free', 0) / MIB:.0f} MiB",
    )
    assert cuda.get("free", room + 1) <= room and cuda.get("total") == LIMIT * MIB, violated(
        "ENF-MEM-NVML-2", f"after 1000 MiB of {LIMIT} MiB, cuMemGetInfo says {cuda}"
    )


@rule(
    "ENF-MEM-3",
    "cuDeviceTotalMem reports the container's memory limit",
    ai=("virtualized_accelerator",),
)
def test_device_total_mem(workloads: Workloads, attach: Any) -> None:
    workloads.create(gpu_pod("devtotal", gpus=1, mem=LIMIT, args=NO_KERNEL))
    doc = workloads.probe("devtotal")
    attach("probe.json", json.dumps(doc, indent=2))
    total = _cuda(doc, "ENF-MEM-3")["devices"][0]["total_mem"]
    assert total == LIMIT * MIB, violated(
        "ENF-MEM-3", f"cuDeviceTotalMem {total / MIB:.0f} MiB, limit {LIMIT}"
    )


@rule(
    "ENF-MEM-4",
    "Each GPU of a two-GPU container is limited: on the second GPU, past its limit is refused",
    ai=("virtualized_accelerator",),
)
def test_second_device_limited(workloads: Workloads, attach: Any) -> None:
    res = _ops(
        workloads,
        "second",
        [f"mem:{LIMIT - 200}", "mem:400", "meminfo"],
        attach,
        gpus=2,
        extra=["--device", "1"],
        rule_id="ENF-MEM-4",
    )
    assert res[0].get("ok"), violated("ENF-MEM-4", f"{LIMIT - 200} MiB on device 1 refused: {res[0]}")
    assert _refused(res[1]), violated(
        "ENF-MEM-4", f"400 MiB more on device 1 past its {LIMIT} MiB limit gave {res[1]}"
    )
    total = (res[2].get("cuda") or {}).get("total")
    assert total == LIMIT * MIB, violated(
        "ENF-MEM-4", f"device 1 cuMemGetInfo total {total}, limit {LIMIT} MiB"
    )


# --- the compute limiter with short and long kernels, and no limiter without gpucores ---------------------
def _achieved(
    w: Workloads, name: str, cores: int | None, slice_ms: float, seconds: float, rule_id: str, attach: Any
) -> float:
    args = [
        "--alloc-mib",
        "16",
        "--kernel-seconds",
        "0",
        "--load-seconds",
        str(seconds),
        "--slice-ms",
        str(slice_ms),
    ]
    w.create(
        gpu_pod(name, gpus=1, mem=1000, cores=cores, args=args, env={"GPU_CORE_UTILIZATION_POLICY": "force"})
    )
    doc = w.probe(name, timeout=90)
    attach("probe.json", json.dumps(doc, indent=2))
    load = _cuda(doc, rule_id).get("load") or {}
    return float(load.get("achieved_utilization", -1))


@rule(
    "ENF-CORE-2",
    "Short kernels (5 ms) under gpucores 30 with policy force achieve 30 +-15 % utilisation",
)
def test_core_band_short_kernels(workloads: Workloads, attach: Any) -> None:
    achieved = _achieved(workloads, "short", CORE_LIMIT, 5, 4, "ENF-CORE-2", attach)
    assert abs(achieved - CORE_LIMIT) <= CORE_BAND, violated(
        "ENF-CORE-2",
        f"5 ms kernels achieved {achieved:.1f}% under a {CORE_LIMIT}% limit (band +-{CORE_BAND})",
    )


@rule(
    "ENF-CORE-3",
    "Long kernels (250 ms) under gpucores 30 with policy force achieve 30 +-15 % utilisation",
)
def test_core_band_long_kernels(workloads: Workloads, attach: Any) -> None:
    achieved = _achieved(workloads, "long", CORE_LIMIT, 250, 8, "ENF-CORE-3", attach)
    assert abs(achieved - CORE_LIMIT) <= CORE_BAND, violated(
        "ENF-CORE-3",
        f"250 ms kernels achieved {achieved:.1f}% under a {CORE_LIMIT}% limit (band +-{CORE_BAND})",
    )


@rule(
    "ENF-CORE-4",
    "Without gpucores the limiter does not throttle: back-to-back kernels achieve at least 80 % utilisation",
)
def test_no_core_limit_full_speed(workloads: Workloads, attach: Any) -> None:
    achieved = _achieved(workloads, "unlimited", None, 20, 3, "ENF-CORE-4", attach)
    assert achieved >= 80, violated("ENF-CORE-4", f"unlimited load achieved only {achieved:.1f}%")
