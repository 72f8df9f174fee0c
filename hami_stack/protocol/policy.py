"""Scheduling policy annotations: node and GPU policies and device-scoring weights.

* ``hami.io/node-scheduler-policy``: exactly ``spread`` spreads; any other value behaves as binpack.
* ``hami.io/gpu-scheduler-policy``: ``binpack``, ``spread``, ``topology-aware``, ``mutex``, ``numa`` or a
  comma chain (``binpack,numa``). A chain (or bare ``numa``) sorts by its ``binpack``/``spread``/``numa``
  keys in written order (spread when it names none); ``mutex`` and ``topology-aware`` are fit
  behaviours; ``nvidia.com/numa-bind`` (Go ``strconv.ParseBool`` spellings) forces ``numa`` first.
* ``hami.io/device-scoring-weights``: exactly ``slot=<n>,core=<n>,memory=<n>`` (any order),
  non-negative integers, at least one positive. Default 1/1/1 when absent; an invalid (or empty)
  value fails the pod's Filter, as in HAMi."""

from __future__ import annotations

import re
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
    """The effective node policy. HAMi compares the annotation verbatim: exactly ``spread`` spreads,
    any other present value (even ``" spread"``) behaves as binpack; an absent one takes the default."""
    if value is None:
        return default
    return SPREAD if value == SPREAD else BINPACK


def parse_bool(value: str) -> bool | None:
    """Go's ``strconv.ParseBool``: the accepted spellings, else None (HAMi then treats it as false)."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def numa_bind_requested(value: str | None) -> bool:
    """``nvidia.com/numa-bind``: true only for a ParseBool-true value (no trimming, as HAMi)."""
    return value is not None and parse_bool(value) is True


@dataclass(frozen=True)
class GpuPolicy:
    """The pod's GPU policy text (verbatim, as HAMi keeps it) and whether NUMA binding is asked.

    HAMi sorts a node's devices two ways (see :func:`hami_stack.devices.scoring.order_devices`):
    a value with a comma, or exactly ``numa``, is a *chain* of sort keys in written order; any other
    value is a *single* policy (``binpack``; ``mutex``; everything else sorts as spread).
    ``mutex`` and ``topology-aware`` are also fit behaviours wherever they appear in the list.
    """

    text: str = DEFAULT_GPU_POLICY
    numa_bind: bool = False

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(w.strip() for w in self.text.split(","))

    @property
    def is_chain(self) -> bool:
        return "," in self.text or self.text == NUMA

    @property
    def sort_keys(self) -> tuple[str, ...]:
        """The chain's sort keys (written order, deduplicated; spread when none), NUMA first when bound."""
        keys = tuple(dict.fromkeys(w for w in self.words if w in SORT_KEYS)) or (SPREAD,)
        if self.numa_bind and keys[0] != NUMA:
            keys = (NUMA, *(k for k in keys if k != NUMA))
        return keys

    @property
    def mutex(self) -> bool:
        return MUTEX in self.words

    @property
    def topology_aware(self) -> bool:
        return TOPOLOGY_AWARE in self.words


def gpu_policy(value: str | None, default: str = DEFAULT_GPU_POLICY, numa_bind: bool = False) -> GpuPolicy:
    """The pod's GPU policy: the annotation verbatim when present (even empty), else the default.

    Unknown words are kept and ignored, as HAMi accepts them silently.
    """
    return GpuPolicy(default if value is None else value, numa_bind)


@dataclass(frozen=True)
class ScoringWeights:
    slot: int = 1
    core: int = 1
    memory: int = 1


_GO_INT = re.compile(r"[+-]?[0-9]+")
_WEIGHTS_KEY = "hami.io/device-scoring-weights"


def _go_trim(text: str) -> str:
    """Go's ``strings.TrimSpace`` (Unicode white space; Python's ``strip()`` is close enough here)."""
    return text.strip()


def scoring_weights(value: str | None) -> ScoringWeights:
    """``hami.io/device-scoring-weights``. Absent -> 1/1/1; present (even empty) must be valid.

    Three comma-separated ``key=value`` entries, keys ``slot``/``core``/``memory`` each once, values
    Go integers (optional sign) that are not negative, at least one positive. The messages carry
    the same phrases as HAMi's.
    """
    if value is None:
        return ScoringWeights()

    def bad(why: str) -> ProtocolError:
        return ProtocolError(f"invalid {_WEIGHTS_KEY} annotation {value!r}: {why}")

    parts = value.split(",")
    if len(parts) != 3:
        raise bad("expected slot, core, and memory weights")
    pairs: dict[str, int] = {}
    for part in parts:
        key, sep, num = _go_trim(part).partition("=")
        if not sep:
            raise bad("expected key=value entries")
        key, num = _go_trim(key), _go_trim(num)
        if key in pairs:
            raise bad(f'duplicate "{key}" weight')
        if not _GO_INT.fullmatch(num) or not -(2**63) <= int(num) < 2**63:
            raise bad(f'"{key}" weight must be an integer')
        weight = int(num)
        if weight < 0:
            raise bad(f'"{key}" weight must not be negative')
        if key not in ("slot", "core", "memory"):
            raise bad(f'unknown weight "{key}"')
        pairs[key] = weight
    if not any(pairs.values()):
        raise bad("at least one weight must be positive")
    return ScoringWeights(pairs.get("slot", 0), pairs.get("core", 0), pairs.get("memory", 0))
