"""Iluvatar CoreX GPUs: one family per entry of the device config's ``iluvatars`` list.

Each entry names a chip (``chipName``), its common word (``commonWord``, e.g. ``BI-V150``) and its
three resources (``resourceCountName``, ``resourceMemoryName``, ``resourceCoreName``; upstream's
chart uses ``iluvatar.ai/<chip>-vgpu``, ``iluvatar.ai/<chip>.vMem``, ``iluvatar.ai/<chip>.vCore``).
The section is rendered only when the chart enables Iluvatar (``devices.iluvatar.enabled``, the
chart's equivalent of upstream's ``--enable-iluvatar``); without it no Iluvatar family exists.

Facts from HAMi's Iluvatar backend:

* request: the count as an integer (limits, then requests); memory in units of 256 MiB (no memory
  -> 100 % of each device); cores in percent, default 0;
* admission claims a container whose *limits* carry the count. A count above 1 rewrites the core
  limit to count x 100 (several whole devices), and the container gets the env
  ``SOL_CONTINER_NAME=<container name>`` (upstream's spelling) unless it already has it;
* node keys ``hami.io/node-<CW>-register`` (CSV, written by the vendor's gpu-manager) with handshake
  ``hami.io/node-handshake-<CW>``; pod keys ``hami.io/<CW>-devices-to-allocate`` / ``-allocated``;
  UUID selection ``hami.io/use-<CW>-uuid`` / ``hami.io/no-use-<CW>-uuid``; the shared node lock;
* fit walks the node's devices from the *first* to the last (unlike NVIDIA's walk from the end) and
  checks neither health nor NUMA; the rest is the shared skeleton (slots, memory, cores, exclusive
  use, compute units exhausted).

Allocate (this stack's plugin, standing in for the vendor's gpu-manager): ``ILUVATAR_VISIBLE_DEVICES``
with the device IDs, and HAMi-core style limits ``CUDA_DEVICE_MEMORY_LIMIT_<i>=<MiB>m`` /
``CUDA_DEVICE_SM_LIMIT`` that the in-container control library (``libvgpu-control.so`` upstream)
enforces; the emulated runtime and the probe read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import faults
from ..protocol import annotations as ann
from ..protocol.resources import MEM_PERCENTAGE_UNSET
from .base import (
    MAX_DEVICES_PER_CONTAINER,
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceUsage,
    FitContext,
    FitResult,
    Obj,
    append_env,
    check_quantity,
    fit_walk,
    resource_int,
)
from .config import DeviceConfigError
from .counted import SOURCE_CSV, CountedFamily, CountedSpec

MEMORY_UNIT_MIB = 256
CONTAINER_NAME_ENV = "SOL_CONTINER_NAME"  # sic, as upstream (kept for compatibility there)
VISIBLE_ENV = "ILUVATAR_VISIBLE_DEVICES"
SECTION = "iluvatars"
# the fault drops the count x 100 core rewrite: a multi-device pod then shares its devices
NO_CORE_REWRITE_FAULT = "webhook-iluvatar-no-multi-core"


@dataclass(frozen=True)
class IluvatarChip:
    chip_name: str
    common_word: str
    count_resource: str
    memory_resource: str
    core_resource: str


# upstream's chart default list (charts/hami values: devices.iluvatar)
DEFAULT_CHIPS: tuple[IluvatarChip, ...] = tuple(
    IluvatarChip(c, c, f"iluvatar.ai/{c}-vgpu", f"iluvatar.ai/{c}.vMem", f"iluvatar.ai/{c}.vCore")
    for c in ("MR-V100", "MR-V50", "BI-V150", "BI-V100")
)

_FIELDS = {
    "chipName": "chip_name",
    "commonWord": "common_word",
    "resourceCountName": "count_resource",
    "resourceMemoryName": "memory_resource",
    "resourceCoreName": "core_resource",
}


def parse_chips(section: Any) -> list[IluvatarChip]:
    """The ``iluvatars`` list, validated; errors name the entry and field (``iluvatars[1].commonWord``)."""
    if not section:
        return []
    if not isinstance(section, list):
        raise DeviceConfigError(f"{SECTION}: must be a list, got {type(section).__name__}")
    chips, seen = [], set()
    for i, entry in enumerate(section):
        where = f"{SECTION}[{i}]"
        if not isinstance(entry, dict):
            raise DeviceConfigError(f"{where}: must be a mapping, got {type(entry).__name__}")
        values: dict[str, str] = {}
        for key, v in entry.items():
            if key not in _FIELDS:
                raise DeviceConfigError(f"{where}.{key}: unknown field")
            if not isinstance(v, str) or not v.strip():
                raise DeviceConfigError(f"{where}.{key}: must be a non-empty string, got {v!r}")
            values[_FIELDS[key]] = v.strip()
        for key, attr in _FIELDS.items():
            if attr not in values and key != "chipName":
                raise DeviceConfigError(f"{where}.{key}: required")
        values.setdefault("chip_name", values["common_word"])
        if values["common_word"] in seen:
            raise DeviceConfigError(f"{where}.commonWord: {values['common_word']!r} is listed twice")
        seen.add(values["common_word"])
        chips.append(IluvatarChip(**values))
    return chips


class IluvatarFamily(CountedFamily):
    def __init__(self, chip: IluvatarChip) -> None:
        spec = CountedSpec(
            chip.common_word,
            ann.iluvatar_keys(chip.common_word),
            chip.count_resource,
            chip.memory_resource,
            chip.core_resource,
            memory_unit_mib=MEMORY_UNIT_MIB,
            default_cores=0,
            source=SOURCE_CSV,
            visible_devices_env=VISIBLE_ENV,
            config_section=SECTION,
        )
        super().__init__(spec)
        self.chip = chip

    def admission_problem(self, container: Obj) -> str | None:
        return (
            check_quantity(container, self.count_resource, high=MAX_DEVICES_PER_CONTAINER)
            or check_quantity(container, self.memory_resource, mib_per_unit=MEMORY_UNIT_MIB)
            or check_quantity(container, self.core_resource)
        )

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        mem = resource_int(container, self.memory_resource) or 0
        memreq = mem * MEMORY_UNIT_MIB if mem > 0 else 0
        cores = resource_int(container, self.core_resource) or 0
        return ContainerDeviceRequest(
            self.common_word, nums, memreq, MEM_PERCENTAGE_UNSET if memreq else 100, cores
        )

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        limits = (container.get("resources") or {}).get("limits") or {}
        if self.count_resource not in limits:
            return False
        count = resource_int(container, self.count_resource) or 0
        if count > 1 and not faults.on(NO_CORE_REWRITE_FAULT):
            limits[self.core_resource] = str(count * 100)
        name = container.get("name") or ""
        if name and not any(e.get("name") == CONTAINER_NAME_ENV for e in container.get("env") or []):
            append_env(container, CONTAINER_NAME_ENV, name)
        return True

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        # upstream walks from the first device; fit_walk walks from the end, so hand it the reverse
        picks, reasons, total = fit_walk(
            self, list(reversed(devices)), request, ctx, selection=lambda dev: None
        )
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        return FitResult(True, [cd for _, cd in picks], reasons, total)

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(d.uuid for d in req.devices)
        for i, d in enumerate(req.devices):
            out.envs[f"CUDA_DEVICE_MEMORY_LIMIT_{i}"] = f"{d.usedmem}m"
        if req.devices:
            out.envs["CUDA_DEVICE_SM_LIMIT"] = str(req.devices[0].usedcores)
        return out


def iluvatar_families(section: Any) -> list[IluvatarFamily]:
    """One family per configured chip (none without an ``iluvatars`` section)."""
    return [IluvatarFamily(c) for c in parse_chips(section)]
