"""MetaX GPUs, both of HAMi's MetaX families, enabled by the device config's ``metax`` section.

**Whole GPU** (common word ``Metax-GPU``, resource ``resourceCountName``, default
``metax-tech.com/gpu``), from HAMi's MetaX backend:

* a container claims it when its limits carry the count; it always takes whole cards (100 % of the
  memory, 100 cores);
* no register annotation: MetaX's own plugin advertises the count, and card ``i`` of a node is
  ``<node>-metax-<i>`` (1 slot, 65536 MiB, 100 cores); healthy while the capacity is above 0;
  no node lock; no UUID selection;
* fit: the shared skeleton from the end, and every container of a pod must get the pod's earlier
  containers' card(s) (``CardNotFoundCustomFilterRule``);
* node score: MetaX's plugin annotates the node with what taking n cards costs,
  ``metax-tech.com/gpu.topology.losses`` and ``metax-tech.com/gpu.topology.scores`` (JSON maps
  n -> value); the family adds ``2000 - losses[n]`` under the binpack node policy and
  ``2000 - scores[n]`` under spread (n = the cards the pod takes; a missing entry counts 0).

**sGPU** (common word ``Metax-SGPU``, resources ``resourceVCountName`` / ``resourceVMemoryName`` /
``resourceVCoreName``, defaults ``metax-tech.com/sgpu``, ``metax-tech.com/vmemory``,
``metax-tech.com/vcore``):

* request (limits only): the count; cores default 100; vmemory without a unit is GiB (x 1024), with
  a unit it is bytes (-> MiB); no memory -> 100 % of each device;
* admission: pod annotation ``metax-tech.com/sgpu-app-class`` must be ``online`` or ``offline``
  (``... must be set one of [online, offline]``) and such a pod asks exactly one device (``app-class
  pod must request single device``); a pod that is not ``online`` gets
  ``metax-tech.com/sgpu-qos-policy: best-effort`` when it has none, else the value must be
  ``best-effort``, ``fixed-share`` or ``burst-share`` (``... must be set one of [best-effort,
  fixed-share, burst-share]``);
* devices from MetaX's node annotation ``metax-tech.com/node-gpu-devices`` (a JSON list of
  ``{uuid, bdf, model, totalDevCount, totalCompute, totalVRam, numa, healthy, qosPolicy, linkZone}``);
  healthy while it lists a device; the shared node lock;
* fit: type, health (``CardUnhealthy``), app class (``CardAppClassMismatch``, below), QoS for
  non-online pods (``CardQosPolicyMismatch``, below), UUID (``metax-tech.com/use-gpuuuid`` /
  ``nouse-gpuuuid``), slots, mutex, memory; for non-online pods cores, exclusive use and exhausted
  compute; every fitting device is collected; with more candidates than asked, an online pod takes
  the devices it is best placed on (below), a pod without an app class asking whole devices (100
  cores) prefers devices of one MetaLink zone (``linkZone`` > 0), the smallest zone that holds the
  request, then zones in order of size, then unlinked devices, and an offline pod takes the first
  candidates; online pods get 0 cores;
* app class, from the pods the scheduler's usage cache counts on a device (:meth:`usage_note` keeps
  each one's class there, once per slot it holds): a device nobody uses takes any pod; otherwise a
  pod with an app class only joins devices that already run app-class pods and a pod without one
  only devices that run none, and an offline pod never joins a device that runs an online pod (the
  online pod would suspend it); an online pod may join a device that runs only offline pods;
* QoS: a device in use runs one QoS policy, so a shared (not 100-core) request of a non-online pod
  must match it unless it is empty. The device's policy is, first, the one this scheduler last gave
  it (a non-online pod placed on it sets its ``metax-tech.com/sgpu-qos-policy``, a whole-device one
  the empty policy), kept in the scheduler's memory until MetaX's node JSON reports that policy for
  the device (upstream's "jittery QoS" memory: lost on restart); else the policy this pod's earlier
  containers left on it; else the registered ``qosPolicy``;
* online placement: candidates are ordered devices running no pod or some online pod first, by
  fewer online pods then fewer offline pods, then devices running only offline pods, by fewer
  offline pods;
* /filter writes the to-allocate / allocated keys, ``metax-tech.com/gpu-devices-allocated`` (JSON
  ``[[{"uuid":..,"compute":..,"vRam":..}]]`` per container) and ``metax-tech.com/predicate-time``;
* node score, times 10000 (times -10000 under the spread node policy): for an online pod, the sum
  over its devices of ``-100 x offline`` for a device running only offline pods, else ``-20 x
  online - 2 x offline`` (pods already there); otherwise topology-aware (config
  ``sgpuTopologyAware`` or pod annotation ``metax-tech.com/sgpu-topology-aware``) and only for
  whole-device picks: with pair score 10 for two different devices of one non-zero link zone, ``10 x
  allocated - (available - allocated - rest)`` over the node's free devices (available), the picks
  (allocated) and the free devices left (rest).

Where this differs from upstream: a pod counts once per slot it holds on a device after the usage
cache's per-pod collapse (init containers by their peak), where upstream counts each container's
assignment; ties of the online ordering keep the candidate order (upstream's sort is not stable).

Allocate (this stack's plugin, standing in for MetaX's): ``METAX_VISIBLE_DEVICES`` with the device
UUIDs, and for sGPU ``METAX_SGPU_VRAM_MIB`` / ``METAX_SGPU_COMPUTE`` per device.

What the sGPU plugin advertises to the kubelet (:data:`SGPU_KUBELET_EXTRA`): the count and ``vcore``
(100 per card), not ``vmemory``. A vmemory limit is GiB without a unit but bytes with one (upstream's
``allocate_vmemory_MiB`` example asks ``2048Mi``), and the kubelet compares the raw quantity with the
node's allocatable: no device count can hold both 4 and 2147483648, so a byte-valued limit was refused
at the node (``OutOfmetax-tech.com/vmemory``) after HAMi placed it. Unadvertised, the kubelet drops it
from its fit check (``removeMissingExtendedResources``) and HAMi's node JSON (``totalVRam``, MiB)
bounds memory alone. Unconfirmed: what MetaX's own sGPU plugin advertises (not published).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from .. import faults
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import ContainerDevice, PodDevices
from ..protocol.errors import ProtocolError
from ..protocol.handshake import HealthResult
from ..protocol.policy import SPREAD
from ..protocol.quantity import INT32_MAX, parse_quantity
from ..protocol.register import DeviceInfo
from . import capacity_cards
from .base import (
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
    check_quantity,
    fit_walk,
    limit_int,
    resource_int,
    split_list,
)
from .counted import WholeCards

SECTION = "metax"
GPU_CW = "Metax-GPU"
SGPU_CW = "Metax-SGPU"
ID_INFIX = "-metax-"
GPU_MEMORY_MIB = 65536
# the sGPU plugin's kubelet resources besides the count, as (family attribute naming the resource, what
# one card gives): vcore only; vmemory stays off the kubelet (module docstring)
SGPU_KUBELET_EXTRA = (("core_resource", "cores"),)
LOSSES = "metax-tech.com/gpu.topology.losses"
SCORES = "metax-tech.com/gpu.topology.scores"
NODE_DEVICES = "metax-tech.com/node-gpu-devices"
ALLOCATED = "metax-tech.com/gpu-devices-allocated"
PREDICATE_TIME = "metax-tech.com/predicate-time"
QOS_POLICY = "metax-tech.com/sgpu-qos-policy"
TOPOLOGY_AWARE = "metax-tech.com/sgpu-topology-aware"
APP_CLASS = "metax-tech.com/sgpu-app-class"
ONLINE, OFFLINE = "online", "offline"
QOS_POLICIES = ("best-effort", "fixed-share", "burst-share")
CARD_UNHEALTHY = "CardUnhealthy"
CARD_QOS_POLICY_MISMATCH = "CardQosPolicyMismatch"
CARD_APP_CLASS_MISMATCH = "CardAppClassMismatch"
NO_CLASS = ""  # the usage note of a pod without an app class
DIRECT_LINK_SCORE = 10
SCORE_WEIGHT = 10000
VISIBLE_ENV = "METAX_VISIBLE_DEVICES"
# the fault ignores MetaLink zones: a whole-device pair is taken across zones
NO_TOPOLOGY_FAULT = "scheduler-metax-ignores-link-zone"
# the fault ignores app classes: an offline pod joins a device that runs an online pod
NO_APP_CLASS_FAULT = "scheduler-metax-ignores-app-class"


def _node_name(node: Obj) -> str:
    return str((node.get("metadata") or {}).get("name", ""))


def _score_map(value: str | None, n: int) -> int:
    """``{"<n>": value}`` from a MetaX topology annotation; 0 when absent or unreadable (as upstream)."""
    try:
        table = json.loads(value or "")
        return int(table.get(str(n), 0)) if isinstance(table, dict) else 0
    except (ValueError, TypeError):
        return 0


class MetaxGpuFamily(WholeCards, DeviceFamily):
    common_word = GPU_CW
    id_infix = ID_INFIX
    card_memory = GPU_MEMORY_MIB
    keys = ann.VENDOR_KEYS_BY_CW[GPU_CW]
    uses_node_lock = False

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        self.count_resource = str((section or {}).get("resourceCountName") or "metax-tech.com/gpu")

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        return capacity_cards.capacity_health(node, self.count_resource, previous)

    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        earlier = {d.uuid for ctr in ctx.previous for d in ctr if d.type == self.common_word}

        def selection(dev: DeviceUsage) -> str | None:
            # every container of the pod on the same card(s) (upstream's custom filter rule)
            return ev.CARD_NOT_FOUND_CUSTOM_FILTER_RULE if earlier and dev.id not in earlier else None

        # no UUID selection for whole MetaX cards: fit_walk reads none, since the keys name none
        picks, reasons, total = fit_walk(self, devices, request, ctx, selection=selection)
        if len(picks) < request.nums:
            return FitResult(False, [], reasons, total)
        return FitResult(True, [cd for _, cd in picks], reasons, total)

    def score_node(self, node: Obj, devices: Sequence[DeviceUsage], picked: PodDevices, policy: str) -> float:
        n = sum(len(ctr) for ctr in picked)
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        key = SCORES if policy == SPREAD else LOSSES
        if key not in annotations:
            return 0.0
        return float(2000 - _score_map(annotations[key], n))

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(str(card_index(d.uuid)) for d in req.devices)
        return out


def card_index(device_id: str) -> int:
    return capacity_cards.card_index(device_id, ID_INFIX)


def decode_sgpu_devices(value: str) -> list[DeviceInfo]:
    """MetaX's ``metax-tech.com/node-gpu-devices`` list; ProtocolError names what is wrong."""
    try:
        raw = json.loads(value)
    except ValueError as e:
        raise ProtocolError(f"{NODE_DEVICES}: invalid JSON: {e}") from e
    if not isinstance(raw, list):
        raise ProtocolError(f"{NODE_DEVICES}: expected a JSON list of devices")
    out = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict) or not isinstance(d.get("uuid"), str) or not d["uuid"]:
            raise ProtocolError(f"{NODE_DEVICES}: device {i} has no uuid")
        try:
            count, compute, vram, numa, zone = (
                int(d.get(k) or 0) for k in ("totalDevCount", "totalCompute", "totalVRam", "numa", "linkZone")
            )
        except (TypeError, ValueError) as e:
            raise ProtocolError(f"{NODE_DEVICES}: device {i}: {e}") from e
        out.append(
            DeviceInfo(
                id=d["uuid"],
                index=i,
                count=count,
                devmem=vram,
                devcore=compute,
                type=SGPU_CW,
                numa=numa,
                health=d.get("healthy") is True,
                mode="",
                custom_info={
                    "QosPolicy": str(d.get("qosPolicy") or ""),
                    "Model": str(d.get("model") or ""),
                    "LinkZone": zone,
                },
            )
        )
    return out


