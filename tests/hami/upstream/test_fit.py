"""Upstream NVIDIA ``Fit`` vectors (pkg/device/nvidia/device_test.go, pkg/scheduler/numa_sort_test.go)."""

from __future__ import annotations

from typing import Any

import pytest

from hami_stack.devices.base import ContainerDeviceRequest, DeviceUsage
from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.devices.scoring import order_key
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.protocol.policy import gpu_policy
from hami_stack.protocol.register import encode_topology_scores

from .fit_tables import FIT_CASES
from .rows import D, R, ctx_for, node_with, pod

NV = NvidiaFamily()


@pytest.mark.parametrize(
    "name, devices, request_, annotations, fits, ids, reason", FIT_CASES, ids=[c[0] for c in FIT_CASES]
)
def test_devices_fit(
    name: str,
    devices: list[DeviceUsage],
    request_: ContainerDeviceRequest,
    annotations: dict[str, str],
    fits: bool,
    ids: list[str],
    reason: str,
) -> None:
    r = NV.fit(devices, request_, ctx_for(pod(annotations)))
    assert r.ok is fits
    if fits:
        assert [d.uuid for d in r.devices] == ids
    assert r.reason == reason


def _two() -> list[DeviceUsage]:
    return [
        D("dev-0", count=100, totalmem=128, totalcore=100, type="NVIDIA", health=True),
        D("dev-1", count=100, totalmem=128, totalcore=100, type="NVIDIA", health=True),
    ]


CORDON_REQUEST = R(nums=1, mem=64, cores=50, type="NVIDIA")


@pytest.mark.parametrize(
    "cordon, fits, picked, reason",
    [
        ("dev-1, ", True, "dev-0", ""),  # cordoned device skipped, sibling fits
        ("dev-0,dev-1", False, None, "2/2 CardCordoned"),
        (None, True, "dev-1", ""),  # no annotation: nothing cordoned
    ],
)
def test_fit_device_cordon(cordon: str | None, fits: bool, picked: str | None, reason: str) -> None:
    node = node_with({ann.DEVICE_CORDON: cordon} if cordon is not None else {})
    r = NV.fit(_two(), CORDON_REQUEST, ctx_for(pod(), node))
    assert r.ok is fits and r.reason == reason
    if picked:
        assert r.devices[0].uuid == picked


def test_fit_cordon_leaves_running_usage_alone() -> None:
    devices = _two()
    devices[1].used, devices[1].usedcores, devices[1].usedmem = 1, 50, 64
    r = NV.fit(devices, CORDON_REQUEST, ctx_for(pod(), node_with({ann.DEVICE_CORDON: "dev-1"})))
    assert r.ok and r.devices[0].uuid == "dev-0" and devices[1].used == 1
    assert NV.fit(_two(), CORDON_REQUEST, ctx_for(pod(), None)).ok  # no node at all


def _gpus(*numa: int, count: int = 10) -> list[DeviceUsage]:
    return [
        D(f"dev-{i}", index=i, count=count, totalmem=8192, totalcore=100, type="NVIDIA", health=True, numa=n)
        for i, n in enumerate(numa)
    ]


def test_fit_numa_switching_restarts_on_the_new_numa_node() -> None:
    r = NV.fit(
        _gpus(1, 1, 0),
        R(nums=2, mem=100, cores=10, type="NVIDIA"),
        ctx_for(pod({ann.NVIDIA_NUMA_BIND: "true"})),
    )
    assert r.ok and [d.uuid for d in r.devices] == ["dev-1", "dev-0"]


def test_fit_mutex_policy() -> None:
    devices = [
        D("used", used=1, count=10, totalmem=8192, totalcore=100, type="NVIDIA", health=True),
        D("idle", index=1, count=10, totalmem=8192, totalcore=100, type="NVIDIA", health=True),
    ]
    ctx = ctx_for(pod({ann.GPU_SCHEDULER_POLICY: "mutex"}))
    one = NV.fit(devices, R(nums=1, mem=100, cores=10, type="NVIDIA"), ctx)
    assert one.ok and [d.uuid for d in one.devices] == ["idle"]
    assert not NV.fit(devices, R(nums=2, mem=100, cores=10, type="NVIDIA"), ctx).ok


def _topology(scores: dict[str, dict[str, int]], nums: int) -> list[str]:
    node = node_with({ann.NVIDIA_TOPOLOGY_SCORE: encode_topology_scores(scores)})
    ctx = ctx_for(pod({ann.GPU_SCHEDULER_POLICY: "topology-aware"}), node)
    r = NV.fit(_gpus(0, 0, 0), R(nums=nums, mem=100, cores=10, type="NVIDIA"), ctx)
    assert r.ok and len(r.devices) == nums
    return sorted(d.uuid for d in r.devices)


