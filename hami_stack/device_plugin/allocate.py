"""The device-plugin half of HAMi's bind protocol (contract sections 4.3, 4.4 and 6.1).

The scheduler's ``/bind`` locks the node (``hami.io/mutex.lock`` names the pod), marks the pod
``hami.io/bind-phase: allocating`` and binds it; the kubelet then calls Allocate, which carries only
anonymous virtual device IDs. Pod annotations are tenant-writable (with the webhook's opt-out label,
an UPDATE, ``spec.nodeName`` set directly or the webhook down), but Node objects are not: the node
lock is the extender's signature. So Allocate hands out devices only for the allocation the lock
vouches for:

1. the node lock names a pod (``<time>,<ns>,<name>``), is younger than the lock timeout (5 min), and
   that pod is Pending on this node with ``bind-phase: allocating``, a ``bind-time``,
   ``vgpu-node`` = this node and devices left to allocate. Anything else is refused
   (:class:`AllocateRefused`): no lock, a legacy or expired lock, a holder that is gone or elsewhere;
   upstream's fallback "first pending pod on the node" is gone, since it trusts annotations;
2. no *other* pod on the node is waiting for this resource (Pending, not yet admitted by the kubelet
   according to its status, not served by us). The kubelet does not say which pod an Allocate is for;
   with such a pod present the request may be that pod's, and serving the lock holder's allocation to
   it would hand the holder's devices to a pod the scheduler never placed. Refused too (fail closed);
3. for each container request pop the first non-empty segment of the to-allocate annotation (init
   containers first); its device count must be the kubelet's. The container gets the segment's GPUs
   whichever virtual IDs the kubelet picked: those are only a count per GPU (the kubelet reuses init
   containers' devices, and its per-GPU book-keeping is not the scheduler's), so requiring the same
   GPUs fails legitimate pods; GetPreferredAllocation steers the kubelet to them where it can;
4. answer with the family's env and mounts once the installed files they bind (the shim and its
   preload list) are regular files: the DaemonSet's postStart hook installs them while the plugin
   already serves, and a runtime makes an empty directory of a missing mount source, which would
   start the container unenforced and block every later install. A pod waits for them up to
   ``SHIM_WAIT_S`` and is then refused. Write the emptied to-allocate value back, and when no
   segment names NVIDIA any more set ``bind-phase: success`` and release the lock. A failure while
   serving the holder sets ``bind-phase: failed`` and releases the lock, as upstream does; a refusal
   touches neither the holder nor the lock (the request may not have been the holder's). Both fail
   Allocate with the reason (the kubelet reports ``UnexpectedAdmissionError``) and put a Warning event
   on the pods concerned.

GetPreferredAllocation uses the lock holder, without popping, to steer the kubelet to virtual IDs of
the GPUs the scheduler chose.

A kubelet that restarts between our answer and its own checkpoint write asks again for a pod we have
already served (``bind-phase: success``, lock released). Refusing would fail a pod the scheduler placed,
so the answer is repeated, but only from our own record of what we handed out (``served.json`` under the
hook path, 0600, never the tenant-writable annotations): the pod must be one we served, still bound here
and not yet admitted, the only pod that may be asking, and the request must match a container segment
of that record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import urllib3

from kubeclient.client import ApiError, Kube
from kubeletapi import deviceplugin_v1beta1_pb2 as api

from .. import faults
from ..devices.base import AllocateInput, ContainerAllocation, containers
from ..devices.nvidia import NvidiaFamily, physical_uuid
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol import hamicore
from ..protocol.assignment import (
    ContainerDevices,
    decode_pod_devices,
    encode_pod_devices,
    has_devices,
    pop_first_nonempty,
)
from ..protocol.errors import ProtocolError
from ..protocol.nodelock import DEFAULT_TIMEOUT, may_release, parse_lock
from .server import AllocateFailed

log = logging.getLogger("hami.device-plugin.allocate")

DEVICE_NUMBER_MISMATCH = "device number not matched"
REFUSED_REASON = "AllocationRefused"  # Warning event on a pod whose devices were not handed out
FAILED_REASON = "AllocationFailed"  # Warning event on the lock holder whose Allocate failed

SERVED_MEMORY = 4096
TRANSPORT_RETRY_S = 20.0  # how long a pod write is re-sent while the apiserver does not answer
SHIM_WAIT_S = 30.0  # how long Allocate waits for the postStart hook to install the shim
SHIM_POLL_S = 0.1

EventSink = Callable[[dict[str, Any], str, str, str], None]  # (pod, type, reason, message)


class AllocateRefused(AllocateFailed):
    """No allocation made by the scheduler vouches for this request; ``pods`` are the pods it may be for."""

    def __init__(self, message: str, pods: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.pods = list(pods)


def no_binding_pod_message(node: str) -> str:
    return f"no binding pod found on node {node}"


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _ref(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"


def _uid(pod: dict[str, Any] | None) -> str:
    return str(((pod or {}).get("metadata") or {}).get("uid", ""))


def requests_resource(pod: dict[str, Any], resource: str) -> bool:
    """Whether any container (init or app) asks for ``resource`` (limits or requests, non-zero)."""
    for c in containers(pod):
        res = c.get("resources") or {}
        for part in ("limits", "requests"):
            value = str((res.get(part) or {}).get(resource, "0")).strip()
            if value not in ("", "0"):
                return True
    return False


def awaiting_admission(pod: dict[str, Any]) -> bool:
    """Pending and not yet admitted by the kubelet, judged by what only the kubelet writes (status)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return (
        not meta.get("deletionTimestamp")
        and status.get("phase", "Pending") == "Pending"
        and not status.get("containerStatuses")
        and not status.get("initContainerStatuses")
    )


