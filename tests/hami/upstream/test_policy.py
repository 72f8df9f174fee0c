"""Upstream device ordering, device and node scores, node policy and scoring weights.

From pkg/scheduler/policy/gpu_policy_test.go, node_policy_test.go and
pkg/util/device_scoring_weights_test.go, util_test.go (policy helpers), pkg/device/common (reasons).
"""

from __future__ import annotations

import pytest

from hami_stack.devices.base import ContainerDeviceRequest, DeviceUsage
from hami_stack.devices.scoring import best_node, device_score, node_score, order_devices, order_key
from hami_stack.protocol import annotations as ann
from hami_stack.protocol import events as ev
from hami_stack.protocol.errors import ProtocolError
from hami_stack.protocol.policy import ScoringWeights, gpu_policy, scoring_weights

from .policy_tables import LESS_CASES, SCORE_CASES
from .rows import D, R


@pytest.mark.parametrize("name, policy, numa_bind, a, b, less", LESS_CASES, ids=[c[0] for c in LESS_CASES])
def test_device_usage_list_less(
    name: str,
    policy: str,
    numa_bind: bool,
    a: tuple[DeviceUsage, float],
    b: tuple[DeviceUsage, float],
    less: bool,
) -> None:
    key = order_key(gpu_policy(policy, numa_bind=numa_bind))
    assert (key(*a) < key(*b)) is less


@pytest.mark.parametrize("name, device, requests, score", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_compute_score(
    name: str, device: DeviceUsage, requests: list[ContainerDeviceRequest], score: float
) -> None:
    assert device_score(device, requests, ScoringWeights()) == score


def _weighted(ident: str, used: int, cores: int, mem: int, numa: int = 0) -> DeviceUsage:
    return D(
        ident,
        type="type1",
        count=10,
        totalcore=100,
        totalmem=100,
        used=used,
        usedcores=cores,
        usedmem=mem,
        numa=numa,
    )


FORTY_PERCENT = [R(nums=1, type="type1", pct=40)]


@pytest.mark.parametrize(
    "weights, score_a, score_b, binpack_last, spread_last",
    [
        (ScoringWeights(1, 1, 1), 16, 15, "gpu-a", "gpu-b"),
        (ScoringWeights(1, 1, 3), 26, 27, "gpu-b", "gpu-a"),
        (ScoringWeights(1, 3, 1), 34, 17, "gpu-a", "gpu-b"),
    ],
)
def test_compute_score_with_resource_weights(
    weights: ScoringWeights, score_a: float, score_b: float, binpack_last: str, spread_last: str
) -> None:
    a, b = _weighted("gpu-a", 1, 90, 10), _weighted("gpu-b", 7, 10, 20)
    assert (device_score(a, FORTY_PERCENT, weights), device_score(b, FORTY_PERCENT, weights)) == (
        score_a,
        score_b,
    )
    assert order_devices([a, b], FORTY_PERCENT, gpu_policy("binpack"), weights)[-1].id == binpack_last
    assert order_devices([a, b], FORTY_PERCENT, gpu_policy("spread"), weights)[-1].id == spread_last


def test_numa_ordering_independent_from_weighted_score() -> None:
    a, b = _weighted("gpu-a", 1, 90, 10, numa=0), _weighted("gpu-b", 7, 10, 20, numa=1)
    ordered = order_devices(
        [a, b], FORTY_PERCENT, gpu_policy("binpack", numa_bind=True), ScoringWeights(1, 1, 3)
    )
    assert ordered[-1].id == "gpu-a"


# --- node policy (node_policy_test.go) ------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, scores, best",
    [
        ("spread", {"node1": 20.0, "node2": 10.0}, "node2"),
        ("spread", {"node1": 10.0, "node2": 20.0}, "node1"),
        ("binpack", {"node1": 10.0, "node2": 20.0}, "node2"),
        ("binpack", {"node1": 20.0, "node2": 10.0}, "node1"),
    ],
)
def test_node_score_list_less(policy: str, scores: dict[str, float], best: str) -> None:
    # upstream sorts with Less and takes the last node: spread the lowest, binpack the highest
    assert best_node(scores, policy) == best


