"""Huawei Ascend (one family per chip of ``vnpus.configs``): vNPU templates and ``hami-core`` mode.

Each entry of the device config's ``vnpus.configs`` is its own family, keyed by its common word
(``Ascend910B3``): resources ``huawei.com/<CW>``, ``huawei.com/<CW>-memory`` (MiB x ``memoryFactor``)
and ``huawei.com/<CW>-core``; node keys ``hami.io/node-register-<CW>`` (JSON) and
``hami.io/node-handshake-<CW>``; pod keys ``hami.io/<CW>-devices-to-allocate`` / ``-allocated``.

Admission (contract section 2.3), per container asking ``huawei.com/<CW>``:

* 910C super-pod chips hand out whole modules of two NPUs: a count of 1 becomes 2, any other odd
  count is refused (``Ascend910C device request must be 1 or 2*n, got <n>``);
* pod annotation ``huawei.com/vnpu-mode: hami-core`` selects soft partitioning (memory taken as
  asked); otherwise hard partitioning by template: memory is rounded **up** to the smallest template
  that holds it, to the whole card (``memoryAllocatable``) when no template does but the card does
  (``memoryCapacity``), else refused (``<memory resource> <v> is invalid``); no memory asked means
  the whole card; a core request is refused outside hami-core mode; more than one device with a
  partial template is refused (upstream's text, typo included: ``vNPU nor supported for multiple
  devices``). Limits and requests of the memory resource are rewritten to the final value;
* ``runtimeClassName`` is set when configured and the pod has none;
* with ``overwriteEnv``, a container asking no Ascend chip at all gets ``ASCEND_VISIBLE_DEVICES=""``
  (once, whatever the number of chip families).

Values HAMi would misread are refused before that (:meth:`AscendFamily.admission_problem`): memory
above int32 after the factor or written with a byte unit (it is MiB: "use 16384, not 16Gi").

Scheduling: a device fits on health, UUID selection, slots (``memoryAllocatable`` / smallest
template), memory and cores as for every family; a hami-core pod only fits a node whose
``hami-vnpu-core`` annotation is ``"true"`` (the annotation overrides the config's
``hamiVnpuCore``), else ``ModeNotFit``, and in hami-core mode a device's core total is 100. 910
chips whose devices all carry ``custominfo.NetworkID`` are chosen by topology: one device is the
first fitting one, several prefer the NetworkID group with the most free devices, and 910C takes
only modules (device index // 2) with both NPUs free. The node score adds 10 x the share of each
container's devices in its largest NetworkID group.

Annotations written at /filter besides the assignment: ``predicate-time`` (unix seconds) and
``huawei.com/<CW>`` = JSON ``[{"UUID":..,"temp":<template>}]`` (hard mode) or
``[{"UUID":..,"memory":<MiB>,"core":<n>}]`` (hami-core mode).

Allocate (section 6.2): ``ASCEND_VISIBLE_DEVICES`` = the physical IDs; hard mode adds
``ASCEND_VNPU_SPECS=<template>`` (the Ascend container runtime creates the vNPU), hami-core mode
``NPU_MEM_QUOTA``, ``NPU_PRIORITY``, the shared-region paths and the driver/limiter mounts.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import ContainerDevice, PodDevices
from ..protocol.errors import ProtocolError
from ..protocol.quantity import INT32_MAX, parse_quantity
from ..protocol.register import DeviceInfo, decode_register_json
from ..protocol.resources import MEM_PERCENTAGE_UNSET
from .base import (
    MAX_DEVICES_PER_CONTAINER,
    AdmissionError,
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceUsage,
    FitContext,
    FitResult,
    Mount,
    Obj,
    append_env,
    check_quantity,
    fit_walk,
    resource_int,
    resource_value,
)
from .config import DeviceConfigError

VNPU_MODE_ANNOTATION = "huawei.com/vnpu-mode"
VNPU_MODE_HAMI_CORE = "hami-core"
PREDICATE_TIME = "predicate-time"
VISIBLE_ENV = "ASCEND_VISIBLE_DEVICES"
VNPU_SPECS_ENV = "ASCEND_VNPU_SPECS"
ASCEND_910_PREFIX = "Ascend910"
ASCEND_910C = "Ascend910C"
NETWORK_ID = "NetworkID"
NETWORK_WEIGHT = 10
NPUS_PER_910C_MODULE = 2
HAMI_VNPU_CORE_DIR = "/usr/local/hami-vnpu-core"
SHARED_REGION_DIR = "/usr/local/hami-shared-region"
MULTI_DEVICE_ERROR = "vNPU nor supported for multiple devices"  # upstream's text, typo included


def odd_910c_message(n: int) -> str:
    return f"Ascend910C device request must be 1 or 2*n, got {n}"


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VnpuTemplate:
    name: str
    memory: int  # MiB
    ai_core: int = 0
    ai_cpu: int = 0


@dataclass(frozen=True)
class VnpuConfig:
    """One entry of ``vnpus.configs`` (field names as upstream's YAML, in snake case)."""

    chip_name: str
    common_word: str
    resource_name: str
    resource_memory_name: str
    resource_core_name: str = ""
    memory_allocatable: int = 0
    memory_capacity: int = 0
    memory_factor: int = 1
    ai_core: int = 0
    ai_cpu: int = 0
    runtime_class_name: str = ""
    overwrite_env: bool = False
    super_pod: bool = False
    templates: tuple[VnpuTemplate, ...] = ()  # sorted by memory, ascending

    def trim_memory(self, mib: int) -> tuple[int, str]:
        """(MiB, template) the request ``mib`` is rounded up to; (allocatable, "") for the whole card;
        (0, "") when the card cannot hold it."""
        for t in self.templates:
            if mib <= t.memory:
                return t.memory, t.name
        if mib <= self.memory_capacity:
            return self.memory_allocatable, ""
        return 0, ""

    @property
    def vdevice_count(self) -> int:
        """Sharing slots per NPU: whole card / smallest template (1 without templates), as upstream."""
        if not self.templates or self.templates[0].memory <= 0:
            return 1
        return max(self.memory_allocatable // self.templates[0].memory, 1)

    def template(self, name: str) -> VnpuTemplate | None:
        return next((t for t in self.templates if t.name == name), None)


@dataclass(frozen=True)
class VnpusConfig:
    hami_vnpu_core: bool = False
    configs: tuple[VnpuConfig, ...] = ()

    def by_chip(self, chip_name: str) -> VnpuConfig | None:
        return next((c for c in self.configs if c.chip_name == chip_name), None)


_STR = {
    "chipName": "chip_name",
    "commonWord": "common_word",
    "resourceName": "resource_name",
    "resourceMemoryName": "resource_memory_name",
    "resourceCoreName": "resource_core_name",
    "runtimeClassName": "runtime_class_name",
}
_INT = {
    "memoryAllocatable": "memory_allocatable",
    "memoryCapacity": "memory_capacity",
    "memoryFactor": "memory_factor",
    "aiCore": "ai_core",
    "aiCPU": "ai_cpu",
}
_BOOL = {"overwriteEnv": "overwrite_env", "superPod": "super_pod"}


def _as_bool(where: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise DeviceConfigError(f"{where}: must be a boolean, got {v!r}")


def _as_int(where: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise DeviceConfigError(f"{where}: must be a non-negative integer, got {v!r}")
    return v


def _template(where: str, raw: Any) -> VnpuTemplate:
    if not isinstance(raw, dict):
        raise DeviceConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise DeviceConfigError(f"{where}.name: must be a non-empty string, got {name!r}")
    memory = _as_int(f"{where}.memory", raw.get("memory", 0))
    if memory <= 0:
        raise DeviceConfigError(f"{where}.memory: must be positive, got {memory}")
    return VnpuTemplate(
        name,
        memory,
        _as_int(f"{where}.aiCore", raw.get("aiCore", 0)),
        _as_int(f"{where}.aiCPU", raw.get("aiCPU", 0)),
    )


def _chip(where: str, raw: Any) -> VnpuConfig:
    if not isinstance(raw, dict):
        raise DeviceConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    values: dict[str, Any] = {}
    for key, v in raw.items():
        path = f"{where}.{key}"
        if key in _STR:
            if v is not None and not isinstance(v, str):
                raise DeviceConfigError(f"{path}: must be a string, got {v!r}")
            values[_STR[key]] = v or ""
        elif key in _INT:
            if v is not None:
                values[_INT[key]] = _as_int(path, v)
        elif key in _BOOL:
            if v is not None:
                values[_BOOL[key]] = _as_bool(path, v)
        elif key == "templates":
            if v is not None and not isinstance(v, list):
                raise DeviceConfigError(f"{path}: must be a list, got {type(v).__name__}")
            temps = [_template(f"{path}[{i}]", t) for i, t in enumerate(v or [])]
            values["templates"] = tuple(sorted(temps, key=lambda t: t.memory))
        else:
            raise DeviceConfigError(f"{path}: unknown field")
    for key in ("chipName", "commonWord", "resourceName"):
        if not values.get(_STR[key]):
            raise DeviceConfigError(f"{where}.{key}: required")
    cw = values["common_word"]
    values.setdefault("resource_memory_name", f"huawei.com/{cw}-memory")
    if values.get("memory_factor", 1) < 1:
        values["memory_factor"] = 1
    return VnpuConfig(**values)


def parse_vnpus(section: Any) -> VnpusConfig:
    """The ``vnpus`` section: ``{hamiVnpuCore, configs: [...]}``, or the legacy bare list of configs."""
    if section is None:
        return VnpusConfig()
    if isinstance(section, list):
        raw_configs, core = section, False
    elif isinstance(section, dict):
        unknown = set(section) - {"hamiVnpuCore", "configs"}
        if unknown:
            raise DeviceConfigError(f"vnpus.{sorted(unknown)[0]}: unknown field")
        raw_configs = section.get("configs") or []
        core = _as_bool("vnpus.hamiVnpuCore", section.get("hamiVnpuCore", False))
        if not isinstance(raw_configs, list):
            raise DeviceConfigError(f"vnpus.configs: must be a list, got {type(raw_configs).__name__}")
    else:
        raise DeviceConfigError(f"vnpus: must be a mapping or a list, got {type(section).__name__}")
    configs = tuple(_chip(f"vnpus.configs[{i}]", c) for i, c in enumerate(raw_configs))
    seen: set[str] = set()
    for i, c in enumerate(configs):
        if c.common_word in seen:
            raise DeviceConfigError(f"vnpus.configs[{i}].commonWord: {c.common_word!r} appears twice")
        seen.add(c.common_word)
    return VnpusConfig(core, configs)


def _t(name: str, memory: int, ai_core: int, ai_cpu: int = 0) -> VnpuTemplate:
    return VnpuTemplate(name, memory, ai_core, ai_cpu)


def _cfg(
    chip: str,
    cw: str,
    alloc: int,
    cap: int,
    core: int,
    cpu: int,
    *temps: VnpuTemplate,
    super_pod: bool = False,
) -> VnpuConfig:
    base = f"huawei.com/{cw}"
    return VnpuConfig(
        chip,
        cw,
        base,
        f"{base}-memory",
        f"{base}-core",
        alloc,
        cap,
        1,
        core,
        cpu,
        super_pod=super_pod,
        templates=tuple(sorted(temps, key=lambda t: t.memory)),
    )


# The 64 GiB card with 20 AI cores, 7 AI CPUs and the 16g/32g templates: 910B3, 910B4-1 and each 910C die
_B3_CARD = (65536, 65536, 20, 7, _t("vir05_1c_16g", 16384, 5, 1), _t("vir10_3c_32g", 32768, 10, 3))

# The chips of upstream's chart (v2.x device-configmap), restated as data: the chart renders the same.
DEFAULT_CHIPS: tuple[VnpuConfig, ...] = (
    _cfg(
        "910A",
        "Ascend910A",
        32768,
        32768,
        30,
        0,
        _t("vir02", 2184, 2),
        _t("vir04", 4369, 4),
        _t("vir08", 8738, 8),
        _t("vir16", 17476, 16),
    ),
    _cfg(
        "910B2",
        "Ascend910B2",
        65536,
        65536,
        24,
        6,
        _t("vir03_1c_8g", 8192, 3, 1),
        _t("vir06_1c_16g", 16384, 6, 1),
        _t("vir12_3c_32g", 32768, 12, 3),
    ),
    _cfg("910B3", "Ascend910B3", *_B3_CARD),
    _cfg("910B4-1", "Ascend910B4-1", *_B3_CARD),
    _cfg(
        "910B4",
        "Ascend910B4",
        32768,
        32768,
        20,
        7,
        _t("vir05_1c_8g", 8192, 5, 1),
        _t("vir10_3c_16g", 16384, 10, 3),
    ),
    _cfg(
        "310P3",
        "Ascend310P",
        21527,
        24576,
        8,
        7,
        _t("vir01", 3072, 1, 1),
        _t("vir02", 6144, 2, 2),
        _t("vir04", 12288, 4, 4),
    ),
    _cfg("Ascend910", "Ascend910C", *_B3_CARD, super_pod=True),
)


def asks_any_ascend(container: Obj) -> bool:
    """Whether the container names any ``huawei.com/Ascend*`` resource (limits or requests)."""
    res = container.get("resources") or {}
    return any(
        str(k).startswith("huawei.com/Ascend")
        for part in ("limits", "requests")
        for k in (res.get(part) or {})
    )


def node_hami_core(node: Obj | None, default: bool) -> bool:
    """The node's ``hami-vnpu-core`` annotation ("true"/"false") or, without it, the config default."""
    value = (((node or {}).get("metadata") or {}).get("annotations") or {}).get(ann.VNPU_CORE_NODE)
    if value is None:
        return default
    return str(value).lower() == "true"


def hami_core_dir(hook_path: str) -> str:
    """The host directory of hami-core mode (limiter, ld.so.preload, per-container files): the plugin's
    ``HOOK_PATH``, or /usr/local/hami-vnpu-core when it is unset or the generic /usr/local. The plugin
    prepares and Allocate mounts this one directory."""
    hook = hook_path.rstrip("/")
    return HAMI_VNPU_CORE_DIR if hook in ("", "/usr/local") else hook


def is_hami_core_pod(annotations: dict[str, str]) -> bool:
    return annotations.get(VNPU_MODE_ANNOTATION) == VNPU_MODE_HAMI_CORE


# --- the family ---------------------------------------------------------------------------------


class AscendFamily(DeviceFamily):
    uses_node_lock = True

    def __init__(self, config: VnpuConfig, *, hami_vnpu_core: bool = False) -> None:
        self.config = config
        self.hami_vnpu_core = hami_vnpu_core
        self.common_word = config.common_word
        self.keys = ann.ascend_keys(config.common_word)
        self.count_resource = config.resource_name
        self.memory_resource = config.resource_memory_name
        self.core_resource = config.resource_core_name
        self.memory_factor = max(config.memory_factor, 1)
        self.memory_unit_mib = self.memory_factor
        # physical ID of each device UUID on this node; the device plugin sets it (Allocate)
        self.phy_ids: Callable[[], dict[str, int]] = dict

    @property
    def is_910(self) -> bool:
        return self.common_word.startswith(ASCEND_910_PREFIX)

    @property
    def pairs_only(self) -> bool:
        """910C super-pod chips: one module (two NPUs) is the smallest unit."""
        return self.common_word == ASCEND_910C

    def _final_memory(self, asked: int, *, soft: bool) -> int:
        """The memory a request ends with: as asked when soft split (hami-core), else rounded up to the
        smallest template that holds it, or the whole card (0: larger than the card)."""
        return asked if soft else self.config.trim_memory(asked)[0]

    # --- requests ----------------------------------------------------------------------------
    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        memnum = 0
        if resource_value(container, self.memory_resource)[1]:
            mem = resource_int(container, self.memory_resource)
            if mem is not None:
                if self.memory_factor > 1:
                    mem *= self.memory_factor
                core_asked = bool(self.core_resource) and resource_value(container, self.core_resource)[1]
                memnum = self._final_memory(mem, soft=core_asked)
        cores = 0
        if self.core_resource:
            c = resource_int(container, self.core_resource)
            if c is not None:
                cores = c
        pct = 100 if memnum == 0 else MEM_PERCENTAGE_UNSET
        return ContainerDeviceRequest(self.common_word, nums, memnum, pct, cores)

    # --- admission ---------------------------------------------------------------------------
    def admission_problem(self, container: Obj) -> str | None:
        """Count 0..1024, core 0..100, memory a whole number of MiB within int32 after the factor."""
        problem = check_quantity(container, self.count_resource, high=MAX_DEVICES_PER_CONTAINER) or (
            check_quantity(container, self.core_resource, high=100)
        )
        if problem:
            return problem
        name = container.get("name", "")
        res = container.get("resources") or {}
        for part in ("limits", "requests"):
            values = res.get(part) or {}
            if self.memory_resource not in values:
                continue
            raw = values[self.memory_resource]
            q = parse_quantity(raw)
            if q is None or not q.is_integer or q.value < 0:
                return (
                    f"{self.memory_resource} must be a whole, non-negative number of MiB, "
                    f"got {raw!r} in container {name}"
                )
            if q.binary or q.value * self.memory_factor > INT32_MAX:
                return (
                    f"{self.memory_resource} {raw} in container {name} is not a MiB count HAMi can read "
                    f"(above int32 after memoryFactor {self.memory_factor}, or written with a byte unit): "
                    "the value is in MiB, use 16384, not 16Gi"
                )
        return None

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        if self.count_resource not in limits:
            if self.config.overwrite_env and not asks_any_ascend(container):
                env = container.get("env") or []
                if not any(e.get("name") == VISIBLE_ENV for e in env if isinstance(e, dict)):
                    append_env(container, VISIBLE_ENV, "")
            return False
        count = resource_int(container, self.count_resource) or 0
        if count <= 0:
            return False
        if self.pairs_only or self.config.super_pod:
            if count == 1:
                # one module (two NPUs) is the smallest unit: round the request up
                count = 2
                limits[self.count_resource] = "2"
                requests = resources.get("requests") or {}
                if self.count_resource in requests:
                    requests[self.count_resource] = "2"
            elif count % 2 and not faults.on("webhook-ascend-910c-odd-allowed"):
                raise AdmissionError(odd_910c_message(count))
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        hami_core = is_hami_core_pod(annotations)
        cores = resource_int(container, self.core_resource) if self.core_resource else None
        if not hami_core and cores:
            raise AdmissionError(f"{self.core_resource} is only supported in hami-core (soft split) mode")
        trimmed = self.config.memory_allocatable
        if self.memory_resource in limits:
            asked = resource_int(container, self.memory_resource) or 0
            soft = hami_core or faults.on("webhook-ascend-no-template-rounding")
            trimmed = self._final_memory(asked, soft=soft)
            if not soft and trimmed <= 0:
                raise AdmissionError(f"{self.memory_resource} {asked} is invalid")
        if count > 1 and trimmed != self.config.memory_allocatable:
            raise AdmissionError(MULTI_DEVICE_ERROR)
        limits[self.memory_resource] = str(trimmed)
        requests = resources.get("requests") or {}
        requests[self.memory_resource] = str(trimmed)
        resources["limits"], resources["requests"] = limits, requests
        container["resources"] = resources
        spec = pod.setdefault("spec", {})
        if self.config.runtime_class_name and not spec.get("runtimeClassName"):
            spec["runtimeClassName"] = self.config.runtime_class_name
        return True

    # --- node side ---------------------------------------------------------------------------
    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(self.keys.register)
        if not value:
            return []
        return [dataclasses.replace(d, device_vendor=self.common_word) for d in decode_register_json(value)]

    def matches_type(self, device: DeviceUsage) -> bool:
        # exact: Ascend910B4 must not take Ascend910B4-1 devices by substring
        return device.type == self.common_word

    # --- fit ---------------------------------------------------------------------------------
    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        hami_core = is_hami_core_pod(ctx.pod_annotations)
        candidates = [d for d in devices if self.matches_type(d)]
        total = len(candidates)
        if hami_core and not node_hami_core(ctx.node, self.hami_vnpu_core):
            return FitResult(False, [], Counter({ev.MODE_NOT_FIT: total}), total)
        if hami_core:
            # a device's core total is 100 in hami-core mode whatever aiCore it registered
            devices = [dataclasses.replace(d, totalcore=100) if self.matches_type(d) else d for d in devices]
        topology = self.is_910 and bool(candidates) and all(NETWORK_ID in d.custom_info for d in candidates)

        def selection(dev: DeviceUsage) -> str | None:
            if not dev.health:
                return ev.CARD_NOT_HEALTH
            if request.type != self.common_word:
                return ev.CARD_TYPE_MISMATCH
            return None

        picks, reasons, total = fit_walk(
            self, devices, request, ctx, selection=selection, collect_all=topology
        )
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        if topology and len(picks) > request.nums:
            if request.nums == 1:
                picks = picks[:1]
            elif self.pairs_only:
                picks = self._best_modules(picks, request.nums)
            else:
                picks = self._best_network(picks, request.nums)
            if len(picks) < request.nums:
                reasons[ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST] = len(picks)
                return FitResult(False, [], reasons, total)
        return FitResult(True, [cd for _, cd in picks[: request.nums]], reasons, total)

    @staticmethod
    def _best_network(
        picks: list[tuple[DeviceUsage, ContainerDevice]], nums: int
    ) -> list[tuple[DeviceUsage, ContainerDevice]]:
        groups: dict[int, list[tuple[DeviceUsage, ContainerDevice]]] = {}
        for p in picks:
            groups.setdefault(int(p[0].custom_info.get(NETWORK_ID, 0)), []).append(p)
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        out = [p for _, members in ordered for p in members]
        return out[:nums]

    @staticmethod
    def _best_modules(
        picks: list[tuple[DeviceUsage, ContainerDevice]], nums: int
    ) -> list[tuple[DeviceUsage, ContainerDevice]]:
        """910C: only modules with both NPUs free, in module order."""
        modules: dict[int, list[tuple[DeviceUsage, ContainerDevice]]] = {}
        for p in picks:
            modules.setdefault(p[0].index // NPUS_PER_910C_MODULE, []).append(p)
        out: list[tuple[DeviceUsage, ContainerDevice]] = []
        for _, members in sorted(modules.items()):
            if len(out) >= nums:
                break
            if len(members) == NPUS_PER_910C_MODULE:
                out.extend(sorted(members, key=lambda p: p[0].index))
        return out

    def score_node(self, node: Obj, devices: Sequence[DeviceUsage], picked: PodDevices, policy: str) -> float:
        """10 x sum over containers of (devices in the largest NetworkID group / devices); 910 only."""
        if not self.is_910:
            return 0.0
        info = {d.id: d.custom_info for d in devices}
        score = 0.0
        for ctr in picked:
            if not ctr:
                continue
            counts: Counter[int] = Counter()
            for cd in ctr:
                custom = info.get(cd.uuid) or {}
                if NETWORK_ID not in custom:
                    return 0.0
                counts[int(custom[NETWORK_ID])] += 1
            score += max(counts.values()) / sum(counts.values())
        return score * NETWORK_WEIGHT

    def no_devices_message(self) -> str | None:
        return (
            f"no node registers {self.common_word} NPUs ({self.keys.register}): {self.count_resource} "
            "cannot be placed; check that the Ascend device plugin runs on the Ascend nodes "
            "(chart value devices.ascend.nodeSelector) and that they have that chip"
        )

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        out = super().pod_annotations(pod_devices)
        if not out:
            return out
        annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
        hami_core = is_hami_core_pod(annotations)
        runtime: list[dict[str, Any]] = []
        for ctr in pod_devices:
            for d in ctr:
                item: dict[str, Any] = {"UUID": d.uuid}
                if hami_core:
                    if d.usedmem:
                        item["memory"] = d.usedmem
                    if d.usedcores:
                        item["core"] = d.usedcores
                else:
                    temp = self.config.trim_memory(d.usedmem)[1]
                    if temp:
                        item["temp"] = temp
                runtime.append(item)
        out[PREDICATE_TIME] = str(int(time.time()))
        out[f"huawei.com/{self.common_word}"] = json.dumps(runtime, separators=(",", ":"))
        return out

    # --- allocate ----------------------------------------------------------------------------
    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        phy = self.phy_ids()
        ids = []
        for d in req.devices:
            if d.uuid not in phy:
                raise ProtocolError(f"unknown uuid: {d.uuid}")
            ids.append(phy[d.uuid])
        if faults.on("plugin-ascend-visible-all"):
            ids = sorted(set(phy.values()))
        out.envs[VISIBLE_ENV] = ",".join(str(i) for i in ids)
        mode = req.pod_annotations.get(VNPU_MODE_ANNOTATION, "")
        hami_core = mode == VNPU_MODE_HAMI_CORE or (mode == "" and self.hami_vnpu_core)
        if not hami_core:
            temp = next((t for t in (self.config.trim_memory(d.usedmem)[1] for d in req.devices) if t), "")
            if temp and not faults.on("plugin-ascend-no-vnpu-spec"):
                out.envs[VNPU_SPECS_ENV] = temp
            return out
        for path in (
            "/usr/local/bin/npu-smi",
            "/etc/ascend_install.info",
            "/usr/local/Ascend/driver/lib64/driver",
            "/usr/local/Ascend/driver/version.info",
        ):
            out.mounts.append(Mount(path, path, True))
        # the directory the plugin installed the limiter in (prepare_hook_dir), not a fixed one
        hook = hami_core_dir(req.hook_path)
        out.mounts.append(Mount("/hami-vnpu-core", hook, True))
        out.mounts.append(Mount("/etc/ld.so.preload", f"{hook}/ld.so.preload", True))
        out.installed_files.append(f"{hook}/ld.so.preload")
        out.mounts.append(Mount("/hami-shared-region", SHARED_REGION_DIR, False))
        if req.devices and not faults.on("plugin-ascend-no-mem-quota"):
            out.envs["NPU_MEM_QUOTA"] = str(req.devices[0].usedmem)
        if req.devices:
            out.envs["NPU_PRIORITY"] = str(req.devices[0].usedcores)
        out.envs["NPU_GLOBAL_SHM_PATH"] = f"/hami-shared-region/{ids[0]}_global_registry" if ids else ""
        shmem = f"{hook}/containers/{req.pod_uid}_{req.container_name}"
        out.host_dirs.append(shmem)
        out.mounts.append(Mount("/hami-vnpu-shmem", shmem, False))
        out.envs["NPU_LOCAL_SHM_PATH"] = "/hami-vnpu-shmem/vnpu_local_shmem"
        return out


def ascend_families(section: Any) -> list[AscendFamily]:
    """One family per configured chip (none without a ``vnpus`` section)."""
    vnpus = parse_vnpus(section)
    return [AscendFamily(c, hami_vnpu_core=vnpus.hami_vnpu_core) for c in vnpus.configs]


def unsupported_ascend_message(container: Obj) -> str | None:
    """Why an Ascend request cannot be served by a stack that has no Ascend family enabled."""
    res = container.get("resources") or {}
    names = sorted(
        {
            str(k)
            for part in ("limits", "requests")
            for k in (res.get(part) or {})
            if str(k).startswith("huawei.com/Ascend")
        }
    )
    if not names:
        return None
    return (
        f"container {container.get('name', '')} asks for {', '.join(names)}, but Ascend support is not "
        "enabled in this HAMi installation (chart value devices.ascend.enabled=false, or the scheduler runs "
        "without --enable-ascend): the pod is left to the default scheduler, which can only place it where "
        "another Ascend device plugin advertises that resource"
    )
