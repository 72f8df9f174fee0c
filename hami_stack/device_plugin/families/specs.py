"""What the generic plugin needs to know per family: data only.

* ``vendor`` names the emulated hardware directory (``testbed.hardware.families``);
* ``register``: ``csv`` or ``json`` (the annotation the scheduler decodes, with the family's
  handshake key), or ``capacity`` (the vendor's plugin writes no annotation; the scheduler derives
  devices from the node's capacity, so advertising the count resource is all it does);
* ``split_count``: slots per device (virtual devices the kubelet sees, ``count`` in the register);
* ``make_family``: builds the stack's family from the device-config section (Allocate uses it).

A family with a row here runs on the testbed (``hami-conformance run --vendor <vendor>``) with data
only, no code: ``testbed/hardware/families.py`` entries (``MODELS``, ``VISIBLE_ENV``, and
``DEVICE_NODES`` when Allocate names device nodes); a chart ``devices.<vendor>`` (or
``devices.<config_section>``) section with a ``devicePlugin`` block (``family: <name here>``,
``nodeSelector``, ``env: {<visibility variable>: all}``) and its schema; an inventory
``inventories/emulated/two-nodes-<vendor>.yaml`` whose nodes carry that nodeSelector's labels; and a
profile ``conformance/profiles/<vendor>.yaml`` (which also puts the vendor in ``--vendor all``, whose
cluster ``inventories/emulated/mixed-families.yaml`` then needs a node of it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...devices.amd import AmdFamily
from ...devices.awsneuron import AwsNeuronFamily
from ...devices.base import DeviceFamily
from ...devices.cambricon import MEMORY_UNIT_MIB, CambriconFamily
from ...devices.countonly import biren_family, vastai_family
from ...devices.enflame import GcuFamily
from ...devices.enflame_drs import DrsFamily, encode_capacity
from ...devices.hygon import HygonFamily
from ...devices.iluvatar import DEFAULT_CHIPS, IluvatarFamily, parse_chips
from ...devices.iluvatar import MEMORY_UNIT_MIB as ILUVATAR_MEMORY_UNIT
from ...devices.kunlun import KunlunFamily, VxpuFamily
from ...devices.metax import SGPU_KUBELET_EXTRA, MetaxGpuFamily, MetaxSgpuFamily, encode_sgpu_devices
from ...devices.mthreads import CORES_PER_GPU as MTHREADS_CORES
from ...devices.mthreads import MEMORY_UNIT_MIB as MTHREADS_MEMORY_UNIT
from ...devices.mthreads import MthreadsFamily
from .hardware import Device

REGISTER_CSV = "csv"
REGISTER_JSON = "json"
REGISTER_CAPACITY = "capacity"
MakeFamily = Callable[[dict[str, object] | None], DeviceFamily]


@dataclass(frozen=True)
class PluginSpec:
    name: str  # --family value
    vendor: str  # hardware directory and conformance vendor
    config_section: str
    make_family: MakeFamily
    register: str = REGISTER_JSON
    split_count: int = 1
    type_prefix: str = ""  # register type = prefix + model (DCU: "DCU-Z100L")
    # capacity families: extra resources advertised per device, as (family attribute naming the
    # resource, what one device gives: "cores" = 100, "memory_units" = MiB / memory_unit_mib)
    extra_resources: tuple[tuple[str, str], ...] = ()
    memory_unit_mib: int = 1
    cores_per_device: int = 100  # what one device gives of a "cores" extra resource (Mthreads: 16)
    devcore_is_compute_units: bool = False  # register devcore = the card's compute units (AMD), not 100
    # the register annotation in a vendor's own format (spec, devices) -> value; None: CSV/JSON
    encode_register: Callable[[PluginSpec, Sequence[Device]], str] | None = None
    chart_key: str = ""  # the chart's ``devices.<key>`` when it differs from config_section
    # which of the vendor's devices this plugin serves (None: all); two plugins of one vendor split
    # a node's cards (Enflame: whole GCUs and DRS cards)
    serves: Callable[[Device], bool] | None = None
    # kubelet devices per device when the hardware says (Enflame DRS: its slices), else split_count
    slots: Callable[[Device], int] | None = None

    @property
    def chart_values_key(self) -> str:
        return self.chart_key or self.config_section


SPECS: dict[str, PluginSpec] = {}
# what a family whose pods also ask cores and memory units advertises besides the count (the
# kubelet must fit them into the node's allocatable too)
CORES_AND_MEMORY = (("core_resource", "cores"), ("memory_resource", "memory_units"))


def _row(name: str, make_family: MakeFamily, *, vendor: str = "", section: str = "", **fields: Any) -> None:
    """Add the plugin row ``name``. The hardware vendor defaults to the name, and the device-config
    section to the vendor."""
    vendor = vendor or name
    SPECS[name] = PluginSpec(name, vendor, section or vendor, make_family, **fields)


_row(
    "dcu",
    lambda section: HygonFamily(section=section),
    vendor="hygon",
    register=REGISTER_CSV,
    split_count=4,  # upstream's dcu plugin: 4 vdevs per card
    type_prefix="DCU-",
)
_row(
    "mlu",
    CambriconFamily,
    vendor="cambricon",
    register=REGISTER_CAPACITY,
    split_count=100,  # vmlu: 100 shares per card, as the scheduler synthesises them
    extra_resources=CORES_AND_MEMORY,
    memory_unit_mib=MEMORY_UNIT_MIB,
)


def _iluvatar(section: object) -> DeviceFamily:
    # one plugin per chip; the emulated cards are BI-V150 (the chip the family is built for)
    chips = parse_chips(section) or list(DEFAULT_CHIPS)
    chip = next((c for c in chips if c.common_word == ILUVATAR_CHIP), chips[0])
    return IluvatarFamily(chip)


ILUVATAR_CHIP = "BI-V150"
METAX_SGPU_SLOTS = 16  # sGPUs per card (totalDevCount)
_row(
    "iluvatar",
    _iluvatar,
    section="iluvatars",
    register=REGISTER_CSV,
    split_count=4,  # vGPUs per card the kubelet sees
    # the pods' vMem (256 MiB units) and vCore must fit the node's allocatable at the kubelet too
    extra_resources=CORES_AND_MEMORY,
    memory_unit_mib=ILUVATAR_MEMORY_UNIT,
    chart_key="iluvatar",  # the device config calls its section "iluvatars"
)
_row(
    "mthreads",
    MthreadsFamily,
    register=REGISTER_CAPACITY,
    split_count=MTHREADS_CORES,  # vgpu: one per core slice of the card
    extra_resources=CORES_AND_MEMORY,
    memory_unit_mib=MTHREADS_MEMORY_UNIT,
    cores_per_device=MTHREADS_CORES,
)

# MetaX: one hardware directory, two plugins (a node runs one of them): the whole-GPU plugin
# advertises the card count, the sGPU plugin writes metax-tech.com/node-gpu-devices
_row("metax-gpu", MetaxGpuFamily, vendor="metax", register=REGISTER_CAPACITY)
_row(
    "metax-sgpu",
    MetaxSgpuFamily,
    vendor="metax",
    register=REGISTER_JSON,
    split_count=METAX_SGPU_SLOTS,
    # vcore (100 per device) must fit the node's allocatable at the kubelet too; vmemory is not
    # advertised (a limit with a unit is bytes: devices/metax.py SGPU_KUBELET_EXTRA)
    extra_resources=SGPU_KUBELET_EXTRA,
    encode_register=lambda spec, devices: encode_sgpu_devices(devices, spec.split_count),
)

# Kunlunxin: one hardware directory, two plugins (a node runs one): whole cards by count, or vXPU
# partitions registered in hami.io/node-register-xpu (type XPU-<model>: the vXPU family's word)
_row("kunlun", KunlunFamily, vendor="kunlunxin", section="kunlun", register=REGISTER_CAPACITY)
_row(
    "kunlun-vxpu",
    VxpuFamily,
    vendor="kunlunxin",
    section="kunlun",
    register=REGISTER_JSON,
    split_count=4,  # at most four 24576 MiB partitions per card
    type_prefix="XPU-",
)

# count-only families: JSON register with a handshake; the type carries the common word
_row("vastai", vastai_family, register=REGISTER_JSON, type_prefix="Vastai-")
_row("biren", biren_family, register=REGISTER_JSON, type_prefix="Biren-")

# Enflame: one hardware directory, two plugins in one process (``--family enflame-gcu,enflame-drs``):
# cards used whole are advertised as enflame.com/gcu; DRS cards (the driver reports slices and
# profiles) as one enflame.com/drs-gcu device per slice, described in enflame.com/gcu-drs-capacity
_row(
    "enflame-gcu",
    GcuFamily,
    vendor="enflame",
    register=REGISTER_CAPACITY,
    serves=lambda d: not d.drs_capacity,
)


def _drs_capacity(spec: PluginSpec, devices: Sequence[Device]) -> str:
    if not devices:
        return ""
    return encode_capacity([(d.index, d.drs_capacity) for d in devices], dict(devices[0].drs_profiles))


_row(
    "enflame-drs",
    DrsFamily,
    vendor="enflame",
    register=REGISTER_JSON,
    encode_register=_drs_capacity,
    serves=lambda d: d.drs_capacity > 0,
    slots=lambda d: d.drs_capacity,
)

# AWS Neuron: devices by count, NeuronCores (two per Trainium device) on a second resource
_row(
    "awsneuron",
    AwsNeuronFamily,
    register=REGISTER_CAPACITY,
    extra_resources=(("core_resource", "cores"),),
    cores_per_device=2,
)
_row("amd", AmdFamily, type_prefix="AMD-", devcore_is_compute_units=True)


def get(name: str) -> PluginSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r} (known: {', '.join(sorted(SPECS))})") from None
