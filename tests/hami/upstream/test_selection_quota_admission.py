"""Upstream vectors for device selection (UUID/type lists), fit-time quota and the exclusive default.

From pkg/device/devices_test.go (TestCheckUUID, TestCheckType) and pkg/device/nvidia/device_test.go
(TestFitQuota, TestMutateAdmissionDefaultsExclusiveCore, TestAssertNuma).
"""

from __future__ import annotations

from typing import Any

import pytest

from hami_stack.devices.base import ContainerDevice, pod_quota_usage
from hami_stack.devices.config import NvidiaConfig
from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import annotations as ann
from hami_stack.protocol import events as ev
from hami_stack.protocol.policy import numa_bind_requested
from hami_stack.scheduler.cache import UsageCache
from hami_stack.scheduler.quota import QuotaCache

from .rows import D, R, ctx_for, pod
from .select_tables import CHECK_TYPE_CASES, CHECK_UUID_CASES

NV = NvidiaFamily()


@pytest.mark.parametrize(
    "name, lists, device_id, selected", CHECK_UUID_CASES, ids=[c[0] for c in CHECK_UUID_CASES]
)
def test_check_uuid(name: str, lists: dict[str, str], device_id: str, selected: bool) -> None:
    keys = {"use": ann.NVIDIA_USE_GPUUUID, "nouse": ann.NVIDIA_NOUSE_GPUUUID}
    annotations = {keys[k]: v for k, v in lists.items()}
    dev = D(device_id, count=10, totalmem=1000, totalcore=100, type="NVIDIA", health=True)
    r = NV.fit([dev], R(nums=1, mem=10, type="NVIDIA"), ctx_for(pod(annotations)))
    assert r.ok is selected
    if not selected:
        assert r.reason == f"1/1 {ev.CARD_UUID_MISMATCH}"


@pytest.mark.parametrize(
    "name, lists, card_type, selected", CHECK_TYPE_CASES, ids=[c[0] for c in CHECK_TYPE_CASES]
)
def test_check_type(name: str, lists: dict[str, str], card_type: str, selected: bool) -> None:
    keys = {"use": ann.NVIDIA_USE_GPUTYPE, "nouse": ann.NVIDIA_NOUSE_GPUTYPE}
    annotations = {keys[k]: v for k, v in lists.items()}
    dev = D("GPU-0", count=10, totalmem=1000, totalcore=100, type=card_type, health=True)
    r = NV.fit([dev], R(nums=1, mem=10, type="NVIDIA"), ctx_for(pod(annotations)))
    assert r.ok is selected
    if not selected:
        assert r.reason == f"1/1 {ev.CARD_TYPE_MISMATCH}"


# --- fitQuota: the pod's devices add up, init containers count by their peak (limit 2048 MiB) -----


def nv(uuid: str, mem: int, cores: int) -> ContainerDevice:
    return ContainerDevice(uuid, "NVIDIA", mem, cores)


FIT_QUOTA_CASES = [
    # (name, init containers, earlier containers' picks, this container's picks, candidate, fits)
    ("no tmp and no allocated", 0, [], [], nv("gpu-0", 100, 1), True),
    ("request exceed quota", 0, [], [], nv("gpu-0", 3000, 1), False),
    ("tmpdev", 0, [], [nv("gpu-1", 1024, 5)], nv("gpu-0", 100, 1), True),
    ("tmpdev exceed quota", 0, [], [nv("gpu-1", 1024, 5)], nv("gpu-0", 2000, 1), False),
    ("allocated devs", 0, [[nv("gpu-0", 1024, 2)]], [], nv("gpu-1", 100, 1), True),
    ("allocated devs exceed quota", 0, [[nv("gpu-0", 1024, 2)]], [], nv("gpu-1", 2000, 1), False),
    ("exceed quota", 0, [[nv("gpu-0", 1024, 2)]], [nv("gpu-1", 1024, 5)], nv("gpu-1", 100, 1), False),
    ("fit", 0, [[nv("gpu-0", 100, 2)]], [nv("gpu-1", 100, 1)], nv("gpu-1", 100, 1), True),
    (
        "fitting second init container maxes against first",
        2,
        [[nv("gpu-0", 1500, 2)]],
        [],
        nv("gpu-0", 1500, 1),
        True,
    ),
    (
        "sequential init containers counted as peak not sum",
        2,
        [[nv("gpu-0", 1024, 2)], [nv("gpu-0", 1024, 2)]],
        [],
        nv("gpu-0", 500, 1),
        True,
    ),
    ("collapsed init peak still enforces quota", 1, [[nv("gpu-0", 2100, 2)]], [], nv("gpu-1", 100, 1), False),
]


@pytest.mark.parametrize(
    "name, n_init, previous, current, candidate, fits", FIT_QUOTA_CASES, ids=[c[0] for c in FIT_QUOTA_CASES]
)
def test_fit_quota(
    name: str, n_init: int, previous: list, current: list, candidate: ContainerDevice, fits: bool
) -> None:
    quotas = QuotaCache([NV], UsageCache([NV]))
    quotas.on_quota(
        "ADDED",
        {
            "metadata": {"name": "basic-quota", "namespace": "default"},
            "spec": {"hard": {"limits.nvidia.com/gpumem": "2048"}},
        },
    )
    mem, cores = pod_quota_usage(previous, [*current, candidate], n_init, "NVIDIA")
    assert quotas.fits("default", NV, mem, cores) is fits


