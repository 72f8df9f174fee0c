"""The scheduler's usage cache: registered node devices and what pods already hold on them.

Fed incrementally (informer handlers and the registration loop call in; nothing here lists):

* nodes: the registration loop sets a node's devices per family (:meth:`UsageCache.set_node_family`)
  and drops them (:meth:`drop_node_family`); the latest Node object is kept for fit-time
  annotations (``hami.io/device-cordon``, topology scores).
* pods: a non-terminal pod carrying ``hami.io/vgpu-node`` and a family's allocated (else to-allocate)
  annotation counts on that node (:meth:`on_pod`), bound or not: usage is derived from what the
  apiserver holds, so rebuilding the cache from a list of pods gives the same counts. ``/filter``
  reserves its decision under the pod UID before answering (:meth:`reserve`, *pending* while its
  patch is in flight, then :meth:`confirm`-ed with the patched resourceVersion); the informer's copy
  of the same pod then replaces the reservation with identical usage, so a pod is never counted
  twice. Events older than what an entry already reflects (by resourceVersion) are ignored, so a
  lagging informer cannot put back a decision that was replaced or withdrawn.
* a failed bind of a pod that is *not* bound withdraws its usage (:meth:`release`); a pod the
  apiserver shows bound is never withdrawn on an error path.
* per-pod usage is collapsed as section 5.6 says: per device, memory and cores are
  ``max(peak over init containers, sum over app containers)`` and slots ``max(1 if an init
  container uses it, app occurrences)``; once every init container exited 0 only app usage counts.

Every change to a node's usage bumps its ``generation``; fit results are memoised per generation.
All methods are thread-safe (one lock; handlers are quick).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import faults
from ..devices.base import SLOTS_BY_MEMORY, DeviceFamily, DeviceUsage, slots_taken
from ..protocol import annotations as ann
from ..protocol.assignment import PodDevices, decode_pod_devices
from ..protocol.errors import ProtocolError
from ..protocol.register import DeviceInfo

log = logging.getLogger("hami.scheduler.cache")
Obj = dict[str, Any]
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class DeviceCharge:
    """One pod's collapsed usage of one device."""

    family: str
    device: str
    slots: int
    mem: int
    cores: int
    # per-assignment memory (app containers, and the init peak): a device whose assignments take
    # several slots each (Enflame DRS) recounts its slots from these
    app_mems: tuple[int, ...] = ()
    init_mem: int | None = None
    note: Any = None  # the family's note about the pod (DeviceFamily.usage_note), kept on the device


@dataclass
class PodEntry:
    uid: str
    namespace: str
    name: str
    node: str
    devices: dict[str, PodDevices]  # family -> raw per-container assignment (init first)
    charges: list[DeviceCharge]
    reserved: bool = False  # written by this scheduler's /filter, not yet seen with annotations
    pending: bool = False  # reserved and its annotation patch not answered yet: ignore pod events
    rv: int | None = None  # resourceVersion this entry reflects (None: unknown, any event applies)


@dataclass
class NodeEntry:
    name: str
    families: dict[str, list[DeviceUsage]] = field(default_factory=dict)  # usage counters live here
    generation: int = 0
    fit_memo: dict[Any, Any] = field(default_factory=dict)

    def bump(self) -> None:
        self.generation += 1
        self.fit_memo.clear()

    def all_devices(self) -> list[DeviceUsage]:
        return [d for devs in self.families.values() for d in devs]

    def snapshot(self) -> dict[str, list[DeviceUsage]]:
        """A private working copy of the node's devices with their usage (callers hold the cache lock)."""
        return {cw: [clone(d) for d in devs] for cw, devs in self.families.items()}


def clone(d: DeviceUsage) -> DeviceUsage:
    """A shallow copy of a device for a private working snapshot (``custom_info`` is never mutated).

    About 10x cheaper than ``copy.copy``/``dataclasses.replace``; filter copies every device of every
    candidate node, so this is the hottest line of a cold filter.
    """
    new = object.__new__(DeviceUsage)
    new.__dict__.update(d.__dict__)
    return new


def apply_charges(families: dict[str, list[DeviceUsage]], charges: Iterable[DeviceCharge], sign: int) -> None:
    """Add (``sign`` 1) or take back (-1) a pod's collapsed usage on a node's devices."""
    for c in charges:
        for d in families.get(c.family, ()):
            if d.id == c.device:
                d.used += sign * _charge_slots(d, c)
                d.usedmem += sign * c.mem
                d.usedcores += sign * c.cores
                if c.note is not None:  # one note per slot, as the pod counts in ``used``
                    d.pods = d.pods + (c.note,) * c.slots if sign > 0 else _without(d.pods, c.note, c.slots)
                break


