"""Extended-resource names of every vendor family HAMi schedules (defaults of ``device-config.yaml``).

Names are configurable per cluster (the device config overrides them), so code should take the
names from :class:`hami_stack.devices.config.DeviceConfig`; the constants here are the defaults
and the data the other families start from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# NVIDIA (common word "NVIDIA").
NVIDIA_GPU: Final = "nvidia.com/gpu"
NVIDIA_GPUMEM: Final = "nvidia.com/gpumem"
NVIDIA_GPUMEM_PERCENTAGE: Final = "nvidia.com/gpumem-percentage"
NVIDIA_GPUCORES: Final = "nvidia.com/gpucores"
NVIDIA_PRIORITY: Final = "nvidia.com/priority"
NVIDIA_RESOURCES: Final = (
    NVIDIA_GPU,
    NVIDIA_GPUMEM,
    NVIDIA_GPUMEM_PERCENTAGE,
    NVIDIA_GPUCORES,
    NVIDIA_PRIORITY,
)

# Sentinel HAMi uses for "no memory percentage asked".
MEM_PERCENTAGE_UNSET: Final = 101

# Prefix of the ResourceQuota hard keys HAMi tracks (``limits.nvidia.com/gpumem``); ``requests.`` is ignored.
QUOTA_LIMITS_PREFIX: Final = "limits."


@dataclass(frozen=True)
class VendorResources:
    """Default resource names and units of one family, as the scheduler sees them."""

    common_word: str
    count: str
    memory: str = ""
    core: str = ""
    extra: tuple[str, ...] = ()
    memory_unit_mib: int = 1  # one unit of the memory resource, in MiB
    default_cores: int = 0  # cores asked when the core resource is absent (100 = whole device)


# Section 2.2 of the contract, as data. Chip-parametrised families (Iluvatar, Ascend) list one chip.
VENDORS: Final[tuple[VendorResources, ...]] = (
    VendorResources(
        "NVIDIA", NVIDIA_GPU, NVIDIA_GPUMEM, NVIDIA_GPUCORES, (NVIDIA_GPUMEM_PERCENTAGE, NVIDIA_PRIORITY)
    ),
    VendorResources(
        "MLU",
        "cambricon.com/vmlu",
        "cambricon.com/mlu.smlu.vmemory",
        "cambricon.com/mlu.smlu.vcore",
        memory_unit_mib=256,
        default_cores=100,
    ),
    VendorResources("DCU", "hygon.com/dcunum", "hygon.com/dcumem", "hygon.com/dcucores", default_cores=100),
    VendorResources(
        "MR-V100",
        "iluvatar.ai/MR-V100-vgpu",
        "iluvatar.ai/MR-V100.vMem",
        "iluvatar.ai/MR-V100.vCore",
        memory_unit_mib=256,
    ),
    VendorResources(
        "Mthreads",
        "mthreads.com/vgpu",
        "mthreads.com/sgpu-memory",
        "mthreads.com/sgpu-core",
        memory_unit_mib=512,
    ),
    VendorResources("Metax-GPU", "metax-tech.com/gpu", default_cores=100),
    VendorResources(
        "Metax-SGPU",
        "metax-tech.com/sgpu",
        "metax-tech.com/vmemory",
        "metax-tech.com/vcore",
        memory_unit_mib=1024,
        default_cores=100,
    ),
    VendorResources("GCU", "enflame.com/gcu", default_cores=100),
    VendorResources(
        "Enflame",
        "enflame.com/drs-gcu",
        "enflame.com/gcu-memory",
        "enflame.com/gcu-core",
        ("enflame.com/vgcu", "enflame.com/vgcu-percentage"),
    ),
    VendorResources("kunlun", "kunlunxin.com/xpu", default_cores=100),
    VendorResources("XPU", "kunlunxin.com/vxpu", "kunlunxin.com/vxpu-memory"),
    VendorResources("AWSNeuron", "aws.amazon.com/neuron", core="aws.amazon.com/neuroncore"),
    VendorResources("AMD", "amd.com/gpu", "amd.com/gpumem", "amd.com/gpucores"),
    VendorResources("Vastai", "vastaitech.com/va"),
    VendorResources("Biren", "birentech.com/gpu"),
    VendorResources(
        "Ascend910B3",
        "huawei.com/Ascend910B3",
        "huawei.com/Ascend910B3-memory",
        "huawei.com/Ascend910B3-core",
    ),
)
VENDORS_BY_CW: Final = {v.common_word: v for v in VENDORS}


def iluvatar_resources(chip: str) -> VendorResources:
    """Iluvatar names are built from the chip name (``MR-V100``, ``MR-V50``, ``BI-V150``, ``BI-V100``)."""
    return VendorResources(
        chip,
        f"iluvatar.ai/{chip}-vgpu",
        f"iluvatar.ai/{chip}.vMem",
        f"iluvatar.ai/{chip}.vCore",
        memory_unit_mib=256,
    )


def ascend_resources(common_word: str) -> VendorResources:
    """Ascend names are built from the chip's common word (``Ascend910B3`` -> ``huawei.com/Ascend910B3``)."""
    base = f"huawei.com/{common_word}"
    return VendorResources(common_word, base, f"{base}-memory", f"{base}-core")
