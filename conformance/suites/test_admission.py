"""Admission: what HAMi's mutating webhook does to pods (schedulerName, denials, defaults)."""

from __future__ import annotations

from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import ContainerSpec, Workloads, container_limits, gpu_pod, pod_manifest

pytestmark = [pytest.mark.nvidia, pytest.mark.admission]


@rule("ADM-SCHED-1", "A pod requesting nvidia.com/gpu is given spec.schedulerName of the HAMi scheduler")
def test_scheduler_name_set(workloads: Workloads, cluster: Any) -> None:
    pod = workloads.create(gpu_pod("sched-name", gpus=1, mem=1000))
    got = pod["spec"].get("schedulerName")
    assert got == cluster.scheduler_name, violated(
        "ADM-SCHED-1",
        f"schedulerName is {got!r}, want {cluster.scheduler_name!r} (webhook not called or not mutating)",
    )


@rule("ADM-SCHED-2", "A pod without HAMi resources keeps the default scheduler")
def test_plain_pod_untouched(workloads: Workloads) -> None:
    pod = workloads.create(pod_manifest("plain", [ContainerSpec()]))
    assert pod["spec"].get("schedulerName") == "default-scheduler", violated(
        "ADM-SCHED-2",
        f"schedulerName of a pod without GPU requests became {pod['spec'].get('schedulerName')!r}",
    )


@rule("ADM-SCHED-3", "A GPU pod that names another custom scheduler is left to that scheduler")
def test_other_scheduler_respected(workloads: Workloads) -> None:
    manifest = pod_manifest("custom", [ContainerSpec(gpus=1, mem=1000)], scheduler_name="volcano")
    pod = workloads.create(manifest)
    assert pod["spec"].get("schedulerName") == "volcano", violated(
        "ADM-SCHED-3", f"schedulerName volcano was overwritten with {pod['spec'].get('schedulerName')!r}"
    )


@rule("ADM-DENY-1", "A privileged container requesting a GPU is denied: container <name> is privileged")
def test_privileged_denied(workloads: Workloads) -> None:
    _, err = workloads.try_create(pod_manifest("priv", [ContainerSpec(name="cuda", gpus=1, privileged=True)]))
    assert err is not None, violated("ADM-DENY-1", "a privileged GPU container was admitted")
    assert "container cuda is privileged" in str(err), violated("ADM-DENY-1", f"denied with {str(err)!r}")


@rule("ADM-DENY-2", "A GPU pod with spec.nodeName already set is denied: pod has node assigned")
def test_node_name_denied(workloads: Workloads, kube: Any) -> None:
    node = kube.get("/api/v1/nodes")["items"][0]["metadata"]["name"]
    _, err = workloads.try_create(pod_manifest("pinned", [ContainerSpec(gpus=1, mem=1000)], node_name=node))
    assert err is not None, violated("ADM-DENY-2", "a GPU pod with nodeName set was admitted")
    assert C.DENY_NODE_ASSIGNED in str(err), violated("ADM-DENY-2", f"denied with {str(err)!r}")


@rule("ADM-DENY-3", "nvidia.com/gpumem-percentage outside 0..100 is denied naming the resource and container")
def test_percentage_out_of_range_denied(workloads: Workloads) -> None:
    _, err = workloads.try_create(pod_manifest("pct", [ContainerSpec(name="cuda", gpus=1, mem_pct=150)]))
    assert err is not None, violated("ADM-DENY-3", "gpumem-percentage 150 was admitted")
    text = str(err)
    assert C.GPUMEM_PCT in text and "cuda" in text, violated("ADM-DENY-3", f"denied with {text!r}")


@rule("ADM-DEFAULT-1", "A container with only nvidia.com/gpumem is given nvidia.com/gpu: 1 by default")
def test_default_gpu_count(workloads: Workloads) -> None:
    pod = workloads.create(pod_manifest("memonly", [ContainerSpec(mem=1000)]))
    limits = container_limits(pod)
    assert limits.get(C.GPU) == "1", violated("ADM-DEFAULT-1", f"limits after admission: {limits}")


@rule("ADM-DEFAULT-2", "nvidia.com/gpu alone means an exclusive card: nvidia.com/gpucores: 100 is injected")
def test_exclusive_default(workloads: Workloads) -> None:
    pod = workloads.create(pod_manifest("whole", [ContainerSpec(gpus=1)]))
    limits = container_limits(pod)
    assert limits.get(C.GPUCORES) == "100", violated("ADM-DEFAULT-2", f"limits after admission: {limits}")
