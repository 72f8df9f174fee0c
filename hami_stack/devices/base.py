"""The interface every vendor family implements, and the pieces families share.

A *family* is one entry of HAMi's device map, keyed by its common word (CW, e.g. ``NVIDIA``). The
scheduler, webhook and device plugin only ever talk to :class:`DeviceFamily`; adding a vendor
means adding a family, never changing them. The call sites:

* **webhook**: :meth:`DeviceFamily.admission_problem` (values out of range), then
  :meth:`DeviceFamily.mutate_admission` for every init and app container (may edit the
  container/pod in place, returns whether it claimed a device, raises :class:`AdmissionError`).
* **scheduler, registration loop**: :meth:`node_devices` (decode the node's register annotation, or
  synthesise devices from capacity) and :meth:`check_health` (handshake / capacity rule).
* **scheduler, /filter**: :meth:`pod_requests` (per container, init containers first), then per
  container request: sort the node's :class:`DeviceUsage` list with
  :func:`hami_stack.devices.scoring.order_devices`, call :meth:`fit`, apply the picks with
  :func:`add_usage`; node score = :func:`hami_stack.devices.scoring.node_score` + :meth:`score_node`;
  write :meth:`pod_annotations`. Quota is checked through :attr:`FitContext.quota_fits` and the
  family's :meth:`quota_resources`.
* **scheduler, /bind**: lock the node (``hami_stack.protocol.nodelock``) when :meth:`needs_lock`.
* **device plugin, Allocate**: :meth:`allocate_response` turns one container's assignment into env,
  mounts and device specs.

Units: memory in MiB, cores in percent of one device (100 = whole), as on the wire.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import events as ev
from ..protocol.annotations import VendorKeys
from ..protocol.assignment import ContainerDevice, PodDevices, encode_pod_devices
from ..protocol.handshake import HealthResult, check_handshake
from ..protocol.policy import GpuPolicy, ScoringWeights, gpu_policy
from ..protocol.quantity import INT32_MAX, parse_quantity, quantity_int
from ..protocol.register import MODE_HAMI_CORE, DeviceInfo
from ..protocol.resources import MEM_PERCENTAGE_UNSET

Obj = dict[str, Any]


class AdmissionError(Exception):
    """A family refuses a container at admission; the webhook answers 400 with this message."""


@dataclass(frozen=True)
class ContainerDeviceRequest:
    """What one container asks of one family (section 2.1 of the contract)."""

    type: str  # common word
    nums: int  # devices
    memreq: int  # MiB per device; 0 = use mem_percentage
    mem_percentage: int  # percent of each device's memory; MEM_PERCENTAGE_UNSET (101) = not asked
    coresreq: int  # percent per device

    def memory_on(self, totalmem: int) -> int:
        """The MiB this request takes on a device with ``totalmem`` MiB."""
        if self.memreq > 0:
            return self.memreq
        if self.mem_percentage != MEM_PERCENTAGE_UNSET:
            return totalmem * self.mem_percentage // 100
        return 0


@dataclass
class DeviceUsage:
    """A node's device and what is already given out on it (the scheduler's working copy)."""

    id: str
    type: str
    count: int  # slots
    totalmem: int
    totalcore: int
    index: int = 0
    numa: int = 0
    health: bool = True
    mode: str = MODE_HAMI_CORE
    used: int = 0
    usedmem: int = 0
    usedcores: int = 0
    custom_info: dict[str, Any] = field(default_factory=dict)
    # what the family noted about each pod the usage cache counts here (DeviceFamily.usage_note),
    # one entry per slot a pod holds (as it counts in used); a tuple, so a working copy can change
    # it without touching the cache
    pods: tuple[Any, ...] = ()

    @classmethod
    def from_info(cls, d: DeviceInfo) -> DeviceUsage:
        return cls(
            id=d.id,
            type=d.type,
            count=d.count,
            totalmem=d.devmem,
            totalcore=d.devcore,
            index=d.index,
            numa=d.numa,
            health=d.health,
            mode=d.mode or MODE_HAMI_CORE,
            custom_info=dict(d.custom_info),
        )


# custom_info key of a device whose assignments take several slots each (Enflame DRS: a profile's
# slices): {MiB an assignment holds: slots it takes}. The wire encoding carries only memory and
# cores, so the slot count is recovered from the memory through the device's own profile menu.
SLOTS_BY_MEMORY = "slotsByMemory"


def slots_taken(device: DeviceUsage, usedmem: int) -> int:
    """Slots one assignment of ``usedmem`` MiB takes on ``device`` (1 unless its menu says more)."""
    table = device.custom_info.get(SLOTS_BY_MEMORY)
    return int(table.get(usedmem, 1)) if table else 1


def add_usage(devices: Sequence[DeviceUsage], picked: Sequence[ContainerDevice]) -> None:
    """Count one container's picks on the node's devices (``used`` += its slots, memory and cores added)."""
    by_id = {d.id: d for d in devices}
    for p in picked:
        d = by_id.get(p.uuid)
        if d is not None:
            d.used += slots_taken(d, p.usedmem)
            d.usedmem += p.usedmem
            d.usedcores += p.usedcores


@dataclass(frozen=True)
class FitContext:
    """Everything besides devices and the request that a fit decision may look at."""

    pod: Obj
    node: Obj | None = None
    policy: GpuPolicy = field(default_factory=lambda: gpu_policy(None))
    weights: ScoringWeights = field(default_factory=ScoringWeights)
    # (namespace, family, memory MiB, cores) -> whether the namespace quota still admits it
    quota_fits: Callable[[str, DeviceFamily, int, int], bool] | None = None
    # this pod's earlier containers' picks for this family (init first), for same-device rules
    previous: PodDevices = field(default_factory=list)

    @property
    def pod_annotations(self) -> dict[str, str]:
        return ((self.pod.get("metadata") or {}).get("annotations")) or {}

    @property
    def node_annotations(self) -> dict[str, str]:
        return (((self.node or {}).get("metadata") or {}).get("annotations")) or {}

    @property
    def namespace(self) -> str:
        return (self.pod.get("metadata") or {}).get("namespace") or "default"


@dataclass
class FitResult:
    ok: bool
    devices: list[ContainerDevice]
    reasons: Counter[str]
    total: int  # devices of this family on the node, for the reason text

    @property
    def reason(self) -> str:
        """``"<count>/<total> <Reason>, ..."`` (empty when it fits)."""
        return "" if self.ok else ev.fit_reason(self.reasons, self.total)


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True)
class DeviceSpec:
    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True)
class AllocateInput:
    """One container's slice of a kubelet Allocate, as the device plugin resolved it."""

    devices: list[ContainerDevice]  # the popped assignment segment
    pod_uid: str
    container_name: str
    container_env: dict[str, str] = field(
        default_factory=dict
    )  # env from the pod spec (webhook-injected too)
    cache_id: str = ""  # random id for the shared-region file; the plugin passes uuid4()
    hook_path: str = "/usr/local"
    libvgpu_name: str = "libvgpu.so"  # host file under <hook>/vgpu, e.g. libvgpu.so.<version>
    license_present: bool = False  # <hook>/vgpu/license exists on the host
    pod_annotations: dict[str, str] = field(default_factory=dict)  # the pod's (Ascend reads its vNPU mode)


