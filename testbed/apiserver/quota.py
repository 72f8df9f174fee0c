"""ResourceQuota usage and admission, computed the way the real quota evaluators do.

* ``object_usage`` is what one object charges (the pod evaluator's rules: the larger of the sum of
  app containers and the largest init container, sidecars added, overhead added; terminal pods
  charge only ``count/pods``).
* ``usage_for_namespace`` is the quota controller's recount (``status.used``).
* ``check_admission`` is the admission plugin: it charges the object's usage (or the delta on
  update) against each matching quota's ``status`` and returns the new ``status.used`` to store.

Like the real evaluator, extended resources are tracked only as ``requests.<name>``; a hard key
``limits.<extended>`` (which HAMi reads for itself, e.g. ``limits.nvidia.com/gpumem``) is accepted
but not charged unless ``track_extended_limits=True`` is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from testbed.apiserver.errors import APIError, group_resource
from testbed.apiserver.selectors import go_quote, label_selector_from_object
from testbed.apiserver.validation import is_extended_resource, is_native_resource
from testbed.k8s.quantity import Quantity

ResourceList = dict[str, Quantity]

_ONE = Quantity.from_int(1)
_ZERO = Quantity(0)

POD_RESOURCES = frozenset({
    "count/pods", "pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage",
})
_POD_PREFIXES = ("hugepages-", "requests.hugepages-")
# resources a pod must request explicitly in every container once a quota constrains them
_VALIDATION_SET = frozenset({"cpu", "memory", "requests.cpu", "requests.memory",
                             "limits.cpu", "limits.memory"})
# legacy object-count names of core resources (besides count/<resource>)
_LEGACY_COUNTS = {"services", "configmaps", "secrets", "replicationcontrollers", "resourcequotas",
                  "persistentvolumeclaims"}
_SC_SUFFIX = ".storageclass.storage.k8s.io/"


# ---------------------------------------------------------------------------------------------
# resource list arithmetic


def parse_list(raw: Mapping[str, Any] | None) -> ResourceList:
    out: ResourceList = {}
    for k, v in (raw or {}).items():
        try:
            out[k] = v if isinstance(v, Quantity) else Quantity.parse(str(v))
        except ValueError:
            continue
    return out


def add(a: ResourceList, b: ResourceList) -> ResourceList:
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out


def subtract(a: ResourceList, b: ResourceList, *, non_negative: bool = False) -> ResourceList:
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] - v if k in out else -v
        if non_negative and out[k].sign() < 0:
            out[k] = Quantity(0, out[k].format)
    return out


def max_list(a: ResourceList, b: ResourceList) -> ResourceList:
    out = dict(a)
    for k, v in b.items():
        if k not in out or v > out[k]:
            out[k] = v
    return out


def mask(a: ResourceList, names: Iterable[str]) -> ResourceList:
    keep = set(names)
    return {k: v for k, v in a.items() if k in keep}


def to_strings(rl: ResourceList) -> dict[str, str]:
    return {k: str(v) for k, v in sorted(rl.items())}


def pretty(rl: ResourceList) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(rl.items()))


# ---------------------------------------------------------------------------------------------
# pods


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("spec") or {}


def pod_resources(pod: Mapping[str, Any], which: str) -> ResourceList:
    """Effective pod requests or limits (``which`` = "requests" | "limits")."""
    spec = _spec(pod)
    total: ResourceList = {}
    for c in spec.get("containers") or []:
        total = add(total, parse_list((c.get("resources") or {}).get(which)))
    sidecars: ResourceList = {}
    init_peak: ResourceList = {}
    for c in spec.get("initContainers") or []:
        own = parse_list((c.get("resources") or {}).get(which))
        if c.get("restartPolicy") == "Always":
            # a sidecar keeps running next to the app containers and the later init containers
            total = add(total, own)
            sidecars = add(sidecars, own)
            step = dict(sidecars)
        else:
            step = add(own, sidecars)
        init_peak = max_list(init_peak, step)
    total = max_list(total, init_peak)
    return add(total, parse_list(spec.get("overhead")))


def _compute_usage(requests: ResourceList, limits: ResourceList, *, extended_limits: bool) -> ResourceList:
    out: ResourceList = {"pods": _ONE}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            out[name] = requests[name]
            out[f"requests.{name}"] = requests[name]
        if name in limits:
            out[f"limits.{name}"] = limits[name]
    for name, q in requests.items():
        if name.startswith("hugepages-"):
            out[name] = q
            out[f"requests.{name}"] = q
        if is_extended_resource(name):
            out[f"requests.{name}"] = q
    if extended_limits:
        for name, q in limits.items():
            if is_extended_resource(name):
                out[f"limits.{name}"] = q
    return out


def pod_is_terminal(pod: Mapping[str, Any], *, now: datetime | None = None) -> bool:
    """True when the pod no longer charges compute quota (Succeeded/Failed, or stuck terminating)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return True
    meta = pod.get("metadata") or {}
    ts, grace = meta.get("deletionTimestamp"), meta.get("deletionGracePeriodSeconds")
    if ts and grace is not None:
        try:
            deleted = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
        except ValueError:
            return False
        if deleted.tzinfo is None:
            deleted = deleted.replace(tzinfo=UTC)
        return (now or datetime.now(UTC)) > deleted + timedelta(seconds=int(grace))
    return False