def _without(notes: tuple[Any, ...], note: Any, n: int) -> tuple[Any, ...]:
    """``notes`` less ``n`` occurrences of ``note`` (the last ones)."""
    out = list(notes)
    for _ in range(n):
        if note not in out:
            break
        del out[len(out) - 1 - out[::-1].index(note)]
    return tuple(out)


def with_notes(charges: list[DeviceCharge], pod: Obj, by_cw: dict[str, DeviceFamily]) -> list[DeviceCharge]:
    """The charges with each family's note about ``pod`` (families that keep none: unchanged)."""
    out = []
    for c in charges:
        fam = by_cw.get(c.family)
        note = fam.usage_note(pod, c.cores) if fam is not None else None
        out.append(c if note is None else replace(c, note=note))
    return out


def _charge_slots(d: DeviceUsage, c: DeviceCharge) -> int:
    if not d.custom_info.get(SLOTS_BY_MEMORY):
        return c.slots
    app = sum(slots_taken(d, m) for m in c.app_mems)
    return max(slots_taken(d, c.init_mem) if c.init_mem is not None else 0, app)


def collapse(devices: dict[str, PodDevices], n_init: int, init_done: bool) -> list[DeviceCharge]:
    """Section 5.6: one charge per (family, device) from the per-container assignment."""
    out: list[DeviceCharge] = []
    for cw, pod_devices in devices.items():
        init: dict[str, list[int]] = {}  # id -> [peak mem, peak cores]
        app: dict[str, list[int]] = {}  # id -> [count, mem, cores]
        app_mems: dict[str, list[int]] = {}
        for pos, ctr in enumerate(pod_devices):
            is_init = pos < n_init
            if is_init and init_done:
                continue
            for d in ctr:
                if is_init:
                    peak = init.setdefault(d.uuid, [0, 0])
                    peak[0] = max(peak[0], d.usedmem)
                    peak[1] = max(peak[1], d.usedcores)
                else:
                    acc = app.setdefault(d.uuid, [0, 0, 0])
                    acc[0] += 1
                    acc[1] += d.usedmem
                    acc[2] += d.usedcores
                    app_mems.setdefault(d.uuid, []).append(d.usedmem)
        for dev_id in dict.fromkeys(list(init) + list(app)):
            i = init.get(dev_id, [0, 0])
            a = app.get(dev_id, [0, 0, 0])
            slots = max(1 if dev_id in init else 0, a[0])
            out.append(
                DeviceCharge(
                    cw,
                    dev_id,
                    slots,
                    max(i[0], a[1]),
                    max(i[1], a[2]),
                    tuple(app_mems.get(dev_id, ())),
                    i[0] if dev_id in init else None,
                )
            )
    return out


def init_containers_done(pod: Obj) -> bool:
    """Every init container terminated with exit code 0 (so their usage no longer counts)."""
    spec_inits = (pod.get("spec") or {}).get("initContainers") or []
    if not spec_inits:
        return True
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    if len(statuses) < len(spec_inits):
        return False
    for s in statuses:
        term = (s.get("state") or {}).get("terminated")
        if not term or term.get("exitCode") != 0:
            return False
    return True


def resource_version(obj: Obj) -> int | None:
    """An object's resourceVersion as a number (etcd revisions are), None when absent or opaque."""
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


def pod_charges(pod: Obj, families: Sequence[DeviceFamily]) -> list[DeviceCharge] | None:
    """The pod's usage as its annotations give it (init containers counted); None when malformed."""
    devices = pod_devices_from_annotations(pod, families)
    if devices is None:
        return None
    return collapse(devices, len((pod.get("spec") or {}).get("initContainers") or []), False)


def same_charges(a: Iterable[DeviceCharge], b: Iterable[DeviceCharge]) -> bool:
    """The same usage (a family's note about the pod is not part of it)."""

    def key(c: DeviceCharge) -> tuple[str, str, int, int, int]:
        return (c.family, c.device, c.slots, c.mem, c.cores)

    return sorted(map(key, a)) == sorted(map(key, b))


def pod_devices_from_annotations(pod: Obj, families: Sequence[DeviceFamily]) -> dict[str, PodDevices] | None:
    """The families' assignments on a pod; None when any value is malformed (the pod is skipped whole)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    out: dict[str, PodDevices] = {}
    for f in families:
        key = f.keys.allocated or f.keys.to_allocate
        value = annotations.get(key) if key else None
        if not value:
            continue
        if not _asks_family(pod, f):
            # a tenant can write annotations on a pod that asks no device (the webhook only checks
            # device pods); charging it would let that pod block a GPU it never uses
            meta = pod.get("metadata") or {}
            log.warning("pod %s/%s carries %s but requests no %s: not charged",
                        meta.get("namespace"), meta.get("name"), key, f.count_resource)
            continue
        try:
            out[f.common_word] = decode_pod_devices(value, trim_trailing=True)
        except ProtocolError as e:
            meta = pod.get("metadata") or {}
            log.error(
                "pod %s/%s: %s annotation rejected: %s", meta.get("namespace"), meta.get("name"), key, e
            )
            return None
    return out


def _asks_family(pod: Obj, family: DeviceFamily) -> bool:
    """Whether any container of the pod requests the family's devices (its spec, not its annotations)."""
    try:
        return any(r is not None for r in family.pod_requests(pod))
    except (ValueError, TypeError, ProtocolError):
        return False


