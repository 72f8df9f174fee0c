"""Enflame whole GCUs (common word ``GCU``), enabled by the device config's ``enflame`` section.

Facts from HAMi's Enflame GCU backend:

* resource ``resourceNameGCU`` (default ``enflame.com/gcu``); a container claims it when its limits
  carry the count; each GCU is taken whole (the request's memory and cores are 100: GCUs count in
  percent here, not MiB);
* no register annotation: Enflame's plugin advertises the count, and card ``i`` is ``<node>-GCU-<i>``
  (1 slot, 100 "memory", 100 cores); healthy while the capacity is above 0; no node lock upstream;
* fit walks from the end and takes any card nothing uses (``ExclusiveDeviceAllocateConflict``
  otherwise); no health, UUID or memory checks;
* /filter writes ``hami.io/enflame-gcu-devices-to-allocate`` and ``-allocated``.

Enflame DRS (``enflame.com/drs-gcu``, ``gcu-memory``/``gcu-core``, profiles from
``enflame.com/gcu-drs-capacity``) is the separate family of :mod:`hami_stack.devices.enflame_drs`; the
same ``enflame`` section enables both. The request, admission claim and capacity-derived cards are the
shared :class:`~hami_stack.devices.counted.WholeCards`.

This stack's /bind takes the shared node lock (its plugin serves only an allocation a lock vouches
for), and Allocate answers ``ENFLAME_VISIBLE_DEVICES`` with the card indexes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.annotations import VendorKeys
from ..protocol.handshake import HealthResult
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
    fit_walk,
    node_quantity,
)
from .counted import WholeCards

GCU_CW = "GCU"
ID_INFIX = "-GCU-"
VISIBLE_ENV = "ENFLAME_VISIBLE_DEVICES"
# the fault shares a GCU: a card in use is handed out again
SHARED_FAULT = "scheduler-enflame-gcu-shared"


def card_index(device_id: str) -> int:
    return capacity_cards.card_index(device_id, ID_INFIX)


class GcuFamily(WholeCards, DeviceFamily):
    common_word = GCU_CW
    id_infix = ID_INFIX
    request_memory = 100  # GCUs count in percent, so a whole card asks its 100
    # upstream's GCU fit reads no UUID selection: the keys name none
    keys = VendorKeys(
        GCU_CW,
        to_allocate=ann.VENDOR_KEYS_BY_CW[GCU_CW].to_allocate,
        allocated=ann.VENDOR_KEYS_BY_CW[GCU_CW].allocated,
    )

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        self.count_resource = str((section or {}).get("resourceNameGCU") or "enflame.com/gcu")

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        capacity = node_quantity(node, "capacity", self.count_resource)
        state = HealthState(capacity, None)
        return HealthResult(capacity > 0, previous is None or previous != state), state

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        shared = faults.on(SHARED_FAULT)

        def selection(dev: DeviceUsage) -> str | None:
            # a GCU is never shared; the only check upstream makes besides the type
            return ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT if dev.used > 0 and not shared else None

        if shared:  # as a scheduler without the check: every card looks free
            devices = [dataclasses.replace(d, used=0, usedmem=0, usedcores=0) for d in devices]
        picks, reasons, total = fit_walk(self, devices, request, ctx, selection=selection)
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        return FitResult(True, [cd for _, cd in picks], reasons, total)

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(str(card_index(d.uuid)) for d in req.devices)
        return out