class Allocator:
    """Allocate and GetPreferredAllocation for one node's NVIDIA resource."""

    def __init__(
        self,
        kube: Kube,
        node: str,
        family: NvidiaFamily,
        *,
        hook_path: str = "/usr/local",
        pass_device_specs: bool = False,
        minors: Callable[[], dict[str, int]] = dict,
        cache_id: Callable[[], str] = lambda: str(uuidlib.uuid4()),
        memory_skew_mib: int | None = None,
        events: EventSink | None = None,
        lock_timeout: dt.timedelta = DEFAULT_TIMEOUT,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        served_path: Path | None = None,
        shim_wait_s: float = SHIM_WAIT_S,
    ) -> None:
        self.shim_wait_s = shim_wait_s
        self.memory_skew_mib = faults.memory_limit_skew_mib() if memory_skew_mib is None else memory_skew_mib
        self.kube = kube
        self.node = node
        self.family = family
        self.keys = family.keys
        self.resource = family.count_resource
        self.hook_path = hook_path
        self.pass_device_specs = pass_device_specs
        self.minors = minors
        self.cache_id = cache_id
        self.events = events
        self.lock_timeout = lock_timeout
        self.now = now
        # UIDs of pods whose allocation we completed (not forgeable), until the kubelet's status shows
        # them admitted; bounded, oldest first out (by then their status says so)
        self.served: dict[str, None] = {}
        # what we handed out per served pod (uid -> {"pod": ns/name, "devices": to-allocate value}),
        # persisted so a re-asking kubelet gets the same answer after either of us restarted
        self.served_path: Path | None = served_path
        self.records: dict[str, dict[str, str]] = {}
        self.reserved: dict[str, set[int]] = {}  # uid -> record segments answered again (this process)
        self._first: dict[str, str] = {}  # uid -> to-allocate value at the pod's first Allocate
        self._load_served()
        self._lock = threading.Lock()  # one Allocate at a time: they share the pod's annotation

    # --- finding the pod ---------------------------------------------------------------------------

    def _pod(self, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def _node_pods(self) -> list[dict[str, Any]]:
        pods = self.kube.get("/api/v1/pods", fieldSelector=f"spec.nodeName={self.node}")
        return list(pods.get("items") or [])

    def _waiting(self, pods: Sequence[dict[str, Any]], holder_uid: str = "") -> list[dict[str, Any]]:
        """Pods on this node that wait for this resource and are neither the lock holder nor served."""
        return [
            p
            for p in pods
            if _uid(p) != holder_uid
            and _uid(p) not in self.served
            and awaiting_admission(p)
            and requests_resource(p, self.resource)
        ]

    def _holder_problem(self, pod: dict[str, Any] | None, ref: str) -> str | None:
        """Why the lock holder cannot be served (None when it can)."""
        if pod is None:
            return f"the node lock holder {ref} does not exist"
        a = _annotations(pod)
        phase = (pod.get("status") or {}).get("phase", "Pending")
        checks = (
            ((pod.get("spec") or {}).get("nodeName") == self.node, f"is not bound to node {self.node}"),
            (phase == "Pending", f"is {phase}, not Pending"),
            (
                a.get(ann.BIND_PHASE) == ev.PHASE_ALLOCATING,
                f"has {ann.BIND_PHASE}={a.get(ann.BIND_PHASE)!r}, not {ev.PHASE_ALLOCATING!r}",
            ),
            (bool(a.get(ann.BIND_TIME)), f"has no {ann.BIND_TIME}"),
            (a.get(ann.VGPU_NODE) == self.node, f"has {ann.VGPU_NODE}={a.get(ann.VGPU_NODE)!r}"),
            (
                has_devices(a.get(self.keys.to_allocate, ""), [self.family.common_word]),
                f"has no {self.family.common_word} devices left in {self.keys.to_allocate}",
            ),
        )
        for ok, why in checks:
            if not ok:
                return f"the node lock holder {ref} {why}"
        return None

    def pending_pod(self) -> dict[str, Any]:
        """The pod the scheduler's node lock vouches for, or :class:`AllocateRefused`."""
        node = self.kube.get(f"/api/v1/nodes/{self.node}")
        value = _annotations(node).get(ann.NODE_LOCK)
        problem: str | None
        pod: dict[str, Any] | None = None
        if not value:
            problem = f"node {self.node} has no {ann.NODE_LOCK}: the HAMi scheduler bound no pod here"
        else:
            try:
                held = parse_lock(value)
            except ProtocolError as e:
                held, problem = None, f"node {self.node}: {e}"
            if held is not None and held.legacy:
                problem = f"node {self.node}: {ann.NODE_LOCK} {value!r} names no pod"
            elif held is not None:
                ref = f"{held.namespace}/{held.name}"
                age = self.now() - held.time
                if age > self.lock_timeout:
                    problem = f"node {self.node}: the lock of {ref} expired ({int(age.total_seconds())}s old)"
                else:
                    pod = self._pod(held.namespace, held.name)
                    problem = self._holder_problem(pod, ref)
        if problem is not None and faults.on("plugin-trusts-pod-annotations"):
            # upstream's way: the first pod on the node whose own annotations ask for devices
            for candidate in self._node_pods():
                asked = _annotations(candidate).get(self.keys.to_allocate, "")
                if has_devices(asked, [self.family.common_word]):
                    return candidate
        if problem is not None:
            waiting = self._waiting(self._node_pods())
            raise AllocateRefused(f"{no_binding_pod_message(self.node)}: {problem}", waiting)
        assert pod is not None
        others = self._waiting(self._node_pods(), _uid(pod))
        if others:
            names = ", ".join(_ref(p) for p in others)
            raise AllocateRefused(
                f"refusing {self.resource} on node {self.node}: pod(s) {names} also wait for it without "
                f"an allocation by the HAMi scheduler, and the request cannot be told apart from the "
                f"lock holder {_ref(pod)}'s",
                others,
            )
        return pod

    # --- GetPreferredAllocation ----------------------------------------------------------------------

    def preferred(self, available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
        picked = list(must_include)[:size]
        wanted: ContainerDevices = []
        try:
            pod = self.pending_pod()
            value = _annotations(pod).get(self.keys.to_allocate, "")
            wanted = next((c for c in decode_pod_devices(value, trim_trailing=True) if c), [])
        except (AllocateFailed, ProtocolError, ApiError) as e:
            log.info("no preference (%s); taking the first available devices", e)
        for dev in wanted:
            if len(picked) >= size:
                break
            if any(physical_uuid(p) == dev.uuid for p in picked):
                continue
            for vid in available:
                if vid not in picked and physical_uuid(vid) == dev.uuid:
                    picked.append(vid)
                    break
        for vid in available:
            if len(picked) >= size:
                break
            if vid not in picked:
                picked.append(vid)
        return picked

    # --- Allocate ------------------------------------------------------------------------------------

    def remember_served(self, uid: str, pod: str = "", devices: str = "") -> None:
        self.served[uid] = None
        if devices:
            self.records[uid] = {"pod": pod, "devices": devices}
        while len(self.served) > SERVED_MEMORY:
            del self.served[next(iter(self.served))]
        for old in [u for u in self.records if u not in self.served]:
            del self.records[old]
        self._save_served()

    def _load_served(self) -> None:
        if self.served_path is None:
            return
        try:
            data = json.loads(self.served_path.read_text())
            records = data["records"]
            if not isinstance(records, dict):
                raise ValueError("'records' is not an object")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            # a damaged record only costs the repeat answers: say so, never guess
            log.error("served-allocation record %s is unreadable (%s); starting without it",
                      self.served_path, e)
            return
        for uid, rec in records.items():
            if isinstance(rec, dict) and isinstance(rec.get("devices"), str):
                self.served[str(uid)] = None
                self.records[str(uid)] = {"pod": str(rec.get("pod", "")), "devices": rec["devices"]}

    def _save_served(self) -> None:
        if self.served_path is None:
            return
        try:
            self.served_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.served_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"version": 1, "records": self.records}, f, sort_keys=True)
            os.replace(tmp, self.served_path)
        except OSError as e:
            log.error("cannot write the served-allocation record %s: %s", self.served_path, e)

    def _served_again(self, refusal: AllocateRefused) -> dict[str, Any] | None:
        """The pod a repeated request is for (see the module doc), or None: then ``refusal`` stands."""
        if refusal.pods:  # someone we did not serve waits too: the request may be theirs
            return None
        candidates = []
        for p in self._node_pods():
            uid = _uid(p)
            if (
                uid in self.records
                and awaiting_admission(p)
                and (p.get("spec") or {}).get("nodeName") == self.node
                and _annotations(p).get(ann.BIND_PHASE) == ev.PHASE_SUCCESS
                and _ref(p) == self.records[uid]["pod"]
            ):
                candidates.append(p)
        return candidates[0] if len(candidates) == 1 else None

    def _answer_again(
        self, pod: dict[str, Any], requests: Sequence[Sequence[str]]
    ) -> list[api.ContainerAllocateResponse]:
        uid = _uid(pod)
        segments = decode_pod_devices(self.records[uid]["devices"])
        done = self.reserved.setdefault(uid, set())
        chosen: list[int] = []
        for ids in requests:
            index = next(
                (i for i, seg in enumerate(segments)
                 if seg and i not in done and i not in chosen and len(seg) == len(ids)),
                None,
            )
            if index is None:
                raise AllocateRefused(
                    f"pod {_ref(pod)} was served already and no recorded container allocation of "
                    f"{len(ids)} device(s) is left to repeat"
                )
            chosen.append(index)
        # answer exactly the chosen segments, in request order, through the normal path
        picked = [segments[i] if i in chosen else [] for i in range(len(segments))]
        order = sorted(range(len(chosen)), key=lambda k: chosen[k])
        answers, _ = self._allocate_pod(
            pod, [requests[k] for k in order], devices=encode_pod_devices(picked)
        )
        done.update(chosen)
        out: list[api.ContainerAllocateResponse] = [api.ContainerAllocateResponse()] * len(requests)
        for answer, k in zip(answers, order, strict=True):
            out[k] = answer
        log.info("Allocate repeated for pod %s (served before; the kubelet asked again)", _ref(pod))
        return out

    def _warn(self, pod: dict[str, Any], reason: str, message: str) -> None:
        if self.events is None:
            return
        try:
            self.events(pod, "Warning", reason, message)
        except Exception as e:  # an event must never change Allocate's answer
            log.warning("cannot record event %s on %s: %s", reason, _ref(pod), e)

    def allocate(self, requests: Sequence[Sequence[str]]) -> list[api.ContainerAllocateResponse]:
        with self._lock:
            try:
                pod = self.pending_pod()
            except AllocateRefused as e:
                again = None
                with contextlib.suppress(ApiError):
                    again = self._served_again(e)
                if again is not None:
                    return self._answer_again(again, requests)
                log.error("Allocate refused: %s", e)
                for p in e.pods:
                    self._warn(p, REFUSED_REASON, f"devices not handed out: {e}")
                raise
            except ApiError as e:
                raise AllocateFailed(f"cannot read the node lock or pods of node {self.node}: {e}") from e
            meta = pod.get("metadata") or {}
            ns, name = meta.get("namespace", "default"), meta.get("name", "")
            uid = _uid(pod)
            # a pod with several GPU containers is popped over several calls: record the whole
            self._first.setdefault(uid, _annotations(pod).get(self.keys.to_allocate, ""))
            try:
                responses, remaining = self._allocate_pod(pod, requests)
                self._patch_pod(ns, name, {self.keys.to_allocate: remaining})
                if not has_devices(remaining, [self.family.common_word]):
                    self._patch_pod(ns, name, {ann.BIND_PHASE: ev.PHASE_SUCCESS})
                    self.remember_served(uid, f"{ns}/{name}", self._first.pop(uid, ""))
                    try:
                        self.release_lock(ns, name)
                    except (ApiError, OSError, urllib3.exceptions.HTTPError) as e:
                        # the devices are handed out: failing now would reject a served pod; the
                        # extender takes over a lock whose holder has finished (bind-phase success)
                        log.warning("cannot release the lock of node %s after %s/%s: %s",
                                    self.node, ns, name, e)
                log.info("Allocate for pod %s/%s: %d container(s)", ns, name, len(responses))
                return responses
            except (AllocateFailed, ProtocolError, ApiError, OSError) as e:
                self._first.pop(uid, None)
                log.error("Allocate for pod %s/%s failed: %s", ns, name, e)
                self._warn(pod, FAILED_REASON, f"Allocate on node {self.node} failed: {e}")
                try:
                    self._patch_pod(ns, name, {ann.BIND_PHASE: ev.PHASE_FAILED})
                except ApiError as pe:
                    log.error("cannot mark pod %s/%s failed: %s", ns, name, pe)
                try:
                    self.release_lock(ns, name)
                except ApiError as le:
                    log.error("cannot release the lock of node %s: %s", self.node, le)
                raise AllocateFailed(str(e)) from e

    def _check_devices(self, devices: ContainerDevices, ids: Sequence[str], expected: int) -> None:
        if expected != len(ids):
            raise AllocateFailed(DEVICE_NUMBER_MISMATCH)
        asked = sorted(physical_uuid(i) for i in ids)
        allocated = sorted(d.uuid for d in devices)
        if asked != allocated:
            # Not an error: the kubelet's virtual IDs are only a count per GPU. It reuses init
            # containers' devices, and takes any free ID when the scheduler's GPU has none left in its
            # own book-keeping; the container gets the scheduler's GPUs (env and limits), as upstream.
            log.info("kubelet picked GPUs %s; serving the scheduler's %s", asked, allocated)

    def _allocate_pod(
        self, pod: dict[str, Any], requests: Sequence[Sequence[str]], devices: str | None = None
    ) -> tuple[list[api.ContainerAllocateResponse], str]:
        value = _annotations(pod).get(self.keys.to_allocate, "") if devices is None else devices
        # untrimmed, as HAMi decodes it: the empty piece after the final ";" stays a (never used)
        # container, so what is left is written back HAMi's way (";;" for a one-container pod)
        pod_devices = decode_pod_devices(value)
        specs = containers(pod)
        uid = (pod.get("metadata") or {}).get("uid", "")
        out = []
        deadline = time.monotonic() + self.shim_wait_s
        for ids in requests:
            index, devices, pod_devices = pop_first_nonempty(pod_devices)
            spec = specs[index] if index < len(specs) else {}
            expected = self.family.kubelet_device_count(devices, spec.get("name", ""), _annotations(pod))
            self._check_devices(devices, ids, expected)
            env = {e["name"]: str(e.get("value", "")) for e in spec.get("env") or [] if "name" in e}
            alloc = self.family.allocate_response(
                AllocateInput(
                    devices=devices,
                    pod_uid=uid,
                    container_name=spec.get("name", ""),
                    container_env=env,
                    cache_id=self.cache_id(),
                    hook_path=self.hook_path,
                    libvgpu_name=self._libvgpu_name(),
                    license_present=Path(self.hook_path, "vgpu", "license").exists(),
                    pod_annotations=dict(_annotations(pod)),
                )
            )
            faults.skew_memory_limits(alloc.envs, self.memory_skew_mib)
            if faults.active():
                _fault_allocation(alloc)
            if self.pass_device_specs:
                minors = self.minors()
                alloc.devices.extend(
                    self.family.device_specs([minors[d.uuid] for d in devices if d.uuid in minors])
                )
            self._await_installed(alloc.installed_files, deadline)
            self._make_dirs(alloc)
            out.append(to_proto(alloc))
        return out, encode_pod_devices(pod_devices)

    def _await_installed(self, paths: Sequence[str], deadline: float) -> None:
        """Fail closed unless every installed file the answer mounts is a regular file.

        The DaemonSet's postStart hook installs the shim while this process already serves, so a pod
        admitted right after a (re)start waits here for it; after the deadline the pod is refused
        rather than started with an empty directory the runtime made for the missing mount source."""
        for path in paths:
            while not os.path.isfile(path) and time.monotonic() < deadline:
                time.sleep(SHIM_POLL_S)
            if os.path.isfile(path):
                continue
            what = "a directory, not a file" if os.path.isdir(path) else "missing"
            raise AllocateFailed(
                f"the enforcement shim is not installed on node {self.node}: {path} is {what} after "
                f"{self.shim_wait_s:g} s (the device plugin's postStart hook installs it)"
            )

    def _libvgpu_name(self) -> str:
        vgpu = Path(self.hook_path, "vgpu")
        versioned = sorted(p.name for p in vgpu.glob("libvgpu.so.*")) if vgpu.is_dir() else []
        return versioned[-1] if versioned else "libvgpu.so"

    @staticmethod
    def _make_dirs(alloc: ContainerAllocation) -> None:
        for d in alloc.host_dirs:
            path = Path(d)
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
            path.chmod(0o777)  # the container's processes may run as any user

    # --- API writes ----------------------------------------------------------------------------------

    def _patch_pod(self, ns: str, name: str, values: dict[str, str]) -> None:
        # A merge patch of fixed annotation values is idempotent, so a write whose answer was lost
        # (the apiserver restarting mid-request) is sent again. Giving up instead left a pod whose
        # to-allocate value was already spent, and every retry of the kubelet was then refused.
        deadline = time.monotonic() + TRANSPORT_RETRY_S
        delay = 0.2
        while True:
            try:
                self.kube.patch(
                    f"/api/v1/namespaces/{ns}/pods/{name}", {"metadata": {"annotations": values}}, "merge"
                )
                return
            except ApiError:
                raise
            except (OSError, urllib3.exceptions.HTTPError) as e:
                if time.monotonic() + delay > deadline:
                    raise AllocateFailed(f"cannot write the annotations of pod {ns}/{name}: {e}") from e
                log.warning("patch of pod %s/%s got no answer (%s); sending it again", ns, name, e)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def release_lock(self, ns: str, name: str, attempts: int = 5) -> bool:
        """Delete the node lock if ``ns/name`` holds it (guarded by resourceVersion, retried on conflict)."""
        if faults.on("nodelock-never-released"):
            return False
        for _ in range(attempts):
            node = self.kube.get(f"/api/v1/nodes/{self.node}")
            current = _annotations(node).get(ann.NODE_LOCK)
            if not may_release(current, ns, name):
                return False
            patch = {
                "metadata": {
                    "annotations": {ann.NODE_LOCK: None},
                    "resourceVersion": (node.get("metadata") or {}).get("resourceVersion"),
                }
            }
            try:
                self.kube.patch(f"/api/v1/nodes/{self.node}", patch, "merge")
                return True
            except ApiError as e:
                if e.status != 409:
                    raise
        return False