def _parse_bool(value: Any, default: bool) -> bool:
    """Go's strconv.ParseBool spellings; anything else keeps ``default`` (as upstream ignores it)."""
    text = str(value).strip() if value is not None else ""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return default


class _HardwareDevice(Protocol):
    uuid: str
    index: int
    model: str
    memory_mib: int
    bus_id: str
    numa: int
    healthy: bool


def link_zone_of(index: int) -> int:
    """The MetaLink zone of card ``index`` on an emulated node: cards alternate between zones 1 and 2
    (so the first free cards of a node are never one zone by accident)."""
    return index % 2 + 1


def encode_sgpu_devices(devices: Sequence[_HardwareDevice], slots: int) -> str:
    """What MetaX's sGPU plugin writes to ``metax-tech.com/node-gpu-devices`` for these cards
    (all free: the plugin reports totals; the scheduler counts usage itself)."""
    return json.dumps(
        [
            {
                "uuid": d.uuid,
                "bdf": d.bus_id,
                "model": d.model,
                "totalDevCount": slots,
                "totalCompute": 100,
                "totalVRam": d.memory_mib,
                "availableDevCount": slots,
                "availableCompute": 100,
                "availableVRam": d.memory_mib,
                "numa": d.numa,
                "healthy": d.healthy,
                "qosPolicy": "",
                "linkZone": link_zone_of(d.index),
            }
            for d in devices
        ],
        separators=(",", ":"),
    )


