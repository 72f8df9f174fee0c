"""Kunlunxin XPUs, both of HAMi's Kunlun families, enabled by the device config's ``kunlun`` section.

**Whole XPU** (common word ``kunlun``, ``resourceCountName``, default ``kunlunxin.com/xpu``):

* a container claims it when its limits carry the count; it asks whole cards;
* no register annotation: Kunlunxin's plugin advertises the count; card ``i`` is ``<node>-kunlun-<i>``
  (100 slots, 98304 MiB, 100 cores; the upper half of the cards on NUMA node 1); always healthy;
  no node lock;
* fit: a card is free when nothing uses it, and cards are chosen by the 8-card board's topology
  (below); a pick takes the whole card's memory and cores; nothing fits -> ``NumaNotFit``;
* node score: how the pick changes the board's fragmentation ("bubbles" per 4-card wing: a wing
  with 4 cards in use counts 0, with 1 counts 2, otherwise 1): 3000 when it shrinks by one, 2000
  when it stays, 1000 when it grows by one (or changes otherwise), 0 when it grows by two;
* /filter writes ``hami.io/kunlun-allocated`` and ``BAIDU_COM_DEVICE_IDX`` (the card indexes of the
  last container with cards), which Kunlunxin's plugin reads.

**vXPU** (common word ``XPU``, ``resourceVCountName`` / ``resourceVMemoryName``, defaults
``kunlunxin.com/vxpu`` / ``kunlunxin.com/vxpu-memory`` in MiB):

* memory is rounded up to a partition size, 24576, 49152 or 98304 MiB (the webhook rewrites the
  memory limit and request to it); cores = memory x 100 / 98304; no memory -> the whole card;
* devices from ``hami.io/node-register-xpu`` (JSON) with handshake ``hami.io/node-handshake-xpu``;
  the shared node lock;
* fit: a card fits when its memory holds the request and it is unused or already split into
  partitions of the same size (a card is never split unevenly); cards chosen by the same topology.

Topology (both): cards 0-3 and 4-7 are two wings. For 1, 2 or 4 cards, when a wing has enough
fitting cards, the wing whose fitting-card count comes first in the order (1: 1, 3, 2, 4; 2: 2, 3,
4; 4: 4) is used, its fitting cards taken in index order; otherwise 2 cards take a cross-wing pair
(0-4, 1-5, 2-6, 3-7) and 4 cards one of the linked quads (0-1-4-5, 2-3-6-7, 0-2-4-6, 1-3-5-7,
0-3-4-7, 1-2-5-6) when 4 to 6 cards fit; 8 cards need all eight; other counts never fit.
Upstream walks the policy-sorted list by position; here the wings are by card index, which is
what the positions stand for on a freshly sorted board.

Allocate (this stack's plugin, standing in for Kunlunxin's): ``XPU_VISIBLE_DEVICES`` with the
card indexes, and for vXPU ``XPU_VMEMORY_MIB`` per card.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.annotations import VendorKeys
from ..protocol.assignment import ContainerDevice, PodDevices, encode_pod_devices
from ..protocol.handshake import HealthResult
from ..protocol.register import DeviceInfo, decode_register_json
from ..protocol.resources import MEM_PERCENTAGE_UNSET
from . import capacity_cards
from .base import (
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceUsage,
    FitContext,
    FitResult,
    HealthState,
    Obj,
    node_quantity,
    resource_int,
)
from .counted import WholeCards

SECTION = "kunlun"
WHOLE_CW = "kunlun"
VXPU_CW = "XPU"
CARD_MEMORY_MIB = 98304
PARTITIONS = (24576, 49152)  # then the whole card
ID_INFIX = "-kunlun-"
DEVICE_IDX = "BAIDU_COM_DEVICE_IDX"
CROSS_PAIRS = ((0, 4), (1, 5), (2, 6), (3, 7))
IN_WING_PAIRS = (
    (0, 1),
    (0, 2),
    (0, 3),
    (1, 2),
    (1, 3),
    (2, 3),
    (4, 5),
    (4, 6),
    (4, 7),
    (5, 6),
    (5, 7),
    (6, 7),
)
QUADS = ((0, 1, 4, 5), (2, 3, 6, 7), (0, 2, 4, 6), (1, 3, 5, 7), (0, 3, 4, 7), (1, 2, 5, 6))
ODD_ORDER = (1, 3, 2, 4)
VISIBLE_ENV = "XPU_VISIBLE_DEVICES"
# the fault rounds nothing: a vXPU pod keeps the memory it asked
NO_ROUNDING_FAULT = "webhook-kunlun-no-memory-rounding"

# this stack's plugin pops a to-allocate key (upstream's whole-card family writes only the allocated one)
WHOLE_KEYS = VendorKeys(
    WHOLE_CW,
    to_allocate="hami.io/kunlun-devices-to-allocate",
    allocated=ann.VENDOR_KEYS_BY_CW[WHOLE_CW].allocated,
    use_uuid=ann.VENDOR_KEYS_BY_CW[WHOLE_CW].use_uuid,
    nouse_uuid=ann.VENDOR_KEYS_BY_CW[WHOLE_CW].nouse_uuid,
)


def round_memory(mib: int) -> int:
    """The partition a vXPU request of ``mib`` MiB gets: 24576, 49152 or the whole card."""
    return next((p for p in PARTITIONS if mib <= p), CARD_MEMORY_MIB)


Fits = Callable[[DeviceUsage], bool]


def _pick_in_order(board: list[DeviceUsage], start: int, need: int, fits: Fits) -> list[int]:
    out: list[int] = []
    for dev in board[start:]:
        if fits(dev):
            out.append(dev.index)
            if len(out) == need:
                break
    return out


def graph_select(devices: Sequence[DeviceUsage], need: int, fits: Fits) -> list[int]:
    """The card indexes for ``need`` cards on an 8-card board ([] when no shape fits)."""
    board = sorted(devices, key=lambda d: d.index)
    free = [d.index for d in board if fits(d)]
    left = sum(1 for i in free if i < 4)
    right = len(free) - left
    if need == 8:
        return list(range(8)) if len(free) == 8 else []
    if need not in (1, 2, 4):
        return []
    if left >= need or right >= need:
        for slots in range(need, 5):
            num = ODD_ORDER[slots - 1] if need % 2 == 1 else slots
            if left == num:
                return _pick_in_order(board, 0, need, fits)
            if right == num:
                return _pick_in_order([d for d in board if d.index >= 4], 0, need, fits)
    return _interconnect(free, need)


def _interconnect(free: list[int], need: int) -> list[int]:
    have = set(free)
    if need == 2:
        for a in free:
            for b in free:
                if a != b and ((a, b) in CROSS_PAIRS or (b, a) in CROSS_PAIRS):
                    return [a, b]
    if need == 4 and 4 <= len(free) <= 6:
        found: list[int] = []
        for quad in QUADS:
            if have >= set(quad):
                found = list(quad)
                rest = have - set(quad)
                if len(free) < 6 or any(set(p) <= rest for p in CROSS_PAIRS + IN_WING_PAIRS):
                    return found
        return found
    return []


def _bubbles(cards: list[int]) -> int:
    left = sum(1 for i in cards if i < 4)
    right = len(cards) - left

    def wing(n: int) -> int:
        return 0 if n == 4 else 2 if n == 1 else 1

    return 1 if left == right == 0 else wing(left) + wing(right)


def topology_score(before: list[int], after: list[int]) -> float:
    """Upstream's score of moving the board from ``before`` (cards in use) to ``after`` (the pick)."""
    return {-1: 3000.0, 0: 2000.0, 1: 1000.0, 2: 0.0}.get(_bubbles(after) - _bubbles(before), 1000.0)


