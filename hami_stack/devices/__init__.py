"""Vendor device families behind one interface (see :mod:`.base` for how each caller uses it).

* :mod:`.base` - :class:`DeviceFamily`, the request/usage/fit/allocate data types, the shared fit walk.
* :mod:`.config` - ``device-config.yaml`` loading and validation.
* :mod:`.scoring` - device/node scores and policy ordering.
* :mod:`.nvidia` - the NVIDIA family (complete).
* :mod:`.counted` - a data-driven family (Vastai, Biren, Hygon DCU, MetaX whole GPU) proving neutrality.
* :mod:`.hygon` - Hygon DCU (counted data plus count range and Allocate's devices and vdev config).
* :mod:`.cambricon` - Cambricon MLU (cards from node capacity, DSMLU pod annotations).
* :mod:`.iluvatar` - Iluvatar (one family per chip of ``iluvatars``).
* :mod:`.mthreads` - Moore Threads (GPUs from capacity, sGPU memory values).
* :mod:`.metax` - MetaX whole GPU and sGPU (MetaLink zones, topology scores).
* :mod:`.kunlun` - Kunlunxin whole XPU and vXPU (8-card board topology, memory partitions).
* :mod:`.enflame` - Enflame whole GCUs.
* :mod:`.awsneuron` - AWS Neuron devices and NeuronCores.
* :mod:`.amd` - AMD GPUs (memory and a percentage of compute units).
* :mod:`.countonly` - Vastai and Biren (count only).
* :mod:`.registry` - families by name; :func:`build_families` from a config.
"""

from .base import (
    AdmissionError,
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceUsage,
    FitContext,
    FitResult,
    Mount,
    add_usage,
    containers,
)
from .config import DeviceConfig, DeviceConfigError, NvidiaConfig, load_device_config, parse_device_config
from .nvidia import NvidiaFamily
from .registry import build_families, family_names, register_family

__all__ = [
    "AdmissionError",
    "AllocateInput",
    "ContainerAllocation",
    "ContainerDeviceRequest",
    "DeviceConfig",
    "DeviceConfigError",
    "DeviceFamily",
    "DeviceUsage",
    "FitContext",
    "FitResult",
    "Mount",
    "NvidiaConfig",
    "NvidiaFamily",
    "add_usage",
    "build_families",
    "containers",
    "family_names",
    "load_device_config",
    "parse_device_config",
    "register_family",
]
