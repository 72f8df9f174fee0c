"""Small pure helpers the controllers share: time stamps, owner references, pod state, hashing,
node eligibility (node selector, required node affinity, taints and tolerations) and int-or-percent."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import orjson

from testbed.apiserver.selectors import label_selector_from_object

# the scheduler's predicates are the one implementation; the daemonset and node lifecycle reuse them
from testbed.k8s.scheduling import node_selector_term_matches as _term_matches
from testbed.k8s.scheduling import toleration_tolerates as _tolerates
from testbed.k8s.timefmt import now as now
from testbed.k8s.timefmt import now_micro as now_micro

Obj = dict[str, Any]

# -- time ----------------------------------------------------------------------------------------


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- metadata --------------------------------------------------------------------------------------


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def controller_ref(obj: Obj) -> Obj | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def controller_uid(obj: Obj) -> str | None:
    ref = controller_ref(obj)
    return ref.get("uid") if ref else None


def owner_reference(owner: Obj, api_version: str, kind: str) -> Obj:
    """The reference a controller puts on what it creates (controller and blockOwnerDeletion true)."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta(owner)["name"],
        "uid": meta(owner)["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_matches(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    sel = label_selector_from_object(selector)
    return not sel.empty() and sel.matches(labels or {})


def deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


# -- pods ----------------------------------------------------------------------------------------------


def pod_phase(pod: Obj) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def pod_terminated(pod: Obj) -> bool:
    return pod_phase(pod) in ("Succeeded", "Failed")


def pod_active(pod: Obj) -> bool:
    return not pod_terminated(pod) and not deleting(pod)


def pod_condition(pod: Obj, ctype: str) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def pod_ready(pod: Obj) -> bool:
    c = pod_condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def pod_available(pod: Obj, min_ready_seconds: int, at: float) -> bool:
    """Ready, and for at least minReadySeconds (measured from the Ready condition's transition)."""
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time((pod_condition(pod, "Ready") or {}).get("lastTransitionTime"))
    return since is not None and since + min_ready_seconds <= at


def ready_remaining(pod: Obj, min_ready_seconds: int, at: float) -> float | None:
    """Seconds until a ready pod becomes available (None when not ready or already available)."""
    if not pod_ready(pod) or min_ready_seconds <= 0:
        return None
    since = parse_time((pod_condition(pod, "Ready") or {}).get("lastTransitionTime"))
    if since is None:
        return None
    left = since + min_ready_seconds - at
    return left if left > 0 else None


# -- hashing -----------------------------------------------------------------------------------------

_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Map each character onto an alphabet without vowels (no accidental words), as names need."""
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in text)


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    """A short stable hash of a pod template (plus the collision count), used in names and labels."""
    data = orjson.dumps(template, option=orjson.OPT_SORT_KEYS)
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


# -- int or percent ---------------------------------------------------------------------------------


def scaled(value: Any, total: int, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        pct = int(text[:-1])
        v = pct * total / 100
        return math.ceil(v) if round_up else math.floor(v)
    return int(text)


# -- nodes ---------------------------------------------------------------------------------------------


def node_condition(node: Obj, ctype: str) -> Obj | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def node_selector_term_matches(term: Obj, node: Obj) -> bool:
    return _term_matches(term, meta(node).get("labels") or {}, meta(node).get("name") or "")


def node_matches_pod(spec: Obj, node: Obj) -> bool:
    """nodeSelector and required node affinity (the NodeSelector / NodeAffinity predicates)."""
    labels = meta(node).get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is not None:
        terms = required.get("nodeSelectorTerms") or []
        if not any(node_selector_term_matches(t, node) for t in terms):
            return False
    return True


def toleration_tolerates(tol: Obj, taint: Obj) -> bool:
    return _tolerates(tol, taint.get("key") or "", taint.get("value") or "", taint.get("effect") or "")


def untolerated_taints(tolerations: list[Obj], taints: list[Obj], effects: tuple[str, ...]) -> list[Obj]:
    return [
        t
        for t in taints
        if t.get("effect") in effects and not any(toleration_tolerates(tol, t) for tol in tolerations)
    ]


def node_taints(node: Obj) -> list[Obj]:
    return list((node.get("spec") or {}).get("taints") or [])
