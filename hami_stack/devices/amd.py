"""AMD GPUs (common word ``AMD``), enabled by the device config's ``amd`` section.

Facts from HAMi's AMD backend:

* resources ``resourceCountName`` (``amd.com/gpu``), ``resourceMemoryName`` (``amd.com/gpumem``, MiB)
  and ``resourceCoreName`` (``amd.com/gpucores``, a percentage of the card's compute units);
* admission: a count in the limits must be a positive integer (``<count> must be a positive
  integer``) and a core percentage in the limits 1..100 (``<cores> must be an integer percentage
  between 1 and 100``); a container claims the family when its limits carry any of the three;
* request (limits only): the count; memory in MiB (none: the whole card); cores 100 % unless asked;
* devices from the AMD plugin's JSON register ``hami.io/node-amd-register`` (no handshake; ``devcore``
  is the card's compute units); healthy while the count capacity is above 0; the shared node lock;
* fit from the end: health (``CardNotHealth``), type selection (``amd.com/use-gputype`` /
  ``nouse-gputype``, case-insensitive parts of the registered type), UUID selection
  (``amd.com/use-gpu-uuid`` / ``nouse-gpu-uuid``), slots, mutex, memory, then compute units: the
  percentage of the card's CUs (at least 1, at most all), or all of them for a whole-memory request;
* /filter writes ``hami.io/amd-devices-to-allocate`` and ``-allocated``.

Where this differs: upstream puts the registered product type (``AMD Instinct MI300X``) in the
assignment; here it is the common word, which the usage and quota accounting key on. Allocate (this
stack's plugin) answers ``ROCR_VISIBLE_DEVICES`` with the device IDs and ``AMD_GPU_MEMORY_LIMIT_MIB``
/ ``AMD_GPU_COMPUTE_UNITS`` per device.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import ContainerDevice
from ..protocol.handshake import HealthResult
from ..protocol.quantity import INT32_MAX
from ..protocol.register import DeviceInfo, decode_register_json
from . import capacity_cards
from .base import (
    AdmissionError,
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceUsage,
    FitContext,
    FitResult,
    HealthState,
    Obj,
    check_quantity,
    limit_int,
    split_list,
)

CW = "AMD"
VISIBLE_ENV = "ROCR_VISIBLE_DEVICES"
# the fault drops the percentage check: gpucores 150 is admitted (and then asks more than a card)
CORES_UNCHECKED_FAULT = "webhook-amd-cores-unchecked"


class AmdFamily(DeviceFamily):
    common_word = CW
    keys = ann.VENDOR_KEYS_BY_CW[CW]

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        section = section or {}
        self.count_resource = str(section.get("resourceCountName") or "amd.com/gpu")
        self.memory_resource = str(section.get("resourceMemoryName") or "amd.com/gpumem")
        self.core_resource = str(section.get("resourceCoreName") or "amd.com/gpucores")

    def admission_problem(self, container: Obj) -> str | None:
        # count and cores get upstream's own messages in mutate_admission; memory is MiB
        return check_quantity(container, self.memory_resource, mib_per_unit=1)

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        where = f"in container {container.get('name', '')}"
        has_count, count = limit_int(container, self.count_resource)
        if has_count:
            if count is None or count < 1:
                raise AdmissionError(f"{self.count_resource} must be a positive integer {where}")
            has_core, core = limit_int(container, self.core_resource)
            if has_core and (core is None or not 1 <= core <= 100) and not faults.on(CORES_UNCHECKED_FAULT):
                raise AdmissionError(
                    f"{self.core_resource} must be an integer percentage between 1 and 100 {where}"
                )
            return True
        limits = (container.get("resources") or {}).get("limits") or {}
        return self.memory_resource in limits or self.core_resource in limits

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        _, n = limit_int(container, self.count_resource)
        if n is None or not 0 < n <= INT32_MAX:
            return None
        has_mem, mem = limit_int(container, self.memory_resource)
        if has_mem and (mem is None or not 0 <= mem <= INT32_MAX):
            return None
        has_core, core = limit_int(container, self.core_resource)
        if has_core and (core is None or not 1 <= core <= 100) and not faults.on(CORES_UNCHECKED_FAULT):
            return None
        return ContainerDeviceRequest(CW, n, mem or 0, 0, core if has_core and core is not None else 100)

    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(self.keys.register)
        return decode_register_json(value) if value else []

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        return capacity_cards.capacity_health(node, self.count_resource, previous)

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        pod_ann = ctx.pod_annotations
        use_types = [t.upper() for t in split_list(pod_ann.get(self.keys.use_type))]
        nouse_types = [t.upper() for t in split_list(pod_ann.get(self.keys.nouse_type))]
        use = split_list(pod_ann.get(self.keys.use_uuid))
        nouse = split_list(pod_ann.get(self.keys.nouse_uuid))
        candidates = [d for d in devices if self.matches_type(d)]
        reasons: Counter[str] = Counter()
        picks: list[ContainerDevice] = []
        for dev in reversed(candidates):
            kind = dev.type.upper()
            if not dev.health:
                reasons[ev.CARD_NOT_HEALTH] += 1
                continue
            if (use_types and not any(t in kind for t in use_types)) or any(t in kind for t in nouse_types):
                reasons[ev.CARD_TYPE_MISMATCH] += 1
                continue
            if (use and dev.id not in use) or dev.id in nouse:
                reasons[ev.CARD_UUID_MISMATCH] += 1
                continue
            if dev.count <= dev.used:
                reasons[ev.CARD_TIME_SLICING_EXHAUSTED] += 1
                continue
            if ctx.policy.mutex and dev.used > 0:
                reasons[ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT] += 1
                continue
            mem = request.memreq if request.memreq > 0 or dev.totalmem <= 0 else dev.totalmem
            if dev.totalmem - dev.usedmem < mem:
                reasons[ev.CARD_INSUFFICIENT_MEMORY] += 1
                continue
            cus = 0
            if request.coresreq > 0:
                if dev.totalcore <= 0:
                    reasons[ev.CARD_INSUFFICIENT_CORE] += 1
                    continue
                cus = min(max(dev.totalcore * request.coresreq // 100, 1), dev.totalcore)
            elif dev.totalmem > 0 and mem >= dev.totalmem:
                cus = dev.totalcore
            if dev.totalcore - dev.usedcores < cus:
                reasons[ev.CARD_INSUFFICIENT_CORE] += 1
                continue
            picks.append(ContainerDevice(dev.id, CW, mem, cus))
            if len(picks) == request.nums:
                return FitResult(True, picks, reasons, len(candidates))
        if picks:
            reasons[ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST] = len(picks)
        return FitResult(False, [], reasons, len(candidates))

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(d.uuid for d in req.devices)
        out.envs["AMD_GPU_MEMORY_LIMIT_MIB"] = ",".join(str(d.usedmem) for d in req.devices)
        out.envs["AMD_GPU_COMPUTE_UNITS"] = ",".join(str(d.usedcores) for d in req.devices)
        return out
