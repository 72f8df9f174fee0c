"""Volume binding: kube-controller-manager's persistentvolume-binder plus kind's local-path provisioner.

* A claim whose class is provisioned by ``rancher.io/local-path`` (the testbed's default class,
  ``standard``) gets a volume once the scheduler names a node on it
  (``volume.kubernetes.io/selected-node``): a ``hostPath`` PV ``pvc-<claim uid>`` pinned to that
  node by node affinity, bound to the claim both ways (``claimRef`` / ``volumeName``, phases Bound).
* An unbound claim with no class, or a class that binds Immediately, is bound to the smallest
  Available PV of the same class that is large enough and has its access modes.
* A PV released by a deleted claim is deleted when its reclaim policy is Delete.
"""

from __future__ import annotations

import copy

from kubeclient.client import ApiError

from . import util
from .base import Context, Controller, Obj

SELECTED_NODE = "volume.kubernetes.io/selected-node"
LOCAL_PATH = "rancher.io/local-path"
LOCAL_PATH_ROOT = "/var/local-path-provisioner"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bind-completed"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "": 1,
}


def quantity_bytes(text: str | None) -> int:
    text = str(text or "0")
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _UNITS[suffix])
    return int(float(text))


class PersistentVolumeBinderController(Controller):
    name = "persistentvolume-binder"
    component = "persistentvolume-controller"
    api_version = "v1"
    kind = "PersistentVolumeClaim"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)

    def setup(self) -> None:
        self.claims = self.ctx.informers.get("/api/v1/persistentvolumeclaims")
        self.claims.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.claims.add_handler(self._on_claim_deleted)
        self.volumes = self.ctx.informers.get("/api/v1/persistentvolumes")
        self.classes = self.ctx.informers.get("/apis/storage.k8s.io/v1/storageclasses")

    def _on_claim_deleted(self, kind: str, pvc: Obj, _old: Obj | None) -> None:
        if kind != "DELETED":
            return
        uid = util.meta(pvc)["uid"]
        for pv in self.volumes.items():
            if ((pv.get("spec") or {}).get("claimRef") or {}).get("uid") == uid:
                self._release(pv)

    def _release(self, pv: Obj) -> None:
        name = util.meta(pv)["name"]
        try:
            if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy", "Retain") == "Delete":
                self.kube.delete(f"/api/v1/persistentvolumes/{name}")
            else:
                new = copy.deepcopy(pv)
                new["status"] = {"phase": "Released"}
                self.kube.update(f"/api/v1/persistentvolumes/{name}/status", new)
        except ApiError:
            pass

    def sync(self, key: str) -> float | None:
        pvc = self.claims.get(key)
        if pvc is None or util.deleting(pvc):
            return None
        m = util.meta(pvc)
        spec = pvc.get("spec") or {}
        if spec.get("volumeName"):
            if (pvc.get("status") or {}).get("phase") != "Bound":
                pv = self.volumes.get(spec["volumeName"])
                if pv is not None:
                    self._mark_bound(pvc, pv)
            return None
        cls_name = spec.get("storageClassName") or ""
        sc = self.classes.get(cls_name) if cls_name else None
        node = (m.get("annotations") or {}).get(SELECTED_NODE)
        if sc is not None and sc.get("provisioner") == LOCAL_PATH:
            if node:
                self._provision(pvc, sc, node)
            return None
        if sc is None or (sc.get("volumeBindingMode") or "Immediate") == "Immediate":
            pv = self._match(pvc, cls_name)
            if pv is not None:
                self._bind(pvc, pv)
                return None
        if (pvc.get("status") or {}).get("phase") != "Pending":
            new = copy.deepcopy(pvc)
            new["status"] = {"phase": "Pending"}
            self._update_status("persistentvolumeclaims", new)
        return 5.0  # a volume may appear later

    def _match(self, pvc: Obj, cls_name: str) -> Obj | None:
        spec = pvc.get("spec") or {}
        want = quantity_bytes(((spec.get("resources") or {}).get("requests") or {}).get("storage"))
        modes = set(spec.get("accessModes") or [])
        fits = []
        for pv in self.volumes.items():
            ps = pv.get("spec") or {}
            # a new volume is Pending until the controller has seen it; either may be bound
            if ps.get("claimRef") or (pv.get("status") or {}).get("phase") not in (
                None,
                "",
                "Pending",
                "Available",
            ):
                continue
            if (ps.get("storageClassName") or "") != cls_name or not modes <= set(
                ps.get("accessModes") or []
            ):
                continue
            size = quantity_bytes((ps.get("capacity") or {}).get("storage"))
            if size >= want:
                fits.append((size, util.meta(pv)["name"], pv))
        return min(fits)[2] if fits else None

    def _provision(self, pvc: Obj, sc: Obj, node: str) -> None:
        m = util.meta(pvc)
        spec = pvc.get("spec") or {}
        name = f"pvc-{m['uid']}"
        pv: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: LOCAL_PATH}},
            "spec": {
                "capacity": {
                    "storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
                },
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
                "storageClassName": util.meta(sc)["name"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {
                    "path": f"{LOCAL_PATH_ROOT}/{name}_{m['namespace']}_{m['name']}",
                    "type": "DirectoryOrCreate",
                },
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                                ]
                            }
                        ]
                    }
                },
                "claimRef": {
                    "kind": "PersistentVolumeClaim",
                    "apiVersion": "v1",
                    "namespace": m["namespace"],
                    "name": m["name"],
                    "uid": m["uid"],
                    "resourceVersion": m.get("resourceVersion", ""),
                },
            },
        }
        try:
            pv = self.kube.create("/api/v1/persistentvolumes", pv)
        except ApiError as e:
            if e.status != 409:
                self.event(pvc, "Warning", "ProvisioningFailed", f"failed to provision volume: {e}")
                return
            pv = self.kube.get(f"/api/v1/persistentvolumes/{name}")
        self.event(pvc, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {name}")
        self._bind(pvc, pv)

    def _bind(self, pvc: Obj, pv: Obj) -> None:
        m = util.meta(pvc)
        pv_name = util.meta(pv)["name"]
        if not (pv.get("spec") or {}).get("claimRef"):
            new_pv = copy.deepcopy(pv)
            new_pv["spec"]["claimRef"] = {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": m["namespace"],
                "name": m["name"],
                "uid": m["uid"],
            }
            try:
                pv = self.kube.update(f"/api/v1/persistentvolumes/{pv_name}", new_pv)
            except ApiError:
                return
        new = copy.deepcopy(pvc)
        new["spec"]["volumeName"] = pv_name
        annotations = new["metadata"].setdefault("annotations", {})
        annotations[BOUND_BY_CONTROLLER] = "yes"
        try:
            pvc = self.kube.update(
                f"/api/v1/namespaces/{m['namespace']}/persistentvolumeclaims/{m['name']}", new
            )
        except ApiError:
            return
        self._mark_bound(pvc, pv)

    def _mark_bound(self, pvc: Obj, pv: Obj) -> None:
        pv_status = copy.deepcopy(pv)
        pv_status["status"] = {"phase": "Bound"}
        self._update_status("persistentvolumes", pv_status)
        new = copy.deepcopy(pvc)
        new["status"] = {
            "phase": "Bound",
            "accessModes": (pv.get("spec") or {}).get("accessModes") or [],
            "capacity": (pv.get("spec") or {}).get("capacity") or {},
        }
        self._update_status("persistentvolumeclaims", new)

    def _update_status(self, plural: str, obj: Obj) -> None:
        m = util.meta(obj)
        base = (
            f"/api/v1/namespaces/{m['namespace']}/{plural}"
            if plural == "persistentvolumeclaims"
            else f"/api/v1/{plural}"
        )
        try:
            self.kube.update(f"{base}/{m['name']}/status", obj)
        except ApiError as e:
            if e.status not in (404, 409):
                raise


__all__ = ["PersistentVolumeBinderController", "quantity_bytes"]
