"""``/filter`` and ``/bind`` (sections 4.1, 4.3, 5.1): decisions against the usage cache, then the writes.

Filter (nodeCacheCapable path, ``NodeNames`` given): first the pod named in the request must be the
pod being scheduled (it exists in the apiserver with that UID, unbound, not terminating, for this
scheduler name), else the answer is ``Error`` and nothing is written. Under the cache lock, drop the pod's own
earlier allocation, fit every candidate (memoised per node generation and pod signature), pick
the best node and *reserve* the decision under the pod UID, so a concurrent filter for another
pod already sees it. Then, outside the lock, merge-patch the pod (``hami.io/vgpu-node`` label and
annotation, ``hami.io/vgpu-time``, each family's to-allocate/allocated value,
``hami.io/bind-phase: allocating``) before answering with exactly one node. A failed patch drops
the reservation and answers ``Error``. Full ``Nodes`` in the request is the simulation path
(cluster-autoscaler): devices come from those Node objects, nothing is written or reserved.

Bind: read the pod from the apiserver; refuse a bound, foreign, terminating or undecided pod (see
:meth:`Extender.bind`); lock the node for the lock-using families (PodGroup members retry contention
every 100 ms up to ``node_lock_retry``); re-check under that lock that the decision still fits the
current usage; patch ``bind-phase``/``bind-time``; create the Binding. A failure releases the lock;
an unbound pod's decision is then withdrawn (cache and annotations), a bound pod keeps counting.
Both answer HTTP 200 (the server answers 4xx for malformed bodies); events go out in the background.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubeclient.client import ApiError, Kube

from .. import faults
from ..devices.base import DeviceFamily, DeviceUsage
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.errors import ProtocolError
from ..protocol.nodelock import DEFAULT_TIMEOUT, NodeLockContention
from ..protocol.policy import BINPACK, SPREAD
from . import nodelock
from .cache import UsageCache, apply_charges, pod_charges, resource_version, same_charges
from .decide import FilterOutcome, NodeFit, PodPlan, choose, fit_node, plan_pod
from .quota import QuotaCache
from .recorder import EventRecorder
from .wire import BindArgs, FilterArgs, bind_result, filter_result

log = logging.getLogger("hami.scheduler.extender")
Obj = dict[str, Any]
PodGetter = Callable[[str, str], "Obj | None"]
MEMO_LIMIT = 256


@dataclass(frozen=True)
class ExtenderOptions:
    scheduler_name: str = "hami-scheduler"
    node_policy: str = BINPACK
    gpu_policy: str = SPREAD
    node_lock_timeout: dt.timedelta = DEFAULT_TIMEOUT
    node_lock_retry: float = 28.0  # PodGroup members' retry window on contention
    sync_timeout: float = 30.0  # /filter waits this long for the first registration pass


class Extender:
    def __init__(
        self,
        kube: Kube | None,
        families: Sequence[DeviceFamily],
        options: ExtenderOptions | None = None,
        *,
        cache: UsageCache | None = None,
        quotas: QuotaCache | None = None,
        recorder: EventRecorder | None = None,
        synced: Callable[[float], bool] | None = None,
        pod_getter: PodGetter | None = None,
    ) -> None:
        self.kube = kube
        self.families = sorted(families, key=lambda f: f.common_word)
        self.options = options or ExtenderOptions()
        self.cache = cache or UsageCache(self.families)
        self.quotas = quotas or QuotaCache(self.families, self.cache)
        self.recorder = recorder
        self._synced = synced
        self._pod_getter = pod_getter
        self.filter_count = 0
        self.bind_count = 0
        # pods whose /bind is being answered (uid -> node). kube-scheduler before 1.22 re-queues a pod
        # updated during its own scheduling cycle (the decision patch), and so may filter it again
        # while its first bind is still running: that filter must neither make a second decision
        # (it would replace the one being bound) nor see the first bind's withdrawal clear its own
        self._binding: dict[str, str] = {}
        self._binding_lock = threading.Lock()

    # --- filter ----------------------------------------------------------------------------
    def filter(self, args: FilterArgs) -> Obj:
        pod = args.pod
        try:
            plan = plan_pod(pod, self.families, self.options.node_policy, self.options.gpu_policy)
        except ProtocolError as e:
            return filter_result(error=str(e))
        if plan.empty:
            if args.nodes is not None:
                return filter_result(nodes=args.nodes, node_names=args.node_names)
            return filter_result(node_names=args.node_names or [])
        if args.nodes is not None:
            return self._simulate(pod, plan, args.nodes)
        if self._synced is not None and not self._synced(self.options.sync_timeout):
            return filter_result(error="scheduler has not completed a node registration pass yet")
        names = args.node_names or []
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        # only the pod being scheduled is ever patched: it must exist with this UID, unbound
        live, problem = self._schedulable(pod)
        if problem:
            return filter_result(error=problem)
        with self._binding_lock:
            binding_to = self._binding.get(uid) or self._binding.get(_pod_key(meta))
        if binding_to is not None:
            # a second cycle of a pod whose bind is under way: the node already decided, unchanged
            # (the scheduler cannot assume the pod twice; if the bind fails the pod comes round again)
            if binding_to in names:
                return filter_result(node_names=[binding_to])
            busy = f"its bind to {binding_to} is under way"
            return filter_result(node_names=[], failed={n: busy for n in names})
        with self.cache.lock:
            self.cache.remove_pod(uid)  # a re-scheduled pod no longer holds its old decision
            outcome = self._decide(pod, plan, names)
            if outcome.best is not None:
                self.cache.reserve(pod, outcome.best, outcome.fits[outcome.best].devices)
        self.filter_count += 1
        if outcome.best is None:
            for message in outcome.failure_messages():  # one event per reason, as HAMi
                self._event(pod, "Warning", ev.FILTERING_FAILED, message)
            for family, _ in plan.requests:  # no candidate node has this family's devices at all
                hint = family.no_devices_message()
                if hint and not any(self.cache.has_family(n, family.common_word) for n in names):
                    self._event(pod, "Warning", ev.FILTERING_FAILED, hint)
            if live is not None and _carries_decision(live):
                self._withdraw(live)  # an earlier decision must not keep counting, nor stay on the pod
            return filter_result(node_names=None, failed=outcome.failed)
        best = outcome.best
        try:
            patched = self._patch_decision(pod, plan, best, outcome.fits[best], live)
            self.cache.confirm(uid, resource_version(patched) if patched else None)
        except (ApiError, OSError) as e:
            # never left pending (its pod's events would be ignored); and should the patch have
            # landed after all, its unbound decision is not counted and is taken off the pod
            self.cache.release(uid)
            self._reconcile(meta.get("namespace") or "default", meta.get("name") or "", uid)
            self._event(pod, "Warning", ev.FILTERING_FAILED, f"patch pod annotations failed: {e}")
            return filter_result(
                error=f"patch pod {meta.get('namespace')}/{meta.get('name')} annotations: {e}"
            )
        self._event(pod, "Normal", ev.FILTERING_SUCCEED, outcome.success_message())
        return filter_result(node_names=[best], failed=outcome.failed)

    def _decide(self, pod: Obj, plan: PodPlan, names: Sequence[str]) -> FilterOutcome:
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        has_quota = bool(self.quotas.limits(namespace)) and not faults.on("scheduler-ignores-quota")

        quota_fits = self.quotas.fits if has_quota else None
        signature = None if has_quota else plan.signature(pod)
        fits: dict[str, NodeFit] = {}
        failed: dict[str, str] = {}
        failed_types: dict[str, tuple[str, ...]] = {}
        nodes = self.cache.nodes
        for name in names:
            entry = nodes.get(name)
            if entry is None:
                failed[name] = ev.NODE_UNREGISTERED
                failed_types[name] = (ev.NODE_UNREGISTERED,)
                continue
            result = entry.fit_memo.get(signature) if signature is not None else None
            if result is None:
                result = fit_node(pod, plan, self.cache.node_objs.get(name), entry.snapshot(), quota_fits)
                if signature is not None:
                    if len(entry.fit_memo) >= MEMO_LIMIT:
                        entry.fit_memo.clear()
                    entry.fit_memo[signature] = result
            if result.ok:
                fits[name] = result
            else:
                failed[name] = result.reason
                failed_types[name] = result.reason_types
        return choose(fits, failed, failed_types, plan.node_policy)

    def _schedulable(self, pod: Obj) -> tuple[Obj | None, str]:
        """The apiserver's copy of the pod /filter was asked about, or why it must not be patched.

        Without any apiserver (decision-only use in tests and the benchmark) there is nothing to
        patch and the request's pod is taken as it is.
        """
        if self.kube is None and self._pod_getter is None:
            return None, ""
        meta = pod.get("metadata") or {}
        ns, name, uid = meta.get("namespace") or "default", meta.get("name") or "", meta.get("uid") or ""
        try:
            live = self._live_pod(ns, name)
        except (ApiError, OSError) as e:
            return None, f"get pod {ns}/{name}: {e}"
        if live is None:
            return None, f"pod {ns}/{name} does not exist; nothing was patched"
        problem = self._not_schedulable(live, uid)
        return (None, problem) if problem else (live, "")

    def _not_schedulable(self, live: Obj, uid: str) -> str:
        meta, spec = live.get("metadata") or {}, live.get("spec") or {}
        ns, name = meta.get("namespace") or "default", meta.get("name") or ""
        if uid != (meta.get("uid") or ""):
            return f"pod {ns}/{name} has UID {meta.get('uid')!r} in the apiserver, the request names {uid!r}"
        if spec.get("nodeName"):
            return f"pod {ns}/{name} is already bound to node {spec['nodeName']}"
        if meta.get("deletionTimestamp"):
            return f"pod {ns}/{name} is terminating"
        want = self.options.scheduler_name
        if want and spec.get("schedulerName") != want:
            return f"pod {ns}/{name} has schedulerName {spec.get('schedulerName')!r}, not {want!r}"
        return ""

    def _patch_decision(
        self, pod: Obj, plan: PodPlan, node: str, fit: NodeFit, live: Obj | None
    ) -> Obj | None:
        annotations: dict[str, str] = {
            ann.VGPU_NODE: node,
            ann.VGPU_TIME: str(int(time.time())),
            ann.BIND_PHASE: ev.PHASE_ALLOCATING,
        }
        for family, _ in plan.requests:
            annotations.update(family.pod_annotations(fit.devices[family.common_word], pod))
        if self.kube is None:
            return None
        meta = pod.get("metadata") or {}
        path = f"/api/v1/namespaces/{meta.get('namespace') or 'default'}/pods/{meta.get('name')}"
        for attempt in range(3):
            body: Obj = {"labels": {ann.VGPU_NODE: node}, "annotations": annotations}
            rv = (live.get("metadata") or {}).get("resourceVersion") if live is not None else None
            if rv:
                # precondition: the very pod that was checked (not bound, not replaced) in the meantime
                body["resourceVersion"] = rv
            try:
                patched: Obj = self.kube.patch(path, {"metadata": body}, "merge")
                return patched
            except ApiError as e:
                if e.status != 409 or live is None or attempt == 2:
                    raise
            fresh = self._live_pod(meta.get("namespace") or "default", meta.get("name") or "")
            uid = meta.get("uid") or ""
            problem = "pod was deleted" if fresh is None else self._not_schedulable(fresh, uid)
            if problem:
                raise ApiError(409, None, problem)
            live = fresh
        return None

    def _simulate(self, pod: Obj, plan: PodPlan, nodes: list[Obj]) -> Obj:
        by_name = {(n.get("metadata") or {}).get("name", ""): n for n in nodes}
        fits: dict[str, NodeFit] = {}
        failed: dict[str, str] = {}
        types: dict[str, tuple[str, ...]] = {}
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        quota_fits = self.quotas.fits if self.quotas.limits(meta.get("namespace") or "default") else None
        for name, node in by_name.items():
            devices: dict[str, list[DeviceUsage]] = {}
            try:
                for f in self.families:
                    infos = f.node_devices(node)
                    if infos:
                        devices[f.common_word] = [DeviceUsage.from_info(d) for d in infos]
            except ProtocolError as e:
                failed[name] = f"register annotation rejected: {e}"
                continue
            if not devices:
                failed[name], types[name] = ev.NODE_UNREGISTERED, (ev.NODE_UNREGISTERED,)
                continue
            for entry in self.cache.pods_on(name):
                if entry.uid != uid:
                    apply_charges(devices, entry.charges, 1)
            result = fit_node(pod, plan, node, devices, quota_fits)
            if result.ok:
                fits[name] = result
            else:
                failed[name], types[name] = result.reason, result.reason_types
        outcome = choose(fits, failed, types, plan.node_policy)
        if outcome.best is None:
            return filter_result(nodes=[], failed=failed)
        return filter_result(nodes=[by_name[outcome.best]], failed=failed)

    # --- bind ------------------------------------------------------------------------------
    def bind(self, args: BindArgs) -> Obj:
        """Bind after re-checking, under the node lock, that the pod's filter decision still fits.

        Refused (answer ``Error``, ``BindingFailed`` event): a pod that does not exist or has another
        UID, one already bound (its usage keeps counting: the apiserver's word wins over this call),
        a terminating pod or one for another scheduler, a device pod without a filter decision for
        this node or whose annotations no longer match it, and a decision that would over-commit a
        device. After any failure an *unbound* pod's decision is withdrawn from the cache and from
        the pod (label, allocation annotations, bind-phase); a bound pod is never forgotten.
        """
        ns, name, node = args.pod_namespace or "default", args.pod_name, args.node
        key = args.pod_uid or _pod_key({"namespace": ns, "name": name})
        with self._binding_lock:
            if key in self._binding:
                return bind_result(f"pod {ns}/{name}: another bind of it is under way")
            self._binding[key] = node
        try:
            return self._bind(args, ns, name, node)
        finally:
            with self._binding_lock:
                self._binding.pop(key, None)

    def _bind(self, args: BindArgs, ns: str, name: str, node: str) -> Obj:
        try:
            pod = self._live_pod(ns, name)
        except (ApiError, OSError) as e:
            return bind_result(f"get pod {ns}/{name}: {e}")
        if pod is None:
            return bind_result(f"pod {ns}/{name} not found")
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = meta.get("uid") or args.pod_uid
        if args.pod_uid and meta.get("uid") and args.pod_uid != meta["uid"]:
            msg = f"pod {ns}/{name} has UID {meta['uid']}, the binding names {args.pod_uid}"
            return self._bind_failed(pod, msg, withdraw=False)
        if spec.get("nodeName"):
            self.cache.on_pod("MODIFIED", pod)  # bound: it counts, whatever this call asked
            return self._bind_failed(
                pod, f"pod {ns}/{name} is already bound to node {spec['nodeName']}", withdraw=False
            )
        problem = self._not_schedulable(pod, meta.get("uid") or "")
        if problem:
            return self._bind_failed(pod, problem)
        try:
            needs_devices = not plan_pod(
                pod, self.families, self.options.node_policy, self.options.gpu_policy
            ).empty
        except ProtocolError as e:
            return self._bind_failed(pod, f"pod {ns}/{name}: {e}")
        if node not in self.cache.nodes:
            return self._bind_failed(pod, f"node {node} not found in the scheduler's node cache")
        if needs_devices:
            problem = self._decision_problem(pod, uid, node)
            if problem:
                return self._bind_failed(pod, f"pod {ns}/{name} cannot be bound to node {node}: {problem}")
        locked = False
        try:
            needs_lock = any(family.needs_lock(pod) for family in self.families)
            if needs_lock and not faults.on("nodelock-not-taken"):
                self._lock_node(pod, node)
                locked = True
            if needs_devices:
                with self.cache.lock:  # the fit against current usage, with the node lock held
                    problem = self.cache.check_bind(uid, node)
                if problem:
                    raise _Refused(f"pod {ns}/{name} cannot be bound to node {node}: {problem}")
            self._patch_bind_phase(ns, name)
            if not faults.on("scheduler-bind-drops-binding"):
                self._create_binding(ns, name, uid, node)
        except (ApiError, nodelock.LockError, NodeLockContention, OSError, _Refused) as e:
            msg = str(e)
            log.warning("bind %s/%s to %s failed: %s", ns, name, node, msg)
            if locked and not faults.on("nodelock-never-released"):
                try:
                    nodelock.release(self._kube(), node, ns, name)
                except (nodelock.LockError, ApiError, OSError) as re:
                    log.warning("release lock on %s: %s", node, re)
            self._reconcile(ns, name, uid)
            self._event(pod, "Warning", ev.BINDING_FAILED, msg)
            return bind_result(msg)
        self.bind_count += 1
        self._event(pod, "Normal", ev.BINDING_SUCCEED, ev.binding_success_message(node, ns, name))
        return bind_result()

    def _decision_problem(self, pod: Obj, uid: str, node: str) -> str:
        """Why the pod's counted decision is not the one its annotations (what the plugin reads) hold."""
        entry = self.cache.pod(uid)
        if entry is None:
            return "it has no filter decision (it was not filtered, or its decision was withdrawn)"
        if entry.node != node:
            return f"its filter decision is node {entry.node}, not {node}"
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if annotations.get(ann.VGPU_NODE) != node:
            return f"its {ann.VGPU_NODE} annotation is {annotations.get(ann.VGPU_NODE)!r}, not {node!r}"
        charges = pod_charges(pod, self.families)
        if charges is None or not same_charges(charges, entry.charges):
            return "its allocation annotations differ from the filter decision"
        return ""

    def _bind_failed(self, pod: Obj, msg: str, *, withdraw: bool = True) -> Obj:
        meta = pod.get("metadata") or {}
        log.warning("bind %s/%s refused: %s", meta.get("namespace"), meta.get("name"), msg)
        if withdraw:
            self._withdraw(pod)
        self._event(pod, "Warning", ev.BINDING_FAILED, msg)
        return bind_result(msg)

    def _reconcile(self, ns: str, name: str, uid: str) -> None:
        """After a failed write, follow the apiserver: a bound pod counts, an unbound one is withdrawn."""
        try:
            fresh = self._live_pod(ns, name)
        except (ApiError, OSError) as e:
            log.warning("pod %s/%s after a failed bind: %s; its usage keeps counting", ns, name, e)
            return
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
            self.cache.remove_pod(uid)  # deleted (or replaced): it holds nothing any more
            return
        if (fresh.get("spec") or {}).get("nodeName"):
            self.cache.on_pod("MODIFIED", fresh)  # bound after all (a concurrent or earlier bind)
            return
        self._withdraw(fresh)

    def _withdraw(self, pod: Obj) -> None:
        """Forget an *unbound* pod's decision and remove it from the pod, so nothing stale remains."""
        meta = pod.get("metadata") or {}
        ns, name, uid = meta.get("namespace") or "default", meta.get("name") or "", meta.get("uid") or ""
        if (pod.get("spec") or {}).get("nodeName"):
            return
        self.cache.release(uid)
        if self.kube is None or not _carries_decision(pod):
            return
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        current = pod
        for _ in range(3):
            cmeta = current.get("metadata") or {}
            annotations = cmeta.get("annotations") or {}
            drop: dict[str, None] = {k: None for k in annotations if ann.is_scheduler_owned(k)}
            patch: Obj = {"annotations": drop, "resourceVersion": cmeta.get("resourceVersion")}
            if ann.VGPU_NODE in (cmeta.get("labels") or {}):
                patch["labels"] = {ann.VGPU_NODE: None}
            try:
                self.kube.patch(path, {"metadata": patch}, "merge")
                return
            except ApiError as e:
                if e.status == 404:
                    return
                if e.status != 409:
                    log.warning("remove the withdrawn decision from %s/%s: %s", ns, name, e)
                    return
            try:  # changed meanwhile: clean only while it is still this pod and still unbound
                fresh = self._live_pod(ns, name)
            except (ApiError, OSError) as e:
                log.warning("remove the withdrawn decision from %s/%s: %s", ns, name, e)
                return
            if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
                return
            if (fresh.get("spec") or {}).get("nodeName"):
                self.cache.on_pod("MODIFIED", fresh)
                return
            current = fresh

    def _lock_node(self, pod: Obj, node: str) -> None:
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        deadline = time.monotonic() + (self.options.node_lock_retry if _in_pod_group(pod) else 0)
        while True:
            try:
                if faults.on("nodelock-never-expires"):  # a lock is held forever, even by a gone pod
                    nodelock.acquire(self._kube(), node, ns, name, lambda _ns, _n: True,
                                     timeout=dt.timedelta(days=3650))
                    return
                nodelock.acquire(
                    self._kube(), node, ns, name, self._holder_exists, timeout=self.options.node_lock_timeout
                )
                return
            except NodeLockContention:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _patch_bind_phase(self, ns: str, name: str) -> None:
        self._kube().patch(
            f"/api/v1/namespaces/{ns}/pods/{name}",
            {
                "metadata": {
                    "annotations": {ann.BIND_PHASE: ev.PHASE_ALLOCATING, ann.BIND_TIME: str(int(time.time()))}
                }
            },
            "merge",
        )

    def _create_binding(self, ns: str, name: str, uid: str, node: str) -> None:
        meta: Obj = {"name": name, "namespace": ns}
        if uid:
            meta["uid"] = uid
        self._kube().create(
            f"/api/v1/namespaces/{ns}/pods/{name}/binding",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": meta,
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            },
        )

    # --- helpers ---------------------------------------------------------------------------
    def _kube(self) -> Kube:
        if self.kube is None:
            raise OSError("no Kubernetes client configured")
        return self.kube

    def _live_pod(self, ns: str, name: str) -> Obj | None:
        """The pod as the apiserver holds it now (the informer's copy only without a client)."""
        if self.kube is None:
            return self._pod_getter(ns, name) if self._pod_getter is not None else None
        try:
            pod: Obj = self.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
            return pod
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def _get_pod(self, ns: str, name: str) -> Obj | None:
        if self._pod_getter is not None:
            pod = self._pod_getter(ns, name)
            if pod is not None:
                return pod
        if self.kube is None:
            return None
        try:
            return self.kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def _holder_exists(self, ns: str, name: str) -> bool:
        """Whether the lock's holder may still need it (else the lock is taken over before expiry).

        Gone: a deleted pod. Also done: a pod HAMi allocated (it carries ``bind-phase``) whose
        allocation has concluded (``success``/``failed``), or that is running or finished, since the
        kubelet allocates devices before any container starts. Without that, a holder whose plugin
        never released the lock (a node agent restarted mid-allocation) blocks its node for the whole
        expiry. A live pod without ``bind-phase`` keeps the lock until it expires, as upstream.
        """
        try:
            pod = self._get_pod(ns, name)
        except ApiError:
            return True  # unknown: do not steal the lock
        if pod is None:
            return False
        phase = ((pod.get("metadata") or {}).get("annotations") or {}).get(ann.BIND_PHASE)
        if phase is None:
            return True
        if phase in (ev.PHASE_SUCCESS, ev.PHASE_FAILED):
            return False
        return (pod.get("status") or {}).get("phase") not in ("Running", "Succeeded", "Failed")

    def _event(self, pod: Obj, etype: str, reason: str, message: str) -> None:
        if reason == ev.FILTERING_FAILED and faults.on("scheduler-no-failure-events"):
            return
        if reason in (ev.FILTERING_SUCCEED, ev.BINDING_SUCCEED) and faults.on("scheduler-no-success-events"):
            return
        if self.recorder is not None:
            self.recorder.pod_event(pod, etype, reason, message)

    def quota_fits_pod(self, pod: Obj) -> bool:
        """The webhook's ``quota_fits`` callback."""
        return self.quotas.pod_fits(pod)


class _Refused(Exception):
    """A bind refused by the extender's own checks."""


def _carries_decision(pod: Obj) -> bool:
    meta = pod.get("metadata") or {}
    return ann.VGPU_NODE in (meta.get("labels") or {}) or any(
        ann.is_scheduler_owned(k) for k in meta.get("annotations") or {}
    )


def _in_pod_group(pod: Obj) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    group = ((pod.get("spec") or {}).get("schedulingGroup") or {}).get("podGroupName")
    return bool(labels.get(ann.POD_GROUP_LABEL) or group)


def _pod_key(meta: Obj) -> str:
    """A pod's key in the in-flight binds when the bind names no UID."""
    return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
