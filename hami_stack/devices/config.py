"""The device config file (``device-config.yaml``, ConfigMap ``<release>-scheduler-device``).

The scheduler, the webhook and the device plugins all read it. Only the ``nvidia`` section is
modelled field by field (:class:`NvidiaConfig`, defaults as in HAMi v2.10); the other vendors'
sections are kept as validated raw mappings for their families (``cambricon``, ``hygon``, ``metax``,
``enflame``, ``mthreads``, ``kunlun``, ``awsneuron``, ``amd``, ``vastai``, ``biren`` are mappings;
``iluvatars`` is a list; ``vnpus`` is a mapping with ``configs`` or, in its legacy form, a list).

Errors are :class:`DeviceConfigError` and name the field (``nvidia.deviceSplitCount: ...``). With
``strict=True`` (the default) unknown keys are errors too, so a typo does not silently fall back
to a default. Like HAMi, a file whose every section is empty is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..protocol import resources as res

GPU_CORE_POLICIES = ("default", "force", "disable")
MAPPING_SECTIONS = (
    "cambricon",
    "hygon",
    "metax",
    "enflame",
    "mthreads",
    "kunlun",
    "awsneuron",
    "amd",
    "vastai",
    "biren",
)
LIST_SECTIONS = ("iluvatars",)


class DeviceConfigError(ValueError):
    """A device config that cannot be used; the message starts with the offending field."""


@dataclass(frozen=True)
class NvidiaConfig:
    resource_count_name: str = res.NVIDIA_GPU
    resource_memory_name: str = res.NVIDIA_GPUMEM
    resource_memory_percentage_name: str = res.NVIDIA_GPUMEM_PERCENTAGE
    resource_core_name: str = res.NVIDIA_GPUCORES
    resource_priority_name: str = res.NVIDIA_PRIORITY
    overwrite_env: bool = False
    default_memory: int = 0
    default_cores: int = 0
    default_gpu_num: int = 1
    memory_factor: int = 1
    pre_configured_device_memory: int = 0
    device_split_count: int = 10
    device_memory_scaling: float = 1.0
    device_core_scaling: float = 1.0
    enable_numa_topology: bool = False
    gpu_core_policy: str = "default"
    lib_cuda_log_level: int = 1
    runtime_class_name: str = ""
    disable_core_limit: bool = False
    mig_profile_allowlist: tuple[dict[str, Any], ...] = ()
    known_mig_geometries: tuple[Any, ...] = ()


# YAML key -> (dataclass field, kind)
_NVIDIA_FIELDS: dict[str, tuple[str, str]] = {
    "resourceCountName": ("resource_count_name", "name"),
    "resourceMemoryName": ("resource_memory_name", "name"),
    "resourceMemoryPercentageName": ("resource_memory_percentage_name", "name"),
    "resourceCoreName": ("resource_core_name", "name"),
    "resourcePriorityName": ("resource_priority_name", "name"),
    "overwriteEnv": ("overwrite_env", "bool"),
    "defaultMemory": ("default_memory", "nonneg"),
    "defaultCores": ("default_cores", "percent"),
    "defaultGPUNum": ("default_gpu_num", "nonneg"),
    "memoryFactor": ("memory_factor", "positive"),
    "preConfiguredDeviceMemory": ("pre_configured_device_memory", "nonneg"),
    "deviceSplitCount": ("device_split_count", "positive"),
    "deviceMemoryScaling": ("device_memory_scaling", "scale"),
    "deviceCoreScaling": ("device_core_scaling", "scale"),
    "enableNumaTopology": ("enable_numa_topology", "bool"),
    "gpuCorePolicy": ("gpu_core_policy", "policy"),
    "libCudaLogLevel": ("lib_cuda_log_level", "nonneg"),
    "runtimeClassName": ("runtime_class_name", "str"),
    "disableCoreLimit": ("disable_core_limit", "bool"),
    "migProfileAllowlist": ("mig_profile_allowlist", "list"),
    "knownMigGeometries": ("known_mig_geometries", "list"),
}


@dataclass(frozen=True)
class DeviceConfig:
    nvidia: NvidiaConfig | None = field(default_factory=NvidiaConfig)
    sections: dict[str, Any] = field(default_factory=dict)  # other vendors, raw

    def section(self, name: str) -> Any:
        return self.sections.get(name)


def _bool(where: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise DeviceConfigError(f"{where}: must be a boolean, got {v!r}")


def _int(where: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise DeviceConfigError(f"{where}: must be an integer, got {v!r}")
    return v


def _convert(where: str, kind: str, v: Any) -> Any:
    if kind == "name":
        if not isinstance(v, str) or not v:
            raise DeviceConfigError(f"{where}: must be a non-empty resource name, got {v!r}")
        return v
    if kind == "str":
        if v is None:
            return ""
        if not isinstance(v, str):
            raise DeviceConfigError(f"{where}: must be a string, got {v!r}")
        return v
    if kind == "bool":
        return _bool(where, v)
    if kind in ("nonneg", "positive", "percent"):
        n = _int(where, v)
        low = 1 if kind == "positive" else 0
        if n < low or (kind == "percent" and n > 100):
            bound = "between 0 and 100" if kind == "percent" else f">= {low}"
            raise DeviceConfigError(f"{where}: must be {bound}, got {n}")
        return n
    if kind == "scale":
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise DeviceConfigError(f"{where}: must be a positive number, got {v!r}")
        return float(v)
    if kind == "policy":
        if v in (None, ""):
            return "default"
        if v not in GPU_CORE_POLICIES:
            raise DeviceConfigError(f"{where}: must be one of {', '.join(GPU_CORE_POLICIES)}, got {v!r}")
        return v
    if kind == "list":
        if v is None:
            return ()
        if not isinstance(v, list):
            raise DeviceConfigError(f"{where}: must be a list, got {type(v).__name__}")
        return tuple(v)
    raise AssertionError(kind)


def _nvidia(data: Any, strict: bool) -> NvidiaConfig | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise DeviceConfigError(f"nvidia: must be a mapping, got {type(data).__name__}")
    values: dict[str, Any] = {}
    for key, v in data.items():
        spec = _NVIDIA_FIELDS.get(key)
        if spec is None:
            if strict:
                raise DeviceConfigError(f"nvidia.{key}: unknown field")
            continue
        if v is None and spec[1] in ("name", "bool", "nonneg", "positive", "percent", "scale"):
            continue  # an empty YAML value keeps the default, as Go leaves the zero value to defaulting
        values[spec[0]] = _convert(f"nvidia.{key}", spec[1], v)
    return dataclasses.replace(NvidiaConfig(), **values)


def parse_device_config(data: Any, *, strict: bool = True) -> DeviceConfig:
    """Validate an already-loaded YAML document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DeviceConfigError(f"device config: must be a mapping, got {type(data).__name__}")
    sections: dict[str, Any] = {}
    for key, v in data.items():
        if key == "nvidia":
            continue
        if key in MAPPING_SECTIONS:
            if v is not None and not isinstance(v, dict):
                raise DeviceConfigError(f"{key}: must be a mapping, got {type(v).__name__}")
        elif key in LIST_SECTIONS:
            if v is not None and not isinstance(v, list):
                raise DeviceConfigError(f"{key}: must be a list, got {type(v).__name__}")
        elif key == "vnpus":
            if v is not None and not isinstance(v, dict | list):
                raise DeviceConfigError(f"vnpus: must be a mapping or a list, got {type(v).__name__}")
        elif strict:
            raise DeviceConfigError(f"{key}: unknown section")
        else:
            continue
        if v:
            sections[key] = v
    nvidia = _nvidia(data.get("nvidia"), strict)
    if nvidia is None and not sections:
        raise DeviceConfigError("device config: every vendor section is empty")
    return DeviceConfig(nvidia=nvidia, sections=sections)


def load_device_config(source: str | Path, *, strict: bool = True) -> DeviceConfig:
    """Load from a path (``Path``) or from YAML text (``str``)."""
    if isinstance(source, Path):
        try:
            text = source.read_text()
        except OSError as e:
            raise DeviceConfigError(f"device config: cannot read {source}: {e.strerror}") from e
    else:
        text = source
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DeviceConfigError(f"device config: invalid YAML: {e}") from e
    return parse_device_config(data, strict=strict)
