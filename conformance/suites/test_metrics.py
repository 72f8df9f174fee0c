"""Metrics: HAMi's scheduler and monitor series reflect a running pod's allocation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conformance import metrics
from conformance.cases import rule, unknown, violated
from conformance.kube import Workloads, gpu_pod

pytestmark = [pytest.mark.nvidia, pytest.mark.metrics]
MIB = 1 << 20
MEM = 1234
HOLD = ["--alloc-mib", "64", "--kernel-seconds", "0", "--hold-seconds", "60"]
POD_KEYS = ("pod", "podname")


def _running_pod(workloads: Workloads, name: str) -> None:
    workloads.create(gpu_pod(name, gpus=1, mem=MEM, args=HOLD))
    workloads.wait_phase(name, ("Running",))
    workloads.probe_running(name)


def _wait_series(
    kube: Any, cluster: Any, names: tuple[str, ...], pod: str, rule_id: str, attach: Any, timeout: float = 45
) -> list[Any]:
    deadline = time.monotonic() + timeout
    scraped: dict[str, str] = {}
    while time.monotonic() < deadline:
        scraped = metrics.scrape_namespace(kube, cluster.hami_namespace)
        hits = metrics.any_label(metrics.find(scraped, names), POD_KEYS, pod)
        if hits:
            return hits
        time.sleep(2)
    if not scraped:
        unknown(
            f"no HAMi metrics endpoint reachable in namespace {cluster.hami_namespace} "
            "(neither through the apiserver proxy nor at the pod IPs)"
        )
    attach("metrics.txt", "\n\n".join(f"# from {k}\n{v}" for k, v in scraped.items()))
    pytest.fail(
        violated(
            rule_id,
            f"no {'/'.join(names)} series for pod {pod} within {timeout:.0f}s (scraped {', '.join(scraped)})",
        )
    )


@rule("MET-SCHED-1", "Scheduler metrics report the pod's allocated device memory")
def test_scheduler_metrics(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _running_pod(workloads, "metered")
    hits = _wait_series(
        kube,
        cluster,
        ("hami_vgpu_memory_allocated_bytes", "vGPUMemoryAllocated"),
        "metered",
        "MET-SCHED-1",
        attach,
    )
    values = sorted({v for _, _, v in hits})
    assert MEM * MIB in values, violated("MET-SCHED-1", f"allocated bytes {values}, want {MEM * MIB}")


@rule("MET-MON-1", "Monitor metrics report the running container's memory limit")
def test_monitor_metrics(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _running_pod(workloads, "monitored")
    hits = _wait_series(
        kube,
        cluster,
        ("hami_vgpu_memory_limit_bytes", "vGPU_device_memory_limit_in_bytes"),
        "monitored",
        "MET-MON-1",
        attach,
    )
    values = sorted({v for _, _, v in hits})
    assert MEM * MIB in values, violated("MET-MON-1", f"memory limit bytes {values}, want {MEM * MIB}")


# --- the monitor's usage series for a running load ---------------------------------------------------------
LOAD_HELD_MIB = 700
LOAD_SECONDS = 45  # long enough to scrape while the load runs; the probe prints only afterwards
USED_NAMES = ("hami_vgpu_memory_used_bytes", "vGPU_device_memory_usage_in_bytes")
UTIL_NAMES = ("hami_container_device_utilization_ratio", "Device_utilization_desc_of_container")
UTIL_CORES = 60  # the load runs under a 60 % limiter (force): HAMi-core samples utilisation when limiting
UTIL_BAND = 25  # the series must read near what the limited load achieves


def _load_pod(workloads: Workloads, name: str, cores: int | None = None) -> None:
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
    workloads.create(gpu_pod(name, gpus=1, mem=MEM, cores=cores, args=args, env=env))
    workloads.wait_phase(name, ("Running",))


def _wait_values(
    kube: Any,
    cluster: Any,
    names: tuple[str, ...],
    pod: str,
    ok: Any,
    what: str,
    rule_id: str,
    attach: Any,
    timeout: float = 40,
) -> list[float]:
    """Scrape until the pod's series of ``names`` satisfy ``ok(values)``; fail with what was seen."""
    deadline = time.monotonic() + timeout
    scraped: dict[str, str] = {}
    values: list[float] = []
    while time.monotonic() < deadline:
        scraped = metrics.scrape_namespace(kube, cluster.hami_namespace)
        values = sorted(v for _, _, v in metrics.any_label(metrics.find(scraped, names), POD_KEYS, pod))
        if values and ok(values):
            return values
        time.sleep(2)
    if not scraped:
        unknown(f"no HAMi metrics endpoint reachable in namespace {cluster.hami_namespace}")
    attach("metrics.txt", "\n\n".join(f"# from {k}\n{v}" for k, v in scraped.items()))
    pytest.fail(violated(rule_id, f"{'/'.join(names)} of running pod {pod}: {values}, want {what}"))


@rule(
    "MET-MON-USED-1",
    "Monitor: a running container holding 700 MiB reports used memory between 700 MiB and its limit",
)
def test_monitor_memory_used(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _load_pod(workloads, "memload")
    lo, hi = LOAD_HELD_MIB * MIB, MEM * MIB
    _wait_values(
        kube,
        cluster,
        USED_NAMES,
        "memload",
        lambda vs: any(lo <= v <= hi for v in vs),
        f"a value in [{lo}, {hi}] bytes",
        "MET-MON-USED-1",
        attach,
    )


@rule(
    "MET-MON-UTIL-1",
    f"Monitor: a container running back-to-back kernels under gpucores {UTIL_CORES} (force) reports SM "
    f"utilisation within +-{UTIL_BAND} of {UTIL_CORES} %",
)
def test_monitor_utilization(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    _load_pod(workloads, "utilload", cores=UTIL_CORES)
    lo, hi = UTIL_CORES - UTIL_BAND, UTIL_CORES + UTIL_BAND
    _wait_values(
        kube,
        cluster,
        UTIL_NAMES,
        "utilload",
        lambda vs: any(lo <= v <= hi for v in vs),
        f"a value in [{lo}, {hi}]",
        "MET-MON-UTIL-1",
        attach,
    )


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
    values = _wait_values(
        kube, cluster, UTIL_NAMES, "idle", lambda vs: True, "any value", "MET-MON-UTIL-2", attach
    )
    assert all(0 <= v < 10 for v in values), violated(
        "MET-MON-UTIL-2", f"idle container under a {UTIL_CORES}% limit reports utilisation {values}"
    )
