"""DaemonSet controller: one pod per eligible node, placed by the default scheduler through a
required node affinity on the node's name, RollingUpdate / OnDelete updates keyed on
``controller-revision-hash`` (with ControllerRevision history) and the status ``kubectl rollout
status ds/x`` and ``helm --wait`` read."""

from __future__ import annotations

import copy
import time
from typing import Any

from kubeclient.client import ApiError
from kubeclient.informer import key_of

from . import util
from .base import Context, Controller, Expectations, Obj
from .workload import REVISION_LABEL, controller_revision, pod_from_template, template_revision

DS_PATH = "/apis/apps/v1/daemonsets"
CR_PATH = "/apis/apps/v1/controllerrevisions"
HASH_LABEL = REVISION_LABEL
GENERATION_LABEL = "pod-template-generation"
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
# node name -> should_run(ds, node), computed once per sync
Fit = dict[str, tuple[bool, bool]]


def daemon_tolerations(spec: Obj) -> list[Obj]:
    """The pod's tolerations plus those the controller adds to every daemon pod."""
    tols = list(spec.get("tolerations") or [])
    extra: list[Obj] = [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    ]
    if spec.get("hostNetwork"):
        extra.append(
            {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}
        )
    for t in extra:
        # added only when no toleration with that key and effect is there already
        if not any(x.get("key") == t["key"] and x.get("effect") == t["effect"] for x in tols):
            tols.append(t)
    return tols


def pin_to_node(spec: Obj, node_name: str) -> None:
    """Replace the required node affinity with one term selecting the node by name (preferred kept)."""
    affinity = spec.setdefault("affinity", {})
    na = affinity.setdefault("nodeAffinity", {})
    na["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
        ]
    }


def should_run(ds: Obj, node: Obj) -> tuple[bool, bool]:
    """(should run a new pod there, may keep a running one there), like the real predicate check."""
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    if not util.node_matches_pod(spec, node):
        return False, False
    tols = daemon_tolerations(spec)
    taints = util.node_taints(node)
    if util.untolerated_taints(tols, taints, ("NoExecute",)):
        return False, False
    if util.untolerated_taints(tols, taints, ("NoSchedule",)):
        return False, True
    return True, True