@dataclass
class ContainerAllocation:
    """The ContainerAllocateResponse, as plain data (the plugin turns it into protobuf)."""

    envs: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    devices: list[DeviceSpec] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    host_dirs: list[str] = field(default_factory=list)  # to (re)create with mode 0777 before answering
    # host files of the node's installation (the enforcement shim, its preload list) that ``mounts``
    # bind: the plugin answers only once each is a regular file, since a runtime turns a missing
    # mount source into an empty directory and the container would then start unenforced
    installed_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HealthState:
    """What the registration loop remembers about one node and family between passes."""

    allocatable: int | None = None
    register_value: str | None = None


def containers(pod: Obj) -> list[Obj]:
    """Init containers first, then app containers: the order of every positional encoding."""
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def resource_value(container: Obj, name: str) -> tuple[Any, bool]:
    """The raw value of a resource: limits first, then requests. (value, present)."""
    res = container.get("resources") or {}
    for part in ("limits", "requests"):
        values = res.get(part) or {}
        if name in values:
            return values[name], True
    return None, False


def resource_int(container: Obj, name: str) -> int | None:
    """The integer value of a resource (limits, else requests); None when absent or not an integer."""
    raw, present = resource_value(container, name)
    return quantity_int(raw) if present else None


def limit_int(container: Obj, name: str) -> tuple[bool, int | None]:
    """(whether the container's limits name the resource, its whole-number value or None), for
    families that read limits only (AMD, MetaX sGPU)."""
    limits = (container.get("resources") or {}).get("limits") or {}
    if not name or name not in limits:
        return False, None
    q = parse_quantity(limits[name])
    return True, int(q.value) if q is not None and q.is_integer else None