def link_zone(dev: DeviceUsage) -> int:
    zone = dev.custom_info.get("LinkZone", 0)
    return zone if isinstance(zone, int) else 0


def link_score(zones: Sequence[tuple[str, int]]) -> int:
    """Σ over pairs of different devices in one non-zero link zone of 10 (MetaX's MetaLink score)."""
    score = 0
    for i, (a, za) in enumerate(zones):
        for b, zb in zones[i + 1 :]:
            if a != b and za and za == zb:
                score += DIRECT_LINK_SCORE
    return score


def prefer_link_zones(candidates: list[DeviceUsage], need: int) -> list[DeviceUsage]:
    """Whole devices: the smallest MetaLink zone that holds ``need``, else zones by size, then the rest."""
    if len(candidates) <= need:
        return candidates
    zones: dict[int, list[DeviceUsage]] = {}
    others: list[DeviceUsage] = []
    for d in candidates:
        z = link_zone(d)
        (zones.setdefault(z, []) if z > 0 else others).append(d)
    linked = sorted(zones.values(), key=len)
    for group in linked:
        if len(group) >= need:
            return group[:need]
    ordered = [d for group in linked for d in group] + others
    return ordered[:need]


def app_class_counts(dev: DeviceUsage) -> tuple[int, int]:
    """(online, offline): the app classes of the pods the usage cache counts on ``dev``."""
    return dev.pods.count(ONLINE), dev.pods.count(OFFLINE)


