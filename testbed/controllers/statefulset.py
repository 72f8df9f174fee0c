"""StatefulSet controller: stable pod names ``<set>-<ordinal>``, PVCs from ``volumeClaimTemplates``,
``OrderedReady`` (one ordinal at a time, each waiting for the one before to be Running and Ready;
scale-down from the highest ordinal) and ``Parallel`` pod management, ``RollingUpdate`` from the
highest ordinal down (``partition`` honoured) or ``OnDelete``, ControllerRevision history and the
status ``kubectl rollout status`` reads.

Not modelled: ``persistentVolumeClaimRetentionPolicy`` deletion of PVCs, ``maxUnavailable``,
``ordinals.start`` and ``minReadySeconds`` (listed in testbed/DIFFERENCES.md).
"""

from __future__ import annotations

import copy
from typing import Any

from kubeclient.client import ApiError

from . import util
from .base import Context, Controller, Obj
from .workload import REVISION_LABEL, controller_revision, pod_from_template, template_revision

STS_PATH = "/apis/apps/v1/statefulsets"
CR_PATH = "/apis/apps/v1/controllerrevisions"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"  # 1.28+


def ordinal_of(set_name: str, pod: Obj) -> int | None:
    name = util.meta(pod).get("name", "")
    prefix, _, tail = name.rpartition("-")
    return int(tail) if prefix == set_name and tail.isdigit() else None