# The most devices one container may ask: no node has more, and a larger count is a typo (``1Gi``
# GPUs) that would otherwise only be reported as insufficient devices on every node.
MAX_DEVICES_PER_CONTAINER = 1024


def check_quantity(
    container: Obj, name: str, *, low: int = 0, high: int = INT32_MAX, mib_per_unit: int = 0
) -> str | None:
    """Admission check of one resource in limits and requests: why it is refused, or None.

    The value must be a whole number in ``low..high``. ``mib_per_unit`` > 0 marks a memory resource
    counted in that many MiB: a value written with a binary suffix (``1Gi``) is a byte count the
    user meant, so it is refused with the number to write instead (HAMi would read ``1Gi`` as
    1,073,741,824 units and report only that no device has that much memory).
    """
    if not name:
        return None
    where = f"in container {container.get('name', '')}"
    res = container.get("resources") or {}
    for part in ("limits", "requests"):
        values = res.get(part) or {}
        if name not in values:
            continue
        raw = values[name]
        q = parse_quantity(raw)
        if q is None:
            return f"{name} must be a whole number, got {raw!r} {where}"
        if q.binary and mib_per_unit > 0:
            unit = "MiB" if mib_per_unit == 1 else f"units of {mib_per_unit} MiB"
            units = q.value / (mib_per_unit << 20)
            hint = (
                f"write {units.numerator} for {raw}"
                if units.denominator == 1
                else f"write the count of {unit}"
            )
            return f"{name} is in {unit}, not a quantity with a unit: got {raw} {where}; {hint}"
        if not q.is_integer:
            return f"{name} must be a whole number, got {raw} {where}"
        if q.value < 0:
            return f"{name} must not be negative, got {raw} {where}"
        if not low <= q.value <= high:
            return f"{name} must be an integer between {low} and {high}, got {raw} {where}"
    return None


def node_quantity(node: Obj | None, field_name: str, resource: str) -> int:
    """``status.<field_name>[resource]`` as an integer (0 when absent or fractional)."""
    raw = (((node or {}).get("status") or {}).get(field_name) or {}).get(resource)
    return quantity_int(raw) or 0 if raw is not None else 0


def append_env(container: Obj, name: str, value: str) -> None:
    env = container.get("env") or []  # absent or null
    env.append({"name": name, "value": value})
    container["env"] = env


