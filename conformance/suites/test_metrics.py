"""Metrics: HAMi's scheduler and monitor series reflect a running pod's allocation.

NVIDIA: scheduler and monitor series. Ascend (``ASC-MET-*``): the scheduler's device and per-container
series, which upstream's scheduler exports for every family alike (``device_type`` = the chip's
common word); HAMi's vGPU monitor reads HAMi-core's per-container files and defines no Ascend series,
so no monitor rule applies to Ascend."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conformance import metrics
from conformance.cases import rule, violated
from conformance.kube import Workloads, allocated, gpu_pod, registered_devices

pytestmark = [pytest.mark.metrics]  # the vendor marker is on each case
MIB = 1 << 20
MEM = 1234
HOLD = ["--alloc-mib", "64", "--kernel-seconds", "0", "--hold-seconds", "60"]
POD_KEYS = ("pod", "podname")


def _running_pod(workloads: Workloads, name: str) -> None:
    workloads.create(gpu_pod(name, gpus=1, mem=MEM, args=HOLD))
    workloads.wait_phase(name, ("Running",))
    workloads.probe_running(name)


def _pod_values(samples: list[Any], pod: str) -> list[float]:
    return sorted(v for _, _, v in metrics.any_label(samples, POD_KEYS, pod))


def _series(
    kube: Any, cluster: Any, names: tuple[str, ...], pod: str, ok: Any, what: str, attach: Any
) -> list[float]:
    """The values of pod ``pod``'s series once ``ok(values)`` holds (metrics.wait_series fails the
    running case's rule, naming what it saw, when it never does)."""
    samples, scraped = metrics.wait_series(
        kube,
        cluster.hami_namespace,
        names,
        lambda got: bool(_pod_values(got, pod)) and ok(_pod_values(got, pod)),
        f"{what} in {'/'.join(names)} of pod {pod}",
    )
    attach("metrics.txt", "\n\n".join(f"# from {k}\n{v}" for k, v in scraped.items()))
    return _pod_values(samples, pod)


