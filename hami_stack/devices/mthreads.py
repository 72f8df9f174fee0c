"""Moore Threads MTT GPUs (common word ``Mthreads``): cards derived from capacity, sGPU slices.

Facts from HAMi's Mthreads backend:

* resources ``mthreads.com/vgpu`` (count), ``mthreads.com/sgpu-memory`` (units of 512 MiB) and
  ``mthreads.com/sgpu-core`` (one GPU has 16 cores and 96 memory units); a request's memory and
  cores are the container's totals divided by the count (per device); no memory -> 100 % of each;
* admission (count from limits, then requests): a count of 0 or less is refused
  (``<count resource> must be greater than 0``; this stack adds the value and container); a count
  above 1 takes whole GPUs: the core and memory limits are rewritten to count x 16 and count x 96
  and the pod gets ``mthreads.com/request-gpu-num: <count>``; one GPU without memory is rewritten
  to 16 cores and 96 units (the whole GPU); one GPU with memory must ask one of 2, 4, 8, 16, 32,
  64, 96 units, else
  ``sGPU memory request value is invalid, valid values are [2, 4, 8, 16, 32, 64, 96]``;
* no register annotation: Moore Threads' own plugin advertises ``sgpu-core`` (16 per GPU) and
  ``sgpu-memory`` capacity; GPU ``i`` is ``<node>-mthreads-<i>`` for every 16 cores, with 100 slots,
  16 cores and ``memory x 512 x 16 / cores`` MiB; always healthy; no node lock upstream (this
  stack's /bind takes the shared one: its plugin serves only allocations a lock vouches for);
* fit: the shared skeleton from the end, UUID selection by ``mthreads.ai/use-gpuuuid`` /
  ``nouse-gpuuuid``, and every container of a pod must get the same GPU(s) as the pod's earlier
  containers (``CardNotFoundCustomFilterRule``); health is not checked;
* /filter writes ``hami.io/mthreads-vgpu-devices-allocated`` (and, for this stack's plugin, the
  to-allocate key upstream registers but never writes) plus
  ``mthreads.com/gpu-index`` (device indexes of the last container with devices),
  ``mthreads.com/predicate-time`` (unix ns) and ``mthreads.com/predicate-node``, which the vendor's
  plugin reads.

Allocate (this stack's plugin, standing in for the vendor's): ``MTHREADS_VISIBLE_DEVICES`` (the
GPU indexes) and ``MTHREADS_SGPU_MEMORY_MIB`` / ``MTHREADS_SGPU_CORES`` per container, which the
emulated MT runtime and the probe read.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import PodDevices, encode_pod_devices
from ..protocol.handshake import HealthResult
from ..protocol.register import DeviceInfo
from ..protocol.resources import MEM_PERCENTAGE_UNSET
from . import capacity_cards
from .base import (
    AdmissionError,
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceUsage,
    FitContext,
    FitResult,
    HealthState,
    Obj,
    check_quantity,
    fit_walk,
    resource_int,
)
from .counted import SOURCE_CAPACITY, CountedFamily, CountedSpec

MEMORY_UNIT_MIB = 512
CORES_PER_GPU = 16
MEMORY_UNITS_PER_GPU = 96
LEGAL_MEMORY = (2, 4, 8, 16, 32, 64, 96)
INVALID_MEMORY = "sGPU memory request value is invalid, valid values are [2, 4, 8, 16, 32, 64, 96]"
REQUEST_GPU_NUM = "mthreads.com/request-gpu-num"
GPU_INDEX = "mthreads.com/gpu-index"
PREDICATE_TIME = "mthreads.com/predicate-time"
PREDICATE_NODE = "mthreads.com/predicate-node"
ID_INFIX = "-mthreads-"
VISIBLE_ENV = "MTHREADS_VISIBLE_DEVICES"
MEMORY_ENV = "MTHREADS_SGPU_MEMORY_MIB"
CORES_ENV = "MTHREADS_SGPU_CORES"
# the fault accepts any memory value: a pod asking 3 units is admitted and placed
ANY_MEMORY_FAULT = "webhook-mthreads-any-memory"

MTHREADS = CountedSpec(
    "Mthreads",
    ann.VENDOR_KEYS_BY_CW["Mthreads"],
    "mthreads.com/vgpu",
    "mthreads.com/sgpu-memory",
    "mthreads.com/sgpu-core",
    memory_unit_mib=MEMORY_UNIT_MIB,
    default_cores=0,
    source=SOURCE_CAPACITY,
    # upstream takes no lock (the vendor's plugin reads mthreads.com/gpu-index); this stack's plugin
    # serves Allocate only for the allocation a node lock vouches for, so /bind takes it
    uses_node_lock=True,
    config_section="mthreads",
)


def gpu_index(device_id: str) -> int:
    return capacity_cards.card_index(device_id, ID_INFIX)


class MthreadsFamily(CountedFamily):
    def __init__(self, section: dict[str, object] | None = None) -> None:
        super().__init__(MTHREADS, section)

    def admission_problem(self, container: Obj) -> str | None:
        return (
            check_quantity(container, self.count_resource, high=2**31 - 1)
            or check_quantity(container, self.memory_resource, mib_per_unit=MEMORY_UNIT_MIB)
            or check_quantity(container, self.core_resource)
        )

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        nums = resource_int(container, self.count_resource)
        if nums is None or nums <= 0:
            return None
        mem = (resource_int(container, self.memory_resource) or 0) * MEMORY_UNIT_MIB
        cores = resource_int(container, self.core_resource) or 0
        return ContainerDeviceRequest(
            self.common_word, nums, mem // nums, MEM_PERCENTAGE_UNSET if mem else 100, cores // nums
        )

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        res = container.get("resources") or {}
        if not any(self.count_resource in (res.get(p) or {}) for p in ("limits", "requests")):
            return False
        count = resource_int(container, self.count_resource) or 0
        if count <= 0:
            # upstream's text, then where (upstream's message names no container)
            where = f"got {count} in container {container.get('name', '')}"
            raise AdmissionError(f"{self.count_resource} must be greater than 0, {where}")
        limits = res.get("limits") or {}
        res["limits"] = limits
        container["resources"] = res
        if count > 1 or self.memory_resource not in limits:
            limits[self.core_resource] = str(count * CORES_PER_GPU)
            limits[self.memory_resource] = str(count * MEMORY_UNITS_PER_GPU)
            if count > 1:
                meta = pod.setdefault("metadata", {})
                meta["annotations"] = {**(meta.get("annotations") or {}), REQUEST_GPU_NUM: str(count)}
            return True
        mem = resource_int(container, self.memory_resource)
        if mem not in LEGAL_MEMORY and not faults.on(ANY_MEMORY_FAULT):
            raise AdmissionError(f"{INVALID_MEMORY}: got {mem} in container {container.get('name', '')}")
        return True

    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        return capacity_cards.split_cards(node, self, ID_INFIX, CORES_PER_GPU, MEMORY_UNIT_MIB)

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        # always healthy and always rebuilt, as upstream; the state only avoids needless rebuilds here
        return capacity_cards.always_healthy(node, self.core_resource, previous)

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        earlier = {d.uuid for ctr in ctx.previous for d in ctr if d.type == self.common_word}

        def selection(dev: DeviceUsage) -> str | None:
            # every container shares the pod's GPU(s) (upstream's custom filter rule)
            if earlier and dev.id not in earlier:
                return ev.CARD_NOT_FOUND_CUSTOM_FILTER_RULE
            return None

        picks, reasons, total = fit_walk(self, devices, request, ctx, selection=selection)
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        return FitResult(True, [cd for _, cd in picks], reasons, total)

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        if not pod_devices or not any(pod_devices):
            return {}
        value = encode_pod_devices(pod_devices)
        # upstream writes only the allocated key; this stack's plugin pops the to-allocate one
        out = {self.keys.allocated: value, self.keys.to_allocate: value}
        last = [ctr for ctr in pod_devices if ctr][-1]  # upstream keeps overwriting: the last one stays
        out[GPU_INDEX] = ",".join(str(gpu_index(d.uuid)) for d in last)
        out[PREDICATE_TIME] = str(time.time_ns())
        # the node the scheduler chose (upstream copies hami.io/vgpu-node); its name prefixes the IDs
        out[PREDICATE_NODE] = last[0].uuid.rsplit(ID_INFIX, 1)[0]
        return out

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(str(gpu_index(d.uuid)) for d in req.devices)
        out.envs[MEMORY_ENV] = ",".join(str(d.usedmem) for d in req.devices)
        out.envs[CORES_ENV] = ",".join(str(d.usedcores) for d in req.devices)
        return out
