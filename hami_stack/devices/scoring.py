"""Device and node scores (section 5.4) and the policy ordering of a node's devices, as HAMi does them.

``fit`` walks the ordered list from the end, so the order decides which devices are taken first.
HAMi sorts with Go's ``sort.Sort`` on the node's device list, which for up to 12 devices is an
insertion sort and so keeps equal devices in their current order; we use a stable sort and the
caller keeps the sorted order for the pod's next container, as HAMi's node copy does.

* chain (a value with a comma, or exactly ``numa``): the chain's keys in order (``binpack`` score
  ascending, ``spread`` descending, ``numa`` id ascending), then device index ascending;
* single ``mutex``: most used first (idle devices at the end, taken first), then NUMA ascending;
* single policy with ``nvidia.com/numa-bind``: NUMA groups kept together: ``binpack`` NUMA
  descending then score ascending; anything else NUMA ascending then score descending;
* single ``binpack``: score ascending, then NUMA ascending; anything else (spread, topology-aware,
  unknown): score descending, then NUMA ascending. So among equal scores the device on the higher
  NUMA node is taken first.

Scores are float32 in HAMi; :func:`f32` rounds after every operation so ties match.
Node selection: binpack picks the highest :func:`node_score`, spread the lowest.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence

from ..protocol.policy import BINPACK, MUTEX, NUMA, SPREAD, GpuPolicy, ScoringWeights
from ..protocol.resources import MEM_PERCENTAGE_UNSET
from .base import ContainerDeviceRequest, DeviceUsage

WEIGHT = 10  # HAMi's score multiplier


def f32(x: float) -> float:
    """Round to the nearest float32 (Go ``float32`` arithmetic, one operation at a time)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def device_score(
    dev: DeviceUsage,
    request: ContainerDeviceRequest | Sequence[ContainerDeviceRequest] | None,
    weights: ScoringWeights,
) -> float:
    """Device score: 10 x the weighted sum of the slot, core and memory fill ratios.

    ``10 x (wSlot (req+used)/count + wCore (cores+usedcores)/totalcore + wMem (mem+usedmem)/totalmem)``.

    Only requests whose type *equals* the device type count (HAMi compares them verbatim, so a
    registered ``NVIDIA-<model>`` device is scored on its usage alone); a request's memory is its
    percentage of the device when one is set, else its MiB; cores are not clamped here. Devices
    with a zero total score 0.
    """
    if dev.count == 0 or dev.totalcore == 0 or dev.totalmem == 0:
        return 0.0
    if request is None:
        requests: Sequence[ContainerDeviceRequest] = ()
    elif isinstance(request, ContainerDeviceRequest):
        requests = (request,)
    else:
        requests = request
    req = cores = mem = 0
    for r in requests:
        if r.type != dev.type:
            continue
        req += 1
        cores += r.coresreq
        if r.mem_percentage not in (0, MEM_PERCENTAGE_UNSET):
            mem += dev.totalmem * r.mem_percentage // 100
        else:
            mem += r.memreq
    used = f32(f32(req + dev.used) / f32(dev.count))
    core = f32(f32(cores + dev.usedcores) / f32(dev.totalcore))
    memory = f32(f32(mem + dev.usedmem) / f32(dev.totalmem))
    total = f32(f32(f32(weights.slot) * used) + f32(f32(weights.core) * core))
    total = f32(total + f32(f32(weights.memory) * memory))
    return f32(WEIGHT * total)


def order_key(policy: GpuPolicy) -> Callable[[DeviceUsage, float], tuple[float, ...]]:
    """HAMi's device comparison as a sort key over (device, its score): ``a`` sorts before ``b``
    exactly when HAMi's ``Less(a, b)`` holds."""

    def chain_key(d: DeviceUsage, score: float) -> tuple[float, ...]:
        parts: list[float] = []
        for k in policy.sort_keys:
            if k == BINPACK:
                parts.append(score)
            elif k == SPREAD:
                parts.append(-score)
            elif k == NUMA:
                parts.append(d.numa)
        parts.append(d.index)
        return tuple(parts)

    def single_key(d: DeviceUsage, score: float) -> tuple[float, ...]:
        if policy.text == MUTEX:
            return (-d.used, d.numa)
        binpack = policy.text == BINPACK
        if policy.numa_bind:
            return (-d.numa, score) if binpack else (d.numa, -score)
        return (score, d.numa) if binpack else (-score, d.numa)

    return chain_key if policy.is_chain else single_key


def order_devices(
    devices: Sequence[DeviceUsage],
    request: ContainerDeviceRequest | Sequence[ContainerDeviceRequest] | None,
    policy: GpuPolicy,
    weights: ScoringWeights | None = None,
) -> list[DeviceUsage]:
    """The node's devices in the order ``fit`` expects (the walk takes from the end); stable."""
    w = weights or ScoringWeights()
    key = order_key(policy)
    return sorted(devices, key=lambda d: key(d, device_score(d, request, w)))


def node_score(devices: Iterable[DeviceUsage]) -> float:
    """``10 x (Σused/Σcount + Σusedcores/Σtotalcore + Σusedmem/Σtotalmem)`` in float32; 0 if a total is 0."""
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
    total = f32(f32(f32(used) / f32(count)) + f32(f32(usedcores) / f32(totalcore)))
    return f32(WEIGHT * f32(total + f32(f32(usedmem) / f32(totalmem))))


def best_node(scores: dict[str, float], node_policy: str) -> str | None:
    """binpack: the highest score; spread: the lowest. Ties go to the lexically first node name."""
    if not scores:
        return None
    if node_policy == SPREAD:
        return min(sorted(scores), key=lambda n: scores[n])
    return max(sorted(scores), key=lambda n: scores[n])
