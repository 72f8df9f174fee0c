"""Isolation: no GPU without a request, no view of another pod's GPU, sharing one GPU safely."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import (
    ContainerSpec,
    Workloads,
    allocated,
    gpu_nodes,
    gpu_pod,
    pod_manifest,
    registered_devices,
)
from conformance.suites.test_allocation import QUICK, nvml_uuids

pytestmark = [pytest.mark.nvidia, pytest.mark.isolation]
# long enough for the second pod to start while the first still holds its slice: a real kube-scheduler
# can take up to REAL_SCHEDULER_RETRY_S (160 s) to bind a pod whose bind met the first pod's node lock
# (real 1.22: share-0 had Succeeded after its 30 s when share-1 ran); the pods are deleted at the end
HOLD = ["--alloc-mib", "64", "--kernel-seconds", "0", "--hold-seconds", "240"]


@rule("ISO-NOGPU-1", "A pod that requests no accelerator sees no GPU", ai=("secure_accelerator_access",))
def test_no_request_no_gpu(workloads: Workloads, attach: Any) -> None:
    workloads.create(pod_manifest("nogpu", [ContainerSpec(args=QUICK)]))
    doc = workloads.probe("nogpu")
    attach("probe.json", json.dumps(doc, indent=2))
    nvml = (doc.get("nvml") or {}).get("devices") or []
    cuda = (doc.get("cuda") or {}).get("devices") or []
    assert not nvml and not cuda, violated(
        "ISO-NOGPU-1",
        f"a pod without device requests sees NVML {[d['uuid'] for d in nvml]}, "
        f"CUDA {[d['uuid'] for d in cuda]}",
    )


@rule(
    "ISO-CROSS-1", "Two pods on different GPUs each see only their own GPU", ai=("secure_accelerator_access",)
)
def test_no_cross_visibility(workloads: Workloads, kube: Any, attach: Any) -> None:
    node = gpu_nodes(kube)[0]
    uuids = [d.id for d in registered_devices(node)][:2]
    for i, uuid in enumerate(uuids):
        workloads.create(gpu_pod(f"iso-{i}", gpus=1, mem=1000, annotations={C.USE_GPUUUID: uuid}, args=QUICK))
    for i, uuid in enumerate(uuids):
        doc = workloads.probe(f"iso-{i}")
        attach(f"probe-{i}.json", json.dumps(doc, indent=2))
        seen = nvml_uuids(doc, "ISO-CROSS-1")
        assert seen == [uuid], violated("ISO-CROSS-1", f"pod iso-{i} assigned {uuid} sees {seen}")


@rule(
    "ISO-SHARE-1",
    "Two pods share one physical GPU at the same time, each with its own memory slice",
    ai=("gpu_sharing",),
)
def test_gpu_sharing(workloads: Workloads, kube: Any, attach: Any) -> None:
    node = gpu_nodes(kube)[-1]
    uuid = registered_devices(node)[-1].id
    for i in range(2):
        workloads.create(
            gpu_pod(f"share-{i}", gpus=1, mem=2000, annotations={C.USE_GPUUUID: uuid}, args=HOLD)
        )
    docs = []
    for i in range(2):
        workloads.wait_phase(f"share-{i}", ("Running",))
        doc = workloads.probe_running(f"share-{i}")
        attach(f"probe-{i}.json", json.dumps(doc, indent=2))
        docs.append(doc)
    both_running = [workloads.get(f"share-{i}")["status"].get("phase") for i in range(2)]
    assert both_running == ["Running", "Running"], violated(
        "ISO-SHARE-1", f"phases {both_running}: not concurrent"
    )
    for i, doc in enumerate(docs):
        assert [d.uuid for d in allocated(workloads.get(f"share-{i}"))[0]] == [uuid]
        assert nvml_uuids(doc, "ISO-SHARE-1") == [uuid], violated(
            "ISO-SHARE-1", f"share-{i} sees {nvml_uuids(doc, 'ISO-SHARE-1')}"
        )
        total = ((doc.get("cuda") or {}).get("mem_before") or {}).get("total")
        assert total == 2000 << 20, violated(
            "ISO-SHARE-1", f"share-{i} sees a {total} byte device, want its own 2000 MiB slice"
        )
        alloc = (doc.get("cuda") or {}).get("alloc") or {}
        assert alloc.get("ok"), violated(
            "ISO-SHARE-1", f"share-{i} could not allocate 64 MiB on the shared GPU: {alloc}"
        )