def _fault_allocation(alloc: ContainerAllocation) -> None:
    """The device-plugin faults that make Allocate answer a wrong container environment."""
    if faults.on("plugin-no-core-limit"):
        alloc.envs[hamicore.SM_LIMIT_ENV] = "0"
    visible = alloc.envs.get("NVIDIA_VISIBLE_DEVICES", "")
    if faults.on("plugin-visible-all-devices"):
        alloc.envs["NVIDIA_VISIBLE_DEVICES"] = "all"
    elif faults.on("plugin-visible-first-device-only") and "," in visible:
        alloc.envs["NVIDIA_VISIBLE_DEVICES"] = visible.split(",")[0]
    if faults.on("plugin-limit-first-device-only"):
        for key in [k for k in alloc.envs if k.startswith(hamicore.MEMORY_LIMIT_ENV_PREFIX)]:
            if key.removeprefix(hamicore.MEMORY_LIMIT_ENV_PREFIX) not in ("0", ""):
                del alloc.envs[key]
    if faults.on("plugin-no-preload-mount"):
        alloc.mounts[:] = [m for m in alloc.mounts if m.container_path != "/etc/ld.so.preload"]
    if faults.on("plugin-no-region-mount"):
        alloc.mounts[:] = [m for m in alloc.mounts if "/containers/" not in m.host_path]


def to_proto(alloc: ContainerAllocation) -> api.ContainerAllocateResponse:
    resp = api.ContainerAllocateResponse(envs=alloc.envs, annotations=alloc.annotations)
    for m in alloc.mounts:
        resp.mounts.add(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
    for d in alloc.devices:
        resp.devices.add(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions)
    return resp
