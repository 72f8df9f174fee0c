"""A generic family for counted, optionally sliced devices, parametrised only by data.

It proves the :class:`~hami_stack.devices.base.DeviceFamily` interface is vendor-neutral: the
scheduler, webhook and plugin code paths are the same as for NVIDIA, and a vendor here is a
:class:`CountedSpec` row. It covers what vendors share: count/memory/core resources with a memory
unit and default cores, devices from a JSON or CSV register annotation or synthesised from node
capacity, UUID (and optional type) selection annotations, the shared fit walk, the node lock, and
a ``<X>_VISIBLE_DEVICES``-style env at Allocate.

What each later vendor adds on top (its own subclass or hooks, no scheduler change):

* Ascend: per-chip families from ``vnpus.configs``, template rounding and ``hami-core`` mode at
  admission, ``huawei.com/<CW>`` JSON pod annotation, NetworkID grouping in scores, 910C pairs.
* Cambricon: capacity-derived cards, its own ``cambricon.com/dsmlu.lock`` (2 min), DSMLU profile
  annotations.
* Hygon: count range check, DCU vdev config files on the plugin side.
* Iluvatar: per-chip families, ``SOL_CONTINER_NAME`` env, vCore = count x 100 for multi-device.
* Moore Threads: 16 cores / 96 units per GPU, memory value set, ``mthreads.com/*`` annotations, same
  device for all containers (``CardNotFoundCustomFilterRule``).
* MetaX: sGPU JSON node format, QoS/app-class checks and reasons, topology loss/score node scores.
* Enflame: DRS profiles, ``assigned-containers`` annotation.
* Kunlunxin: vXPU memory rounding (24576/49152/98304), whole-card topology groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.annotations import VendorKeys
from ..protocol.register import DeviceInfo, decode_register_csv, decode_register_json
from ..protocol.resources import MEM_PERCENTAGE_UNSET
from .base import (
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceUsage,
    FitContext,
    FitResult,
    Obj,
    fit_walk,
    node_quantity,
    resource_int,
    split_list,
)

SOURCE_JSON = "json"
SOURCE_CSV = "csv"
SOURCE_CAPACITY = "capacity"


@dataclass(frozen=True)
class CountedSpec:
    common_word: str
    keys: VendorKeys
    count_resource: str
    memory_resource: str = ""
    core_resource: str = ""
    memory_unit_mib: int = 1
    default_cores: int = 100  # cores asked when the core resource is absent
    source: str = SOURCE_JSON
    capacity_device_memory: int = 0  # MiB per synthesised device (capacity source)
    capacity_slots: int = 1  # slots per synthesised device
    visible_devices_env: str = ""  # env carrying the device IDs at Allocate ("" = none)
    uses_node_lock: bool = True
    config_section: str = ""  # device-config section that enables the family and may rename resources


class CountedFamily(DeviceFamily):
    def __init__(self, spec: CountedSpec, section: dict[str, object] | None = None) -> None:
        section = section or {}
        self.spec = spec
        self.common_word = spec.common_word
        self.keys = spec.keys
        self.count_resource = str(section.get("resourceCountName") or spec.count_resource)
        self.memory_resource = str(section.get("resourceMemoryName") or spec.memory_resource)
        self.core_resource = str(section.get("resourceCoreName") or spec.core_resource)
        factor = section.get("memoryFactor")
        self.memory_factor = factor if isinstance(factor, int) and factor > 1 else 1
        self.memory_unit_mib = spec.memory_unit_mib * self.memory_factor
        self.uses_node_lock = spec.uses_node_lock

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        memreq, pct = 0, MEM_PERCENTAGE_UNSET
        mem = resource_int(container, self.memory_resource) if self.memory_resource else None
        if mem is not None and mem > 0:
            memreq = mem * self.spec.memory_unit_mib * self.memory_factor
        else:
            pct = 100
        cores = self.spec.default_cores
        c = resource_int(container, self.core_resource) if self.core_resource else None
        if c is not None:
            cores = c
        return ContainerDeviceRequest(self.common_word, nums, memreq, pct, cores)

    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        meta = node.get("metadata") or {}
        if self.spec.source == SOURCE_CAPACITY:
            n = node_quantity(node, "capacity", self.count_resource)
            name = meta.get("name", "")
            return [
                DeviceInfo(
                    id=f"{name}-{self.common_word}-{i}",
                    index=i,
                    count=self.spec.capacity_slots,
                    devmem=self.spec.capacity_device_memory,
                    devcore=100,
                    type=self.common_word,
                )
                for i in range(n)
            ]
        value = (meta.get("annotations") or {}).get(self.keys.register)
        if not value:
            return []
        if self.spec.source == SOURCE_CSV:
            return decode_register_csv(value)
        return decode_register_json(value)

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        pod_ann = ctx.pod_annotations
        use_types = (
            [t.lower() for t in split_list(pod_ann.get(self.keys.use_type))] if self.keys.use_type else []
        )
        nouse = (
            [t.lower() for t in split_list(pod_ann.get(self.keys.nouse_type))] if self.keys.nouse_type else []
        )

        def selection(dev: DeviceUsage) -> str | None:
            if not dev.health:
                return ev.CARD_NOT_HEALTH
            t = dev.type.lower()
            if (use_types and not any(u in t for u in use_types)) or any(u in t for u in nouse):
                return ev.CARD_TYPE_MISMATCH
            return None

        picks, reasons, total = fit_walk(self, devices, request, ctx, selection=selection)
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        return FitResult(True, [cd for _, cd in picks], reasons, total)

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        limits = (container.get("resources") or {}).get("limits") or {}
        # a count of 0 asks no device (admission_problem has already refused non-integers)
        return self.count_resource in limits and resource_int(container, self.count_resource) != 0

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        if self.spec.visible_devices_env:
            out.envs[self.spec.visible_devices_env] = ",".join(d.uuid for d in req.devices)
        return out


class WholeCards:
    """Mixin for families whose cards come whole from node capacity (MetaX GPU, Enflame GCU, Kunlun XPU).

    Upstream's three backends repeat one shape: a container claims cards when its limits carry the
    count resource, each card is taken whole, and card ``i`` of a node is ``<node><infix><i>`` synthesised
    from ``status.capacity`` (there is no register annotation). A family sets the class attributes; it
    keeps its own fit, health and annotations, which differ.
    """

    common_word: str
    count_resource: str
    id_infix: str = ""
    card_slots: int = 1  # how many containers one card admits (a whole card: usage decides)
    card_memory: int = 100  # "memory" of a card as upstream registers it (MiB or percent)
    request_memory: int = 0  # memory a whole-card request asks (upstream's numbers differ by vendor)
    request_cores: int = 100

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        return ContainerDeviceRequest(self.common_word, nums, self.request_memory, 100, self.request_cores)

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        return self.count_resource in ((container.get("resources") or {}).get("limits") or {})

    def card_numa(self, index: int, cards: int) -> int:
        return 0

    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        cards = node_quantity(node, "capacity", self.count_resource)
        name = (node.get("metadata") or {}).get("name", "")
        return [
            DeviceInfo(
                id=f"{name}{self.id_infix}{i}",
                index=i,
                count=self.card_slots,
                devmem=self.card_memory,
                devcore=100,
                type=self.common_word,
                numa=self.card_numa(i, cards),
                health=True,
            )
            for i in range(cards)
        ]


def _keys(cw: str) -> VendorKeys:
    return ann.VENDOR_KEYS_BY_CW[cw]


# Vendors whose scheduler side is fully described by data today. Others join as their issue lands.
VASTAI = CountedSpec("Vastai", _keys("Vastai"), "vastaitech.com/va", config_section="vastai")
BIREN = CountedSpec("Biren", _keys("Biren"), "birentech.com/gpu", config_section="biren")
HYGON = CountedSpec(
    "DCU",
    _keys("DCU"),
    "hygon.com/dcunum",
    "hygon.com/dcumem",
    "hygon.com/dcucores",
    source=SOURCE_CSV,
    config_section="hygon",
)
METAX_GPU = CountedSpec(
    "Metax-GPU",
    _keys("Metax-GPU"),
    "metax-tech.com/gpu",
    source=SOURCE_CAPACITY,
    capacity_device_memory=65536,
    uses_node_lock=False,
    config_section="metax",
)
SPECS: tuple[CountedSpec, ...] = (VASTAI, BIREN, HYGON, METAX_GPU)
