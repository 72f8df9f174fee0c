"""AWS Neuron devices (common word ``AWSNeuron``), enabled by the device config's ``awsneuron`` section.

Facts from HAMi's AWS Neuron backend:

* resources ``resourceCountName`` (default ``aws.amazon.com/neuron``, whole devices) and
  ``resourceCoreName`` (``aws.amazon.com/neuroncore``, NeuronCores); a container claims the family
  when its limits carry either;
* no register annotation: the Neuron plugin advertises both counts; a node's devices are
  ``<node>-AWSNeuron-<i>`` with ``cores = neuroncore capacity / neuron capacity`` cores each: the
  device's slots are its cores and its core total is the bit mask of them (2 cores: 3, 4 cores: 15);
  no memory; always healthy; no node lock;
* request: ``neuron: n`` asks n whole devices (each all its cores); ``neuroncore: c`` asks c cores:
  within one device when c is at most a device's cores, else c / cores whole devices (a count that
  is neither is not served);
* fit, one device: walk from the end; UUID selection (``aws.amazon.com/use-neuron-uuid`` /
  ``nouse-neuron-uuid``), free slots, free cores (``CardInsufficientCore``); the pick is the mask of
  the lowest free cores. Several devices: contiguous free devices (Inferentia nodes, instance type
  containing ``inf``: any start; others: 1, 4, 8 or 16 devices aligned to their count), else
  ``NumaNotFit``;
* /filter writes ``hami.io/aws-neuron-devices-allocated`` and, for the Neuron plugin,
  ``AWS_NEURON_IDS`` (device indexes, or core indexes ``cores x device + core`` for core requests,
  then ``NEURON_RESOURCE_TYPE`` = the core resource), ``NEURON_ALLOC_TIME`` (unix ns),
  ``NEURON_ALLOCATED: "false"`` and ``aws.amazon.com/predicate-node``.

Where this differs: a core pick is the mask of the cores it newly takes (upstream's 4-core path
reports the device's cumulative mask, which its usage then adds twice); this stack's /bind takes the
shared node lock and /filter also writes a to-allocate key for its plugin, whose Allocate answers
``AWS_NEURON_VISIBLE_DEVICES`` (device indexes, as Neuron's device plugin) and
``NEURON_RT_VISIBLE_CORES`` (the core indexes, the variable the Neuron runtime reads).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.annotations import VendorKeys
from ..protocol.assignment import ContainerDevice, PodDevices, encode_pod_devices
from ..protocol.handshake import HealthResult
from ..protocol.register import DeviceInfo
from . import capacity_cards
from .base import (
    AllocateInput,
    ContainerAllocation,
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceUsage,
    FitContext,
    FitResult,
    HealthState,
    Obj,
    containers,
    node_quantity,
    resource_int,
    split_list,
)

CW = "AWSNeuron"
ID_INFIX = "-AWSNeuron-"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
ASSIGNED_IDS = "AWS_NEURON_IDS"
ALLOC_TIME = "NEURON_ALLOC_TIME"
RESOURCE_TYPE = "NEURON_RESOURCE_TYPE"
ALLOCATED_FLAG = "NEURON_ALLOCATED"
PREDICATE_NODE = "aws.amazon.com/predicate-node"
ALIGNED_COUNTS = (1, 4, 8, 16)
# the fault forgets the core resource at admission: a pod asking NeuronCores is not routed to HAMi
CORES_NOT_CLAIMED_FAULT = "webhook-neuron-cores-not-claimed"

KEYS = VendorKeys(
    CW,
    to_allocate="hami.io/aws-neuron-devices-to-allocate",  # this stack's plugin pops it
    allocated=ann.VENDOR_KEYS_BY_CW[CW].allocated,
    use_uuid=ann.VENDOR_KEYS_BY_CW[CW].use_uuid,
    nouse_uuid=ann.VENDOR_KEYS_BY_CW[CW].nouse_uuid,
)


def bits(mask: int) -> int:
    return bin(max(mask, 0)).count("1")


def low_free_mask(used: int, want: int, cores: int) -> int:
    """The mask of the ``want`` lowest cores not in ``used`` (of ``cores``)."""
    out = 0
    for i in range(cores):
        if want == 0:
            break
        if not used & (1 << i):
            out |= 1 << i
            want -= 1
    return out


def contiguous(devices: Sequence[DeviceUsage], need: int, inferentia: bool) -> list[DeviceUsage]:
    """``need`` free neighbouring devices by index (aligned to ``need`` off Inferentia), or []."""
    board = sorted(devices, key=lambda d: d.index)
    if not inferentia and need not in ALIGNED_COUNTS:
        return []
    step = 1 if inferentia else need
    for start in range(0, len(board) - need + 1, step):
        run = board[start : start + need]
        if all(d.used == 0 for d in run):
            return run
    return []


class AwsNeuronFamily(DeviceFamily):
    common_word = CW
    keys = KEYS

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        section = section or {}
        self.count_resource = str(section.get("resourceCountName") or "aws.amazon.com/neuron")
        self.core_resource = str(section.get("resourceCoreName") or "aws.amazon.com/neuroncore")
        self.cores_per_device = 2  # learnt from the first node's capacity, as upstream
        self._node_type: dict[str, str] = {}  # device ID prefix (node) -> instance type

    # --- requests ----------------------------------------------------------------------------
    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        per = self.cores_per_device
        n = resource_int(container, self.count_resource)
        if n is not None:
            return ContainerDeviceRequest(CW, n, 0, 0, per) if n > 0 else None
        c = resource_int(container, self.core_resource)
        if c is None or c <= 0:
            return None
        if c <= per:
            return ContainerDeviceRequest(CW, 1, 0, 0, c)
        if c % per == 0:
            return ContainerDeviceRequest(CW, c // per, 0, 0, per)
        return None  # neither part of one device nor whole devices

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        limits = (container.get("resources") or {}).get("limits") or {}
        if self.count_resource in limits:
            return True
        return self.core_resource in limits and not faults.on(CORES_NOT_CLAIMED_FAULT)

    # --- node side ---------------------------------------------------------------------------
    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        count = node_quantity(node, "capacity", self.count_resource)
        if count <= 0:
            return []
        cores = node_quantity(node, "capacity", self.core_resource)
        if cores >= count:
            self.cores_per_device = cores // count
        per = self.cores_per_device
        meta = node.get("metadata") or {}
        name = meta.get("name", "")
        self._node_type[name] = str((meta.get("labels") or {}).get(INSTANCE_TYPE_LABEL, ""))
        return [
            DeviceInfo(
                id=f"{name}{ID_INFIX}{i}",
                index=i,
                count=per,
                devmem=0,
                devcore=(1 << per) - 1,
                type=CW,
                health=True,
            )
            for i in range(count)
        ]

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        state = HealthState(node_quantity(node, "capacity", self.count_resource), None)
        return HealthResult(True, previous is None or previous != state), state

    # --- scheduling --------------------------------------------------------------------------
    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        candidates = [d for d in devices if self.matches_type(d)]
        if request.nums > 1:
            node = candidates[0].id.rsplit(ID_INFIX, 1)[0] if candidates else ""
            inferentia = "inf" in self._node_type.get(node, "").lower()
            run = contiguous(candidates, request.nums, inferentia)
            if not run:
                return FitResult(False, [], Counter({ev.NUMA_NOT_FIT: 1}), 1)
            return FitResult(True, [ContainerDevice(d.id, CW, 0, d.totalcore) for d in run], Counter(), 1)
        use = split_list(ctx.pod_annotations.get(self.keys.use_uuid))
        nouse = split_list(ctx.pod_annotations.get(self.keys.nouse_uuid))
        reasons: Counter[str] = Counter()
        for dev in reversed(candidates):
            if (use and dev.id not in use) or dev.id in nouse:
                reasons[ev.CARD_UUID_MISMATCH] += 1
                continue
            if dev.count <= dev.used:
                reasons[ev.CARD_TIME_SLICING_EXHAUSTED] += 1
                continue
            if bits(dev.totalcore) - bits(dev.usedcores) < request.coresreq:
                reasons[ev.CARD_INSUFFICIENT_CORE] += 1
                continue
            mask = low_free_mask(dev.usedcores, request.coresreq, bits(dev.totalcore))
            return FitResult(True, [ContainerDevice(dev.id, CW, 0, mask)], reasons, len(candidates))
        return FitResult(False, [], reasons, len(candidates))

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        if not any(pod_devices):
            return {}
        value = encode_pod_devices(pod_devices)
        out = {self.keys.allocated: value, self.keys.to_allocate: value}
        ctrs = containers(pod or {})
        ids: list[str] = []
        per = self.cores_per_device
        for pos, picks in enumerate(pod_devices):
            whole = pos < len(ctrs) and resource_int(ctrs[pos], self.count_resource) is not None
            for d in picks:
                index = device_index(d.uuid)
                if whole:
                    ids.append(str(index))
                    continue
                ids += [str(per * index + b) for b in range(per) if d.usedcores & (1 << b)]
                out[RESOURCE_TYPE] = self.core_resource
        if ids:
            out[ASSIGNED_IDS] = ",".join(ids)
            out[ALLOC_TIME] = str(time.time_ns())
            out[ALLOCATED_FLAG] = "false"
            first = next(d for picks in pod_devices for d in picks)
            out[PREDICATE_NODE] = first.uuid.rsplit(ID_INFIX, 1)[0]
        return out

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        per = self.cores_per_device
        out.envs["AWS_NEURON_VISIBLE_DEVICES"] = ",".join(str(device_index(d.uuid)) for d in req.devices)
        out.envs["NEURON_RT_VISIBLE_CORES"] = ",".join(
            str(per * device_index(d.uuid) + b)
            for d in req.devices
            for b in range(per)
            if d.usedcores & (1 << b)
        )
        return out


def device_index(device_id: str) -> int:
    """The index in ``<node>-AWSNeuron-<index>``; any other ID is refused (reading it as device 0 would
    hand the container a device nobody assigned it)."""
    return capacity_cards.card_index(device_id, ID_INFIX)
