"""Cambricon MLU (common word ``MLU``): devices derived from node capacity, DSMLU pod annotations.

Facts from HAMi's Cambricon backend:

* resources ``cambricon.com/vmlu`` (count), ``cambricon.com/mlu.smlu.vmemory`` (units of 256 MiB) and
  ``cambricon.com/mlu.smlu.vcore`` (percent, default 100); no memory asked -> 100 % of the card;
* no register annotation: Cambricon's own plugin advertises ``vcore`` (100 per card) and ``vmemory``
  capacity, and the scheduler synthesises card ``i`` as ``<node>-cambricon-mlu-<i>`` for every 100
  vcores, with 100 slots, 100 cores and ``vmemory x 256 x 100 / vcores`` MiB each; always healthy;
* type selection annotations are not applied (any MLU fits); UUID selection is;
* /filter writes ``CAMBRICON_DSMLU_ASSIGHED: "false"`` (upstream's spelling) and
  ``CAMBRICON_DSMLU_PROFILE: <index>_<cores>_<memory/256>`` of the first device, besides the usual
  to-allocate / allocated annotations.

Not implemented here: upstream's own node lock ``cambricon.com/dsmlu.lock`` (RFC 3339 time, 2 min);
this family takes the shared ``hami.io/mutex.lock`` instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import PodDevices
from ..protocol.handshake import HealthResult
from ..protocol.register import DeviceInfo
from . import capacity_cards
from .base import (
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceUsage,
    FitContext,
    FitResult,
    HealthState,
    Obj,
    fit_walk,
)
from .counted import SOURCE_CAPACITY, CountedFamily, CountedSpec

MEMORY_UNIT_MIB = 256
DSMLU_ASSIGNED = "CAMBRICON_DSMLU_ASSIGHED"  # sic, as upstream names it
DSMLU_PROFILE = "CAMBRICON_DSMLU_PROFILE"
ID_INFIX = "-cambricon-mlu-"
# what this stack's Allocate tells the (emulated) MLU runtime: which card, how much memory
SPLIT_VISIBLE_ENV = "CAMBRICON_SPLIT_VISIBLE_DEVICES"
SPLIT_MEMS_ENV = "CAMBRICON_SPLIT_MEMS"
SPLIT_ENABLE_ENV = "CAMBRICON_SPLIT_ENABLE"

CAMBRICON = CountedSpec(
    "MLU",
    ann.VENDOR_KEYS_BY_CW["MLU"],
    "cambricon.com/vmlu",
    "cambricon.com/mlu.smlu.vmemory",
    "cambricon.com/mlu.smlu.vcore",
    memory_unit_mib=MEMORY_UNIT_MIB,
    default_cores=100,
    source=SOURCE_CAPACITY,
    config_section="cambricon",
)


def card_index(device_id: str) -> int:
    return capacity_cards.card_index(device_id, ID_INFIX)


class CambriconFamily(CountedFamily):
    def __init__(self, section: dict[str, object] | None = None) -> None:
        super().__init__(CAMBRICON, section)

    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        return capacity_cards.split_cards(node, self, ID_INFIX, 100, MEMORY_UNIT_MIB)

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        return capacity_cards.always_healthy(node, self.core_resource, previous)

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        def selection(dev: DeviceUsage) -> str | None:
            return None if dev.health else ev.CARD_NOT_HEALTH  # upstream ignores the type annotations

        picks, reasons, total = fit_walk(self, devices, request, ctx, selection=selection)
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        return FitResult(True, [cd for _, cd in picks], reasons, total)

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        out = super().pod_annotations(pod_devices, pod)
        first = next((ctr[0] for ctr in pod_devices if ctr), None)
        if first is not None:
            out[DSMLU_ASSIGNED] = "false"
            out[DSMLU_PROFILE] = (
                f"{card_index(first.uuid)}_{first.usedcores}_{first.usedmem // MEMORY_UNIT_MIB}"
            )
        return out

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[SPLIT_VISIBLE_ENV] = ",".join(str(card_index(d.uuid)) for d in req.devices)
        out.envs[SPLIT_MEMS_ENV] = ",".join(str(d.usedmem) for d in req.devices)
        out.envs[SPLIT_ENABLE_ENV] = "1"
        return out