LINKS = {
    "dev-0": {"dev-1": 100, "dev-2": 200},
    "dev-1": {"dev-0": 100, "dev-2": 150},
    "dev-2": {"dev-0": 200, "dev-1": 150},
}
ZERO = {
    "dev-0": {"dev-1": 0, "dev-2": 0},
    "dev-1": {"dev-0": 0, "dev-2": 0},
    "dev-2": {"dev-0": 0, "dev-1": 0},
}
NEGATIVE = {
    "dev-0": {"dev-1": -5, "dev-2": -3},
    "dev-1": {"dev-0": -5, "dev-2": -1},
    "dev-2": {"dev-0": -3, "dev-1": -1},
}


def test_fit_topology_aware() -> None:
    node = node_with({})
    exact = NV.fit(
        _gpus(0, 0),
        R(nums=2, mem=100, cores=10, type="NVIDIA"),
        ctx_for(pod({ann.GPU_SCHEDULER_POLICY: "topology-aware"}), node),
    )
    assert exact.ok and len(exact.devices) == 2
    assert _topology(LINKS, 1) == ["dev-1"]  # the card least linked to the others
    assert _topology(LINKS, 2) == ["dev-0", "dev-2"]  # the best-linked pair
    assert len(_topology(ZERO, 2)) == 2
    assert _topology(NEGATIVE, 1) == ["dev-0"]
    assert _topology(NEGATIVE, 2) == ["dev-1", "dev-2"]


def _sorted(devs: list[DeviceUsage], scores: list[float], policy: str, numa_bind: bool) -> list[DeviceUsage]:
    key = order_key(gpu_policy(policy, numa_bind=numa_bind))
    by_id = dict(zip((d.id for d in devs), scores, strict=True))
    return sorted(devs, key=lambda d: key(d, by_id[d.id]))


def _mk(ident: str, numa: int) -> DeviceUsage:
    return D(ident, count=10, totalmem=8192, totalcore=100, type="NVIDIA", health=True, numa=numa)


def test_numa_bind_sort_preserves_affinity() -> None:
    devs = [_mk("A_n0", 0), _mk("B_n0", 0), _mk("C_n1", 1)]
    req = R(nums=2, mem=100, cores=10, type="NVIDIA")
    ctx = ctx_for(pod({ann.NVIDIA_NUMA_BIND: "true"}))
    assert not NV.fit(_sorted(devs, [5, 1, 3], "spread", False), req, ctx).ok
    r = NV.fit(_sorted(devs, [5, 1, 3], "spread", True), req, ctx)
    assert r.ok and {d.uuid for d in r.devices} == {"A_n0", "B_n0"}


def test_score_primary_selects_across_numa() -> None:
    devs = [_mk("P_n0", 0), _mk("Q_n1", 1), _mk("R_n1", 1)]
    r = NV.fit(
        _sorted(devs, [1, 8, 5], "spread", False), R(nums=1, mem=100, cores=10, type="NVIDIA"), ctx_for(pod())
    )
    assert r.ok and [d.uuid for d in r.devices] == ["P_n0"]


def test_fit_resolves_what_it_hands_out() -> None:
    # TestDevices_Fit "core limit can't exceed 100" and "memory percentage", checked on the values
    big = [D("dev-0", count=100, totalmem=1280, totalcore=100, type="NVIDIA", health=True)]
    assert NV.fit(big, R(nums=1, mem=512, cores=120, type="NVIDIA"), ctx_for(pod())).devices == [
        ContainerDevice("dev-0", "NVIDIA", 512, 100)
    ]
    pct: Any = NV.fit(big, R(nums=1, pct=10, cores=20, type="NVIDIA"), ctx_for(pod()))
    assert pct.devices == [ContainerDevice("dev-0", "NVIDIA", 128, 20)]


def test_fit_mig_device() -> None:
    # TestFit_MigPercentageRequestRejectsUndersizedTemplate: no fit (ours: MIG is off, a mig-mode
    # device never fits). Test_fitInCertainDevice "mode is mig" expects no fit with
    # {CardMigTopologyInfeasible: 1, AllocatedCardsInsufficientRequest: 1} (one MIG slice picked,
    # the second infeasible); ours refuses the device whole: {CardMigTopologyInfeasible: 1}.
    pct = NV.fit(
        [D("dev-0", count=1, totalmem=8192, totalcore=100, type="NVIDIA", health=True, mode="mig")],
        R(nums=1, pct=50, cores=10, type="NVIDIA"),
        ctx_for(pod()),
    )
    assert not pct.ok
    two = NV.fit(
        [
            D(
                "test-0",
                numa=1,
                used=1,
                count=4,
                totalmem=8192,
                usedmem=2048,
                usedcores=1,
                totalcore=4,
                type="NVIDIA",
                health=True,
                mode="mig",
            )
        ],
        R(nums=2, mem=1024, pct=100, cores=1, type="NVIDIA"),
        ctx_for(pod()),
    )
    assert not two.ok and two.reason == "1/1 CardMigTopologyInfeasible"