def app_class_fits(request_class: str, dev: DeviceUsage) -> bool:
    """Whether a pod of ``request_class`` ("" = none) may join ``dev`` (upstream's app-class rule)."""
    if dev.used == 0:
        return True
    online, offline = app_class_counts(dev)
    # app-class pods and pods without a class never share a device; an offline pod would only be
    # suspended on a device that runs an online pod
    if (online + offline > 0) != (request_class in (ONLINE, OFFLINE)):
        return False
    return not (online and request_class == OFFLINE)


def _online_rank(dev: DeviceUsage) -> tuple[int, int, int]:
    online, offline = app_class_counts(dev)
    if offline and not online:
        return (1, offline, 0)  # only offline pods: last, the fewest first
    return (0, online, offline)


def prefer_for_online(candidates: list[DeviceUsage], need: int) -> list[DeviceUsage]:
    """An online pod's picks: devices with fewer online, then fewer offline pods; devices running
    only offline pods last."""
    if len(candidates) <= need:
        return candidates
    return sorted(candidates, key=_online_rank)[:need]


def online_score(devices: Sequence[DeviceUsage], picked: PodDevices) -> int:
    """The online pod's placement score over its devices (before the node-policy weight)."""
    ids = {d.uuid for ctr in picked for d in ctr}
    score = 0
    for dev in devices:
        if dev.id in ids:
            online, offline = app_class_counts(dev)
            score += -100 * offline if offline and not online else -20 * online - 2 * offline
    return score


