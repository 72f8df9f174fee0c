"""Scheduling predicates of the core API types: taints against tolerations, node selector terms.

The scheduler's filters and the DaemonSet controller both decide "may this pod run on this node"
with these, as the real kube-scheduler and kube-controller-manager share them.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


def toleration_tolerates(t: Obj, key: str, value: str, effect: str) -> bool:
    """Whether one toleration tolerates the taint (key, value, effect)."""
    te = t.get("effect") or ""
    if te and te != effect:
        return False
    tk = t.get("key") or ""
    if not tk:
        return (t.get("operator") or "Equal") == "Exists"
    if tk != key:
        return False
    return (t.get("operator") or "Equal") == "Exists" or (t.get("value") or "") == value


def tolerates(tolerations: list[Obj], key: str, value: str, effect: str) -> bool:
    return any(toleration_tolerates(t, key, value, effect) for t in tolerations)


def _match_expr(expr: Obj, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    has = key in labels
    if op == "In":
        return has and labels[key] in values
    if op == "NotIn":
        return not has or labels[key] not in values
    if op == "Exists":
        return has
    if op == "DoesNotExist":
        return not has
    if op in ("Gt", "Lt"):
        if not has or len(values) != 1:
            return False
        try:
            lv, rv = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return lv > rv if op == "Gt" else lv < rv
    return False


def node_selector_term_matches(term: Obj, labels: dict[str, str], name: str) -> bool:
    """One required node-affinity term against a node's labels and name."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches nothing
    if not all(_match_expr(e, labels) for e in exprs):
        return False
    # metadata.name is the only field a node selector may name
    return all(f.get("key") == "metadata.name" and _match_expr(f, {"metadata.name": name}) for f in fields)
