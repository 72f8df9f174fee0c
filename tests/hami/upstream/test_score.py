"""Upstream scheduler vectors: a pod's containers fitted and scored on each node.

From pkg/scheduler/score_test.go: Test_calcScore (through :func:`fit_node`), Test_fitInCertainDevice,
Test_fitInDevices, Test_Nvidia_GPU_Topology and the device-scoring-weight tests. Not ported: the
two Kunlunxin cases (another vendor's backend) and the MIG case (MIG is off here; see
UPSTREAM-DIFFERENCES.md).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest

from hami_stack.devices.base import ContainerDeviceRequest, DeviceUsage
from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import annotations as ann
from hami_stack.protocol import events as ev
from hami_stack.protocol.errors import ProtocolError
from hami_stack.protocol.policy import GpuPolicy, gpu_policy, node_policy, scoring_weights
from hami_stack.protocol.register import encode_topology_scores
from hami_stack.scheduler.decide import PodPlan, fit_node, plan_pod

from .rows import D, R, ctx_for, node_with, pod
from .score_tables import CALC_SCORE_CASES, CERTAIN_DEVICE_CASES, FIT_IN_DEVICES_CASES, TOPOLOGY_CASES

NV = NvidiaFamily()


def plan_for(
    requests: Sequence[Sequence[ContainerDeviceRequest]],
    n_init: int,
    annotations: dict[str, str],
    device_policy: str,
    numa_bind: bool = False,
) -> PodPlan:
    """The plan the scheduler builds from a pod: per container its NVIDIA request (or none)."""
    per_container = tuple(next(iter(r), None) for r in requests)
    return PodPlan(
        ((NV, per_container),),
        n_init,
        len(per_container),
        node_policy(annotations.get(ann.NODE_SCHEDULER_POLICY), "binpack"),
        GpuPolicy(device_policy, numa_bind),
        scoring_weights(annotations.get(ann.DEVICE_SCORING_WEIGHTS)),
    )


def _picks(fit: Any) -> dict[str, list[list[tuple[str, str, int, int]]]]:
    return {
        cw: [[(d.uuid, d.type, d.usedmem, d.usedcores) for d in ctr] for ctr in pd]
        for cw, pd in fit.devices.items()
    }


@pytest.mark.parametrize(
    "name, nodes, requests, annotations, n_init, want, failed",
    CALC_SCORE_CASES,
    ids=[c[0] for c in CALC_SCORE_CASES],
)
def test_calc_score(
    name: str,
    nodes: dict[str, tuple[str, bool, list[DeviceUsage]]],
    requests: list[list[ContainerDeviceRequest]],
    annotations: dict[str, str],
    n_init: int,
    want: dict[str, tuple[dict, float]],
    failed: dict[str, str],
) -> None:
    p = pod(annotations, namespace="default", init=n_init)
    p["spec"]["containers"] = [{"name": f"c{i}"} for i in range(len(requests) - n_init)]
    got_failed: dict[str, str] = {}
    for node, (policy, numa_bind, devices) in nodes.items():
        plan = plan_for(requests, n_init, annotations, policy, numa_bind)
        fit = fit_node(p, plan, {"metadata": {"name": node}}, {"NVIDIA": copy.deepcopy(devices)}, None)
        if not fit.ok:
            got_failed[node] = fit.reason
            continue
        picks, score = want[node]
        assert _picks(fit) == {cw: [[tuple(d) for d in c] for c in pd] for cw, pd in picks.items()}
        assert fit.score == score
    assert got_failed == failed


def _reason_counts(reason: str) -> dict[str, int]:
    return ev.parse_reason(reason)


@pytest.mark.parametrize(
    "name, devices, request_, annotations, fits, picks, reasons",
    CERTAIN_DEVICE_CASES,
    ids=[c[0] for c in CERTAIN_DEVICE_CASES],
)
def test_fit_in_certain_device(
    name: str,
    devices: list[DeviceUsage],
    request_: ContainerDeviceRequest,
    annotations: dict[str, str],
    fits: bool,
    picks: list[tuple[str, str, int, int]],
    reasons: dict[str, int],
) -> None:
    nvidia_devices = [d for d in copy.deepcopy(devices) if NV.matches_type(d)]  # HAMi's getNodeResources
    r = NV.fit(nvidia_devices, request_, ctx_for(pod(annotations)))
    assert r.ok is fits
    if fits:
        assert [(d.uuid, d.type, d.usedmem, d.usedcores) for d in r.devices] == [tuple(p) for p in picks]
    assert _reason_counts(r.reason) == reasons


@pytest.mark.parametrize(
    "name, devices, requests, fits, reason", FIT_IN_DEVICES_CASES, ids=[c[0] for c in FIT_IN_DEVICES_CASES]
)
def test_fit_in_devices(
    name: str, devices: list[DeviceUsage], requests: list[ContainerDeviceRequest], fits: bool, reason: str
) -> None:
    if any(r.type != NV.common_word for r in requests):
        # a request of a type no backend registered: HAMi answers "Device type not found"; here a
        # pod's requests come from the registered families, so such a pod has no plan at all
        assert reason == "Device type not found"
        assert plan_pod(
            {"spec": {"containers": [{"name": "c", "resources": {"limits": {"test": "1"}}}]}},
            [NV],
            "binpack",
            "spread",
        ).empty
        return
    plan = plan_for([requests], 0, {}, "spread")
    fit = fit_node(pod(), plan, {"metadata": {"name": "node-1"}}, {"NVIDIA": copy.deepcopy(devices)}, None)
    assert fit.ok is fits and fit.reason == reason


@pytest.mark.parametrize(
    "name, devices, request_, annotations, scores, fits, picks, reason",
    TOPOLOGY_CASES,
    ids=[c[0] for c in TOPOLOGY_CASES],
)
def test_nvidia_gpu_topology(
    name: str,
    devices: list[DeviceUsage],
    request_: ContainerDeviceRequest,
    annotations: dict[str, str],
    scores: dict[str, dict[str, int]],
    fits: bool,
    picks: list[tuple[str, str, int, int]],
    reason: str,
) -> None:
    node = node_with({ann.NVIDIA_TOPOLOGY_SCORE: encode_topology_scores(scores)})
    r = NV.fit(copy.deepcopy(devices), request_, ctx_for(pod(annotations), node))
    assert r.ok is fits and r.reason == reason
    assert [(d.uuid, d.type, d.usedmem, d.usedcores) for d in r.devices] == [tuple(p) for p in picks]


# --- device scoring weights in the scheduler (TestCalcScore*DeviceScoringWeights*) --------------


def _weight_devices() -> list[DeviceUsage]:
    return [
        D(
            "gpu-a",
            index=0,
            type="NVIDIA",
            health=True,
            count=10,
            used=1,
            totalcore=100,
            usedcores=90,
            totalmem=100,
            usedmem=10,
        ),
        D(
            "gpu-b",
            index=1,
            type="NVIDIA",
            health=True,
            count=10,
            used=7,
            totalcore=100,
            usedcores=10,
            totalmem=100,
            usedmem=20,
        ),
    ]


FORTY = R(nums=1, type="NVIDIA", pct=40)


def _selected(
    annotations: dict[str, str], n_init: int = 0, scores: dict[str, dict[str, int]] | None = None
) -> str:
    requests: list[list[ContainerDeviceRequest]] = [[FORTY]] + [[] for _ in range(n_init)]
    policy = annotations.get(ann.GPU_SCHEDULER_POLICY, "spread")
    plan = plan_for(requests, n_init, annotations, policy)
    node: dict[str, Any] = {"metadata": {"name": "node1", "annotations": {}}}
    if scores is not None:
        node["metadata"]["annotations"][ann.NVIDIA_TOPOLOGY_SCORE] = encode_topology_scores(scores)
    p = pod(annotations, namespace="default", init=n_init)
    fit = fit_node(p, plan, node, {"NVIDIA": _weight_devices()}, None)
    assert fit.ok
    assert [len(c) for c in fit.devices["NVIDIA"]] == [1] + [0] * n_init
    return fit.devices["NVIDIA"][0][0].uuid


def test_calc_score_rejects_invalid_device_scoring_weights() -> None:
    with pytest.raises(ProtocolError, match='"core" weight must not be negative'):
        scoring_weights("slot=1,core=-1,memory=3")


@pytest.mark.parametrize("n_init", [0, 1])
def test_calc_score_uses_pod_device_scoring_weights(n_init: int) -> None:
    binpack = {ann.GPU_SCHEDULER_POLICY: "binpack"}
    assert _selected(binpack, n_init) == "gpu-a"
    assert _selected({**binpack, ann.DEVICE_SCORING_WEIGHTS: "slot=1,core=1,memory=3"}, n_init) == "gpu-b"


def test_device_scoring_weights_break_topology_ties() -> None:
    topo = {ann.GPU_SCHEDULER_POLICY: "topology-aware"}
    equal = {"gpu-a": {"gpu-b": 1}, "gpu-b": {"gpu-a": 1}}
    assert _selected(topo, scores=equal) == "gpu-b"
    assert _selected({**topo, ann.DEVICE_SCORING_WEIGHTS: "slot=1,core=1,memory=3"}, scores=equal) == "gpu-a"


def test_gpu_policy_of_the_test_nodes() -> None:
    # the Go tests set the device list's policy directly; the pod annotation feeds the same value
    assert gpu_policy("topology-aware").topology_aware
