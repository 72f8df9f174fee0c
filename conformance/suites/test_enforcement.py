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
    "With GPU_CORE_UTILIZATION_POLICY=force, achieved utilisation stays within the gpucores band",
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
