"""NVIDIA (common word ``NVIDIA``): requests, registration, fit, admission and Allocate.

Requests (section 2.1): ``nvidia.com/gpu`` devices; ``gpumem`` MiB per device (x ``memoryFactor``
when > 1) or ``gpumem-percentage`` of each device (used only without ``gpumem``); ``gpucores``
percent per device (default ``defaultCores``); no memory at all -> ``defaultMemory`` if set, else
100 %. A ``gpumem`` that is not a non-negative int32 after the factor makes the container ask for
nothing (HAMi logs and ignores it).

Fit (section 5.2), per device from the end of the policy-sorted list: health, cordon
(``hami.io/device-cordon``), type selection (``nvidia.com/use-gputype``/``nouse-gputype``, substring,
case-insensitive) and ``nvidia.com/vgpu-mode``, NUMA binding (``nvidia.com/numa-bind``), then the
shared walk (UUID selection, slots, mutex, memory, quota, cores, exclusive use). With the
``topology-aware`` GPU policy all fitting devices are collected and chosen by the pair scores of
``hami.io/node-nvidia-score``.

MIG is off in this implementation: a device registered with mode ``mig`` never fits
(``CardMigTopologyInfeasible``); the plugin should register GPUs in ``hami-core`` mode.

Device plugin helpers: :func:`register_device` builds the register entry from what NVML reports
(count = ``deviceSplitCount``, memory x ``deviceMemoryScaling``, cores = ``deviceCoreScaling`` x 100,
type prefixed ``NVIDIA-``), :func:`virtual_device_ids` the kubelet IDs ``<uuid>-<i>``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence

from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol import hamicore as hc
from ..protocol.errors import ProtocolError
from ..protocol.handshake import HealthResult, check_nvidia
from ..protocol.policy import numa_bind_requested
from ..protocol.quantity import INT32_MAX, quantity_int
from ..protocol.register import MODE_HAMI_CORE, MODE_MIG, DeviceInfo, decode_register, decode_topology_scores
from ..protocol.resources import MEM_PERCENTAGE_UNSET
from .base import (
    MAX_DEVICES_PER_CONTAINER,
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceSpec,
    DeviceUsage,
    FitContext,
    FitResult,
    HealthState,
    Mount,
    Obj,
    append_env,
    check_quantity,
    fit_walk,
    resource_int,
    resource_value,
    split_list,
)
from .config import NvidiaConfig

_INT32_MAX = 2**31 - 1
DEVICE_LIST_ENVVAR = "envvar"
DEVICE_LIST_VOLUME_MOUNTS = "volume-mounts"
CONTAINER_DEVICES_DIR = "/var/run/nvidia-container-devices"


def nvidia_type_name(nvml_name: str) -> str:
    """The register ``type``: the NVML name, prefixed ``NVIDIA-`` unless it already starts with NVIDIA."""
    return nvml_name if nvml_name.startswith("NVIDIA") else f"NVIDIA-{nvml_name}"


def virtual_device_ids(uuid: str, split_count: int) -> list[str]:
    """The kubelet-facing device IDs of one GPU: ``<uuid>-0`` .. ``<uuid>-<split-1>``."""
    return [f"{uuid}-{i}" for i in range(split_count)]


def physical_uuid(virtual_id: str) -> str:
    """``GPU-xxxx-3`` -> ``GPU-xxxx`` (IDs without a numeric suffix are returned unchanged)."""
    base, sep, tail = virtual_id.rpartition("-")
    return base if sep and tail.isdigit() else virtual_id


def register_device(
    cfg: NvidiaConfig,
    *,
    uuid: str,
    index: int,
    nvml_name: str,
    memory_mib: int | None,
    numa: int = 0,
    healthy: bool = True,
    mode: str = MODE_HAMI_CORE,
) -> DeviceInfo | None:
    """The register entry for one GPU; None when its memory is unknown and none is pre-configured."""
    if memory_mib is None or memory_mib <= 0:
        if cfg.pre_configured_device_memory <= 0:
            return None
        memory_mib = cfg.pre_configured_device_memory
    return DeviceInfo(
        id=uuid,
        index=index,
        count=cfg.device_split_count,
        devmem=int(memory_mib * cfg.device_memory_scaling),
        devcore=int(cfg.device_core_scaling * 100),
        type=nvidia_type_name(nvml_name),
        numa=max(numa, 0),
        health=healthy,
        mode=mode,
    )


class NvidiaFamily(DeviceFamily):
    common_word = "NVIDIA"
    keys = ann.NVIDIA_KEYS
    uses_node_lock = True

    def __init__(
        self,
        config: NvidiaConfig | None = None,
        *,
        hook_path: str = "/usr/local",
        device_list_strategy: str = DEVICE_LIST_ENVVAR,
    ) -> None:
        self.config = config or NvidiaConfig()
        self.count_resource = self.config.resource_count_name
        self.memory_resource = self.config.resource_memory_name
        self.core_resource = self.config.resource_core_name
        self.percentage_resource = self.config.resource_memory_percentage_name
        self.priority_resource = self.config.resource_priority_name
        self.memory_factor = self.config.memory_factor
        self.hook_path = hook_path
        self.device_list_strategy = device_list_strategy

    # --- requests ----------------------------------------------------------------------------
    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        memreq = 0
        if resource_value(container, self.memory_resource)[1]:
            mem = resource_int(container, self.memory_resource)
            if mem is None:
                return None
            if self.config.memory_factor > 1:
                mem *= self.config.memory_factor
            if mem < 0 or mem > _INT32_MAX:
                return None
            memreq = mem
        pct = MEM_PERCENTAGE_UNSET
        p = resource_int(container, self.percentage_resource)
        if p is not None and p > 0:
            pct = min(p, 100)
        if memreq == 0 and pct == MEM_PERCENTAGE_UNSET:
            if self.config.default_memory != 0:
                memreq = self.config.default_memory
            else:
                pct = 100
        cores = self.config.default_cores
        c = resource_int(container, self.core_resource)
        if c is not None:
            cores = c
        return ContainerDeviceRequest(self.common_word, nums, memreq, pct, cores)

    # --- node side ---------------------------------------------------------------------------
    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(self.keys.register)
        if not value:
            return []
        return decode_register(value)

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        """The generic handshake rule, overridden by ``allocatable[nvidia.com/gpu]`` changes (section 3.4)."""
        generic, state = super().check_health(node, now, previous)
        if previous is None:
            return generic, state
        changed = previous.register_value != state.register_value
        return check_nvidia(previous.allocatable, state.allocatable or 0, changed, generic), state

    def topology_scores(self, node: Obj | None) -> dict[str, dict[str, int]]:
        value = (((node or {}).get("metadata") or {}).get("annotations") or {}).get(ann.NVIDIA_TOPOLOGY_SCORE)
        if not value:
            return {}
        try:
            return decode_topology_scores(value)
        except ProtocolError:
            return {}

    # --- fit ---------------------------------------------------------------------------------
    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        pod_ann = ctx.pod_annotations
        cordoned = set(split_list(ctx.node_annotations.get(ann.DEVICE_CORDON)))
        use_types = [t.lower() for t in split_list(pod_ann.get(ann.NVIDIA_USE_GPUTYPE))]
        nouse_types = [t.lower() for t in split_list(pod_ann.get(ann.NVIDIA_NOUSE_GPUTYPE))]
        mode_filter = pod_ann.get(ann.NVIDIA_VGPU_MODE)
        numa_bind = numa_bind_requested(pod_ann.get(ann.NVIDIA_NUMA_BIND))

        def selection(dev: DeviceUsage) -> str | None:
            if not dev.health:
                return ev.CARD_NOT_HEALTH
            if dev.id in cordoned:
                return ev.CARD_CORDONED
            t = dev.type.lower()
            if use_types and not any(u in t for u in use_types):
                return ev.CARD_TYPE_MISMATCH
            if any(u in t for u in nouse_types):
                return ev.CARD_TYPE_MISMATCH
            if mode_filter and dev.mode not in mode_filter:
                return ev.CARD_TYPE_MISMATCH
            if request.type != self.common_word:  # a request of another family never fits here
                return ev.CARD_TYPE_MISMATCH
            if dev.mode == MODE_MIG:
                return ev.CARD_MIG_TOPOLOGY_INFEASIBLE
            return None

        topology = ctx.policy.topology_aware
        picks, reasons, total = fit_walk(
            self, devices, request, ctx, selection=selection, numa_bind=numa_bind, collect_all=topology
        )
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        if topology and len(picks) > request.nums:
            picks = self._topology_choice(picks, request.nums, self.topology_scores(ctx.node))
        return FitResult(True, [cd for _, cd in picks[: request.nums]], reasons, total)

    @staticmethod
    def _topology_choice(picks: list, nums: int, scores: dict[str, dict[str, int]]) -> list:
        def pair(a: str, b: str) -> int:
            return scores.get(a, {}).get(b, 0)

        ids = [cd.uuid for _, cd in picks]
        if nums == 1:
            # keep well-linked GPUs free: take the one least connected to the others
            best = min(range(len(picks)), key=lambda i: sum(pair(ids[i], o) for o in ids if o != ids[i]))
            return [picks[best]]
        best_combo = max(
            itertools.combinations(range(len(picks)), nums),
            key=lambda c: sum(pair(ids[a], ids[b]) for a, b in itertools.combinations(c, 2)),
        )
        return [picks[i] for i in best_combo]

    # --- admission ---------------------------------------------------------------------------
    def admission_problem(self, container: Obj) -> str | None:
        """Values HAMi would misread, refused with the resource and container named.

        ``gpu`` 0..1024; ``gpumem`` MiB (x ``memoryFactor``) with no byte unit and within int32
        after the factor; ``gpucores`` 0..100 (HAMi admits 101 and schedules it as 100);
        ``gpumem-percentage`` 1..100 (HAMi takes 0 as "not asked"); ``priority`` 0..int32. A count
        of 0 asks no GPU, so memory or cores beside it are refused rather than silently dropped.
        """
        name = container.get("name", "")
        factor = max(self.config.memory_factor, 1)
        problem = (
            check_quantity(container, self.count_resource, high=MAX_DEVICES_PER_CONTAINER)
            or check_quantity(container, self.memory_resource, high=INT32_MAX // factor, mib_per_unit=factor)
            or check_quantity(container, self.core_resource, high=100)
            or check_quantity(container, self.priority_resource)
        )
        if problem:
            return problem
        res = container.get("resources") or {}
        for part in ("limits", "requests"):
            values = res.get(part) or {}
            if self.percentage_resource in values:
                raw = values[self.percentage_resource]
                pct = quantity_int(raw)
                if pct is None or not 1 <= pct <= 100:
                    return (
                        f"invalid {self.percentage_resource} value {raw} in container {name}: "
                        "must be an integer between 1 and 100"
                    )
        if resource_int(container, self.count_resource) == 0:
            for other in (self.memory_resource, self.core_resource, self.percentage_resource):
                if resource_int(container, other):
                    return (
                        f"{self.count_resource} is 0 in container {name} but {other} is set: a container "
                        f"that asks no GPU cannot ask GPU memory or cores; remove {other} or ask "
                        f"{self.count_resource} of at least 1"
                    )
        return None

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        if self.priority_resource in limits:
            append_env(container, hc.TASK_PRIORITY_ENV, str(limits[self.priority_resource]))
        if self.config.gpu_core_policy and self.config.gpu_core_policy != "default":
            append_env(container, "GPU_CORE_UTILIZATION_POLICY", self.config.gpu_core_policy)
        _, has_count = resource_value(container, self.count_resource)
        claimed = False
        if self.count_resource in limits:
            # ``nvidia.com/gpu: 0`` asks no GPU: the pod is left to its own scheduler (HAMi claims it
            # and then never places it, since the scheduler sees no request)
            claimed = resource_int(container, self.count_resource) != 0
        elif (
            not has_count
            and any(r in limits for r in (self.core_resource, self.memory_resource, self.percentage_resource))
            and self.config.default_gpu_num > 0
        ):
            limits[self.count_resource] = str(self.config.default_gpu_num)
            resources["limits"], container["resources"] = limits, resources
            has_count = claimed = True
        asks_gpu = has_count and resource_int(container, self.count_resource) != 0
        if asks_gpu and self._exclusive_by_default(container):
            # HAMi since v2.7: a GPU asked with no cores and no partial memory is a whole card
            limits[self.core_resource] = "100"
            resources["limits"], container["resources"] = limits, resources
            claimed = True
        spec = pod.setdefault("spec", {})
        if claimed and self.config.runtime_class_name and not spec.get("runtimeClassName"):
            spec["runtimeClassName"] = self.config.runtime_class_name
        if not claimed and self.config.overwrite_env:
            append_env(container, "NVIDIA_VISIBLE_DEVICES", "none")
        return claimed

    def _exclusive_by_default(self, container: Obj) -> bool:
        """No cores asked (limits or requests), and memory asked as 100 % or not at all."""
        if not self.core_resource or resource_value(container, self.core_resource)[1]:
            return False
        if resource_value(container, self.percentage_resource)[1]:
            return resource_int(container, self.percentage_resource) == 100
        return not self.memory_resource or not resource_value(container, self.memory_resource)[1]

    # --- allocate ----------------------------------------------------------------------------
    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        """Section 6.1 (hami-core mode). ``req.hook_path`` defaults to HOOK_PATH ``/usr/local``."""
        hook = req.hook_path.rstrip("/") or ""
        vgpu = f"{hook}/vgpu"
        out = ContainerAllocation()
        uuids = [d.uuid for d in req.devices]
        if self.device_list_strategy == DEVICE_LIST_VOLUME_MOUNTS:
            out.envs["NVIDIA_VISIBLE_DEVICES"] = CONTAINER_DEVICES_DIR
            out.mounts.extend(Mount(f"{CONTAINER_DEVICES_DIR}/{u}", "/dev/null", True) for u in uuids)
        else:
            out.envs["NVIDIA_VISIBLE_DEVICES"] = ",".join(uuids)
        for i, d in enumerate(req.devices):
            out.envs[hc.memory_limit_env(i)] = f"{d.usedmem}m"
        out.envs[hc.SM_LIMIT_ENV] = str(req.devices[0].usedcores if req.devices else 0)
        out.envs[hc.SHARED_CACHE_ENV] = f"{vgpu}/{req.cache_id}.cache"
        if self.config.device_memory_scaling > 1:
            out.envs[hc.OVERSUBSCRIBE_ENV] = "true"
        if self.config.lib_cuda_log_level:
            out.envs[hc.LOG_LEVEL_ENV] = str(self.config.lib_cuda_log_level)
        if self.config.disable_core_limit:
            out.envs[hc.CORE_UTILIZATION_POLICY_ENV] = "disable"
        container_dir = f"{vgpu}/containers/{hc.container_dir_name(req.pod_uid, req.container_name)}"
        out.host_dirs.append(container_dir)
        out.mounts.append(Mount(f"{vgpu}/libvgpu.so", f"{vgpu}/{req.libvgpu_name}", True))
        out.installed_files.append(f"{vgpu}/{req.libvgpu_name}")
        out.mounts.append(Mount(vgpu, container_dir, False))
        out.mounts.append(Mount("/tmp/vgpulock", "/tmp/vgpulock", False))
        if req.container_env.get(hc.DISABLE_CONTROL_ENV, "").lower() != "true":
            out.mounts.append(Mount("/etc/ld.so.preload", f"{vgpu}/ld.so.preload", True))
            out.installed_files.append(f"{vgpu}/ld.so.preload")
        if req.license_present:
            out.mounts.append(Mount("/tmp/license", f"{vgpu}/license", True))
            out.mounts.append(Mount("/usr/bin/vgpuvalidator", f"{vgpu}/vgpuvalidator", True))
        return out

    def device_specs(self, minors: Sequence[int]) -> list[DeviceSpec]:
        """Device nodes for ``PASS_DEVICE_SPECS`` (control, UVM and ``/dev/nvidia<n>`` nodes)."""
        paths = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] + [
            f"/dev/nvidia{m}" for m in minors
        ]
        return [DeviceSpec(p, p) for p in paths]