def test_fit_quota_through_fit() -> None:
    # the same rule inside fit: a second device of the container is refused once the sum passes
    seen: list[int] = []

    def quota(ns: str, fam: Any, mem: int, cores: int) -> bool:
        seen.append(mem)
        return mem <= 2048

    devices = [
        D(f"gpu-{i}", index=i, count=10, totalmem=8192, totalcore=100, type="NVIDIA", health=True)
        for i in range(2)
    ]
    r = NV.fit(devices, R(nums=2, mem=1500, type="NVIDIA"), ctx_for(pod(), quota_fits=quota))
    assert not r.ok and seen == [1500, 3000]
    assert r.reason == f"1/2 {ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST}, 1/2 {ev.RESOURCE_QUOTA_NOT_FIT}"


# --- the exclusive-core default of the webhook ---------------------------------------------------

CUSTOM = NvidiaConfig(
    resource_count_name="hami.io/gpu",
    resource_memory_name="hami.io/gpumem",
    resource_memory_percentage_name="hami.io/gpumem-percentage",
    resource_core_name="hami.io/gpucores",
)


@pytest.mark.parametrize(
    "config, limits, requests, limit_cores, request_cores",
    [
        (NvidiaConfig(), {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "100"}, None, "100", None),
        (NvidiaConfig(), None, {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "100"}, "100", None),
        (NvidiaConfig(), {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50"}, None, None, None),
        (NvidiaConfig(), {"nvidia.com/gpu": "1"}, None, "100", None),
        (NvidiaConfig(), {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "70"}, None, "70", None),
        (NvidiaConfig(), None, {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "55"}, None, "55"),
        (NvidiaConfig(), {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8192"}, None, None, None),
        (NvidiaConfig(resource_memory_name=""), {"nvidia.com/gpu": "1"}, None, "100", None),
        (CUSTOM, {"hami.io/gpu": "1", "hami.io/gpumem-percentage": "100"}, None, "100", None),
    ],
)
def test_mutate_admission_defaults_exclusive_core(
    config: NvidiaConfig,
    limits: dict[str, str] | None,
    requests: dict[str, str] | None,
    limit_cores: str | None,
    request_cores: str | None,
) -> None:
    res: dict[str, Any] = {}
    if limits is not None:
        res["limits"] = dict(limits)
    if requests is not None:
        res["requests"] = dict(requests)
    container: dict[str, Any] = {"name": "c", "resources": res}
    fam = NvidiaFamily(config)
    fam.mutate_admission(container, {"spec": {"containers": [container]}})
    got = container["resources"]
    core = config.resource_core_name
    assert (got.get("limits") or {}).get(core) == limit_cores
    assert (got.get("requests") or {}).get(core) == request_cores


@pytest.mark.parametrize(
    "annotations, bound",
    [
        ({}, False),
        ({ann.NVIDIA_NUMA_BIND: "true"}, True),
        ({ann.NVIDIA_NUMA_BIND: "false"}, False),
        ({ann.NVIDIA_NUMA_BIND: "invalid"}, False),
    ],
)
def test_assert_numa(annotations: dict[str, str], bound: bool) -> None:
    assert numa_bind_requested(annotations.get(ann.NVIDIA_NUMA_BIND)) is bound


@pytest.mark.parametrize(
    "lists, card_type, selected",
    [
        ({"use": "A10"}, "NVIDIA A100", True),
        ({"use": "A10", "nouse": "A100"}, "NVIDIA A100", False),
        ({"use": "A10", "nouse": "A100"}, "NVIDIA A10", True),
    ],
)
def test_nvidia_check_type(lists: dict[str, str], card_type: str, selected: bool) -> None:
    # Test_checkType (pkg/device/nvidia)
    keys = {"use": ann.NVIDIA_USE_GPUTYPE, "nouse": ann.NVIDIA_NOUSE_GPUTYPE}
    dev = D("GPU-0", count=10, totalmem=1000, totalcore=100, type=card_type, health=True)
    r = NV.fit([dev], R(nums=1, mem=10, type="NVIDIA"), ctx_for(pod({keys[k]: v for k, v in lists.items()})))
    assert r.ok is selected


def test_patch_annotations() -> None:
    # Test_PatchAnnotations (pkg/device/nvidia)
    value = "nvidia-device-0,NVIDIA,2000,1:;"
    assert NV.pod_annotations([[ContainerDevice("nvidia-device-0", "NVIDIA", 2000, 1)]]) == {
        ann.NVIDIA_KEYS.to_allocate: value,
        ann.NVIDIA_KEYS.allocated: value,
    }
    assert NV.pod_annotations([]) == {}


def test_resource_requests_init_containers_first() -> None:
    # TestResourcereqs_*: one entry per container, init containers first, empty for no request
    gpu = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    p = {
        "spec": {
            "initContainers": [{"name": "i0", **gpu}, {"name": "i1"}],
            "containers": [{"name": "c0"}, {"name": "c1", **gpu}],
        }
    }
    assert [r is not None for r in NV.pod_requests(p)] == [True, False, False, True]
    assert NV.pod_requests({"spec": {}}) == []
    assert NV.pod_requests({"spec": {"containers": [{"name": "c"}]}}) == [None]
