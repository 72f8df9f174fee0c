"""Deployment controller: one ReplicaSet per pod template (``pod-template-hash``), Recreate and
RollingUpdate (maxSurge / maxUnavailable) rollouts, revision annotations, history cleanup, and the
status and Available / Progressing conditions that ``kubectl rollout status`` and ``helm --wait`` read."""

from __future__ import annotations

import copy
import time
from typing import Any

from kubeclient.client import ApiError

from . import util
from .base import Context, Controller, Obj
from .replicaset import RS_PATH

DEPLOY_PATH = "/apis/apps/v1/deployments"
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"


def _replicas(obj: Obj) -> int:
    v = (obj.get("spec") or {}).get("replicas")
    return 1 if v is None else int(v)


def _status_int(obj: Obj, key: str) -> int:
    return int((obj.get("status") or {}).get(key) or 0)


def _revision(rs: Obj) -> int:
    try:
        return int((util.meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def template_without_hash(template: Obj) -> Obj:
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(HASH_LABEL, None)
        if not labels:
            t["metadata"].pop("labels")
    return t


def surge_and_unavailable(d: Obj) -> tuple[int, int]:
    """maxSurge and maxUnavailable resolved against spec.replicas (Recreate: 0 and 0)."""
    spec = d.get("spec") or {}
    strategy = spec.get("strategy") or {}
    replicas = _replicas(d)
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0, 0
    ru = strategy.get("rollingUpdate") or {}
    surge = util.scaled(ru.get("maxSurge", "25%"), replicas, True)
    unavailable = util.scaled(ru.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # validation forbids both zero; the controller then allows one
    return surge, min(unavailable, replicas)


def _condition(d: Obj, ctype: str) -> Obj | None:
    for c in (d.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def _set_condition(
    conds: list[Obj], ctype: str, status: str, reason: str, message: str, *, touch: bool = False
) -> None:
    """Add or replace a condition; the transition time moves only when the status changes."""
    at = util.now()
    for i, c in enumerate(conds):
        if c.get("type") != ctype:
            continue
        if c.get("status") == status and c.get("reason") == reason and not touch:
            return
        transition = c.get("lastTransitionTime") if c.get("status") == status else at
        conds[i] = {
            "type": ctype,
            "status": status,
            "lastUpdateTime": at,
            "lastTransitionTime": transition or at,
            "reason": reason,
            "message": message,
        }
        return
    conds.append(
        {
            "type": ctype,
            "status": status,
            "lastUpdateTime": at,
            "lastTransitionTime": at,
            "reason": reason,
            "message": message,
        }
    )


class DeploymentController(Controller):
    name = "deployment"
    component = "deployment-controller"
    api_version = "apps/v1"
    kind = "Deployment"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._created: dict[str, tuple[float, Obj]] = {}

    def setup(self) -> None:
        self.deploys = self.ctx.informers.get(DEPLOY_PATH)
        self.deploys.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.rs = self.ctx.informers.get(RS_PATH)
        self.rs_by_owner = self.ctx.informers.index(
            RS_PATH, "owner", lambda o: [util.controller_uid(o) or ""]
        )
        self.rs.add_handler(self._on_rs)
        self.by_owner = self.ctx.pods_by_owner()
        self.ctx.pods().add_handler(self._on_pod)

    def _on_rs(self, _kind: str, rs: Obj, old: Obj | None) -> None:
        for o in (rs, old):
            ref = util.controller_ref(o) if o else None
            if ref and ref.get("kind") == "Deployment":
                self.queue.add(f"{util.meta(rs)['namespace']}/{ref['name']}")

    def _on_pod(self, kind: str, pod: Obj, _old: Obj | None) -> None:
        # Recreate waits for old pods to go; their deletion must wake the deployment up.
        if kind != "DELETED":
            return
        ref = util.controller_ref(pod)
        if ref and ref.get("kind") == "ReplicaSet":
            rs = self.rs.get(f"{util.meta(pod)['namespace']}/{ref['name']}")
            dref = util.controller_ref(rs) if rs else None
            if dref and dref.get("kind") == "Deployment":
                self.queue.add(f"{util.meta(pod)['namespace']}/{dref['name']}")

    # -- helpers -----------------------------------------------------------------------------------
    def _path(self, ns: str, plural: str, name: str = "", sub: str = "") -> str:
        p = f"/apis/apps/v1/namespaces/{ns}/{plural}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    def _owned_rs(self, d: Obj) -> list[Obj]:
        uid = util.meta(d)["uid"]
        got = {util.meta(r)["name"]: r for r in self.rs_by_owner.get(uid)}
        # ReplicaSets this controller just created but the cache has not shown yet
        for name, (t, r) in list(self._created.items()):
            if time.monotonic() - t > 30 or name.split("/", 1)[1] in got:
                self._created.pop(name, None)
            elif util.controller_uid(r) == uid:
                got[name.split("/", 1)[1]] = r
        return list(got.values())

    def _scale_rs(self, d: Obj, rs: Obj, replicas: int, scale_word: str | None = None) -> Obj:
        if _replicas(rs) == replicas and (util.meta(rs).get("annotations") or {}).get(DESIRED) == str(
            _replicas(d)
        ):
            return rs
        surge, _ = surge_and_unavailable(d)
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = replicas
        ann = new["metadata"].setdefault("annotations", {})
        ann[DESIRED] = str(_replicas(d))
        ann[MAX_REPLICAS] = str(_replicas(d) + surge)
        m = util.meta(rs)
        out = self.kube.update(self._path(m["namespace"], "replicasets", m["name"]), new)
        old = _replicas(rs)
        if old != replicas:
            word = "up" if replicas > old else "down"
            self.event(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {word} replica set {m['name']} from {old} to {replicas}"
                if self.ctx.minor >= 30
                else f"Scaled {word} replica set {m['name']} to {replicas}",
            )
        return out

    # -- sync ----------------------------------------------------------------------------------------
    def sync(self, key: str) -> float | None:
        d = self.deploys.get(key)
        if d is None or util.deleting(d):
            return None
        spec = d.get("spec") or {}
        selector = spec.get("selector")
        if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            self.event(
                d,
                "Warning",
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            return None
        all_rs = [r for r in self._owned_rs(d) if not util.deleting(r)]
        template = spec.get("template") or {}
        new_rs = next(
            (
                r
                for r in all_rs
                if template_without_hash((r.get("spec") or {}).get("template") or {})
                == template_without_hash(template)
            ),
            None,
        )
        old_rs = [r for r in all_rs if r is not new_rs]
        if spec.get("paused"):
            return self._status(d, new_rs, old_rs, progressing=None)
        created = False
        if new_rs is None:
            new_rs = self._create_rs(d, old_rs)
            if new_rs is None:
                return 1.0
            created = True
        else:
            new_rs = self._sync_revision(d, new_rs, old_rs)
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        if strategy == "Recreate":
            new_rs, old_rs = self._recreate(d, new_rs, old_rs)
        else:
            new_rs, old_rs = self._rolling(d, new_rs, old_rs)
        self._cleanup(d, old_rs)
        return self._status(
            d, new_rs, old_rs, progressing="NewReplicaSetCreated" if created else "ReplicaSetUpdated"
        )

    def _create_rs(self, d: Obj, old_rs: list[Obj]) -> Obj | None:
        m = util.meta(d)
        spec = d.get("spec") or {}
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        template = copy.deepcopy(spec.get("template") or {})
        h = util.template_hash(template_without_hash(template), collisions)
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: h}
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: h}
        revision = max([_revision(r) for r in old_rs] + [0]) + 1
        surge, _ = surge_and_unavailable(d)
        replicas = self._new_rs_replicas(d, None, old_rs)
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{m['name']}-{h}",
                "namespace": m["namespace"],
                "labels": dict(tmeta["labels"]),
                "annotations": {
                    DESIRED: str(_replicas(d)),
                    MAX_REPLICAS: str(_replicas(d) + surge),
                    REVISION: str(revision),
                },
                "ownerReferences": [util.owner_reference(d, "apps/v1", "Deployment")],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            rs = self.kube.create(self._path(m["namespace"], "replicasets"), body)
        except ApiError as e:
            if e.status == 409:
                # a ReplicaSet of that name with another template: bump collisionCount and retry
                new = copy.deepcopy(d)
                new.setdefault("status", {})["collisionCount"] = collisions + 1
                self.kube.update(self._path(m["namespace"], "deployments", m["name"], "status"), new)
                return None
            raise
        self._created[f"{m['namespace']}/{util.meta(rs)['name']}"] = (time.monotonic(), rs)
        self.event(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled up replica set {util.meta(rs)['name']} from 0 to {replicas}"
            if self.ctx.minor >= 30
            else f"Scaled up replica set {util.meta(rs)['name']} to {replicas}",
        )
        self._set_deploy_revision(d, revision)
        return rs

    def _sync_revision(self, d: Obj, new_rs: Obj, old_rs: list[Obj]) -> Obj:
        """A rollback to an older template makes its ReplicaSet the newest revision again."""
        top = max([_revision(r) for r in old_rs] + [0])
        rev = _revision(new_rs)
        if rev <= top:
            rev = top + 1
            new = copy.deepcopy(new_rs)
            new["metadata"].setdefault("annotations", {})[REVISION] = str(rev)
            m = util.meta(new_rs)
            new_rs = self.kube.update(self._path(m["namespace"], "replicasets", m["name"]), new)
        self._set_deploy_revision(d, rev)
        return new_rs

    def _set_deploy_revision(self, d: Obj, revision: int) -> None:
        if (util.meta(d).get("annotations") or {}).get(REVISION) == str(revision):
            return
        m = util.meta(d)
        self.kube.patch(
            self._path(m["namespace"], "deployments", m["name"]),
            {"metadata": {"annotations": {REVISION: str(revision)}}},
            "merge",
        )

    def _new_rs_replicas(self, d: Obj, new_rs: Obj | None, old_rs: list[Obj]) -> int:
        want = _replicas(d)
        strategy = ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
        current_new = _replicas(new_rs) if new_rs else 0
        if strategy == "Recreate":
            return want
        surge, _ = surge_and_unavailable(d)
        total = sum(_replicas(r) for r in old_rs) + current_new
        if total >= want + surge:
            return current_new
        room = want + surge - total
        return current_new + max(0, min(room, want - current_new))

    def _rolling(self, d: Obj, new_rs: Obj, old_rs: list[Obj]) -> tuple[Obj, list[Obj]]:
        want = _replicas(d)
        active_old = [r for r in old_rs if _replicas(r) > 0]
        if not active_old:
            new_rs = self._scale_rs(d, new_rs, want)
            return new_rs, old_rs
        # scale the new ReplicaSet up within maxSurge (or down to the target)
        target = want if _replicas(new_rs) > want else self._new_rs_replicas(d, new_rs, old_rs)
        new_rs = self._scale_rs(d, new_rs, target)
        # scale old ReplicaSets down within maxUnavailable
        _, max_unavailable = surge_and_unavailable(d)
        min_available = want - max_unavailable
        all_rs = [new_rs, *old_rs]
        all_pods = sum(_replicas(r) for r in all_rs)
        new_unavailable = _replicas(new_rs) - _status_int(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return new_rs, old_rs
        old_sorted = sorted(old_rs, key=lambda r: util.parse_time(util.meta(r).get("creationTimestamp")) or 0)
        out: dict[str, Obj] = {}
        # first remove old replicas that are not available anyway
        for r in old_sorted:
            if max_scaled_down <= 0:
                break
            unhealthy = _replicas(r) - _status_int(r, "availableReplicas")
            if unhealthy <= 0:
                continue
            cut = min(unhealthy, max_scaled_down)
            out[util.meta(r)["name"]] = self._scale_rs(d, r, _replicas(r) - cut)
            max_scaled_down -= cut
        old_now = [out.get(util.meta(r)["name"], r) for r in old_sorted]
        available = sum(_status_int(r, "availableReplicas") for r in [new_rs, *old_now])
        budget = min(available - min_available, max_scaled_down)
        for r in old_now:
            if budget <= 0:
                break
            have = _replicas(r)
            if have <= 0:
                continue
            cut = min(have, budget)
            out[util.meta(r)["name"]] = self._scale_rs(d, r, have - cut)
            budget -= cut
        return new_rs, [out.get(util.meta(r)["name"], r) for r in old_rs]

    def _recreate(self, d: Obj, new_rs: Obj, old_rs: list[Obj]) -> tuple[Obj, list[Obj]]:
        old_rs = [self._scale_rs(d, r, 0) if _replicas(r) else r for r in old_rs]
        old_pods = [
            p for r in old_rs for p in self.by_owner.get(util.meta(r)["uid"]) if not util.pod_terminated(p)
        ]
        if old_pods:
            if _replicas(new_rs):
                new_rs = self._scale_rs(d, new_rs, 0)
            return new_rs, old_rs
        return self._scale_rs(d, new_rs, _replicas(d)), old_rs

    def _cleanup(self, d: Obj, old_rs: list[Obj]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        idle = [
            r
            for r in old_rs
            if _replicas(r) == 0 and _status_int(r, "replicas") == 0 and not util.deleting(r)
        ]
        if len(idle) <= limit:
            return
        idle.sort(key=_revision)
        for r in idle[: len(idle) - limit]:
            m = util.meta(r)
            try:
                self.kube.delete(self._path(m["namespace"], "replicasets", m["name"]))
            except ApiError:
                pass

    # -- status ----------------------------------------------------------------------------------------
    def _status(self, d: Obj, new_rs: Obj | None, old_rs: list[Obj], progressing: str | None) -> float | None:
        spec = d.get("spec") or {}
        want = _replicas(d)
        all_rs = [r for r in [new_rs, *old_rs] if r is not None]
        replicas = sum(_status_int(r, "replicas") for r in all_rs)
        updated = _status_int(new_rs, "replicas") if new_rs else 0
        ready = sum(_status_int(r, "readyReplicas") for r in all_rs)
        available = sum(_status_int(r, "availableReplicas") for r in all_rs)
        old = d.get("status") or {}
        status: dict[str, Any] = {"observedGeneration": util.meta(d).get("generation", 1)}
        for k, v in (
            ("replicas", replicas),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", max(0, want - available)),
        ):
            if v:
                status[k] = v
        if old.get("collisionCount") is not None:
            status["collisionCount"] = old["collisionCount"]
        conds = copy.deepcopy(old.get("conditions") or [])
        _, max_unavailable = surge_and_unavailable(d)
        if available >= want - max_unavailable:
            _set_condition(
                conds, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            )
        else:
            _set_condition(
                conds,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        again: float | None = None
        rs_name = util.meta(new_rs)["name"] if new_rs else ""
        complete = (
            new_rs is not None
            and updated == want
            and replicas == want
            and available == want
            and not any(_status_int(r, "replicas") for r in old_rs)
        )
        deadline = spec.get("progressDeadlineSeconds")
        if progressing is not None and deadline is not None:
            cur = next((c for c in conds if c.get("type") == "Progressing"), None)
            if complete:
                _set_condition(
                    conds,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{rs_name}" has successfully progressed.',
                )
            elif cur is None or progressing == "NewReplicaSetCreated" or self._progressed(old, status):
                reason = progressing
                if cur is None and progressing == "ReplicaSetUpdated":
                    reason = "FoundNewReplicaSet"
                msg = {
                    "NewReplicaSetCreated": f'Created new replica set "{rs_name}"',
                    "FoundNewReplicaSet": f'Found new replica set "{rs_name}"',
                }.get(reason, f'ReplicaSet "{rs_name}" is progressing.')
                if (
                    cur is not None
                    and cur.get("reason") == "NewReplicaSetAvailable"
                    and reason == progressing
                ):
                    reason = "ReplicaSetUpdated"
                    msg = f'ReplicaSet "{rs_name}" is progressing.'
                _set_condition(conds, "Progressing", "True", reason, msg, touch=True)
            elif cur.get("reason") != "ProgressDeadlineExceeded":
                last = util.parse_time(cur.get("lastUpdateTime")) or time.time()
                left = last + int(deadline) - time.time()
                if left <= 0:
                    _set_condition(
                        conds,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        f'ReplicaSet "{rs_name}" has timed out progressing.',
                    )
                else:
                    again = left + 0.5
        if conds:
            # the real controller lists Available before Progressing once both exist
            order = {"Available": 0, "Progressing": 1}
            conds.sort(key=lambda c: order.get(c.get("type", ""), 2))
            status["conditions"] = conds
        if status != old:
            m = util.meta(d)
            new = copy.deepcopy(d)
            new["status"] = status
            self.kube.update(self._path(m["namespace"], "deployments", m["name"], "status"), new)
        return again

    @staticmethod
    def _progressed(old: Obj, new: Obj) -> bool:
        keys = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
        return any(old.get(k, 0) != new.get(k, 0) for k in keys)