def split_list(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


class DeviceFamily(abc.ABC):
    """One vendor family. Subclasses set the class attributes and implement the abstract methods."""

    common_word: str
    keys: VendorKeys
    count_resource: str
    memory_resource: str = ""
    core_resource: str = ""
    memory_factor: int = 1  # quota limits on the memory resource are multiplied by this
    uses_node_lock: bool = True

    # --- requests ----------------------------------------------------------------------------
    @abc.abstractmethod
    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        """What ``container`` asks of this family, or None (not asked, or unusable values)."""

    def pod_requests(self, pod: Obj) -> list[ContainerDeviceRequest | None]:
        """Per container, init containers first (the positions of the assignment encoding)."""
        return [self.container_request(c) for c in containers(pod)]

    def needs_lock(self, pod: Obj) -> bool:
        """Whether /bind must take the node lock: an *app* container asks this family."""
        if not self.uses_node_lock:
            return False
        return any(
            self.container_request(c) is not None for c in (pod.get("spec") or {}).get("containers") or []
        )

    def quota_resources(self) -> tuple[str, str]:
        """(memory, core) resource names whose ``limits.<name>`` quota keys this family honours."""
        return self.memory_resource, self.core_resource

    # MiB in one unit of the memory resource, for admission's "not a quantity with a unit" message
    memory_unit_mib: int = 1

    def admission_problem(self, container: Obj) -> str | None:
        """Why admission refuses ``container``'s values for this family, or None.

        The webhook asks this before :meth:`mutate_admission`; a message is answered 400 with it.
        The default checks that count, memory and core are whole numbers in int32 range and that
        memory carries no byte unit; families with tighter ranges override it.
        """
        return (
            check_quantity(container, self.count_resource, high=MAX_DEVICES_PER_CONTAINER)
            or check_quantity(container, self.memory_resource, mib_per_unit=self.memory_unit_mib)
            or check_quantity(container, self.core_resource)
        )

    # --- node side ---------------------------------------------------------------------------
    @abc.abstractmethod
    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        """The node's devices of this family ([] when none); raises ProtocolError on a bad annotation."""

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        """Handshake rule when the family has a handshake key, else healthy iff capacity > 0."""
        meta = node.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        allocatable = node_quantity(node, "allocatable", self.count_resource)
        state = HealthState(allocatable, annotations.get(self.keys.register) if self.keys.register else None)
        if self.keys.handshake:
            return check_handshake(annotations.get(self.keys.handshake), now, allocatable), state
        capacity = node_quantity(node, "capacity", self.count_resource)
        return HealthResult(capacity > 0, previous is None or previous != state), state

    # --- scheduling --------------------------------------------------------------------------
    def matches_type(self, device: DeviceUsage) -> bool:
        """Candidate test of the scheduler: the device type contains the CW, case-insensitively."""
        return self.common_word.lower() in device.type.lower()

    @abc.abstractmethod
    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        """Pick ``request.nums`` devices, walking ``devices`` (already policy-sorted) from the end."""

    def score_node(self, node: Obj, devices: Sequence[DeviceUsage], picked: PodDevices, policy: str) -> float:
        """The family's extra node-score contribution (0 for most families)."""
        return 0.0

    def usage_note(self, pod: Obj, cores: int) -> Any:
        """What the usage cache keeps in :attr:`DeviceUsage.pods` about ``pod``, which holds ``cores``
        on one of the family's devices (None, the default: nothing, for families whose fit never
        looks at the pods already on a device)."""
        return None

    def no_devices_message(self) -> str | None:
        """An extra FilteringFailed event text for a pod none of whose candidate nodes has a single
        device of this family (None: HAMi's reasons only, as for NVIDIA)."""
        return None

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        """Annotations /filter writes for this family's decision (none for an empty decision, as HAMi).

        ``pod`` is the pod being placed, for families whose annotations depend on it (Ascend's mode)."""
        if not pod_devices:
            return {}
        value = encode_pod_devices(pod_devices)
        out = {}
        if self.keys.to_allocate:
            out[self.keys.to_allocate] = value
        if self.keys.allocated:
            out[self.keys.allocated] = value
        return out

    # --- admission and allocation ------------------------------------------------------------
    @abc.abstractmethod
    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        """Edit ``container``/``pod`` in place as the webhook should; True when a device is claimed."""

    @abc.abstractmethod
    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        """Env, mounts and devices for one container's assignment."""

    def kubelet_device_count(
        self, devices: Sequence[ContainerDevice], container_name: str, pod_annotations: dict[str, str]
    ) -> int:
        """How many kubelet device IDs one container's assignment stands for (one per device;
        Enflame DRS: the profile's slices, as the pod's ``assigned-containers`` says)."""
        return len(devices)


# --- the shared fit walk ----------------------------------------------------------------------

CheckDevice = Callable[[DeviceUsage], str | None]


def pod_quota_usage(
    previous: PodDevices, current: Sequence[ContainerDevice], n_init: int, cw: str
) -> tuple[int, int]:
    """The pod's collapsed memory and cores of family ``cw`` if ``current`` joined ``previous``.

    ``previous`` holds the earlier containers' picks at their positions (init containers first),
    ``current`` the picks of the container being fitted, at position ``len(previous)``. Per device,
    init containers count by their peak and app containers add up; devices add up (section 5.6,
    the same collapse the usage cache and the quota usage apply once the pod is placed).
    """
    init_peak: dict[str, tuple[int, int]] = {}
    app_sum: dict[str, tuple[int, int]] = {}
    for pos, ctr in enumerate([*previous, list(current)]):
        for d in ctr:
            if d.type != cw:
                continue
            if pos < n_init:
                m, c = init_peak.get(d.uuid, (0, 0))
                init_peak[d.uuid] = (max(m, d.usedmem), max(c, d.usedcores))
            else:
                m, c = app_sum.get(d.uuid, (0, 0))
                app_sum[d.uuid] = (m + d.usedmem, c + d.usedcores)
    mem = cores = 0
    for uuid in init_peak.keys() | app_sum.keys():
        im, ic = init_peak.get(uuid, (0, 0))
        am, ac = app_sum.get(uuid, (0, 0))
        mem += max(im, am)
        cores += max(ic, ac)
    return mem, cores


def fit_walk(
    family: DeviceFamily,
    devices: Sequence[DeviceUsage],
    request: ContainerDeviceRequest,
    ctx: FitContext,
    *,
    selection: CheckDevice,
    numa_bind: bool = False,
    collect_all: bool = False,
) -> tuple[list[tuple[DeviceUsage, ContainerDevice]], Counter[str], int]:
    """The fit skeleton every family shares (section 5.2), from the end of ``devices`` to the start.

    ``selection`` returns a reason for vendor-specific refusals that come before the NUMA step
    (health, cordon, type); UUID selection, slots, mutex, memory, quota and cores follow here.
    Returns (picks with their device, reason counts, candidate count). With ``collect_all`` every
    fitting device is returned (topology-aware selection chooses among them afterwards).

    As in HAMi, a node with fewer devices than asked is refused before ``fit`` (by the scheduler,
    bare ``NodeInsufficientDevice``); here the walk simply ends short. A short walk adds
    ``AllocatedCardsInsufficientRequest`` counted as the devices it did pick (none: not added).
    The quota check adds up the whole pod: earlier containers' picks, this container's picks so
    far and the candidate, collapsed as the pod's usage will be once placed.
    """
    candidates = [d for d in devices if family.matches_type(d)]
    reasons: Counter[str] = Counter()
    need = request.nums
    annotations = ctx.pod_annotations
    use_uuid = split_list(annotations.get(family.keys.use_uuid)) if family.keys.use_uuid else []
    nouse_uuid = split_list(annotations.get(family.keys.nouse_uuid)) if family.keys.nouse_uuid else []
    n_init = len((ctx.pod.get("spec") or {}).get("initContainers") or [])
    picked: list[tuple[DeviceUsage, ContainerDevice]] = []
    prev_numa: int | None = None
    for dev in reversed(candidates):
        reason = selection(dev)
        if reason is not None:
            reasons[reason] += 1
            continue
        if numa_bind and prev_numa is not None and dev.numa != prev_numa:
            # one container's devices must share a NUMA node: start over on the new node
            if picked and not collect_all:
                reasons[ev.NUMA_NOT_FIT] += len(picked)
            picked = []
        prev_numa = dev.numa
        if (use_uuid and dev.id not in use_uuid) or dev.id in nouse_uuid:
            reasons[ev.CARD_UUID_MISMATCH] += 1
            continue
        if dev.count <= dev.used:
            reasons[ev.CARD_TIME_SLICING_EXHAUSTED] += 1
            continue
        if ctx.policy.mutex and dev.used > 0:
            reasons[ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT] += 1
            continue
        cores = min(request.coresreq, 100)
        mem = request.memory_on(dev.totalmem)
        if ctx.quota_fits is not None:
            candidate = ContainerDevice(dev.id, family.common_word, mem, cores)
            pod_mem, pod_cores = pod_quota_usage(
                ctx.previous, [cd for _, cd in picked] + [candidate], n_init, family.common_word
            )
            if not ctx.quota_fits(ctx.namespace, family, pod_mem, pod_cores):
                reasons[ev.RESOURCE_QUOTA_NOT_FIT] += 1
                continue
        if dev.totalmem - dev.usedmem < mem:
            reasons[ev.CARD_INSUFFICIENT_MEMORY] += 1
            continue
        if dev.totalcore - dev.usedcores < cores:
            reasons[ev.CARD_INSUFFICIENT_CORE] += 1
            continue
        if dev.totalcore == 100 and cores == 100 and dev.used > 0:
            reasons[ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT] += 1
            continue
        if dev.totalcore != 0 and dev.usedcores == dev.totalcore and cores == 0:
            reasons[ev.CARD_COMPUTE_UNITS_EXHAUSTED] += 1
            continue
        picked.append((dev, ContainerDevice(dev.id, family.common_word, mem, cores)))
        if len(picked) == need and not collect_all:
            break
    if picked and len(picked) < need:
        reasons[ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST] = len(picked)
    return picked, reasons, len(candidates)