def _stale(entry: PodEntry, rv: int | None) -> bool:
    """An event that must not replace ``entry``: it predates what the entry reflects."""
    if entry.pending:
        return True
    return entry.rv is not None and (rv is None or rv < entry.rv)


class UsageCache:
    def __init__(self, families: Sequence[DeviceFamily]) -> None:
        self.families = list(families)
        self.by_cw = {f.common_word: f for f in self.families}
        self._lock = threading.RLock()
        self.nodes: dict[str, NodeEntry] = {}
        self.node_objs: dict[str, Obj] = {}
        self.pods: dict[str, PodEntry] = {}
        self._by_node: dict[str, set[str]] = {}
        self._released: set[str] = set()  # bind failed: ignore the pod's stale annotations
        # (namespace, family) -> [memory, cores] held by the namespace's pods
        self.ns_usage: dict[tuple[str, str], list[int]] = {}
        self.version = 0  # bumps on any change (quota memo, metrics)

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    # --- nodes -----------------------------------------------------------------------------
    def on_node(self, kind: str, node: Obj) -> None:
        name = (node.get("metadata") or {}).get("name", "")
        with self._lock:
            if kind == "DELETED":
                self.node_objs.pop(name, None)
                if self.nodes.pop(name, None) is not None:
                    self.version += 1
                return
            self.node_objs[name] = node
            entry = self.nodes.get(name)
            if entry is not None:
                entry.bump()  # cordon / topology annotations may have changed

    def set_node_family(self, name: str, cw: str, devices: Sequence[DeviceInfo]) -> None:
        with self._lock:
            entry = self.nodes.setdefault(name, NodeEntry(name))
            entry.families[cw] = [DeviceUsage.from_info(d) for d in devices]
            self._recount(entry)

    def drop_node_family(self, name: str, cw: str) -> None:
        with self._lock:
            entry = self.nodes.get(name)
            if entry is None or cw not in entry.families:
                return
            del entry.families[cw]
            if not entry.families:
                del self.nodes[name]
                self.version += 1
            else:
                self._recount(entry)

    def has_family(self, name: str, cw: str) -> bool:
        with self._lock:
            entry = self.nodes.get(name)
            return entry is not None and cw in entry.families

    def _recount(self, entry: NodeEntry) -> None:
        for devs in entry.families.values():
            for d in devs:
                d.used = d.usedmem = d.usedcores = 0
                d.pods = ()
        for uid in self._by_node.get(entry.name, ()):
            apply_charges(entry.families, self.pods[uid].charges, 1)
        entry.bump()
        self.version += 1

    def snapshot(self, name: str) -> dict[str, list[DeviceUsage]] | None:
        """A private copy of a registered node's devices with their usage (None when unregistered)."""
        with self._lock:
            entry = self.nodes.get(name)
            if entry is None:
                return None
            return entry.snapshot()

    # --- pods ------------------------------------------------------------------------------
    def on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        phase = (pod.get("status") or {}).get("phase")
        if (kind == "DELETED" or phase in TERMINAL_PHASES) and not faults.on("scheduler-leaks-deleted-pods"):
            with self._lock:
                self._released.discard(uid)
                self.remove_pod(uid)
            return
        rv = resource_version(pod)
        bound = bool((pod.get("spec") or {}).get("nodeName"))
        annotations = meta.get("annotations") or {}
        node = annotations.get(ann.VGPU_NODE)
        devices = pod_devices_from_annotations(pod, self.families) if node else None
        charges: list[DeviceCharge] = []
        if devices is not None:
            n_init = len((pod.get("spec") or {}).get("initContainers") or [])
            charges = with_notes(collapse(devices, n_init, init_containers_done(pod)), pod, self.by_cw)
        with self._lock:
            old = self.pods.get(uid)
            if old is not None and _stale(old, rv):
                return
            if uid in self._released and not bound:
                return  # a failed bind withdrew it; stale annotations until the cleanup lands
            if not node or devices is None:
                # no decision (any more), or a malformed one: the pod holds nothing
                if old is not None:
                    self.remove_pod(uid)
                return
            if old is not None and old.node == node and old.charges == charges:
                old.reserved, old.rv = False, rv
                return
            self._put(
                PodEntry(uid, meta.get("namespace", ""), meta.get("name", ""), node, devices, charges, rv=rv)
            )

    def reserve(self, pod: Obj, node: str, devices: dict[str, PodDevices]) -> None:
        """Count a /filter decision immediately, before the pod's annotations come back.

        The entry stays *pending* (pod events ignored) until :meth:`confirm` gives the resourceVersion
        the annotation patch produced; events older than that cannot replace the decision.
        """
        meta = pod.get("metadata") or {}
        n_init = len((pod.get("spec") or {}).get("initContainers") or [])
        charges = with_notes(collapse(devices, n_init, False), pod, self.by_cw)
        with self._lock:
            uid = meta.get("uid", "")
            self._released.discard(uid)
            self._put(
                PodEntry(
                    uid, meta.get("namespace", ""), meta.get("name", ""), node, devices, charges, True, True
                )
            )

    def confirm(self, uid: str, rv: int | None) -> None:
        """The reservation's annotations are written (at ``rv``, when known): pod events apply again."""
        with self._lock:
            entry = self.pods.get(uid)
            if entry is not None and entry.pending:
                entry.pending = False
                entry.rv = rv

    def release(self, uid: str) -> None:
        """Withdraw a pod's usage after a failed bind of an *unbound* pod.

        Its annotations are ignored until it is bound, deleted or filtered again (the extender also
        removes them from the pod). Never call this for a pod the apiserver shows bound.
        """
        with self._lock:
            self._released.add(uid)
            self.remove_pod(uid)

    def check_bind(self, uid: str, node: str) -> str | None:
        """Why binding pod ``uid`` to ``node`` must be refused, or None when its decision still fits.

        The pod's own decision must be counted on ``node``, and every device it charges must be
        within capacity with everything else counted there (slots, memory and cores).
        """
        with self._lock:
            entry = self.pods.get(uid)
            if entry is None:
                return "it has no filter decision (it was not filtered, or its decision was withdrawn)"
            if entry.node != node:
                return f"its filter decision is node {entry.node}, not {node}"
            node_entry = self.nodes.get(node)
            if node_entry is None:
                return f"node {node} is not registered"
            for c in entry.charges:
                dev = next((d for d in node_entry.families.get(c.family, ()) if d.id == c.device), None)
                if dev is None:
                    return f"device {c.device} ({c.family}) is not registered on node {node}"
                for what, used, total, unit in (
                    ("slots", dev.used, dev.count, ""),
                    ("memory", dev.usedmem, dev.totalmem, " MiB"),
                    ("cores", dev.usedcores, dev.totalcore, "%"),
                ):
                    if used > total and not _fault_ignores(what):
                        return (
                            f"device {c.device} on node {node} would be over-committed: "
                            f"{what} {used}/{total}{unit}"
                        )
            return None

    def _put(self, entry: PodEntry) -> None:
        self.remove_pod(entry.uid)
        self.pods[entry.uid] = entry
        self._by_node.setdefault(entry.node, set()).add(entry.uid)
        node = self.nodes.get(entry.node)
        if node is not None:
            apply_charges(node.families, entry.charges, 1)
            node.bump()
        self._ns_apply(entry, 1)
        self.version += 1

    def remove_pod(self, uid: str) -> PodEntry | None:
        with self._lock:
            entry = self.pods.pop(uid, None)
            if entry is None:
                return None
            self._by_node.get(entry.node, set()).discard(uid)
            node = self.nodes.get(entry.node)
            if node is not None:
                apply_charges(node.families, entry.charges, -1)
                node.bump()
            self._ns_apply(entry, -1)
            self.version += 1
            return entry

    def _ns_apply(self, entry: PodEntry, sign: int) -> None:
        for c in entry.charges:
            acc = self.ns_usage.setdefault((entry.namespace, c.family), [0, 0])
            acc[0] += sign * c.mem
            acc[1] += sign * c.cores

    def namespace_usage(self, namespace: str, cw: str) -> tuple[int, int]:
        with self._lock:
            mem, cores = self.ns_usage.get((namespace, cw), (0, 0))
            return mem, cores

    def pods_on(self, node: str) -> list[PodEntry]:
        with self._lock:
            return [self.pods[u] for u in self._by_node.get(node, ()) if u in self.pods]

    def pod(self, uid: str) -> PodEntry | None:
        with self._lock:
            return self.pods.get(uid)


def _fault_ignores(what: str) -> bool:
    """Scheduler faults that stop the bind-time re-check from seeing an over-commit (hami_stack/faults)."""
    if what == "slots":
        return faults.on("scheduler-ignores-slot-count")
    if what == "memory":
        return faults.on("scheduler-ignores-used-memory") or faults.on("scheduler-ignores-memory-fit")
    return faults.on("scheduler-ignores-used-cores")
