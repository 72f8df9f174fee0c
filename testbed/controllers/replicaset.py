"""ReplicaSet controller: keeps ``spec.replicas`` active pods from the template, adopts matching
orphans, releases pods that stopped matching, and writes the status the real controller writes."""

from __future__ import annotations

import time
from typing import Any

from kubeclient.client import ApiError
from kubeclient.informer import key_of

from . import util
from .base import Context, Controller, Expectations, Obj
from .workload import pod_from_template

RS_PATH = "/apis/apps/v1/replicasets"


def deletion_rank(pod: Obj) -> tuple[int, int, int, float]:
    """Sort key: the pods a controller removes first sort first (unbound, pending, not ready, newest)."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(util.pod_phase(pod), 0)
    created = util.parse_time(util.meta(pod).get("creationTimestamp")) or 0.0
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        phase_rank,
        1 if util.pod_ready(pod) else 0,
        -created,
    )


class ReplicaSetController(Controller):
    name = "replicaset"
    component = "replicaset-controller"
    api_version = "apps/v1"
    kind = "ReplicaSet"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.expect = Expectations()

    def setup(self) -> None:
        self.rs = self.ctx.informers.get(RS_PATH)
        self.rs.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.by_owner = self.ctx.pods_by_owner()
        self.by_ns = self.ctx.pods_by_namespace()
        self.ctx.pods().add_handler(self._on_pod)

    def _on_pod(self, kind: str, pod: Obj, old: Obj | None) -> None:
        ns = util.meta(pod).get("namespace", "")
        for o in (pod, old):
            if o is None:
                continue
            ref = util.controller_ref(o)
            if ref and ref.get("kind") == "ReplicaSet":
                self.queue.add(f"{ns}/{ref['name']}")
            elif ref is None:
                # an orphan: any ReplicaSet selecting it may adopt it
                for rs in self.rs.items():
                    if util.meta(rs).get("namespace") == ns and util.selector_matches(
                        (rs.get("spec") or {}).get("selector"), util.meta(o).get("labels")
                    ):
                        self.enqueue(rs)

    def _claim(self, rs: Obj) -> list[Obj]:
        """Owned pods, after adopting matching orphans and releasing owned pods that no longer match."""
        m = util.meta(rs)
        uid, ns = m["uid"], m["namespace"]
        selector = (rs.get("spec") or {}).get("selector")
        owned: list[Obj] = []
        for pod in self.by_owner.get(uid):
            labels = util.meta(pod).get("labels")
            if util.selector_matches(selector, labels) or util.deleting(pod):
                owned.append(pod)
            elif not util.deleting(rs):
                self._release(pod, uid)
        if not util.deleting(rs):
            for pod in self.by_ns.get(ns):
                if (
                    util.controller_ref(pod) is None
                    and not util.deleting(pod)
                    and util.selector_matches(selector, util.meta(pod).get("labels"))
                ):
                    adopted = self._adopt(pod, rs)
                    if adopted is not None:
                        owned.append(adopted)
        return self.expect.merge(uid, owned)

    def _adopt(self, pod: Obj, rs: Obj) -> Obj | None:
        m = util.meta(pod)
        refs = [*(m.get("ownerReferences") or []), util.owner_reference(rs, "apps/v1", "ReplicaSet")]
        try:
            return self.kube.patch(
                f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                {"metadata": {"ownerReferences": refs, "uid": m["uid"]}},
                "merge",
            )
        except ApiError:
            return None

    def _release(self, pod: Obj, uid: str) -> None:
        m = util.meta(pod)
        refs = [r for r in m.get("ownerReferences") or [] if r.get("uid") != uid]
        try:
            self.kube.patch(
                f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}",
                {"metadata": {"ownerReferences": refs or None, "uid": m["uid"]}},
                "merge",
            )
        except ApiError:
            pass

    def sync(self, key: str) -> float | None:
        rs = self.rs.get(key)
        if rs is None:
            return None
        spec = rs.get("spec") or {}
        pods = self._claim(rs)
        active = [p for p in pods if util.pod_active(p)]
        want = int(spec.get("replicas", 1))
        error: str | None = None
        if not util.deleting(rs):
            diff = len(active) - want
            if diff < 0:
                error = self._create(rs, -diff)
            elif diff > 0:
                for pod in sorted(active, key=deletion_rank)[:diff]:
                    self._delete(rs, pod)
        return self._status(rs, pods, error)

    def _create(self, rs: Obj, count: int) -> str | None:
        m = util.meta(rs)
        for _ in range(count):
            body = pod_from_template(
                (rs.get("spec") or {}).get("template") or {}, rs, "apps/v1", "ReplicaSet", f"{m['name']}-"
            )
            try:
                pod = self.kube.create(f"/api/v1/namespaces/{m['namespace']}/pods", body)
            except ApiError as e:
                self.event(rs, "Warning", "FailedCreate", f"Error creating: {e}")
                return str(e)
            self.expect.created(m["uid"], pod)
            self.event(rs, "Normal", "SuccessfulCreate", f"Created pod: {util.meta(pod)['name']}")
        return None

    def _delete(self, rs: Obj, pod: Obj) -> None:
        pm = util.meta(pod)
        try:
            self.kube.delete(f"/api/v1/namespaces/{pm['namespace']}/pods/{pm['name']}")
        except ApiError as e:
            if e.status != 404:
                self.event(rs, "Warning", "FailedDelete", f"Error deleting: {e}")
                return
        self.expect.deleted(util.meta(rs)["uid"], key_of(pod))
        self.event(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pm['name']}")

    def _status(self, rs: Obj, pods: list[Obj], error: str | None) -> float | None:
        spec = rs.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        at = time.time()
        active = [p for p in pods if util.pod_active(p)]
        tlabels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        labeled = [
            p
            for p in active
            if all((util.meta(p).get("labels") or {}).get(k) == v for k, v in tlabels.items())
        ]
        ready = [p for p in active if util.pod_ready(p)]
        available = [p for p in active if util.pod_available(p, min_ready, at)]
        old = rs.get("status") or {}
        status: dict[str, Any] = {"replicas": len(active)}
        if labeled:
            status["fullyLabeledReplicas"] = len(labeled)
        if ready:
            status["readyReplicas"] = len(ready)
        if available:
            status["availableReplicas"] = len(available)
        status["observedGeneration"] = util.meta(rs).get("generation", 1)
        conds = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        if error:
            prev = next((c for c in old.get("conditions") or [] if c.get("type") == "ReplicaFailure"), None)
            conds.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": error,
                    "lastTransitionTime": (prev or {}).get("lastTransitionTime") or util.now(),
                }
            )
        if conds:
            status["conditions"] = conds
        if status != old:
            m = util.meta(rs)
            new = dict(rs)
            new["status"] = status
            updated = self.kube.update(
                f"/apis/apps/v1/namespaces/{m['namespace']}/replicasets/{m['name']}/status", new
            )
            del updated
        waits = [w for p in active if (w := util.ready_remaining(p, min_ready, at)) is not None]
        if error:
            return 1.0
        return min(waits) + 0.05 if waits else None
