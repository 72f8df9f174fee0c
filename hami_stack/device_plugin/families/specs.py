"""What the generic plugin needs to know per family: data only.

* ``vendor`` names the emulated hardware directory (``testbed.hardware.families``);
* ``register``: ``csv`` or ``json`` (the annotation the scheduler decodes, with the family's
  handshake key), or ``capacity`` (the vendor's plugin writes no annotation; the scheduler derives
  devices from the node's capacity, so advertising the count resource is all it does);
* ``split_count``: slots per device (virtual devices the kubelet sees, ``count`` in the register);
* ``make_family``: builds the stack's family from the device-config section (Allocate uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...devices.base import DeviceFamily
from ...devices.cambricon import MEMORY_UNIT_MIB, CambriconFamily
from ...devices.hygon import HygonFamily
from ...devices.iluvatar import DEFAULT_CHIPS, IluvatarFamily, parse_chips
from ...devices.mthreads import CORES_PER_GPU as MTHREADS_CORES
from ...devices.mthreads import MEMORY_UNIT_MIB as MTHREADS_MEMORY_UNIT
from ...devices.mthreads import MthreadsFamily

REGISTER_CSV = "csv"
REGISTER_JSON = "json"
REGISTER_CAPACITY = "capacity"


@dataclass(frozen=True)
class PluginSpec:
    name: str  # --family value
    vendor: str  # hardware directory and conformance vendor
    config_section: str
    make_family: Callable[[dict[str, object] | None], DeviceFamily]
    register: str = REGISTER_JSON
    split_count: int = 1
    type_prefix: str = ""  # register type = prefix + model (DCU: "DCU-Z100L")
    # capacity families: extra resources advertised per device, as (family attribute naming the
    # resource, what one device gives: "cores" = 100, "memory_units" = MiB / memory_unit_mib)
    extra_resources: tuple[tuple[str, str], ...] = ()
    memory_unit_mib: int = 1
    cores_per_device: int = 100  # what one device gives of a "cores" extra resource (Mthreads: 16)


SPECS: dict[str, PluginSpec] = {
    "dcu": PluginSpec(
        "dcu",
        "hygon",
        "hygon",
        lambda section: HygonFamily(section=section),
        register=REGISTER_CSV,
        split_count=4,  # upstream's dcu plugin: 4 vdevs per card
        type_prefix="DCU-",
    ),
    "mlu": PluginSpec(
        "mlu",
        "cambricon",
        "cambricon",
        lambda section: CambriconFamily(section),
        register=REGISTER_CAPACITY,
        split_count=100,  # vmlu: 100 shares per card, as the scheduler synthesises them
        extra_resources=(("core_resource", "cores"), ("memory_resource", "memory_units")),
        memory_unit_mib=MEMORY_UNIT_MIB,
    ),
}


def _iluvatar(section: object) -> DeviceFamily:
    # one plugin per chip; the emulated cards are BI-V150 (the chip the family is built for)
    chips = parse_chips(section) or list(DEFAULT_CHIPS)
    chip = next((c for c in chips if c.common_word == ILUVATAR_CHIP), chips[0])
    return IluvatarFamily(chip)


ILUVATAR_CHIP = "BI-V150"
SPECS["iluvatar"] = PluginSpec(
    "iluvatar",
    "iluvatar",
    "iluvatars",
    _iluvatar,
    register=REGISTER_CSV,
    split_count=4,  # vGPUs per card the kubelet sees; memory and cores are the scheduler's
)
SPECS["mthreads"] = PluginSpec(
    "mthreads",
    "mthreads",
    "mthreads",
    lambda section: MthreadsFamily(section),
    register=REGISTER_CAPACITY,
    split_count=MTHREADS_CORES,  # vgpu: one per core slice of the card
    extra_resources=(("core_resource", "cores"), ("memory_resource", "memory_units")),
    memory_unit_mib=MTHREADS_MEMORY_UNIT,
    cores_per_device=MTHREADS_CORES,
)


def get(name: str) -> PluginSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r} (known: {', '.join(sorted(SPECS))})") from None
