"""What the workload controllers share: the pod they create from a template, and the
ControllerRevision history DaemonSets and StatefulSets keep of their templates."""

from __future__ import annotations

import copy
from typing import Any

import orjson

from . import util
from .base import Obj

REVISION_LABEL = "controller-revision-hash"


def pod_from_template(template: Obj, owner: Obj, api_version: str, kind: str, name_prefix: str) -> Obj:
    """A pod as a workload controller creates it from its template (generateName, owner reference)."""
    tmeta = copy.deepcopy(template.get("metadata") or {})
    pod_meta: dict[str, Any] = {
        "generateName": name_prefix,
        "namespace": util.meta(owner)["namespace"],
        "labels": tmeta.get("labels") or {},
        "ownerReferences": [util.owner_reference(owner, api_version, kind)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = tmeta["annotations"]
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = tmeta["finalizers"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def template_revision(owner: Obj) -> tuple[Obj, str]:
    """The revision data of ``owner``'s pod template (a strategic patch replacing the template) and
    its hash: FNV-32a of the sorted JSON, salted with ``status.collisionCount``, encoded as the real
    controllers encode it."""
    template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    data = {"spec": {"template": template}}
    collisions = int((owner.get("status") or {}).get("collisionCount") or 0)
    raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS) + (str(collisions).encode() if collisions else b"")
    return data, util.safe_encode(str(util.fnv32a(raw)))


def controller_revision(owner: Obj, kind: str, data: Obj, h: str, revision: int) -> Obj:
    """The ControllerRevision ``<owner>-<hash>`` recording ``data`` for ``owner`` (an apps/v1 ``kind``),
    labelled as its pods are plus the hash."""
    m = util.meta(owner)
    template = (owner.get("spec") or {}).get("template") or {}
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels[REVISION_LABEL] = h
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{m['name']}-{h}",
            "namespace": m["namespace"],
            "labels": labels,
            "ownerReferences": [util.owner_reference(owner, "apps/v1", kind)],
        },
        "data": data,
        "revision": revision,
    }