class _KunlunBase(DeviceFamily):
    """What both Kunlun families share: topology-chosen cards, ``NumaNotFit`` when none fit."""

    def _fits(self, request: ContainerDeviceRequest) -> Fits:
        raise NotImplementedError

    def _given(self, dev: DeviceUsage, request: ContainerDeviceRequest) -> tuple[int, int]:
        raise NotImplementedError

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        candidates = [d for d in devices if self.matches_type(d)]
        chosen = graph_select(candidates, request.nums, self._fits(request))
        if not chosen:
            # upstream reports one NumaNotFit over one "device" whatever the node has
            return FitResult(False, [], Counter({ev.NUMA_NOT_FIT: 1}), 1)
        by_index = {d.index: d for d in candidates}
        picks = []
        for i in chosen:
            dev = by_index[i]
            mem, cores = self._given(dev, request)
            picks.append(ContainerDevice(dev.id, self.common_word, mem, cores))
        return FitResult(True, picks, Counter(), len(candidates))


class KunlunFamily(WholeCards, _KunlunBase):
    common_word = WHOLE_CW
    id_infix = ID_INFIX
    card_slots = 100
    card_memory = CARD_MEMORY_MIB
    request_cores = 0
    keys = WHOLE_KEYS
    uses_node_lock = True  # upstream: none; this stack's plugin serves only allocations a lock vouches for

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        self.count_resource = str((section or {}).get("resourceCountName") or "kunlunxin.com/xpu")

    def card_numa(self, index: int, cards: int) -> int:
        return 1 if index >= cards // 2 else 0

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        state = HealthState(node_quantity(node, "capacity", self.count_resource), None)
        return HealthResult(True, previous is None or previous != state), state

    def _fits(self, request: ContainerDeviceRequest) -> Fits:
        return lambda d: d.used == 0

    def _given(self, dev: DeviceUsage, request: ContainerDeviceRequest) -> tuple[int, int]:
        return dev.totalmem, dev.totalcore

    def score_node(self, node: Obj, devices: Sequence[DeviceUsage], picked: PodDevices, policy: str) -> float:
        mine = Counter(d.uuid for ctr in picked for d in ctr)
        by_id = {d.id: d for d in devices}
        before = sorted({d.index for d in devices if d.used - mine.get(d.id, 0) > 0})
        after = sorted({by_id[u].index for u in mine if u in by_id})
        return topology_score(before, after)

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        if not any(pod_devices):
            return {}
        value = encode_pod_devices(pod_devices)
        last = [ctr for ctr in pod_devices if ctr][-1]  # upstream keeps overwriting: the last one stays
        return {
            self.keys.allocated: value,
            self.keys.to_allocate: value,
            DEVICE_IDX: ",".join(str(card_index(d.uuid)) for d in last),
        }

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(str(card_index(d.uuid)) for d in req.devices)
        return out