class MetaxSgpuFamily(DeviceFamily):
    common_word = SGPU_CW
    keys = ann.VENDOR_KEYS_BY_CW[SGPU_CW]
    memory_factor = 1024
    memory_unit_mib = 1024

    def __init__(self, section: dict[str, Any] | None = None) -> None:
        section = section or {}
        self.count_resource = str(section.get("resourceVCountName") or "metax-tech.com/sgpu")
        self.memory_resource = str(section.get("resourceVMemoryName") or "metax-tech.com/vmemory")
        self.core_resource = str(section.get("resourceVCoreName") or "metax-tech.com/vcore")
        self.topology_aware = _parse_bool(section.get("sgpuTopologyAware"), False)
        self._last = threading.local()
        # device uuid -> the QoS policy this scheduler gave it and the node JSON does not report yet;
        # device uuid -> the registered policy (both read at fit time, under the lock)
        self._qos_lock = threading.Lock()
        self._given_qos: dict[str, str] = {}
        self._registered_qos: dict[str, str] = {}

    # --- requests ----------------------------------------------------------------------------
    def admission_problem(self, container: Obj) -> str | None:
        # vmemory may carry a unit (bytes), so only the count and cores are checked as plain numbers
        return check_quantity(container, self.count_resource, high=INT32_MAX) or check_quantity(
            container, self.core_resource
        )

    def _limit(self, container: Obj, name: str) -> Any:
        return ((container.get("resources") or {}).get("limits") or {}).get(name)

    def container_request(self, container: Obj) -> ContainerDeviceRequest | None:
        _, nums = limit_int(container, self.count_resource)
        if nums is None or not 0 < nums <= INT32_MAX:
            return None
        cores = 100
        _, core = limit_int(container, self.core_resource)
        if core is not None:  # a fractional core count keeps the default, as upstream
            if not 0 <= core <= INT32_MAX:
                return None
            cores = core
        mem = 0
        raw = self._limit(container, self.memory_resource)
        qm = parse_quantity(raw)
        if qm is not None and qm.is_integer:
            if any(c.isalpha() for c in str(raw)):
                mem = int(qm.value) // (1024 * 1024)  # a quantity with a unit is bytes
            else:
                if not 0 <= qm.value <= INT32_MAX // 1024:
                    return None
                mem = int(qm.value) * 1024  # a bare number is GiB
            if not 0 <= mem <= INT32_MAX:
                return None
        return ContainerDeviceRequest(self.common_word, nums, mem, 0 if mem else 100, cores)

    def mutate_admission(self, container: Obj, pod: Obj) -> bool:
        if self.count_resource not in ((container.get("resources") or {}).get("limits") or {}):
            return False
        meta = pod.setdefault("metadata", {})
        annotations = meta.get("annotations") or {}
        app_class = annotations.get(APP_CLASS)
        if app_class is not None:
            if app_class not in (ONLINE, OFFLINE):
                raise AdmissionError(f"{APP_CLASS} must be set one of [{ONLINE}, {OFFLINE}]")
            if resource_int(container, self.count_resource) != 1:
                raise AdmissionError("app-class pod must request single device")
        if app_class != ONLINE:
            qos = annotations.get(QOS_POLICY)
            if qos is None:
                meta["annotations"] = {**annotations, QOS_POLICY: QOS_POLICIES[0]}
            elif qos not in QOS_POLICIES:
                raise AdmissionError(f"{QOS_POLICY} must be set one of [{', '.join(QOS_POLICIES)}]")
        return True

    # --- node side ---------------------------------------------------------------------------
    def node_devices(self, node: Obj) -> list[DeviceInfo]:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(NODE_DEVICES)
        devices = decode_sgpu_devices(value) if value else []
        with self._qos_lock:
            for d in devices:
                registered = str(d.custom_info.get("QosPolicy") or "")
                self._registered_qos[d.id] = registered
                # the plugin now reports what this scheduler gave the device: forget it
                if self._given_qos.get(d.id) == registered:
                    del self._given_qos[d.id]
        return devices

    def check_health(
        self, node: Obj, now: dt.datetime, previous: HealthState | None
    ) -> tuple[HealthResult, HealthState]:
        value = ((node.get("metadata") or {}).get("annotations") or {}).get(NODE_DEVICES)
        try:
            healthy = bool(decode_sgpu_devices(value)) if value else False
        except ProtocolError:
            healthy = False
        state = HealthState(None, value)
        return HealthResult(healthy, previous is None or previous != state), state

    # --- scheduling --------------------------------------------------------------------------
    def fit(
        self, devices: Sequence[DeviceUsage], request: ContainerDeviceRequest, ctx: FitContext
    ) -> FitResult:
        pod_ann = ctx.pod_annotations
        # score_node has no pod: it runs right after this fit, for the same pod, on this thread
        self._last.aware = _parse_bool(pod_ann.get(TOPOLOGY_AWARE), self.topology_aware)
        app_class = pod_ann.get(APP_CLASS)
        online = app_class == ONLINE
        self._last.online = online
        want_qos = pod_ann.get(QOS_POLICY, "")
        use = split_list(pod_ann.get(self.keys.use_uuid))
        nouse = split_list(pod_ann.get(self.keys.nouse_uuid))
        candidates = [d for d in devices if self.matches_type(d)]
        reasons: Counter[str] = Counter()
        fitting: list[DeviceUsage] = []
        for dev in reversed(candidates):
            reason = self._refusal(dev, request, app_class or NO_CLASS, want_qos, use, nouse, ctx)
            if reason:
                reasons[reason] += 1
            else:
                fitting.append(dev)
        if len(fitting) < request.nums:
            if fitting:
                reasons[ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST] = len(fitting)
            return FitResult(False, [], reasons, len(candidates))
        best = fitting[: request.nums]
        if app_class is not None:
            # an offline pod takes the first candidates (HAMi's device order)
            if online:
                best = prefer_for_online(fitting, request.nums)
        elif request.coresreq == 100 and not faults.on(NO_TOPOLOGY_FAULT):
            best = prefer_link_zones(fitting, request.nums)
        cores = 0 if online else request.coresreq
        return FitResult(
            True,
            [ContainerDevice(d.id, self.common_word, request.memory_on(d.totalmem), cores) for d in best],
            reasons,
            len(candidates),
        )

    def _refusal(
        self,
        dev: DeviceUsage,
        req: ContainerDeviceRequest,
        app_class: str,
        want_qos: str,
        use: list[str],
        nouse: list[str],
        ctx: FitContext,
    ) -> str | None:
        if not dev.health:
            return CARD_UNHEALTHY
        if not faults.on(NO_APP_CLASS_FAULT) and not app_class_fits(app_class, dev):
            return CARD_APP_CLASS_MISMATCH
        online = app_class == ONLINE
        if not online and dev.used > 0 and req.coresreq != 100:
            have = self._device_qos(dev, want_qos, ctx)
            if have and have != want_qos:
                return CARD_QOS_POLICY_MISMATCH
        if (use and dev.id not in use) or dev.id in nouse:
            return ev.CARD_UUID_MISMATCH
        if dev.count <= dev.used:
            return ev.CARD_TIME_SLICING_EXHAUSTED
        if ctx.policy.mutex and dev.used > 0:
            return ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT
        if dev.totalmem - dev.usedmem < req.memory_on(dev.totalmem):
            return ev.CARD_INSUFFICIENT_MEMORY
        if not online:
            if dev.totalcore - dev.usedcores < req.coresreq:
                return ev.CARD_INSUFFICIENT_CORE
            if dev.totalcore == 100 and req.coresreq == 100 and dev.used > 0:
                return ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT
            if dev.totalcore != 0 and dev.usedcores == dev.totalcore and req.coresreq == 0:
                return ev.CARD_COMPUTE_UNITS_EXHAUSTED
        return None

    def _device_qos(self, dev: DeviceUsage, want_qos: str, ctx: FitContext) -> str:
        """The QoS policy ``dev`` runs as a non-online pod asking ``want_qos`` sees it."""
        with self._qos_lock:
            given = self._given_qos.get(dev.id)
        if given is not None:
            return given
        # this pod's earlier containers on the device set it (a whole-device one: the empty policy)
        left = None
        for ctr in ctx.previous:
            for d in ctr:
                if d.uuid == dev.id:
                    left = "" if d.usedcores == 100 else want_qos
        return left if left is not None else str(dev.custom_info.get("QosPolicy") or "")

    def usage_note(self, pod: Obj, cores: int) -> str:
        """The pod's app class (``online``/``offline``, else ``""``), for the app-class rules."""
        app_class = ((pod.get("metadata") or {}).get("annotations") or {}).get(APP_CLASS)
        return app_class if app_class in (ONLINE, OFFLINE) else NO_CLASS

    def score_node(self, node: Obj, devices: Sequence[DeviceUsage], picked: PodDevices, policy: str) -> float:
        if getattr(self._last, "online", False):
            return float(self._weight(policy) * online_score(devices, picked))
        whole = [d for ctr in picked for d in ctr if d.usedcores == 100]
        if not whole:
            return 0.0
        return float(self._weight(policy) * self._topology_score(devices, picked, whole))

    def _weight(self, policy: str) -> int:
        return -SCORE_WEIGHT if policy == SPREAD else SCORE_WEIGHT

    def _topology_score(
        self, devices: Sequence[DeviceUsage], picked: PodDevices, whole: list[ContainerDevice]
    ) -> int:
        if not getattr(self._last, "aware", self.topology_aware):
            return 0
        zone = {d.id: link_zone(d) for d in devices}
        # free before this pod: unused, or used only by this pod's own picks
        mine = Counter(d.uuid for ctr in picked for d in ctr)
        free = [d.id for d in devices if d.used - mine.get(d.id, 0) <= 0]
        taken = {d.uuid for d in whole}
        available = link_score([(u, zone.get(u, 0)) for u in free])
        allocated = link_score([(d.uuid, zone.get(d.uuid, 0)) for d in whole])
        rest = link_score([(u, zone.get(u, 0)) for u in free if u not in taken])
        return DIRECT_LINK_SCORE * allocated - (available - allocated - rest)

    def pod_annotations(self, pod_devices: PodDevices, pod: Obj | None = None) -> dict[str, str]:
        out = super().pod_annotations(pod_devices, pod)
        if not out:
            return out
        metax = [
            [{"uuid": d.uuid, "compute": d.usedcores, "vRam": d.usedmem} for d in ctr] for ctr in pod_devices
        ]
        out[ALLOCATED] = json.dumps(metax, separators=(",", ":"))
        out[PREDICATE_TIME] = str(time.time_ns())
        if pod is not None:
            self._remember_qos(pod, pod_devices)
        return out

    def _remember_qos(self, pod: Obj, pod_devices: PodDevices) -> None:
        """Remember the QoS policy a non-online pod's devices now run (a whole device: the empty
        one) where it differs from what the device ran when fitted, until the node JSON reports it."""
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if annotations.get(APP_CLASS) == ONLINE:
            return
        want = str(annotations.get(QOS_POLICY, ""))
        with self._qos_lock:
            left: dict[str, str] = {}  # what this pod's earlier containers left on a device
            for ctr in pod_devices:
                for d in ctr:
                    expected = "" if d.usedcores == 100 else want
                    if left.get(d.uuid, self._registered_qos.get(d.uuid, "")) != expected:
                        self._given_qos[d.uuid] = expected
                left.update({d.uuid: "" if d.usedcores == 100 else want for d in ctr})

    def allocate_response(self, req: AllocateInput) -> ContainerAllocation:
        out = ContainerAllocation()
        out.envs[VISIBLE_ENV] = ",".join(d.uuid for d in req.devices)
        out.envs["METAX_SGPU_VRAM_MIB"] = ",".join(str(d.usedmem) for d in req.devices)
        out.envs["METAX_SGPU_COMPUTE"] = ",".join(str(d.usedcores) for d in req.devices)
        return out