def pod_usage(pod: Mapping[str, Any], *, now: datetime | None = None,
              extended_limits: bool = False) -> ResourceList:
    out: ResourceList = {"count/pods": _ONE}
    if pod_is_terminal(pod, now=now):
        return out
    usage = _compute_usage(pod_resources(pod, "requests"), pod_resources(pod, "limits"),
                           extended_limits=extended_limits)
    return add(out, usage)


def _is_best_effort(pod: Mapping[str, Any]) -> bool:
    spec = _spec(pod)
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = c.get("resources") or {}
        for section in ("requests", "limits"):
            for name, q in parse_list(res.get(section)).items():
                if name in ("cpu", "memory") and not q.is_zero():
                    return False
    return True


def _is_terminating(pod: Mapping[str, Any]) -> bool:
    ads = _spec(pod).get("activeDeadlineSeconds")
    return isinstance(ads, int) and ads >= 0


def _container_constraints(c: Mapping[str, Any], required_set: set[str],
                           missing: dict[str, set[str]]) -> None:
    res = c.get("resources") or {}
    have = set(_compute_usage(parse_list(res.get("requests")), parse_list(res.get("limits")),
                              extended_limits=False))
    for name in required_set - have:
        missing.setdefault(name, set()).add(c.get("name") or "")


def pod_constraints(pod: Mapping[str, Any], restricted: Iterable[str]) -> str:
    """The real evaluator's 'must specify ...' text, or "" when every container is explicit."""
    required_set = set(restricted) & _VALIDATION_SET
    missing: dict[str, set[str]] = {}
    spec = _spec(pod)
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        _container_constraints(c, required_set, missing)
    if not missing:
        return ""
    parts = [f"{name} for: {','.join(sorted(missing[name]))}" for name in sorted(missing)]
    return "must specify " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# other evaluators


def _count_name(group: str, plural: str) -> str:
    return f"count/{plural}.{group}" if group else f"count/{plural}"


def service_usage(svc: Mapping[str, Any]) -> ResourceList:
    spec = svc.get("spec") or {}
    ports = len(spec.get("ports") or [])
    out: ResourceList = {"count/services": _ONE, "services": _ONE,
                         "services.loadbalancers": _ZERO, "services.nodeports": _ZERO}
    stype = spec.get("type") or "ClusterIP"
    if stype == "NodePort":
        out["services.nodeports"] = Quantity.from_int(ports)
    elif stype == "LoadBalancer":
        if spec.get("allocateLoadBalancerNodePorts", True) is not False:
            out["services.nodeports"] = Quantity.from_int(ports)
        out["services.loadbalancers"] = _ONE
    return out


def pvc_usage(pvc: Mapping[str, Any]) -> ResourceList:
    spec = pvc.get("spec") or {}
    out: ResourceList = {"count/persistentvolumeclaims": _ONE, "persistentvolumeclaims": _ONE}
    storage = parse_list((spec.get("resources") or {}).get("requests")).get("storage")
    sc = spec.get("storageClassName") or ""
    if sc:
        out[f"{sc}{_SC_SUFFIX}persistentvolumeclaims"] = _ONE
    if storage is not None:
        out["requests.storage"] = storage
        if sc:
            out[f"{sc}{_SC_SUFFIX}requests.storage"] = storage
    return out