class DaemonSetController(Controller):
    name = "daemonset"
    component = "daemonset-controller"
    api_version = "apps/v1"
    kind = "DaemonSet"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.expect = Expectations()
        self._revisions: dict[str, tuple[float, Obj]] = {}

    def setup(self) -> None:
        self.ds = self.ctx.informers.get(DS_PATH)
        self.ds.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.crs = self.ctx.informers.get(CR_PATH)
        self.cr_by_owner = self.ctx.informers.index(
            CR_PATH, "owner", lambda o: [util.controller_uid(o) or ""]
        )
        self.nodes = self.ctx.nodes()
        self.nodes.add_handler(self._on_node)
        self.by_owner = self.ctx.pods_by_owner()
        self.ctx.pods().add_handler(self._on_pod)

    def _on_node(self, kind: str, node: Obj, old: Obj | None) -> None:
        # should_run reads only the node's name, labels and taints: a status heartbeat changes nothing
        if (kind == "MODIFIED" and old is not None and node.get("spec") == old.get("spec")
                and util.meta(node).get("labels") == util.meta(old).get("labels")):
            return
        for ds in self.ds.items():
            self.enqueue(ds)

    def _on_pod(self, _kind: str, pod: Obj, old: Obj | None) -> None:
        for o in (pod, old):
            ref = util.controller_ref(o) if o else None
            if ref and ref.get("kind") == "DaemonSet":
                self.queue.add(f"{util.meta(pod)['namespace']}/{ref['name']}")

    def _path(self, ns: str, plural: str, name: str = "", sub: str = "") -> str:
        return "/".join(x for x in (f"/apis/apps/v1/namespaces/{ns}/{plural}", name, sub) if x)

    # -- revisions ---------------------------------------------------------------------------------------
    def _current_revision(self, ds: Obj) -> tuple[str, int]:
        """The hash of the current template, creating its ControllerRevision if missing."""
        m = util.meta(ds)
        data, h = template_revision(ds)
        owned = self.cr_by_owner.get(m["uid"])
        for name, (t, r) in list(self._revisions.items()):
            if time.monotonic() - t > 30 or any(key_of(o) == name for o in owned):
                self._revisions.pop(name, None)
            elif util.controller_uid(r) == m["uid"]:
                owned.append(r)
        top = max([int(r.get("revision") or 0) for r in owned] + [0])
        for r in owned:
            if (r.get("metadata") or {}).get("labels", {}).get(HASH_LABEL) == h:
                if int(r.get("revision") or 0) < top:
                    new = copy.deepcopy(r)
                    new["revision"] = top + 1
                    self.kube.update(
                        self._path(m["namespace"], "controllerrevisions", util.meta(r)["name"]), new
                    )
                    return h, top + 1
                return h, int(r.get("revision") or 0)
        body = controller_revision(ds, "DaemonSet", data, h, top + 1)
        try:
            cr = self.kube.create(self._path(m["namespace"], "controllerrevisions"), body)
            self._revisions[f"{m['namespace']}/{util.meta(cr)['name']}"] = (time.monotonic(), cr)
        except ApiError as e:
            if e.status != 409:
                raise
        self._trim_history(ds, owned)
        return h, top + 1

    def _trim_history(self, ds: Obj, owned: list[Obj]) -> None:
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else int(limit)
        live = {
            (util.meta(p).get("labels") or {}).get(HASH_LABEL)
            for p in self.by_owner.get(util.meta(ds)["uid"])
        }
        idle = sorted(
            (r for r in owned if (util.meta(r).get("labels") or {}).get(HASH_LABEL) not in live),
            key=lambda r: int(r.get("revision") or 0),
        )
        for r in idle[: max(0, len(idle) - limit)]:
            try:
                self.kube.delete(
                    self._path(util.meta(r)["namespace"], "controllerrevisions", util.meta(r)["name"])
                )
            except ApiError:
                pass

    # -- sync ----------------------------------------------------------------------------------------------
    def sync(self, key: str) -> float | None:
        ds = self.ds.get(key)
        if ds is None or util.deleting(ds):
            return None
        m = util.meta(ds)
        h, _rev = self._current_revision(ds)
        pods = self.expect.merge(m["uid"], [p for p in self.by_owner.get(m["uid"]) if not util.deleting(p)])
        by_node = self._by_node(pods)
        nodes = {util.meta(n)["name"]: n for n in self.nodes.items()}
        fit = {name: should_run(ds, node) for name, node in nodes.items()}  # the one predicate pass
        create: list[str] = []
        delete: list[Obj] = []
        for name, (run, keep) in fit.items():
            have = by_node.get(name, [])
            failed = [p for p in have if util.pod_phase(p) == "Failed"]
            delete.extend(failed)  # the real controller replaces failed daemon pods
            live = [p for p in have if util.pod_phase(p) != "Failed"]
            if run and not live:
                create.append(name)
            elif not keep:
                delete.extend(live)
            elif len(live) > 1:
                # keep the oldest, drop duplicates
                live.sort(key=lambda p: util.parse_time(util.meta(p).get("creationTimestamp")) or 0)
                delete.extend(live[1:])
        for name, have in by_node.items():
            if name and name not in nodes:
                delete.extend(have)  # pods for nodes that are gone (pod GC also handles bound ones)
        for p in delete:
            self._delete(ds, p)
        for name in create:
            self._create(ds, nodes[name], h)
        again = self._rolling_update(ds, h, fit, by_node, {key_of(p) for p in delete})
        return self._status(ds, h, fit, again)

    @classmethod
    def _by_node(cls, pods: list[Obj]) -> dict[str, list[Obj]]:
        """Daemon pods grouped by their node: the bound one, else the one their affinity pins."""
        out: dict[str, list[Obj]] = {}
        for p in pods:
            out.setdefault((p.get("spec") or {}).get("nodeName") or cls._pinned_node(p), []).append(p)
        return out

    @staticmethod
    def _pinned_node(pod: Obj) -> str:
        req = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        ) or {}
        for term in req.get("nodeSelectorTerms") or []:
            for f in term.get("matchFields") or []:
                if f.get("key") == "metadata.name" and f.get("operator") == "In" and f.get("values"):
                    return str(f["values"][0])
        return ""

    def _create(self, ds: Obj, node: Obj, h: str) -> None:
        m = util.meta(ds)
        template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
        pod = pod_from_template(template, ds, "apps/v1", "DaemonSet", f"{m['name']}-")
        pod["metadata"]["labels"] = {
            **pod["metadata"]["labels"],
            HASH_LABEL: h,
            # the template generation the apiserver keeps in this annotation (metadata.generation on
            # an object written before it did)
            GENERATION_LABEL: str((m.get("annotations") or {}).get(TEMPLATE_GENERATION)
                                  or m.get("generation", 1)),
        }
        pod["spec"]["tolerations"] = daemon_tolerations(pod["spec"])
        pin_to_node(pod["spec"], util.meta(node)["name"])
        try:
            created = self.kube.create(f"/api/v1/namespaces/{m['namespace']}/pods", pod)
        except ApiError as e:
            self.event(ds, "Warning", "FailedCreate", f"Error creating: {e}")
            return
        self.expect.created(m["uid"], created)
        self.event(ds, "Normal", "SuccessfulCreate", f"Created pod: {util.meta(created)['name']}")

    def _delete(self, ds: Obj, pod: Obj) -> None:
        pm = util.meta(pod)
        try:
            self.kube.delete(f"/api/v1/namespaces/{pm['namespace']}/pods/{pm['name']}")
        except ApiError as e:
            if e.status != 404:
                self.event(ds, "Warning", "FailedDelete", f"Error deleting: {e}")
                return
        self.expect.deleted(util.meta(ds)["uid"], key_of(pod))
        self.event(ds, "Normal", "SuccessfulDelete", f"Deleted pod: {pm['name']}")

    def _rolling_update(
        self, ds: Obj, h: str, fit: Fit, by_node: dict[str, list[Obj]], gone: set[str]
    ) -> float | None:
        """Replace old-hash pods, at most maxUnavailable nodes without an available pod at a time."""
        spec = ds.get("spec") or {}
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return None
        min_ready = int(spec.get("minReadySeconds") or 0)
        at = time.time()
        desired = [n for n, (run, _keep) in fit.items() if run]
        max_unavailable = (
            util.scaled((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), len(desired), True)
            or 1
        )
        unavailable = 0
        old_available: list[Obj] = []
        for n in desired:
            live = [p for p in by_node.get(n, []) if key_of(p) not in gone and not util.pod_terminated(p)]
            if not live:
                unavailable += 1
                continue
            p = live[0]
            is_old = (util.meta(p).get("labels") or {}).get(HASH_LABEL) != h
            if not util.pod_available(p, min_ready, at):
                if is_old:
                    self._delete(ds, p)  # an old pod that is not available anyway goes at once
                unavailable += 1
            elif is_old:
                old_available.append(p)
        for p in old_available:
            if unavailable >= max_unavailable:
                break
            self._delete(ds, p)
            unavailable += 1
        return 1.0 if old_available else None

    def _status(self, ds: Obj, h: str, fit: Fit, again: float | None) -> float | None:
        m = util.meta(ds)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        at = time.time()
        by_node = self._by_node([p for p in self.by_owner.get(m["uid"]) if not util.deleting(p)])
        desired = current = misscheduled = ready = updated = available = 0
        waits: list[float] = []
        for name, (run, _keep) in fit.items():
            have = [p for p in by_node.get(name, []) if not util.pod_terminated(p)]
            if run:
                desired += 1
                if have:
                    current += 1
                    p = sorted(
                        have, key=lambda x: util.parse_time(util.meta(x).get("creationTimestamp")) or 0
                    )[0]
                    if util.pod_ready(p):
                        ready += 1
                        if util.pod_available(p, min_ready, at):
                            available += 1
                        elif (w := util.ready_remaining(p, min_ready, at)) is not None:
                            waits.append(w)
                    if (util.meta(p).get("labels") or {}).get(HASH_LABEL) == h:
                        updated += 1
            elif have:
                misscheduled += 1
        old = ds.get("status") or {}
        status: dict[str, Any] = {
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired,
            "numberReady": ready,
            "observedGeneration": m.get("generation", 1),
        }
        if updated:
            status["updatedNumberScheduled"] = updated
        if available:
            status["numberAvailable"] = available
        if desired - available:
            status["numberUnavailable"] = desired - available
        for k in ("collisionCount", "conditions"):
            if old.get(k) is not None:
                status[k] = old[k]
        if status != old:
            new = copy.deepcopy(ds)
            new["status"] = status
            self.kube.update(self._path(m["namespace"], "daemonsets", m["name"], "status"), new)
        cands = [x for x in (again, min(waits) + 0.05 if waits else None) if x is not None]
        return min(cands) if cands else None