def card_index(device_id: str) -> int:
    return capacity_cards.card_index(device_id, ID_INFIX)


class VxpuFamily(_KunlunBase):
    common_word = VXPU_CW
    keys = ann.VENDOR_KEYS_BY_CW[VXPU_CW]

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        section = section or {}
        self.count_resource = str(section.get("resourceVCountName") or "kunlunxin.com/vxpu")
        self.memory_resource = str(section.get("resourceVMemoryName") or "kunlunxin.com/vxpu-memory")

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        mem = resource_int(container, self.memory_resource)
        if not mem:
            return ContainerDeviceRequest(self.common_word, nums, CARD_MEMORY_MIB, 100, 100)
        mem = round_memory(mem)
        return ContainerDeviceRequest(
            self.common_word, nums, mem, MEM_PERCENTAGE_UNSET, mem * 100 // CARD_MEMORY_MIB
        )

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        res = container.get("resources") or {}
        limits = res.get("limits") or {}
        if self.count_resource not in limits:
            return False
        if self.memory_resource in limits and not faults.on(NO_ROUNDING_FAULT):
            mib = resource_int(container, self.memory_resource)
            if mib is not None:
                rounded = str(round_memory(mib))
                limits[self.memory_resource] = rounded
                res["requests"] = {**(res.get("requests") or {}), self.memory_resource: rounded}
                container["resources"] = res
        return True

    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(self.keys.register)
        return decode_register_json(value) if value else []

    def _fits(self, request: ContainerDeviceRequest) -> Fits:
        def fits(d: DeviceUsage) -> bool:
            if request.memreq + d.usedmem > d.totalmem:
                return False
            # a card is split into equal partitions only
            return d.used == 0 or d.usedmem // d.used == request.memreq

        return fits

    def _given(self, dev: DeviceUsage, request: ContainerDeviceRequest) -> tuple[int, int]:
        return request.memreq, request.coresreq

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(d.uuid for d in req.devices)
        out.envs["XPU_VMEMORY_MIB"] = ",".join(str(d.usedmem) for d in req.devices)
        return out