def object_usage(group: str, plural: str, obj: Mapping[str, Any], *, now: datetime | None = None,
                 track_extended_limits: bool = False) -> ResourceList:
    """Everything one object charges, by quota resource name."""
    if (group, plural) == ("", "pods"):
        return pod_usage(obj, now=now, extended_limits=track_extended_limits)
    if (group, plural) == ("", "services"):
        return service_usage(obj)
    if (group, plural) == ("", "persistentvolumeclaims"):
        return pvc_usage(obj)
    out: ResourceList = {_count_name(group, plural): _ONE}
    if not group and plural in _LEGACY_COUNTS:
        out[plural] = _ONE
    return out


def _pod_tracks(name: str, extended_limits: bool) -> bool:
    if name in POD_RESOURCES or name.startswith(_POD_PREFIXES):
        return True
    # extended resources are quota'd as requests.<name> only (overcommit is not allowed for them)
    if name.startswith("requests.") and not is_native_resource(name):
        return True
    return extended_limits and name.startswith("limits.") and is_extended_resource(name[len("limits."):])


def matching_resources(group: str, plural: str, names: Iterable[str], *,
                       track_extended_limits: bool = False) -> list[str]:
    """The hard names this resource's evaluator tracks."""
    names = list(names)
    if (group, plural) == ("", "pods"):
        return [n for n in names if _pod_tracks(n, track_extended_limits)]
    if (group, plural) == ("", "services"):
        wanted = {"services", "count/services", "services.loadbalancers", "services.nodeports"}
        return [n for n in names if n in wanted]
    if (group, plural) == ("", "persistentvolumeclaims"):
        wanted = {"persistentvolumeclaims", "count/persistentvolumeclaims", "requests.storage"}
        return [n for n in names if n in wanted or (_SC_SUFFIX in n and n.endswith(
            ("/requests.storage", "/persistentvolumeclaims")))]
    wanted = {_count_name(group, plural)}
    if not group and plural in _LEGACY_COUNTS:
        wanted.add(plural)
    return [n for n in names if n in wanted]


# ---------------------------------------------------------------------------------------------
# scopes