class StatefulSetController(Controller):
    name = "statefulset"
    component = "statefulset-controller"
    api_version = "apps/v1"
    kind = "StatefulSet"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)

    def setup(self) -> None:
        self.sets = self.ctx.informers.get(STS_PATH)
        self.sets.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.revisions = self.ctx.informers.get(CR_PATH)
        self.by_owner = self.ctx.pods_by_owner()
        self.ctx.pods().add_handler(self._on_pod)

    def _on_pod(self, _kind: str, pod: Obj, old: Obj | None) -> None:
        for o in (pod, old):
            ref = util.controller_ref(o) if o else None
            if ref and ref.get("kind") == "StatefulSet":
                self.queue.add(f"{util.meta(pod)['namespace']}/{ref['name']}")

    def _path(self, ns: str, plural: str, name: str = "", sub: str = "") -> str:
        group = "/api/v1" if plural in ("pods", "persistentvolumeclaims") else "/apis/apps/v1"
        return "/".join(x for x in (f"{group}/namespaces/{ns}/{plural}", name, sub) if x)

    # -- revisions ------------------------------------------------------------------------------
    def _revision(self, sts: Obj) -> tuple[str, int]:
        """The hash of the current template (its ControllerRevision created if missing)."""
        m = util.meta(sts)
        data, h = template_revision(sts)
        owned = [r for r in self.revisions.items() if util.controller_uid(r) == m["uid"]]
        top = max([int(r.get("revision") or 0) for r in owned] + [0])
        for r in owned:
            if (util.meta(r).get("labels") or {}).get(REVISION_LABEL) == h:
                return f"{m['name']}-{h}", int(r.get("revision") or 0)
        body = controller_revision(sts, "StatefulSet", data, h, top + 1)
        try:
            self.kube.create(self._path(m["namespace"], "controllerrevisions"), body)
        except ApiError as e:
            if e.status != 409:
                raise
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        old = sorted(
            (r for r in owned if (util.meta(r).get("labels") or {}).get(REVISION_LABEL) != h),
            key=lambda r: int(r.get("revision") or 0),
        )
        for r in old[: max(0, len(old) - limit)]:
            try:
                self.kube.delete(self._path(m["namespace"], "controllerrevisions", util.meta(r)["name"]))
            except ApiError:
                pass
        return f"{m['name']}-{h}", top + 1

    # -- sync -----------------------------------------------------------------------------------
    def sync(self, key: str) -> float | None:
        sts = self.sets.get(key)
        if sts is None or util.deleting(sts):
            return None
        m = util.meta(sts)
        spec = sts.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        strategy = spec.get("updateStrategy") or {}
        update_revision, _ = self._revision(sts)
        pods = {o: p for p in self.by_owner.get(m["uid"]) if (o := ordinal_of(m["name"], p)) is not None}
        # create the missing ordinals (in order unless Parallel), then scale down from the top
        for ordinal in range(replicas):
            pod = pods.get(ordinal)
            if pod is None:
                pods[ordinal] = self._create(sts, ordinal, update_revision)
                if not parallel:
                    break
                continue
            if util.pod_phase(pod) in ("Failed", "Succeeded") and not util.deleting(pod):
                self._delete(sts, pod)  # a terminated pod is replaced under the same name
                if not parallel:
                    break
                continue
            if not parallel and not (util.pod_phase(pod) == "Running" and util.pod_ready(pod)):
                break  # OrderedReady: the next ordinal waits for this one
        for ordinal in sorted((o for o in pods if o >= replicas), reverse=True):
            if not util.deleting(pods[ordinal]):
                self._delete(sts, pods[ordinal])
            if not parallel:
                break
        # RollingUpdate: replace pods of an old revision from the highest ordinal down, one at a time
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
            live = [pods[o] for o in range(replicas) if o in pods]
            if len(live) == replicas and all(util.pod_ready(p) and not util.deleting(p) for p in live):
                for ordinal in range(replicas - 1, partition - 1, -1):
                    pod = pods[ordinal]
                    if (util.meta(pod).get("labels") or {}).get(REVISION_LABEL) != update_revision:
                        self._delete(sts, pod)
                        break
        self._status(sts, pods, replicas, update_revision)
        return None

    def _create(self, sts: Obj, ordinal: int, revision: str) -> Obj:
        m = util.meta(sts)
        spec = sts.get("spec") or {}
        name = f"{m['name']}-{ordinal}"
        for tmpl in spec.get("volumeClaimTemplates") or []:
            claim = f"{util.meta(tmpl)['name']}-{name}"
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim,
                    "namespace": m["namespace"],
                    "labels": dict((spec.get("selector") or {}).get("matchLabels") or {}),
                },
                "spec": copy.deepcopy(tmpl.get("spec") or {}),
            }
            try:
                self.kube.create(self._path(m["namespace"], "persistentvolumeclaims"), body)
            except ApiError as e:
                if e.status != 409:
                    self.event(
                        sts,
                        "Warning",
                        "FailedCreate",
                        f"create Claim {claim} for Pod {name} in StatefulSet {m['name']} failed error: {e}",
                    )
                    raise
        body = pod_from_template(spec.get("template") or {}, sts, "apps/v1", "StatefulSet", "")
        meta = body["metadata"]
        meta.pop("generateName", None)
        meta["name"] = name
        labels = meta.setdefault("labels", {})
        labels[REVISION_LABEL] = revision
        labels[POD_NAME_LABEL] = name
        if self.ctx.minor >= 28:
            labels[POD_INDEX_LABEL] = str(ordinal)
        pspec = body["spec"]
        pspec.setdefault("hostname", name)
        if spec.get("serviceName"):
            pspec.setdefault("subdomain", spec["serviceName"])
        volumes = pspec.setdefault("volumes", [])
        have = {v.get("name") for v in volumes}
        for tmpl in spec.get("volumeClaimTemplates") or []:
            vname = util.meta(tmpl)["name"]
            if vname not in have:
                volumes.append({"name": vname, "persistentVolumeClaim": {"claimName": f"{vname}-{name}"}})
        if not volumes:
            pspec.pop("volumes")
        try:
            pod = self.kube.create(self._path(m["namespace"], "pods"), body)
        except ApiError as e:
            if e.status == 409:
                return self.kube.get(self._path(m["namespace"], "pods", name))
            self.event(
                sts,
                "Warning",
                "FailedCreate",
                f"create Pod {name} in StatefulSet {m['name']} failed error: {e}",
            )
            raise
        self.event(
            sts, "Normal", "SuccessfulCreate", f"create Pod {name} in StatefulSet {m['name']} successful"
        )
        return pod

    def _delete(self, sts: Obj, pod: Obj) -> None:
        pm = util.meta(pod)
        try:
            self.kube.delete(self._path(pm["namespace"], "pods", pm["name"]))
        except ApiError as e:
            if e.status != 404:
                raise
        self.event(
            sts,
            "Normal",
            "SuccessfulDelete",
            f"delete Pod {pm['name']} in StatefulSet {util.meta(sts)['name']} successful",
        )

    def _status(self, sts: Obj, pods: dict[int, Obj], replicas: int, update_revision: str) -> None:
        m = util.meta(sts)
        old = sts.get("status") or {}
        live = [p for p in pods.values() if not util.deleting(p)]
        current_revision = old.get("currentRevision") or update_revision
        rev = lambda p: (util.meta(p).get("labels") or {}).get(REVISION_LABEL)  # noqa: E731
        updated = sum(1 for p in live if rev(p) == update_revision)
        if updated == replicas and all(util.pod_ready(p) for p in live) and len(live) == replicas:
            current_revision = update_revision
        status: dict[str, Any] = {
            "observedGeneration": m.get("generation", 0),
            "replicas": len(live),
            "readyReplicas": sum(1 for p in live if util.pod_ready(p)),
            "currentReplicas": sum(1 for p in live if rev(p) == current_revision),
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": int(old.get("collisionCount") or 0),
            "availableReplicas": sum(1 for p in live if util.pod_ready(p)),
        }
        for k in ("readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas"):
            if not status[k] and k != "availableReplicas":
                status.pop(k)
        merged = {**old, **status}
        for k in ("readyReplicas", "currentReplicas", "updatedReplicas"):
            if k not in status:
                merged.pop(k, None)
        if merged != old:
            new = copy.deepcopy(sts)
            new["status"] = merged
            try:
                self.kube.update(self._path(m["namespace"], "statefulsets", m["name"], "status"), new)
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
