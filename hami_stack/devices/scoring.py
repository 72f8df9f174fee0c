"""Device and node scores (section 5.4) and the policy ordering of a node's devices.

``fit`` walks the ordered list from the end, so the order decides which devices are taken:

* ``binpack``: ascending device score -> the most used device is taken first;
* ``spread`` (default, and the fallback of a chain without a sort key): descending -> least used first;
* ``numa``: by NUMA id; with ``nvidia.com/numa-bind`` it is forced to the front so NUMA groups stay
  contiguous;
* ``mutex``: after sorting, idle devices are moved to the end (taken first);
* remaining ties: lower device index is taken first.

Node selection: binpack picks the highest :func:`node_score`, spread the lowest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..protocol.policy import BINPACK, NUMA, SPREAD, GpuPolicy, ScoringWeights
from .base import ContainerDeviceRequest, DeviceUsage


def device_score(dev: DeviceUsage, request: ContainerDeviceRequest | None, weights: ScoringWeights) -> float:
    """Device score, 10 x the weighted sum of the slot, core and memory fill ratios.

    ``10 x (wSlot (req+used)/count + wCore (cores+usedcores)/totalcore + wMem (mem+usedmem)/totalmem)``;

    ``req`` is 1 when the request's family matches the device's type; devices with a zero total get 0.
    """
    if dev.count == 0 or dev.totalcore == 0 or dev.totalmem == 0:
        return 0.0
    asked = request is not None and request.type.lower() in dev.type.lower()
    req = 1 if asked else 0
    cores = min(request.coresreq, 100) if asked and request else 0
    mem = request.memory_on(dev.totalmem) if asked and request else 0
    return 10 * (
        weights.slot * (req + dev.used) / dev.count
        + weights.core * (cores + dev.usedcores) / dev.totalcore
        + weights.memory * (mem + dev.usedmem) / dev.totalmem
    )


def order_devices(
    devices: Sequence[DeviceUsage],
    request: ContainerDeviceRequest | None,
    policy: GpuPolicy,
    weights: ScoringWeights | None = None,
) -> list[DeviceUsage]:
    """The node's devices in the order ``fit`` expects (the walk takes from the end)."""
    w = weights or ScoringWeights()
    scores = {id(d): device_score(d, request, w) for d in devices}

    def key(d: DeviceUsage) -> tuple[float, ...]:
        parts: list[float] = []
        for k in policy.sort_keys:
            if k == BINPACK:
                parts.append(scores[id(d)])
            elif k == SPREAD:
                parts.append(-scores[id(d)])
            elif k == NUMA:
                parts.append(-d.numa)  # lower NUMA ids at the end, taken first
        parts.append(-d.index)
        return tuple(parts)

    ordered = sorted(devices, key=key)
    if policy.mutex:
        ordered = [d for d in ordered if d.used > 0] + [d for d in ordered if d.used == 0]
    return ordered


def node_score(devices: Iterable[DeviceUsage]) -> float:
    """``10 x (Σused/Σcount + Σusedcores/Σtotalcore + Σusedmem/Σtotalmem)``; 0 if a total is 0."""
    used = count = usedcores = totalcore = usedmem = totalmem = 0
    for d in devices:
        used += d.used
        count += d.count
        usedcores += d.usedcores
        totalcore += d.totalcore
        usedmem += d.usedmem
        totalmem += d.totalmem
    if count == 0 or totalcore == 0 or totalmem == 0:
        return 0.0
    return 10 * (used / count + usedcores / totalcore + usedmem / totalmem)


def best_node(scores: dict[str, float], node_policy: str) -> str | None:
    """binpack: the highest score; spread: the lowest. Ties go to the lexically first node name."""
    if not scores:
        return None
    if node_policy == SPREAD:
        return min(sorted(scores), key=lambda n: scores[n])
    return max(sorted(scores), key=lambda n: scores[n])