def test_compute_default_score() -> None:
    zero = D("", count=0, totalcore=0, totalmem=0)
    assert node_score([zero]) == 0 and node_score([]) == 0
    d1 = D(
        "device1",
        index=1,
        used=50,
        count=100,
        usedmem=100,
        totalmem=100,
        totalcore=100,
        usedcores=100,
        type="GPU",
        health=True,
    )
    d2 = D(
        "device2",
        index=2,
        used=75,
        count=150,
        usedmem=200,
        totalmem=200,
        totalcore=200,
        usedcores=200,
        numa=1,
        type="CPU",
    )
    assert node_score([d1, d2]) == 25.0  # 10 x (125/250 + 300/300 + 300/300)
    assert node_score([d1]) == 25.0


# --- device scoring weights (pkg/util/device_scoring_weights_test.go) ----------------------------


@pytest.mark.parametrize(
    "value, want",
    [
        (None, ScoringWeights(1, 1, 1)),
        ("slot=1,core=2,memory=3", ScoringWeights(1, 2, 3)),
        (" memory = 3, slot = 1, core = 0 ", ScoringWeights(1, 0, 3)),
    ],
)
def test_parse_device_scoring_weights(value: str | None, want: ScoringWeights) -> None:
    assert scoring_weights(value) == want


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "expected slot, core, and memory weights"),
        ("slot=1,memory=3", "expected slot, core, and memory weights"),
        ("slot=1,core,memory=3", "expected key=value entries"),
        ("slot=1,core=high,memory=3", '"core" weight must be an integer'),
        ("slot=1,core=-1,memory=3", '"core" weight must not be negative'),
        ("slot=1,bandwidth=2,memory=3", 'unknown weight "bandwidth"'),
        ("slot=1,slot=2,memory=3", 'duplicate "slot" weight'),
        ("slot=0,core=0,memory=0", "at least one weight must be positive"),
    ],
)
def test_parse_device_scoring_weights_errors(value: str, message: str) -> None:
    with pytest.raises(ProtocolError) as e:
        scoring_weights(value)
    assert message in str(e.value)


# --- policy helpers (pkg/util/util_test.go) and reasons (pkg/device/common) ----------------------


@pytest.mark.parametrize(
    "annotations, want",
    [
        ({}, "binpack"),
        ({"other-annotation": "value"}, "binpack"),
        ({ann.GPU_SCHEDULER_POLICY: "spread"}, "spread"),
    ],
)
def test_gpu_scheduler_policy_by_pod(annotations: dict[str, str], want: str) -> None:
    assert gpu_policy(annotations.get(ann.GPU_SCHEDULER_POLICY), default="binpack").text == want


@pytest.mark.parametrize(
    "policy, word, contains",
    [
        ("mutex", "mutex", True),
        ("spread", "mutex", False),
        ("", "mutex", False),
        ("mutex,spread", "mutex", True),
        ("spread,numa,mutex", "mutex", True),
        ("binpack,spread", "mutex", False),
        ("mutex, spread, numa", "numa", True),
        ("binpack,spread,numa", "topology-aware", False),
    ],
)
def test_policy_contains(policy: str, word: str, contains: bool) -> None:
    p = gpu_policy(policy)
    assert (word in p.words) is contains
    assert p.mutex is (contains if word == "mutex" else "mutex" in policy)
    assert p.topology_aware is (contains if word == "topology-aware" else False)


def test_parse_reason() -> None:
    assert ev.parse_reason("3/8 CardInsufficientMemory, 2/8 CardInsufficientCore, 3/8 CardNotHealth") == {
        "CardInsufficientMemory": 3,
        "CardInsufficientCore": 2,
        "CardNotHealth": 3,
    }
    assert ev.parse_reason("NodeInsufficientDevice") == {}
