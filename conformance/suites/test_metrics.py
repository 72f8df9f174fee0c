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
