"""Bind phases, fit reasons, and the reasons and messages of the events HAMi emits on pods."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

# hami.io/bind-phase values
PHASE_ALLOCATING: Final = "allocating"
PHASE_SUCCESS: Final = "success"
PHASE_FAILED: Final = "failed"
BIND_PHASES: Final = (PHASE_ALLOCATING, PHASE_SUCCESS, PHASE_FAILED)

# Event reasons (source component = the scheduler name)
FILTERING_FAILED: Final = "FilteringFailed"
FILTERING_SUCCEED: Final = "FilteringSucceed"
BINDING_FAILED: Final = "BindingFailed"
BINDING_SUCCEED: Final = "BindingSucceed"

# Per-device fit reasons (section 5.1/5.2)
CARD_TYPE_MISMATCH: Final = "CardTypeMismatch"
CARD_UUID_MISMATCH: Final = "CardUuidMismatch"
CARD_TIME_SLICING_EXHAUSTED: Final = "CardTimeSlicingExhausted"
CARD_COMPUTE_UNITS_EXHAUSTED: Final = "CardComputeUnitsExhausted"
CARD_INSUFFICIENT_MEMORY: Final = "CardInsufficientMemory"
CARD_INSUFFICIENT_CORE: Final = "CardInsufficientCore"
CARD_NOT_HEALTH: Final = "CardNotHealth"
CARD_CORDONED: Final = "CardCordoned"
NUMA_NOT_FIT: Final = "NumaNotFit"
EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT: Final = "ExclusiveDeviceAllocateConflict"
CARD_NOT_FOUND_CUSTOM_FILTER_RULE: Final = "CardNotFoundCustomFilterRule"
CARD_MIG_TOPOLOGY_INFEASIBLE: Final = "CardMigTopologyInfeasible"
NODE_INSUFFICIENT_DEVICE: Final = "NodeInsufficientDevice"
ALLOCATED_CARDS_INSUFFICIENT_REQUEST: Final = "AllocatedCardsInsufficientRequest"
RESOURCE_QUOTA_NOT_FIT: Final = "ResourceQuotaNotFit"
MODE_NOT_FIT: Final = "ModeNotFit"
CARD_UNHEALTHY: Final = "CardUnhealthy"
CARD_QOS_POLICY_MISMATCH: Final = "CardQosPolicyMismatch"
CARD_APP_CLASS_MISMATCH: Final = "CardAppClassMismatch"
NODE_UNREGISTERED: Final = "node unregistered"
DEVICE_TYPE_NOT_FOUND: Final = "Device type not found"


def fit_reason(counts: Mapping[str, int], total_devices: int) -> str:
    """A node's failure reason: ``"<count>/<total> <Reason>"`` per reason, sorted, joined by ``", "``."""
    return ", ".join(sorted(f"{n}/{total_devices} {reason}" for reason, n in counts.items() if n > 0))


_REASON_PART = re.compile(r"\s*([+-]?\d+)/([+-]?\d+)\s+(\S+)")


def parse_reason(reason: str) -> dict[str, int]:
    """HAMi's ParseReason: ``"<count>/<total> <Reason>"`` parts (split on ``", "``) to {reason: count}.

    Parts that do not have that shape are skipped; a repeated reason keeps its last count.
    """
    out: dict[str, int] = {}
    for part in reason.split(", "):
        m = _REASON_PART.match(part)
        if m:
            out[m.group(3)] = int(m.group(1))
    return out


def filter_success_message(best: str, failed_count: int, fits: Sequence[tuple[str, float]]) -> str:
    listed = ",".join(f"{node}:{score:.2f}" for node, score in fits)
    return f"find fit node({best}), {failed_count} nodes not fit, {len(fits)} nodes fit({listed})"


def filter_failure_message(failed_count: int) -> str:
    return f"no available node, {failed_count} nodes do not meet"


def reason_type_messages(failed: Mapping[str, Iterable[str]]) -> list[str]:
    """``<count> nodes <ReasonType>(<node1>,<node2>)`` per reason type, given node -> its reason types."""
    by_reason: dict[str, list[str]] = {}
    for node, reasons in failed.items():
        for reason in reasons:
            by_reason.setdefault(reason, []).append(node)
    return [
        f"{len(nodes)} nodes {reason}({','.join(sorted(nodes))})"
        for reason, nodes in sorted(by_reason.items())
    ]


def binding_success_message(node: str, namespace: str, name: str) -> str:
    return f"Successfully binding node [{node}] to {namespace}/{name}"