@pytest.mark.nvidia
@rule("MET-SCHED-1", "Scheduler metrics report the pod's allocated device memory")
def test_scheduler_metrics(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _running_pod(workloads, "metered")
    values = _series(
        kube,
        cluster,
        ("hami_vgpu_memory_allocated_bytes", "vGPUMemoryAllocated"),
        "metered",
        lambda vs: True,
        "any value",
        attach,
    )
    assert MEM * MIB in values, violated("MET-SCHED-1", f"allocated bytes {values}, want {MEM * MIB}")


@pytest.mark.nvidia
@rule("MET-MON-1", "Monitor metrics report the running container's memory limit")
def test_monitor_metrics(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _running_pod(workloads, "monitored")
    values = _series(
        kube,
        cluster,
        ("hami_vgpu_memory_limit_bytes", "vGPU_device_memory_limit_in_bytes"),
        "monitored",
        lambda vs: True,
        "any value",
        attach,
    )
    assert MEM * MIB in values, violated("MET-MON-1", f"memory limit bytes {values}, want {MEM * MIB}")


# --- the monitor's usage series for a running load ---------------------------------------------------------
LOAD_HELD_MIB = 700
USED_LIMIT = 3000  # far above what is held: a monitor reporting the limit as "used" is caught
USED_OVERHEAD = 600  # what a real driver adds for the context and modules on top of the allocations
LOAD_SECONDS = 45  # long enough to scrape while the load runs; the probe prints only afterwards
USED_NAMES = ("hami_vgpu_memory_used_bytes", "vGPU_device_memory_usage_in_bytes")
UTIL_NAMES = ("hami_container_device_utilization_ratio", "Device_utilization_desc_of_container")
UTIL_CORES = 60  # the load runs under a 60 % limiter (force): HAMi-core samples utilisation when limiting
UTIL_BAND = 25  # the series must read near what the limited load achieves


def _load_pod(workloads: Workloads, name: str, cores: int | None = None, mem: int = MEM) -> None:
    args = [
        "--alloc-mib",
        "0",
        "--kernel-seconds",
        "0",
        "--op",
        f"mem:{LOAD_HELD_MIB}",
        "--load-seconds",
        str(LOAD_SECONDS),
        "--slice-ms",
        "20",
    ]
    env = {"GPU_CORE_UTILIZATION_POLICY": "force"} if cores else {}
    workloads.create(gpu_pod(name, gpus=1, mem=mem, cores=cores, args=args, env=env))
    workloads.wait_phase(name, ("Running",))


@pytest.mark.nvidia
@rule(
    "MET-MON-USED-1",
    "Monitor: a running container holding 700 MiB under a 3000 MiB limit reports used memory of 700 to "
    "1300 MiB",
)
def test_monitor_memory_used(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _load_pod(workloads, "memload", mem=USED_LIMIT)
    lo, hi = LOAD_HELD_MIB * MIB, (LOAD_HELD_MIB + USED_OVERHEAD) * MIB
    _series(
        kube,
        cluster,
        USED_NAMES,
        "memload",
        lambda vs: any(lo <= v <= hi for v in vs),
        f"a value in [{lo}, {hi}] bytes",
        attach,
    )


@pytest.mark.nvidia
@rule(
    "MET-MON-UTIL-1",
    f"Monitor: a container running back-to-back kernels under gpucores {UTIL_CORES} (force) reports SM "
    f"utilisation within +-{UTIL_BAND} of {UTIL_CORES} %",
)
def test_monitor_utilization(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _load_pod(workloads, "utilload", cores=UTIL_CORES)
    lo, hi = UTIL_CORES - UTIL_BAND, UTIL_CORES + UTIL_BAND
    _series(
        kube,
        cluster,
        UTIL_NAMES,
        "utilload",
        lambda vs: any(lo <= v <= hi for v in vs),
        f"a value in [{lo}, {hi}]",
        attach,
    )


@pytest.mark.nvidia
@rule(
    "MET-MON-UTIL-2",
    f"Monitor: an idle container under gpucores {UTIL_CORES} reports SM utilisation below 10 % (a measure, "
    "not the limit)",
)
def test_monitor_utilization_idle(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    idle = ["--alloc-mib", "64", "--kernel-seconds", "0", "--hold-seconds", "60"]
    env = {"GPU_CORE_UTILIZATION_POLICY": "force"}
    workloads.create(gpu_pod("idle", gpus=1, mem=MEM, cores=UTIL_CORES, args=idle, env=env))
    workloads.wait_phase("idle", ("Running",))
    workloads.probe_running("idle")  # CUDA initialised: the container's region exists
    time.sleep(3)
    values = _series(kube, cluster, UTIL_NAMES, "idle", lambda vs: True, "any value", attach)
    assert all(0 <= v < 10 for v in values), violated(
        "MET-MON-UTIL-2", f"idle container under a {UTIL_CORES}% limit reports utilisation {values}"
    )


# --- the monitor's host series: what NVML says about each GPU of the node -------------------------------
HOST_USED_NAMES = ("hami_host_gpu_memory_used_bytes", "HostGPUMemoryUsage")
HOST_UTIL_NAMES = ("hami_host_gpu_utilization_ratio", "HostCoreUtilization")


def _host_series(samples: list[Any], node: str) -> dict[str, tuple[str, float]]:
    """``device uuid -> (device type, value)`` of the host series of ``node`` (current or legacy labels)."""
    return {
        lb.get("device_uuid", lb.get("deviceuuid", "")): (lb.get("device_type", lb.get("devicetype", "")), v)
        for _, lb, v in samples
        if lb.get("node", lb.get("nodeid")) == node
    }


@pytest.mark.nvidia
@rule(
    "MET-MON-HOST-1",
    f"Monitor host series: every GPU a node registered has hami_host_gpu_memory_used_bytes and "
    f"hami_host_gpu_utilization_ratio (0-100) labelled with the node, its UUID and an NVIDIA- device type; "
    f"the GPU of a container holding {LOAD_HELD_MIB} MiB reports at least that much used, and less than the "
    f"memory the node registered for it",
)
def test_monitor_host_series(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _load_pod(workloads, "hostload", mem=USED_LIMIT)
    pod = workloads.get("hostload")
    node = pod["spec"]["nodeName"]
    (dev,) = allocated(pod)[-1]
    devmem = {d.id: d.devmem * MIB for d in registered_devices(kube.get(f"/api/v1/nodes/{node}"))}
    held = LOAD_HELD_MIB * MIB
    # the load allocates after it starts: wait for its GPU to show it, then judge what was seen
    samples, scraped = metrics.wait_series(
        kube,
        cluster.hami_namespace,
        HOST_USED_NAMES,
        lambda got: set(devmem) <= set(_host_series(got, node))
        and _host_series(got, node)[dev.uuid][1] >= held,
        f"a host series for each of node {node}'s {len(devmem)} GPUs, {dev.uuid} at >= {held} bytes used",
    )
    attach("metrics.txt", "\n\n".join(f"# from {k}\n{v}" for k, v in scraped.items()))
    used = _host_series(samples, node)
    util = _host_series(metrics.find(scraped, HOST_UTIL_NAMES), node)
    wrong = {u: used[u] for u in devmem if not used[u][0].startswith("NVIDIA-") or used[u][1] >= devmem[u]}
    assert not wrong, violated(
        "MET-MON-HOST-1", f"(device type, used bytes) not NVIDIA-* and below the registered memory: {wrong}"
    )
    bad_util = {u: util.get(u) for u in devmem if u not in util or not 0 <= util[u][1] <= 100}
    assert not bad_util, violated(
        "MET-MON-HOST-1", f"utilisation series missing or outside 0-100: {bad_util}"
    )


# --- Ascend: the scheduler's series for NPUs ------------------------------------------------------


@pytest.mark.ascend
# Ascend rules are marked directly (not @rule): they belong to the ascend profile, not the NVIDIA one
@pytest.mark.rule(
    "ASC-MET-SCHED-1", "Scheduler metrics report an Ascend pod's allocated NPU memory (template)"
)
def test_ascend_scheduler_metrics(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    from conformance.suites.test_ascend import HOLD as NPU_HOLD
    from conformance.suites.test_ascend import TEMPLATES, chip, npu_pod

    cw, _ = chip(kube, templates=True)
    (_, smallest), *_ = TEMPLATES[cw]
    workloads.create(npu_pod("npumetered", cw, mem=smallest // 2, args=NPU_HOLD))
    workloads.wait_phase("npumetered", ("Running",))
    values = _series(
        kube,
        cluster,
        ("hami_vgpu_memory_allocated_bytes", "vGPUMemoryAllocated"),
        "npumetered",
        lambda vs: True,
        "any value",
        attach,
    )
    assert smallest * MIB in values, violated(
        "ASC-MET-SCHED-1", f"allocated bytes {values}, want {smallest * MIB} (the {smallest} MiB template)"
    )


@pytest.mark.ascend
@pytest.mark.rule(
    "ASC-MET-SCHED-2", "Scheduler device metrics list every registered NPU: device_type <CW>, memory"
)
def test_ascend_device_metrics(kube: Any, cluster: Any, attach: Any) -> None:
    from conformance.suites.test_ascend import npus

    want = {(n.node, n.uuid): (n.cw, n.devmem * MIB) for n in npus(kube) if n.health}
    assert want, violated("ASC-MET-SCHED-2", "no healthy NPU registered")
    names = ("hami_gpu_memory_limit_bytes", "GPUDeviceMemoryLimit")

    def seen(samples: list[Any]) -> dict[tuple[str, str], tuple[str, float]]:
        return {
            (lb.get("node", lb.get("nodeid", "")), lb.get("device_uuid", lb.get("deviceuuid", ""))): (
                lb.get("device_type", lb.get("devicetype", "")), v
            )
            for _, lb, v in samples
        }

    samples, scraped = metrics.wait_series(
        kube, cluster.hami_namespace, names, lambda got: set(want) <= set(seen(got)),
        f"a series per registered NPU ({len(want)}) in {'/'.join(names)}",
    )
    attach("metrics.txt", "\n\n".join(f"# from {k}\n{v}" for k, v in scraped.items()))
    got = seen(samples)
    wrong = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    assert not wrong, violated("ASC-MET-SCHED-2", f"(type, bytes) seen vs registered: {wrong}")
