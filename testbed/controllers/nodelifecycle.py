"""Node lifecycle controller: watches node Leases in ``kube-node-lease``; a node whose lease is not
renewed within ``--node-monitor-grace-period`` gets its conditions set to Unknown and the
``node.kubernetes.io/unreachable`` NoSchedule and NoExecute taints; a node reporting Ready=False gets
the ``not-ready`` taints. Taints go when the kubelet reports Ready again. When a node goes Unknown its
pods' Ready condition is set False (``MarkPodsNotReady``): nothing vouches for them any more, so
Services and rollouts stop counting them; the returning kubelet reports them Ready again. Pods on a
node with a NoExecute taint they do not tolerate are evicted; those tolerating it for N seconds, after
N seconds (the taint manager)."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from kubeclient.client import ApiError

from . import util
from .base import Controller, Obj

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
UNREACHABLE = "node.kubernetes.io/unreachable"
NOT_READY = "node.kubernetes.io/not-ready"
WATCHED = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def grace_default(minor: int) -> float:
    """--node-monitor-grace-period: 40 s through 1.31, 50 s from 1.32."""
    return 50.0 if minor >= 32 else 40.0


class NodeLifecycleController(Controller):
    name = "nodelifecycle"
    component = "node-controller"
    api_version = "v1"
    kind = "Node"

    def setup(self) -> None:
        self.nodes = self.ctx.nodes()
        self.leases = self.ctx.informers.get(LEASE_PATH)
        self.by_node = self.ctx.pods_by_node()
        self._lock = threading.Lock()
        # node -> (last renewTime seen, local monotonic time it was seen): the real controller also
        # measures staleness on its own clock, not against the kubelet's timestamps
        self._probe: dict[str, tuple[str, float]] = {}
        self.nodes.add_handler(lambda _k, n, _o: self.queue.add(util.meta(n)["name"]))
        self.leases.add_handler(self._on_lease)
        self.ctx.pods().add_handler(self._on_pod)

    def _on_lease(self, kind: str, lease: Obj, _old: Obj | None) -> None:
        name = util.meta(lease)["name"]
        renew = (lease.get("spec") or {}).get("renewTime") or ""
        with self._lock:
            prev = self._probe.get(name)
            if prev is None or prev[0] != renew:
                self._probe[name] = (renew, time.monotonic())
        self.queue.add(name)

    def _on_pod(self, kind: str, pod: Obj, old: Obj | None) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if kind != "DELETED" and node and (old is None or not (old.get("spec") or {}).get("nodeName")):
            self.queue.add(node)

    def sync(self, name: str) -> float | None:
        node = self.nodes.get(name)
        if node is None:
            with self._lock:
                self._probe.pop(name, None)
            return None
        grace = self.ctx.options.node_monitor_grace_period
        now = time.monotonic()
        with self._lock:
            probe = self._probe.get(name)
            if probe is None:
                # no lease seen yet: the node's own creation starts the clock
                probe = ("", now)
                self._probe[name] = probe
        stale = now - probe[1]
        again: float | None = None
        if stale > grace:
            node = self._mark_unknown(node)
            again = grace / 2
            if not self._mark_pods_not_ready(node):
                again = min(again, 1.0)  # a pod changed under us: try again soon
        else:
            again = grace - stale + 0.05
        node = self._sync_taints(node)
        evict_again = self._evict(node)
        cands = [x for x in (again, evict_again) if x is not None]
        return min(cands) if cands else None

    def _mark_unknown(self, node: Obj) -> Obj:
        conds = copy.deepcopy((node.get("status") or {}).get("conditions") or [])
        at = util.now()
        changed = False
        seen = {c.get("type") for c in conds}
        for c in conds:
            if c.get("type") in WATCHED and c.get("status") != "Unknown":
                c.update(
                    status="Unknown",
                    reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.",
                    lastTransitionTime=at,
                )
                changed = True
        for ctype in WATCHED:
            if ctype not in seen:
                conds.append(
                    {
                        "type": ctype,
                        "status": "Unknown",
                        "reason": "NodeStatusNeverUpdated",
                        "message": "Kubelet never posted node status.",
                        "lastHeartbeatTime": at,
                        "lastTransitionTime": at,
                    }
                )
                changed = True
        if not changed:
            return node
        new = copy.deepcopy(node)
        new.setdefault("status", {})["conditions"] = conds
        self.log.info(
            "node %s hasn't been updated for longer than the grace period; marking it Unknown",
            util.meta(node)["name"],
        )
        out = self.kube.update(f"/api/v1/nodes/{util.meta(node)['name']}/status", new)
        self.event(
            node, "Normal", "NodeNotReady", f"Node {util.meta(node)['name']} status is now: NodeNotReady"
        )
        return out

    def _mark_pods_not_ready(self, node: Obj) -> bool:
        """Set Ready=False on every live pod of an Unknown node; False when an update must be retried."""
        ready = util.node_condition(node, "Ready")
        if (ready or {}).get("status") != "Unknown":
            return True
        name = util.meta(node)["name"]
        ok = True
        for pod in self.by_node.get(name):
            if util.pod_terminated(pod) or (pod.get("spec") or {}).get("nodeName") != name:
                continue
            cond = util.pod_condition(pod, "Ready")
            if cond is None or cond.get("status") == "False":
                continue
            new = copy.deepcopy(pod)
            for c in new["status"]["conditions"]:
                if c.get("type") == "Ready":
                    c.update(status="False", lastTransitionTime=util.now())
            m = util.meta(pod)
            try:
                self.kube.update(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/status", new)
            except ApiError as e:
                if e.status == 404:
                    continue
                if e.status != 409:
                    raise
                ok = False
                continue
            self.log.info("marking pod %s/%s NotReady: node %s is Unknown", m["namespace"], m["name"], name)
        return ok

    def _sync_taints(self, node: Obj) -> Obj:
        ready = util.node_condition(node, "Ready")
        status = (ready or {}).get("status")
        want_key = UNREACHABLE if status == "Unknown" else NOT_READY if status == "False" else None
        taints = util.node_taints(node)
        keep = [t for t in taints if t.get("key") not in (UNREACHABLE, NOT_READY) or t.get("key") == want_key]
        have = {(t.get("key"), t.get("effect")) for t in keep}
        if want_key:
            for effect in ("NoSchedule", "NoExecute"):
                if (want_key, effect) not in have:
                    t: dict[str, Any] = {"key": want_key, "effect": effect}
                    if effect == "NoExecute":
                        t["timeAdded"] = util.now()
                    keep.append(t)
        if keep == taints:
            return node
        new = copy.deepcopy(node)
        new.setdefault("spec", {})["taints"] = keep or None
        if not keep:
            new["spec"].pop("taints")
        return self.kube.update(f"/api/v1/nodes/{util.meta(node)['name']}", new)

    @staticmethod
    def _evict_time(tols: list[Obj], taint: Obj, at: float) -> float:
        """When a pod with these tolerations must leave a node with this NoExecute taint."""
        matching = [
            t
            for t in tols
            if t.get("effect") in ("NoExecute", None, "") and util.toleration_tolerates(t, taint)
        ]
        if not matching:
            return at
        secs = [t.get("tolerationSeconds") for t in matching]
        if any(s is None for s in secs):
            return float("inf")
        added = util.parse_time(taint.get("timeAdded")) or at
        return added + max(0, min(int(s) for s in secs))

    def _evict(self, node: Obj) -> float | None:
        """The taint manager: evict pods that do not tolerate the node's NoExecute taints (in time)."""
        no_exec = [t for t in util.node_taints(node) if t.get("effect") == "NoExecute"]
        if not no_exec:
            return None
        at = time.time()
        again: float | None = None
        for pod in self.by_node.get(util.meta(node)["name"]):
            if util.deleting(pod) or util.pod_terminated(pod):
                continue
            tols = (pod.get("spec") or {}).get("tolerations") or []
            due = min(self._evict_time(tols, taint, at) for taint in no_exec)
            if due <= at:
                m = util.meta(pod)
                self.event(
                    pod,
                    "Normal",
                    "TaintManagerEviction",
                    f"Marking for deletion Pod {m['namespace']}/{m['name']}",
                    api_version="v1",
                    kind="Pod",
                )
                try:
                    self.kube.delete(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}")
                except ApiError as e:
                    if e.status != 404:
                        raise
            elif due != float("inf"):
                left = due - at + 0.05
                again = left if again is None else min(again, left)
        return again