def scope_selectors(quota: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = quota.get("spec") or {}
    out = [{"scopeName": s, "operator": "Exists"} for s in spec.get("scopes") or []]
    out += list((spec.get("scopeSelector") or {}).get("matchExpressions") or [])
    return out


def _pod_matches_scope(sel: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    scope = sel.get("scopeName")
    if scope == "Terminating":
        return _is_terminating(pod)
    if scope == "NotTerminating":
        return not _is_terminating(pod)
    if scope == "BestEffort":
        return _is_best_effort(pod)
    if scope == "NotBestEffort":
        return not _is_best_effort(pod)
    if scope == "PriorityClass":
        pc = _spec(pod).get("priorityClassName") or ""
        if sel.get("operator") == "Exists":
            return bool(pc)
        expr = {"key": "PriorityClass", "operator": sel.get("operator"), "values": sel.get("values") or []}
        labels = {"PriorityClass": pc} if pc else {}
        return label_selector_from_object({"matchExpressions": [expr]}).matches(labels)
    if scope == "CrossNamespacePodAffinity":
        affinity = _spec(pod).get("affinity") or {}
        for kind in ("podAffinity", "podAntiAffinity"):
            terms = affinity.get(kind) or {}
            for t in terms.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
                if t.get("namespaces") or t.get("namespaceSelector") is not None:
                    return True
            for w in terms.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
                t = w.get("podAffinityTerm") or {}
                if t.get("namespaces") or t.get("namespaceSelector") is not None:
                    return True
        return False
    return False


def matches_scopes(quota: Mapping[str, Any], group: str, plural: str, obj: Mapping[str, Any]) -> bool:
    sels = scope_selectors(quota)
    if not sels:
        return True
    if (group, plural) != ("", "pods"):
        return False
    return all(_pod_matches_scope(s, obj) for s in sels)


# ---------------------------------------------------------------------------------------------
# controller side


def usage_for_namespace(group_plural_objects: Iterable[tuple[str, str, Mapping[str, Any]]],
                        hard: Mapping[str, str], *, quota: Mapping[str, Any] | None = None,
                        now: datetime | None = None, track_extended_limits: bool = False) -> dict[str, str]:
    """``status.used`` for a quota with these ``hard`` keys over a namespace's objects.

    Only the keys some evaluator tracks appear (as "0" when nothing charges them); pass the quota
    itself to apply its scopes.
    """
    names = list(hard)
    tracked: set[str] = set()
    used: ResourceList = {}
    items = list(group_plural_objects)
    resources = {(g, p) for g, p, _ in items}
    resources |= {("", "pods"), ("", "services"), ("", "persistentvolumeclaims")}
    for g, p in resources:
        tracked.update(matching_resources(g, p, names, track_extended_limits=track_extended_limits))
    # count/<resource> names of resources that have no objects at the moment still read 0
    tracked.update(n for n in names if n.startswith("count/") or n in _LEGACY_COUNTS)
    for g, p, obj in items:
        if quota is not None and not matches_scopes(quota, g, p, obj):
            continue
        usage = object_usage(g, p, obj, now=now, track_extended_limits=track_extended_limits)
        used = add(used, mask(usage, tracked))
    for n in tracked:
        used.setdefault(n, Quantity(0))
    return to_strings(used)


def quota_status(quota: Mapping[str, Any], group_plural_objects: Iterable[tuple[str, str, Mapping[str, Any]]],
                 *, now: datetime | None = None, track_extended_limits: bool = False) -> dict[str, Any]:
    """The whole ``status`` the quota controller writes: hard copied from spec, used recounted."""
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    used = usage_for_namespace(group_plural_objects, hard, quota=quota, now=now,
                               track_extended_limits=track_extended_limits)
    return {"hard": hard, "used": used}


# ---------------------------------------------------------------------------------------------
# admission


def _forbidden(group: str, plural: str, obj: Mapping[str, Any], why: str) -> APIError:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "Unknown"
    details: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return APIError(403, "Forbidden", f"{group_resource(group, plural)} {go_quote(name)} is forbidden: {why}",
                    details=details)


def check_admission(quotas: list[dict[str, Any]], group: str, plural: str, obj: Mapping[str, Any],
                    old: Mapping[str, Any] | None, *, now: datetime | None = None,
                    track_extended_limits: bool = False) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Charge ``obj`` against the namespace's quotas.

    Returns ``[(quota, new_status_used)]`` for every quota whose usage changes; raises APIError 403
    with the real message when a quota would be exceeded or a constraint is not met.
    """
    is_pod = (group, plural) == ("", "pods")
    interesting: list[dict[str, Any]] = []
    for q in quotas:
        status = q.get("status") or {}
        hard_names = list((status.get("hard") or {}).keys())
        restricted = matching_resources(group, plural, hard_names,
                                        track_extended_limits=track_extended_limits)
        if not restricted or not matches_scopes(q, group, plural, obj):
            continue
        name = (q.get("metadata") or {}).get("name", "")
        if is_pod:
            why = pod_constraints(obj, restricted)
            if why:
                raise _forbidden(group, plural, obj, f"failed quota: {name}: {why}")
        used_names = set((status.get("used") or {}).keys())
        if any(r not in used_names for r in restricted):
            raise _forbidden(group, plural, obj, f"status unknown for quota: {name}, resources: "
                             + ",".join(sorted(restricted)))
        interesting.append(q)
    if not interesting:
        return []
    delta = object_usage(group, plural, obj, now=now, track_extended_limits=track_extended_limits)
    negative = sorted(k for k, v in delta.items() if v.sign() < 0)
    if negative:
        raise _forbidden(group, plural, obj, "quota usage is negative for resource(s): " + ",".join(negative))
    if old is not None and (old.get("metadata") or {}).get("resourceVersion"):
        prev = object_usage(group, plural, old, now=now, track_extended_limits=track_extended_limits)
        # pods may shrink (in-place resize); everything else is billed only for growth
        delta = subtract(delta, prev, non_negative=not is_pod)
    delta = {k: v for k, v in delta.items() if not v.is_zero()}
    if not delta:
        return []
    out: list[tuple[dict[str, Any], dict[str, str]]] = []
    for q in interesting:
        status = q.get("status") or {}
        hard, used = parse_list(status.get("hard")), parse_list(status.get("used"))
        requested = mask(delta, hard)
        new_used = add(used, requested)
        exceeded = sorted(k for k in requested if k in hard and new_used[k] > hard[k])
        if exceeded:
            name = (q.get("metadata") or {}).get("name", "")
            raise _forbidden(group, plural, obj,
                             f"exceeded quota: {name}, requested: {pretty(mask(requested, exceeded))}, "
                             f"used: {pretty(mask(used, exceeded))}, limited: {pretty(mask(hard, exceeded))}")
        if requested:
            merged = dict(status.get("used") or {})
            merged.update(to_strings(mask(new_used, requested)))
            out.append((q, merged))
    return out
