"""Enflame DRS, shared GCU slices (common word ``Enflame``), enabled by the ``enflame`` section.

Facts from HAMi's Enflame DRS backend (restated):

* resources: the slice count ``resourceNameDRSGCU`` (default ``enflame.com/drs-gcu``; when the
  section leaves it empty, ``resourceNameVGCU`` is the count instead, the legacy ``enflame.com/vgcu``),
  or a request "by spec" with ``resourceNameGCUMemory`` (``enflame.com/gcu-memory``) and/or
  ``resourceNameGCUCore`` (``enflame.com/gcu-core``). ``resourceNameVGCUPercentage`` is read and
  never used, as upstream;
* admission (limits first, then requests): a count of 0 or less is refused with ``<count> must be
  greater than 0``; memory of 0 or less with ``<memory> must be greater than 0``; cores outside 1..100
  with ``<core> must be in range (0,100]``; a value present in only one of limits and requests is
  copied to the other;
* a container asks one slice instance on one card: directly by a slice count, or by spec (the
  smallest profile whose memory and cores cover what is asked; a memory value above twice the largest
  profile's GB is MiB and rounded up to GB);
* devices from Enflame's node annotation ``enflame.com/gcu-drs-capacity``:
  ``{"devices": [{"index", "minor", "capacity"}], "profiles": {"<slices>g.<GB>gb": "<id>"}}``; card
  ``i`` is ``<node>-enflame-drs-<i>`` with ``capacity`` slots (its slices), memory = the largest
  profile's GB x 1024 MiB and 100 cores; a profile of ``s`` slices takes ``ceil(s x 100 / largest
  slice count)`` cores and its GB x 1024 MiB;
* fit: the profile is chosen first (none matches: ``ModeNotFit`` over one device); then from the end:
  UUID selection (``enflame.com/use-gpuuuid`` / ``nouse-gpuuuid``), every slice of the profile free
  (``CardTimeSlicingExhausted``), mutex, memory, cores; no node lock, no score;
* usage: an assignment takes its profile's slices (not one slot);
* /filter writes ``hami.io/enflame-vgpu-devices-allocated``, ``enflame.com/gcu-assigned: "false"``,
  ``enflame.com/gcu-assigned-time`` (ns), ``enflame.com/gcu-assigned-index`` and ``-id`` (the first
  container's card index), ``enflame.com/gcu-assigned-minor``, ``enflame.com/gcu-request-size``
  (slices) and ``assigned-containers`` (per container name ``{allocated: false, request: <slices>,
  profileID, profileName}``).

Upstream quirk kept: because a profile's cores are rounded up, six one-slice instances of a
six-slice card need 102 cores, so the sixth is refused (``CardInsufficientCore``).

This stack's departures: the assignment travels as for every family (``uuid,Enflame,<MiB>,<cores>``);
the slices an assignment takes are recovered from its memory through the card's profile menu
(:data:`~hami_stack.devices.base.SLOTS_BY_MEMORY`), so the encoding is unchanged. /filter also
writes ``hami.io/enflame-vgpu-devices-to-allocate`` and /bind takes the node lock: this stack's plugin
serves only allocations a lock vouches for. The node is healthy while its annotation lists a card.

Allocate (this stack's plugin, standing in for Enflame's): ``ENFLAME_VISIBLE_DEVICES`` (the card's
minor), ``ENFLAME_CONTAINER_SUB_CARD`` (``true`` for part of a card), ``ENFLAME_CONTAINER_USABLE_GLOBAL_MEM``
(the profile's GB) and ``ENFLAME_CONTAINER_USABLE_PROCESSOR`` (the card's processors x slices / capacity).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.annotations import VendorKeys
from ..protocol.assignment import ContainerDevice, PodDevices, encode_pod_devices
from ..protocol.errors import ProtocolError
from ..protocol.handshake import HealthResult
from ..protocol.quantity import parse_quantity
from ..protocol.register import DeviceInfo
from . import capacity_cards
from .base import (
    SLOTS_BY_MEMORY,
    AdmissionError,
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
    resource_value,
    split_list,
)

DRS_CW = "Enflame"
CAPACITY_KEY = ann.VENDOR_KEYS_BY_CW[DRS_CW].register  # enflame.com/gcu-drs-capacity
KEYS = VendorKeys(
    DRS_CW,
    register=CAPACITY_KEY,
    to_allocate="hami.io/enflame-vgpu-devices-to-allocate",  # this stack's plugin protocol
    allocated=ann.VENDOR_KEYS_BY_CW[DRS_CW].allocated,
    use_uuid=ann.VENDOR_KEYS_BY_CW[DRS_CW].use_uuid,
    nouse_uuid=ann.VENDOR_KEYS_BY_CW[DRS_CW].nouse_uuid,
)
ID_INFIX = "-enflame-drs-"
ASSIGNED = "enflame.com/gcu-assigned"
ASSIGNED_TIME = "enflame.com/gcu-assigned-time"
ASSIGNED_INDEX = "enflame.com/gcu-assigned-index"
ASSIGNED_ID = "enflame.com/gcu-assigned-id"
ASSIGNED_MINOR = "enflame.com/gcu-assigned-minor"
REQUEST_SIZE = "enflame.com/gcu-request-size"
ASSIGNED_CONTAINERS = "assigned-containers"  # literal key, as Enflame's plugin reads it

VISIBLE_ENV = "ENFLAME_VISIBLE_DEVICES"
SUB_CARD_ENV = "ENFLAME_CONTAINER_SUB_CARD"
GLOBAL_MEM_ENV = "ENFLAME_CONTAINER_USABLE_GLOBAL_MEM"
PROCESSOR_ENV = "ENFLAME_CONTAINER_USABLE_PROCESSOR"

# how a request asks (the request's mem_percentage field carries it, as upstream's does)
MODE_DIRECT = 0  # memreq = slice count
MODE_BY_SPEC = -1  # memreq = memory (GB or MiB), coresreq = percent

# the fault forgets the slices already handed out: a card's slices are given out again
OVERCOMMIT_FAULT = "scheduler-enflame-drs-overcommit"


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str  # "<slices>g.<GB>gb"
    id: str
    slices: int
    memory_gb: int
    cores: int  # percent of the card

    @property
    def memory_mib(self) -> int:
        return self.memory_gb * 1024


def parse_profile(name: str) -> tuple[int, int]:
    """(slices, GB) of a profile name such as ``3g.20gb``; (0, 0) when it is not one."""
    parts = name.strip().lower().split(".")
    if len(parts) < 2:
        return 0, 0
    size, mem = parts[0].strip().removesuffix("g"), parts[1].strip().removesuffix("gb")
    if not size.isdigit():
        return 0, 0
    return int(size), int(mem) if mem.isdigit() else 0


def profile_menu(profiles: dict[str, str]) -> list[Profile]:
    """The usable profiles, smallest first (by slices, then memory)."""
    largest = max((parse_profile(n)[0] for n in profiles), default=0)
    out = []
    for name, pid in profiles.items():
        slices, gb = parse_profile(name)
        if slices > 0 and gb > 0 and largest > 0:
            out.append(Profile(name, str(pid), slices, gb, math.ceil(slices * 100 / largest)))
    return sorted(out, key=lambda p: (p.slices, p.memory_gb))


def decode_capacity(node_name: str, value: str) -> list[DeviceInfo]:
    """The cards of Enflame's ``enflame.com/gcu-drs-capacity`` value; ProtocolError names the problem."""
    try:
        raw = json.loads(value)
    except ValueError as e:
        raise ProtocolError(f"{CAPACITY_KEY} on node {node_name}: invalid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ProtocolError(f"{CAPACITY_KEY} on node {node_name}: expected an object")
    profiles = raw.get("profiles")
    devices = raw.get("devices")
    if not isinstance(profiles, dict) or not isinstance(devices, list):
        raise ProtocolError(
            f"{CAPACITY_KEY} on node {node_name}: needs a 'devices' list and a 'profiles' object"
        )
    profiles = {str(k): str(v) for k, v in profiles.items()}
    menu = profile_menu(profiles)
    if not menu:
        raise ProtocolError(f"{CAPACITY_KEY} on node {node_name}: no valid profile in {sorted(profiles)}")
    max_slices = max(p.slices for p in menu)
    card_mib = max(p.memory_gb for p in menu) * 1024
    out = []
    for i, d in enumerate(devices):
        if not isinstance(d, dict):
            raise ProtocolError(f"{CAPACITY_KEY} on node {node_name}: device {i} is not an object")
        index = int(d["index"]) if str(d.get("index", "")).strip().isdigit() else i
        cap = d.get("capacity")
        capacity = int(cap) if isinstance(cap, int | float) or str(cap).strip().isdigit() else 0
        if capacity <= 0:
            raise ProtocolError(f"{CAPACITY_KEY} on node {node_name}: device {i} has capacity {cap!r}")
        minor = str(d.get("minor") or "").strip() or str(index)
        out.append(
            DeviceInfo(
                id=f"{node_name}{ID_INFIX}{index}",
                index=index,
                count=capacity,
                devmem=card_mib,
                devcore=100,
                type=DRS_CW,
                health=True,
                custom_info={
                    "minor": minor,
                    "index": str(index),
                    "profiles": profiles,
                    "maxSlice": max_slices,
                    SLOTS_BY_MEMORY: {p.memory_mib: p.slices for p in menu},
                },
            )
        )
    return out


def encode_capacity(cards: Sequence[tuple[int, int]], profiles: dict[str, str]) -> str:
    """What Enflame's DRS plugin writes for cards of (index, capacity)."""
    return json.dumps(
        {
            "devices": [{"index": str(i), "minor": str(i), "capacity": c} for i, c in cards],
            "profiles": profiles,
        },
        separators=(",", ":"),
    )


def card_index(device_id: str) -> int:
    return capacity_cards.card_index(device_id, ID_INFIX)


def _whole(container: Obj, name: str) -> str | None:
    """Refuse values that are not plain whole numbers (the range checks carry upstream's texts)."""
    for part in ("limits", "requests"):
        values = ((container.get("resources") or {}).get(part)) or {}
        if name not in values:
            continue
        q = parse_quantity(values[name])
        where = f"in container {container.get('name', '')}"
        if q is None or not q.is_integer:
            return f"{name} must be a whole number, got {values[name]!r} {where}"
        if q.binary:
            unit = "GB, or MiB above twice the largest profile"
            return f"{name} is a plain number ({unit}), no unit: got {values[name]} {where}"
    return None


def _int_value(container: Obj, name: str) -> int | None:
    raw, present = resource_value(container, name)
    if not present:
        return None
    q = parse_quantity(raw)
    return int(q.value) if q is not None and q.is_integer else None


def _copy_both_ways(container: Obj, name: str) -> None:
    res = container.setdefault("resources", {})
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    value = limits.get(name, requests.get(name))
    limits.setdefault(name, value)
    requests.setdefault(name, value)
    res["limits"], res["requests"] = limits, requests


class DrsFamily(DeviceFamily):
    common_word = DRS_CW
    keys = KEYS

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        section = section or {}
        self.count_resource = str(
            section.get("resourceNameDRSGCU") or section.get("resourceNameVGCU") or "enflame.com/drs-gcu"
        )
        self.memory_resource = str(section.get("resourceNameGCUMemory") or "enflame.com/gcu-memory")
        self.core_resource = str(section.get("resourceNameGCUCore") or "enflame.com/gcu-core")
        # read and unused, as upstream
        self.percentage_resource = str(
            section.get("resourceNameVGCUPercentage") or "enflame.com/vgcu-percentage"
        )
        # device id -> custom info of the cards node_devices decoded (annotations name profiles)
        self._cards: dict[str, dict[str, Any]] = {}
        self.devices_info: Callable[[], dict[str, tuple[int, str, int, int]]] = dict

    # --- requests ----------------------------------------------------------------------------
    def admission_problem(self, container: Obj) -> str | None:
        return (
            _whole(container, self.count_resource)
            or _whole(container, self.memory_resource)
            or _whole(container, self.core_resource)
        )

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        count = _int_value(container, self.count_resource)
        if resource_value(container, self.count_resource)[1]:
            if count is None or count <= 0:
                raise AdmissionError(f"{self.count_resource} must be greater than 0")
            _copy_both_ways(container, self.count_resource)
            return True
        has_mem = resource_value(container, self.memory_resource)[1]
        has_core = resource_value(container, self.core_resource)[1]
        if not has_mem and not has_core:
            return False
        mem = _int_value(container, self.memory_resource)
        core = _int_value(container, self.core_resource)
        if has_mem and (mem is None or mem <= 0):
            raise AdmissionError(f"{self.memory_resource} must be greater than 0")
        if has_core and (core is None or not 0 < core <= 100):
            raise AdmissionError(f"{self.core_resource} must be in range (0,100]")
        for name, present in ((self.memory_resource, has_mem), (self.core_resource, has_core)):
            if present:
                _copy_both_ways(container, name)
        return True

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        count = _int_value(container, self.count_resource)
        if count is not None:
            return ContainerDeviceRequest(self.common_word, 1, count, MODE_DIRECT, 0) if count > 0 else None
        mem = _int_value(container, self.memory_resource)
        core = _int_value(container, self.core_resource)
        if mem is None and core is None:
            return None
        return ContainerDeviceRequest(self.common_word, 1, max(mem or 0, 0), MODE_BY_SPEC, max(core or 0, 0))

    def quota_resources(self) -> tuple[str, str]:
        return "", ""  # upstream's DRS fit checks no quota

    # --- node side ---------------------------------------------------------------------------
    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        meta = node.get("metadata") or {}
        value = (meta.get("annotations") or {}).get(CAPACITY_KEY)
        if not value:
            return []
        cards = decode_capacity(str(meta.get("name", "")), value)
        for c in cards:
            self._cards[c.id] = c.custom_info
        return cards

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(CAPACITY_KEY)
        state = HealthState(node_quantity(node, "capacity", self.count_resource), value)
        try:
            healthy = bool(value) and bool(decode_capacity("", value))
        except ProtocolError:
            healthy = False
        return HealthResult(healthy, previous is None or previous != state), state

    # --- scheduling --------------------------------------------------------------------------
    @staticmethod
    def choose_profile(devices: Sequence[DeviceUsage], request: ContainerDeviceRequest) -> Profile | None:
        """The profile a request takes, from the menus of ``devices`` (upstream's selection)."""
        profiles: dict[str, str] = {}
        for d in devices:
            profiles.update(d.custom_info.get("profiles") or {})
        menu = profile_menu(profiles)
        if not menu:
            return None
        if request.mem_percentage == MODE_DIRECT:
            return next((p for p in menu if p.slices == request.memreq), None)
        largest_gb = menu[-1].memory_gb
        mem_gb = request.memreq
        if mem_gb > largest_gb * 2:  # MiB, not GB
            mem_gb = math.ceil(mem_gb / 1024)
        for p in menu:
            if mem_gb > 0 and p.memory_gb < mem_gb:
                continue
            if request.coresreq > 0 and p.cores < request.coresreq:
                continue
            return p
        return None

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        candidates = [d for d in devices if self.matches_type(d)]
        reasons: Counter[str] = Counter()
        profile = self.choose_profile(candidates, request)
        if profile is None:
            return FitResult(False, [], Counter({ev.MODE_NOT_FIT: 1}), len(candidates))
        if faults.on(OVERCOMMIT_FAULT):  # as a scheduler that forgets what it handed out
            candidates = [dataclasses.replace(d, used=0, usedmem=0, usedcores=0) for d in candidates]
        use = split_list(ctx.pod_annotations.get(self.keys.use_uuid))
        nouse = split_list(ctx.pod_annotations.get(self.keys.nouse_uuid))
        need = request.nums
        picks: list[ContainerDevice] = []
        for dev in reversed(candidates):
            if (use and dev.id not in use) or dev.id in nouse:
                reasons[ev.CARD_UUID_MISMATCH] += 1
                continue
            if dev.count - dev.used < profile.slices:
                reasons[ev.CARD_TIME_SLICING_EXHAUSTED] += 1
                continue
            if ctx.policy.mutex and dev.used > 0:
                reasons[ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT] += 1
                continue
            if dev.totalmem - dev.usedmem < profile.memory_mib:
                reasons[ev.CARD_INSUFFICIENT_MEMORY] += 1
                continue
            if dev.totalcore > 0 and dev.totalcore - dev.usedcores < profile.cores:
                reasons[ev.CARD_INSUFFICIENT_CORE] += 1
                continue
            picks.append(ContainerDevice(dev.id, self.common_word, profile.memory_mib, profile.cores))
            if len(picks) == need:
                return FitResult(True, picks, reasons, len(candidates))
        if picks:
            reasons[ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST] = len(picks)
        return FitResult(False, [], reasons, len(candidates))

    def _profile_of(self, cd: ContainerDevice) -> Profile | None:
        info = self._cards.get(cd.uuid) or {}
        return next((p for p in profile_menu(info.get("profiles") or {}) if p.memory_mib == cd.usedmem), None)

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        if not any(pod_devices):
            return {}
        value = encode_pod_devices(pod_devices)
        out = {self.keys.to_allocate: value, self.keys.allocated: value}
        out[ASSIGNED] = "false"
        out[ASSIGNED_TIME] = str(time.time_ns())
        names = [str(c.get("name", "")) for c in containers(pod or {})]
        assigned: dict[str, dict[str, Any]] = {}
        for pos, ctr in enumerate(pod_devices):
            if not ctr:
                continue
            chosen = ctr[0]
            profile = self._profile_of(chosen)
            slices = profile.slices if profile else 1
            name = names[pos] if pos < len(names) else f"container-{pos}"
            entry: dict[str, Any] = {"allocated": False, "request": slices}
            if profile is not None:
                entry["profileID"], entry["profileName"] = profile.id, profile.name
            assigned[name] = entry
            info = self._cards.get(chosen.uuid) or {}
            index = str(info.get("index") or card_index(chosen.uuid))
            out.setdefault(ASSIGNED_INDEX, index)
            out.setdefault(ASSIGNED_ID, index)
            out.setdefault(ASSIGNED_MINOR, str(info.get("minor") or index))
            out.setdefault(REQUEST_SIZE, str(slices))
        out[ASSIGNED_CONTAINERS] = json.dumps(assigned, separators=(",", ":"))
        return out

    # --- allocation --------------------------------------------------------------------------
    @staticmethod
    def _assigned(pod_annotations: dict[str, str], container_name: str) -> dict[str, Any]:
        try:
            table = json.loads(pod_annotations.get(ASSIGNED_CONTAINERS) or "{}")
        except ValueError:
            return {}
        entry = table.get(container_name) if isinstance(table, dict) else None
        return entry if isinstance(entry, dict) else {}

    def kubelet_device_count(
        self, devices: Sequence[ContainerDevice], container_name: str, pod_annotations: dict[str, str]
    ) -> int:
        request = self._assigned(pod_annotations, container_name).get("request")
        return request if isinstance(request, int) and request > 0 else len(devices)

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        if not req.devices:
            return out
        index = card_index(req.devices[0].uuid)
        entry = self._assigned(req.pod_annotations, req.container_name)
        gb = parse_profile(str(entry.get("profileName") or ""))[1] or req.devices[0].usedmem // 1024
        share = min(req.devices[0].usedcores, 100)  # a profile's cores are its share of the card
        out.envs[VISIBLE_ENV] = str(index)
        out.envs[SUB_CARD_ENV] = "false" if share >= 100 else "true"
        out.envs[GLOBAL_MEM_ENV] = str(gb)
        processors = {i: cus for i, _bus, cus, _mib in self.devices_info().values()}.get(index, 0)
        if processors:
            out.envs[PROCESSOR_ENV] = str(max(1, processors * share // 100))
        return out
