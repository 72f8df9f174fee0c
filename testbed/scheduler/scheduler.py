"""The scheduler: informer-fed node cache, scheduling loop, extenders, async binding, events.

One thread pops pods from the queue and picks a node against an in-memory snapshot; binding, events
and status patches run on a small pool so the loop never waits on the apiserver (as the real
scheduler binds in a goroutine after "assuming" the pod into its cache).
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import socket
import threading
import time
from typing import Any

from kubeclient.client import ApiError, Kube
from kubeclient.informer import Informer
from testbed.k8s.timefmt import now as _sec_now
from testbed.k8s.timefmt import now_micro as _micro_now

from .config import SchedulerConfig, default_lock
from .extender import ExtenderError, HTTPExtender
from .filters import Messages, PodView, make_filter, score
from .leader import LeaderElector
from .nodeinfo import NodeInfo, PodRequest, pod_request
from .queue import QueuedPod, SchedulingQueue

log = logging.getLogger("testbed.scheduler")
Obj = dict[str, Any]

MIN_FEASIBLE_NODES = 100
SELECTED_NODE = "volume.kubernetes.io/selected-node"
TERMINAL = ("Succeeded", "Failed")
EVENT_DEDUP_S = 360.0


class FitError(Exception):
    def __init__(self, num_nodes: int, statuses: dict[str, tuple[list[str], bool]], pod: Obj,
                 msgs: Messages, prefilter: str = "") -> None:
        self.num_nodes, self.statuses, self.pod, self.msgs = num_nodes, statuses, pod, msgs
        self.prefilter = prefilter  # a PreFilter rejection: one message for the whole cluster
        super().__init__(self.message())

    @staticmethod
    def _histogram(statuses: dict[str, tuple[list[str], bool]]) -> str:
        counts: dict[str, int] = {}
        for reasons, _u in statuses.values():
            for r in reasons:
                counts[r] = counts.get(r, 0) + 1
        return ", ".join(sorted(f"{v} {k}" for k, v in counts.items()))

    def message(self) -> str:
        n, minor = self.num_nodes, self.msgs.minor
        base = f"0/{n} nodes are available: {self._histogram(self.statuses)}."
        if self.prefilter and minor >= 25:
            base = f"0/{n} nodes are available: {self.prefilter}."
        if minor < 24:  # preemption details joined the message in 1.24 (kk#107775)
            return base
        if (self.pod.get("spec") or {}).get("preemptionPolicy") == "Never":
            post = "preemption: not eligible due to preemptionPolicy=Never."
        else:
            pre: dict[str, tuple[list[str], bool]] = {}
            for node, (reasons, unresolvable) in self.statuses.items():
                if unresolvable:
                    pre[node] = (["Preemption is not helpful for scheduling"], True)
                elif minor >= 27:
                    pre[node] = (["No preemption victims found for incoming pod"], False)
                else:
                    pre[node] = (reasons, False)
            post = f"preemption: 0/{n} nodes are available: {self._histogram(pre)}."
        # 1.27+ formats each part with " %v." (so a part ending in "." gets a second one)
        return f"{base} {post}." if minor >= 27 else f"{base} {post}"


class Scheduler:
    def __init__(self, kube: Kube, config: SchedulerConfig, minor: int, *, identity: str | None = None,
                 bind_workers: int = 16) -> None:
        self.kube, self.config, self.minor = kube, config, minor
        self.msgs = Messages(minor)
        self.profiles = {p.scheduler_name: p for p in config.profiles}
        self.filters = {name: make_filter(self.msgs, p.ignored_resources, p.ignored_resource_groups)
                        for name, p in self.profiles.items()}
        self.extenders = [HTTPExtender(e, minor) for e in config.extenders]
        self.queue = SchedulingQueue(config.pod_initial_backoff, config.pod_max_backoff,
                                     60.0 if minor <= 21 else 300.0)
        self._lock = threading.RLock()
        self._nodes: dict[str, NodeInfo] = {}
        self._node_order: list[str] = []
        self._requests: dict[str, PodRequest] = {}
        self._bound: dict[str, str] = {}  # pod uid -> node (bound or assumed)
        self._next_start = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(bind_workers, thread_name_prefix="sched-bind")
        self._stop = threading.Event()
        self._leading = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent_events: dict[tuple[str, str, str], float] = {}
        self.hostname = socket.gethostname()
        self.node_informer = Informer(kube, "/api/v1/nodes", name="nodes")
        self.pod_informer = Informer(kube, "/api/v1/pods", name="pods")
        self.node_informer.add_handler(self._on_node)
        self.pod_informer.add_handler(self._on_pod)
        # VolumeBinding's cluster events: a claim or volume that changes may make a waiting pod fit
        self.volume_informers = [Informer(kube, p, name=p.rsplit("/", 1)[-1])
                                 for p in ("/api/v1/persistentvolumeclaims", "/api/v1/persistentvolumes")]
        for inf in self.volume_informers:
            inf.add_handler(lambda _kind, _o, _old: self.queue.move_all())
        le = config.leader_election
        le.resource_lock = le.resource_lock or default_lock(minor)
        self.elector = (LeaderElector(kube, le, self._leading.set, self._leading.clear, identity)
                        if le.leader_elect else None)
        self.events_api = "events.k8s.io/v1" if minor >= 19 else "events.k8s.io/v1beta1"
        self.bound_count = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Scheduler:
        self.node_informer.start()
        self.pod_informer.start()
        for inf in self.volume_informers:
            inf.start()
        self.node_informer.wait_synced(30)
        self.pod_informer.wait_synced(30)
        if self.elector is None:
            self._leading.set()
        else:
            self.elector.start()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        if self._thread:
            self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.elector is not None:
            self.elector.stop()
        self.node_informer.stop()
        self.pod_informer.stop()
        for inf in self.volume_informers:
            inf.stop()
        for e in self.extenders:
            e.close()

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    # -- informer handlers (informer threads; keep quick) ----------------------------------------

    def _on_node(self, kind: str, node: Obj, _old: Obj | None) -> None:
        name = (node.get("metadata") or {}).get("name", "")
        with self._lock:
            if kind == "DELETED":
                if self._nodes.pop(name, None) is not None:
                    self._node_order.remove(name)
                return
            old = self._nodes.get(name)
            self._nodes[name] = NodeInfo.from_node(node, old)
            if old is None:
                self._node_order.append(name)
        self.queue.move_all()

    def _on_pod(self, kind: str, pod: Obj, _old: Obj | None) -> None:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = meta.get("uid", "")
        node = spec.get("nodeName") or ""
        phase = (pod.get("status") or {}).get("phase")
        if kind == "DELETED" or phase in TERMINAL:
            self.queue.delete(uid)
            if self._forget(uid):
                self.queue.move_all()
            return
        if node:
            self.queue.delete(uid)
            with self._lock:
                prev = self._bound.get(uid)
                if prev == node:
                    return
                if prev is not None:
                    self._forget(uid)
                req = self._requests.get(uid) or pod_request(pod)
                self._requests[uid] = req
                self._bound[uid] = node
                info = self._nodes.get(node)
                if info is not None:
                    info.add_pod(uid, req)
            return
        mine = spec.get("schedulerName", "default-scheduler") in self.profiles
        if mine and not meta.get("deletionTimestamp"):
            with self._lock:
                # An assumed pod (bind in flight or done, the bound event not seen yet) is not queued
                # again by a late update of its unbound self, as kube-scheduler skips assumed pods:
                # queueing it scheduled a bound pod a second time (the extender answered "already
                # bound" and the scheduler wrote a failure condition on a running pod).
                if uid in self._bound:
                    return
            self.queue.add_or_update(uid, pod)

    def _forget(self, uid: str) -> bool:
        with self._lock:
            node = self._bound.pop(uid, None)
            self._requests.pop(uid, None)
            if node is None:
                return False
            info = self._nodes.get(node)
            if info is not None:
                info.remove_pod(uid)
            return True

    # -- scheduling loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._leading.wait(0.2):
                continue
            qp = self.queue.pop(0.2)
            if qp is None:
                continue
            try:
                self.schedule_one(qp)
            except Exception:
                log.exception("scheduling %s failed unexpectedly", _key(qp.pod))
                self.queue.requeue(qp, unschedulable=False)

    def _num_to_find(self, n: int) -> int:
        pct = self.config.percentage_of_nodes_to_score
        if n < MIN_FEASIBLE_NODES or pct >= 100:
            return n
        adaptive = pct if pct > 0 else max(50 - n // 125, 5)
        return max(n * adaptive // 100, MIN_FEASIBLE_NODES)

    def schedule_one(self, qp: QueuedPod) -> None:
        pod = qp.pod
        uid = qp.uid
        with self._lock:
            if uid in self._bound:  # assumed or bound meanwhile (kube-scheduler's skipPodSchedule)
                self.queue.done(uid)
                return
        prof_name = (pod.get("spec") or {}).get("schedulerName", "default-scheduler")
        flt = self.filters[prof_name]
        req = pod_request(pod)
        view = PodView.of(pod, req)
        feasible: list[str] = []
        statuses: dict[str, tuple[list[str], bool]] = {}
        refused = self._volume_prefilter(pod)
        if refused:
            with self._lock:
                total = len(self._node_order)
                statuses = {name: ([refused], True) for name in self._node_order}
            if total == 0:
                self._fail(qp, prof_name, "no nodes available to schedule pods", fit=False)
                return
            self._fail(qp, prof_name, FitError(total, statuses, pod, self.msgs, refused).message(), fit=True)
            return
        with self._lock:
            order = self._node_order
            total = len(order)
            if total == 0:
                self._fail(qp, prof_name, "no nodes available to schedule pods", fit=False)
                return
            want = self._num_to_find(total)
            start = self._next_start % total
            nodes = self._nodes
            examined = 0
            for i in range(total):
                name = order[(start + i) % total]
                examined += 1
                r = flt(view, nodes[name])
                if r is None:
                    feasible.append(name)
                    if len(feasible) >= want:
                        break
                else:
                    statuses[name] = r
            self._next_start = (start + examined) % total
            node_objs = {n: nodes[n].node for n in feasible} if self.extenders else {}
        try:
            feasible = self._run_extender_filters(pod, feasible, statuses, node_objs)
        except ExtenderError as e:
            self._fail(qp, prof_name, str(e), fit=False)
            return
        if not feasible:
            self._fail(qp, prof_name, FitError(total, statuses, pod, self.msgs).message(), fit=True)
            return
        host = feasible[0] if len(feasible) == 1 else self._select(pod, view, feasible, node_objs)
        with self._lock:  # assume: count the pod on the node before the bind lands
            if uid in self._bound:
                return
            self._bound[uid] = host
            self._requests[uid] = req
            info = self._nodes.get(host)
            if info is not None:
                info.add_pod(uid, req)
        log.debug("Attempting to bind pod to node pod=%s node=%s evaluatedNodes=%d feasibleNodes=%d",
                  _key(pod), host, total, len(feasible))
        self._pool.submit(self._bind, qp, prof_name, host)

    def _run_extender_filters(self, pod: Obj, feasible: list[str],
                              statuses: dict[str, tuple[list[str], bool]],
                              node_objs: dict[str, Obj]) -> list[str]:
        for ext in self.extenders:
            if not feasible:
                break
            if not ext.cfg.filter_verb or not ext.interested(pod):
                continue
            try:
                res = ext.filter(pod, feasible, node_objs)
            except ExtenderError as e:
                if ext.cfg.ignorable:
                    log.info("Skipping extender as it returned error and has ignorable flag set extender=%s "
                             "err=%s", ext, e)
                    continue
                raise
            for n, msg in res.failed.items():
                statuses[n] = ([msg], False)
            for n, msg in res.failed_unresolvable.items():
                statuses[n] = ([msg], True)
            known = set(feasible)
            feasible = [n for n in res.nodes if n in known]
        return feasible

    def _select(self, pod: Obj, view: PodView, feasible: list[str], node_objs: dict[str, Obj]) -> str:
        with self._lock:
            scores = {n: score(view, self._nodes[n]) for n in feasible if n in self._nodes}
        for ext in self.extenders:
            if not ext.cfg.prioritize_verb or not ext.interested(pod):
                continue
            try:
                prio = ext.prioritize(pod, feasible, node_objs)
            except ExtenderError as e:  # prioritize errors are ignored, as the real scheduler does
                log.debug("extender %s prioritize failed: %s", ext, e)
                continue
            for host, s in prio.items():
                if host in scores:
                    scores[host] += s * ext.cfg.weight * (100 // 10)
        best, count, chosen = -1, 0, feasible[0]
        for n, s in scores.items():
            if s > best:
                best, count, chosen = s, 1, n
            elif s == best:
                count += 1
                if random.randrange(count) == 0:
                    chosen = n
        return chosen

    # -- binding and outcomes (worker pool) ------------------------------------------------------

    # -- VolumeBinding ----------------------------------------------------------------------------

    def _claims(self, pod: Obj) -> list[str]:
        return [v["persistentVolumeClaim"]["claimName"] for v in (pod.get("spec") or {}).get("volumes") or []
                if (v.get("persistentVolumeClaim") or {}).get("claimName")]

    def _volume_prefilter(self, pod: Obj) -> str:
        """VolumeBinding's PreFilter: a missing claim, or an unbound claim whose class binds
        Immediately (or that has no class), keeps the pod Pending with kube-scheduler's words."""
        ns = (pod.get("metadata") or {}).get("namespace", "")
        for claim in self._claims(pod):
            try:
                pvc = self.kube.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
            except ApiError as e:
                if e.status == 404:
                    return f'persistentvolumeclaim "{claim}" not found'
                raise
            if (pvc.get("metadata") or {}).get("deletionTimestamp"):
                return f'persistentvolumeclaim "{claim}" is being deleted'
            if (pvc.get("spec") or {}).get("volumeName"):
                continue
            if self._class_mode(pvc) != "WaitForFirstConsumer":
                return "pod has unbound immediate PersistentVolumeClaims"
        return ""

    def _class_mode(self, pvc: Obj) -> str:
        cls = (pvc.get("spec") or {}).get("storageClassName")
        if not cls:
            return "Immediate"
        try:
            sc = self.kube.get(f"/apis/storage.k8s.io/v1/storageclasses/{cls}")
        except ApiError:
            return "Immediate"
        return sc.get("volumeBindingMode") or "Immediate"

    def _bind_volumes(self, pod: Obj, host: str, timeout: float = 60.0) -> None:
        """VolumeBinding's PreBind: name the chosen node on each delayed claim
        (``volume.kubernetes.io/selected-node``) and wait until its provisioner has bound it."""
        ns = (pod.get("metadata") or {}).get("namespace", "")
        waiting = []
        for claim in self._claims(pod):
            path = f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}"
            pvc = self.kube.get(path)
            if (pvc.get("spec") or {}).get("volumeName"):
                continue
            annotations = (pvc.get("metadata") or {}).get("annotations") or {}
            if annotations.get(SELECTED_NODE) != host:
                self.kube.patch(path, {"metadata": {"annotations": {SELECTED_NODE: host}}}, "merge")
            waiting.append(path)
        deadline = time.monotonic() + timeout
        for path in waiting:
            while not (self.kube.get(path).get("spec") or {}).get("volumeName"):
                if time.monotonic() > deadline or self._stop.is_set():
                    raise ExtenderError(f"binding volumes: timed out waiting for the condition ({path})")
                time.sleep(0.1)

    def _bind(self, qp: QueuedPod, prof_name: str, host: str) -> None:
        pod = qp.pod
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        binder = None
        try:
            self._bind_volumes(pod, host)
            binder = next((e for e in self.extenders if e.is_binder and e.interested(pod)), None)
            if binder is not None:
                binder.bind(pod, host)
            else:
                self.kube.create(f"/api/v1/namespaces/{ns}/pods/{name}/binding", {
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": ns, "uid": meta.get("uid")},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": host}})
        except (ApiError, ExtenderError, OSError) as e:
            with self._lock:  # undo the assume unless an informer event has since moved the pod
                if self._bound.get(qp.uid) == host:
                    self._forget(qp.uid)
            text = str(e)
            if self.minor <= 26:
                msg = f"binding rejected: {text}"
            else:
                msg = text if binder is not None else f'running Bind plugin "DefaultBinder": {text}'
            self._fail(qp, prof_name, msg, fit=False, in_pool=True)
            return
        self.bound_count += 1
        self.queue.done(qp.uid)
        log.info('"Successfully bound pod to node" pod="%s/%s" node="%s"', ns, name, host)
        self._event(pod, prof_name, "Normal", "Scheduled", "Binding",
                    f"Successfully assigned {ns}/{name} to {host}")

    def _fail(self, qp: QueuedPod, prof_name: str, message: str, *, fit: bool, in_pool: bool = False) -> None:
        pod = qp.pod
        log.info('"Unable to schedule pod; no fit; waiting" pod="%s" err="%s"' if fit else
                 '"Error scheduling pod; retrying" pod="%s" err="%s"', _key(pod), message)
        self.queue.requeue(qp, unschedulable=fit)
        reason = "Unschedulable" if fit or self.minor < 21 else "SchedulerError"
        if in_pool:
            self._record_failure(pod, prof_name, reason, message)
        else:
            self._pool.submit(self._record_failure, pod, prof_name, reason, message)

    def _record_failure(self, pod: Obj, prof_name: str, reason: str, message: str) -> None:
        self._event(pod, prof_name, "Warning", "FailedScheduling", "Scheduling", message)
        meta = pod.get("metadata") or {}
        for c in (pod.get("status") or {}).get("conditions") or []:
            if (c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == reason
                    and c.get("message") == message):
                return
        patch = {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                                            "lastTransitionTime": _sec_now(), "reason": reason,
                                            "message": message}]}}
        try:
            path = f"/api/v1/namespaces/{meta.get('namespace')}/pods/{meta.get('name')}/status"
            self.kube.patch(path, patch)
        except ApiError as e:
            log.debug("patch PodScheduled on %s: %s", _key(pod), e)

    def _event(self, pod: Obj, prof_name: str, etype: str, reason: str, action: str, note: str) -> None:
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        now = time.monotonic()
        k = (uid, reason, note)
        # isomorphic events within 6 minutes only bump a series in the real recorder
        if now - self._recent_events.get(k, -1e9) < EVENT_DEDUP_S:
            return
        if len(self._recent_events) >= 4096:  # keep the dedup window from growing without bound
            self._recent_events = {key: t for key, t in self._recent_events.items()
                                   if now - t < EVENT_DEDUP_S}
        self._recent_events[k] = now
        ns = meta.get("namespace", "default")
        ev = {
            "apiVersion": self.events_api, "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{time.time_ns():x}", "namespace": ns},
            "eventTime": _micro_now(), "reportingController": prof_name,
            "reportingInstance": f"{prof_name}-{self.hostname}", "action": action, "reason": reason,
            "regarding": {"kind": "Pod", "namespace": ns, "name": meta.get("name"), "uid": uid,
                          "apiVersion": "v1", "resourceVersion": meta.get("resourceVersion", "")},
            "note": note[:1024], "type": etype,
        }
        try:
            self.kube.create(f"/apis/{self.events_api}/namespaces/{ns}/events", ev)
        except ApiError as e:
            log.debug("event for %s: %s", _key(pod), e)


def _key(pod: Obj) -> str:
    m = pod.get("metadata") or {}
    return f"{m.get('namespace')}/{m.get('name')}"
