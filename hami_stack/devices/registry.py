"""Families by name, and building the enabled set from a device config.

A factory takes the :class:`DeviceConfig` and returns a family, or None when its section is
absent (the family is then not registered, as HAMi skips empty sections). The scheduler and
webhook call :func:`build_families` once at start-up and iterate the result (sorted by common
word, the order HAMi locks in).
"""

from __future__ import annotations

from collections.abc import Callable

from .amd import AmdFamily
from .ascend import ascend_families
from .awsneuron import AwsNeuronFamily
from .base import DeviceFamily
from .cambricon import CambriconFamily
from .config import DeviceConfig
from .counted import SPECS, CountedFamily, CountedSpec
from .countonly import biren_family, vastai_family
from .enflame import GcuFamily
from .enflame_drs import DrsFamily
from .hygon import HygonFamily
from .iluvatar import iluvatar_families
from .kunlun import KunlunFamily, VxpuFamily
from .metax import MetaxGpuFamily, MetaxSgpuFamily
from .mthreads import MthreadsFamily
from .nvidia import NvidiaFamily

# a factory may also return several families (Ascend: one per configured chip)
FamilyFactory = Callable[[DeviceConfig], DeviceFamily | list[DeviceFamily] | None]
_FACTORIES: dict[str, FamilyFactory] = {}


def register_family(name: str, factory: FamilyFactory) -> None:
    """Add (or replace) a family factory under ``name`` (its common word)."""
    _FACTORIES[name] = factory


def family_names() -> list[str]:
    return sorted(_FACTORIES)


def build_families(config: DeviceConfig, *, only: set[str] | None = None) -> list[DeviceFamily]:
    """The families the config enables (optionally restricted to ``only`` names), sorted by common word."""
    out = []
    for name in sorted(_FACTORIES):
        if only is not None and name not in only:
            continue
        family = _FACTORIES[name](config)
        if isinstance(family, list):
            out.extend(family)
        elif family is not None:
            out.append(family)
    return sorted(out, key=lambda f: f.common_word)


def _nvidia(config: DeviceConfig) -> DeviceFamily | None:
    return NvidiaFamily(config.nvidia) if config.nvidia is not None else None


def _counted(spec: CountedSpec) -> FamilyFactory:
    def make(config: DeviceConfig) -> DeviceFamily | None:
        section = config.section(spec.config_section)
        return CountedFamily(spec, section) if section else None

    return make


def _ascend(config: DeviceConfig) -> list[DeviceFamily]:
    # the section is present only when Ascend is enabled (chart: devices.ascend.enabled)
    return list(ascend_families(config.section("vnpus")))


register_family("NVIDIA", _nvidia)
register_family("Ascend", _ascend)
for _spec in SPECS:
    register_family(_spec.common_word, _counted(_spec))


def _hygon(config: DeviceConfig) -> DeviceFamily | None:
    section = config.section("hygon")
    return HygonFamily(section=section) if section else None


# families with behaviour beyond the counted data replace its factory
register_family("DCU", _hygon)


def _cambricon(config: DeviceConfig) -> DeviceFamily | None:
    section = config.section("cambricon")
    return CambriconFamily(section) if section else None


register_family("MLU", _cambricon)


def _iluvatar(config: DeviceConfig) -> list[DeviceFamily]:
    # the list is rendered only when Iluvatar is enabled (chart: devices.iluvatar.enabled)
    return list(iluvatar_families(config.section("iluvatars")))


def _mthreads(config: DeviceConfig) -> DeviceFamily | None:
    section = config.section("mthreads")
    return MthreadsFamily(section) if section else None


register_family("Iluvatar", _iluvatar)
register_family("Mthreads", _mthreads)


def _metax(kind: type[MetaxGpuFamily] | type[MetaxSgpuFamily]) -> FamilyFactory:
    def make(config: DeviceConfig) -> DeviceFamily | None:
        section = config.section("metax")
        return kind(section) if section else None

    return make


# the metax section enables both MetaX families (whole GPU and sGPU), as upstream
register_family("Metax-GPU", _metax(MetaxGpuFamily))
register_family("Metax-SGPU", _metax(MetaxSgpuFamily))


def _kunlun(kind: type[KunlunFamily] | type[VxpuFamily]) -> FamilyFactory:
    def make(config: DeviceConfig) -> DeviceFamily | None:
        section = config.section("kunlun")
        return kind(section) if section else None

    return make


# the kunlun section enables both Kunlunxin families (whole XPU and vXPU), as upstream
register_family("kunlun", _kunlun(KunlunFamily))
register_family("XPU", _kunlun(VxpuFamily))


def _countonly(make: Callable[[dict[str, object] | None], DeviceFamily], section: str) -> FamilyFactory:
    def factory(config: DeviceConfig) -> DeviceFamily | None:
        raw = config.section(section)
        return make(raw) if raw else None

    return factory


# Vastai and Biren as upstream's backends schedule them (count only, first device first)
register_family("Vastai", _countonly(vastai_family, "vastai"))
register_family("Biren", _countonly(biren_family, "biren"))


def _gcu(config: DeviceConfig) -> DeviceFamily | None:
    section = config.section("enflame")
    return GcuFamily(section) if section else None


def _drs(config: DeviceConfig) -> DeviceFamily | None:
    section = config.section("enflame")
    return DrsFamily(section) if section else None


# the enflame section enables both Enflame families (whole GCUs and DRS slices), as upstream
register_family("GCU", _gcu)
register_family("Enflame", _drs)


def _neuron(config: DeviceConfig) -> DeviceFamily | None:
    section = config.section("awsneuron")
    return AwsNeuronFamily(section) if section else None


register_family("AWSNeuron", _neuron)


def _amd(config: DeviceConfig) -> DeviceFamily | None:
    section = config.section("amd")
    return AmdFamily(section) if section else None


register_family("AMD", _amd)
