"""Vastai and Biren: families that schedule by device count only, as HAMi's backends for them do.

Both (Vastai: common word ``Vastai``, ``vastaitech.com/va``; Biren: ``Biren``, ``birentech.com/gpu``):

* a container claims the family when its limits carry the count; the request (limits, then
  requests) is that many devices with 0 cores and all of each device's memory; nothing refused;
* devices from the vendor plugin's JSON register annotation (``hami.io/node-va-register`` /
  ``hami.io/node-biren-register``) with its handshake (``hami.io/node-handshake-va`` / ``-biren``);
  the shared node lock;
* fit walks the node's devices from the *first* (upstream's loop runs forward), checks UUID selection
  (``vastaitech.com/use-gpuuuid`` / ``birentech.com/use-gpuuuid`` and their ``nouse-`` forms; the
  type annotations are defined upstream but never read) and free slots, and no health. Vastai then
  checks memory and cores as every family does and gives each device its whole memory; Biren checks
  nothing more and gives 0 MiB (its assignments carry no memory);
* /filter writes ``hami.io/<CW>-devices-to-allocate`` and ``-allocated`` (capitalised CW).

Allocate (this stack's plugin, standing in for the vendor's): ``VASTAI_VISIBLE_DEVICES`` /
``BIREN_VISIBLE_DEVICES`` with the device IDs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import ContainerDevice
from .base import (
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceUsage,
    FitContext,
    FitResult,
    Obj,
    fit_walk,
    resource_int,
    split_list,
)
from .counted import SOURCE_JSON, CountedFamily, CountedSpec

VASTAI = CountedSpec(
    "Vastai",
    ann.VENDOR_KEYS_BY_CW["Vastai"],
    "vastaitech.com/va",
    default_cores=0,
    source=SOURCE_JSON,
    visible_devices_env="VASTAI_VISIBLE_DEVICES",
    config_section="vastai",
)
BIREN = CountedSpec(
    "Biren",
    ann.VENDOR_KEYS_BY_CW["Biren"],
    "birentech.com/gpu",
    default_cores=0,
    source=SOURCE_JSON,
    visible_devices_env="BIREN_VISIBLE_DEVICES",
    config_section="biren",
)


class CountOnlyFamily(CountedFamily):
    """A count-only family; ``checks_capacity`` False is Biren (slots only, no memory given)."""

    def __init__(self, spec: CountedSpec, section: dict[str, Any] | None, *, checks_capacity: bool) -> None:
        super().__init__(spec, section)
        self.checks_capacity = checks_capacity

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        return ContainerDeviceRequest(self.common_word, nums, 0, 100, 0)

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        if self.checks_capacity:
            # upstream walks forward: hand the shared walk (which runs from the end) the reverse
            picks, reasons, total = fit_walk(
                self, list(reversed(devices)), request, ctx, selection=lambda dev: None
            )
            if len(picks) < request.nums:
                return FitResult(False, [], reasons, total)
            return FitResult(True, [cd for _, cd in picks], reasons, total)
        return self._fit_slots_only(devices, request, ctx)

    def _fit_slots_only(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        pod_ann = ctx.pod_annotations
        use = split_list(pod_ann.get(self.keys.use_uuid))
        nouse = split_list(pod_ann.get(self.keys.nouse_uuid))
        candidates = [d for d in devices if self.matches_type(d)]
        reasons: dict[str, int] = {}
        picks: list[ContainerDevice] = []
        for dev in candidates:
            if (use and dev.id not in use) or dev.id in nouse:
                reasons[ev.CARD_UUID_MISMATCH] = reasons.get(ev.CARD_UUID_MISMATCH, 0) + 1
                continue
            if dev.count <= dev.used:
                reasons[ev.CARD_TIME_SLICING_EXHAUSTED] = reasons.get(ev.CARD_TIME_SLICING_EXHAUSTED, 0) + 1
                continue
            picks.append(ContainerDevice(dev.id, self.common_word, 0, request.coresreq))
            if len(picks) == request.nums:
                return FitResult(True, picks, Counter(reasons), len(candidates))
        counted = Counter(reasons)
        if picks:
            counted[ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST] = len(picks)
        return FitResult(False, [], counted, len(candidates))

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[self.spec.visible_devices_env] = ",".join(d.uuid for d in req.devices)
        return out


def vastai_family(section: dict[str, Any] | None = None) -> CountOnlyFamily:
    return CountOnlyFamily(VASTAI, section, checks_capacity=True)


def biren_family(section: dict[str, Any] | None = None) -> CountOnlyFamily:
    return CountOnlyFamily(BIREN, section, checks_capacity=False)
