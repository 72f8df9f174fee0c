"""Scheduling policy annotations: node and GPU policies and device-scoring weights.

* ``hami.io/node-scheduler-policy``: ``binpack`` or ``spread``; any other value behaves as binpack.
* ``hami.io/gpu-scheduler-policy``: ``binpack``, ``spread``, ``topology-aware``, ``mutex``, ``numa`` or a
  comma chain (``binpack,numa``). ``binpack``/``spread``/``numa`` are sort keys in written order,
  ``mutex`` and ``topology-aware`` are behaviours; a chain without a sort key sorts as spread;
  ``nvidia.com/numa-bind: "true"`` forces ``numa`` first.
* ``hami.io/device-scoring-weights``: exactly ``slot=<n>,core=<n>,memory=<n>`` (any order),
  non-negative integers, at least one positive. Default 1/1/1. Invalid -> Filter fails the pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import ProtocolError

BINPACK: Final = "binpack"
SPREAD: Final = "spread"
TOPOLOGY_AWARE: Final = "topology-aware"
MUTEX: Final = "mutex"
NUMA: Final = "numa"
GPU_POLICIES: Final = (BINPACK, SPREAD, TOPOLOGY_AWARE, MUTEX, NUMA)
SORT_KEYS: Final = (BINPACK, SPREAD, NUMA)
DEFAULT_NODE_POLICY: Final = BINPACK
DEFAULT_GPU_POLICY: Final = SPREAD


def node_policy(value: str | None, default: str = DEFAULT_NODE_POLICY) -> str:
    """The effective node policy: spread only when asked, binpack for anything else."""
    if not value:
        return default
    return SPREAD if value.strip() == SPREAD else BINPACK


@dataclass(frozen=True)
class GpuPolicy:
    sort_keys: tuple[str, ...]  # applied in order; never empty
    mutex: bool = False
    topology_aware: bool = False

    @property
    def text(self) -> str:
        return ",".join(self.sort_keys)


def gpu_policy(value: str | None, default: str = DEFAULT_GPU_POLICY, numa_bind: bool = False) -> GpuPolicy:
    """Parse a GPU policy chain; unknown words are ignored (HAMi accepts them silently)."""
    words = [w.strip() for w in (value or default).split(",") if w.strip()]
    keys = [w for w in words if w in SORT_KEYS]
    if numa_bind:
        keys = [NUMA] + [k for k in keys if k != NUMA]
    if not any(k in (BINPACK, SPREAD) for k in keys):
        keys.append(SPREAD)
    return GpuPolicy(tuple(dict.fromkeys(keys)), MUTEX in words, TOPOLOGY_AWARE in words)


@dataclass(frozen=True)
class ScoringWeights:
    slot: int = 1
    core: int = 1
    memory: int = 1


def scoring_weights(value: str | None) -> ScoringWeights:
    if value is None or value.strip() == "":
        return ScoringWeights()
    pairs: dict[str, int] = {}
    for part in value.split(","):
        key, sep, num = part.strip().partition("=")
        key = key.strip()
        if not sep or key not in ("slot", "core", "memory"):
            raise ProtocolError(
                f"invalid device scoring weights {value!r}: expected slot=<n>,core=<n>,memory=<n>"
            )
        if key in pairs:
            raise ProtocolError(f"invalid device scoring weights {value!r}: duplicate key {key!r}")
        num = num.strip()
        if not num.isdigit():
            raise ProtocolError(
                f"invalid device scoring weights {value!r}: {key} must be a non-negative integer"
            )
        pairs[key] = int(num)
    if len(pairs) != 3:
        raise ProtocolError(
            f"invalid device scoring weights {value!r}: slot, core and memory are all required"
        )
    if not any(pairs.values()):
        raise ProtocolError(f"invalid device scoring weights {value!r}: at least one weight must be positive")
    return ScoringWeights(pairs["slot"], pairs["core"], pairs["memory"])
