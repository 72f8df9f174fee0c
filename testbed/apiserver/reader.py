"""Read-only access to stored objects, and label-selector matching, for auth and admission.

Authentication, RBAC and the webhook dispatcher only read what the apiserver stores (service
accounts, roles, webhook configurations, endpoints). They see it through :class:`Reader`, which the
server's store satisfies as it is, and which tests satisfy with :class:`DictReader`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class Reader(Protocol):
    def get(self, store_key: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def list(self, store_key: str, namespace: str | None = None) -> list[dict[str, Any]]: ...


class DictReader:
    """A Reader over plain lists of objects: ``{store_key: [obj, ...]}``."""

    def __init__(self, objects: Mapping[str, Iterable[dict[str, Any]]] | None = None) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {k: list(v) for k, v in (objects or {}).items()}

    def add(self, store_key: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.delete(store_key, meta.get("namespace", ""), meta.get("name", ""))
        self.objects.setdefault(store_key, []).append(obj)

    def delete(self, store_key: str, namespace: str, name: str) -> None:
        self.objects[store_key] = [
            o for o in self.objects.get(store_key, [])
            if not ((o.get("metadata") or {}).get("namespace", "") == namespace
                    and (o.get("metadata") or {}).get("name") == name)
        ]

    def get(self, store_key: str, namespace: str, name: str) -> dict[str, Any] | None:
        for o in self.objects.get(store_key, []):
            meta = o.get("metadata") or {}
            if meta.get("name") == name and meta.get("namespace", "") == namespace:
                return o
        return None

    def list(self, store_key: str, namespace: str | None = None) -> list[dict[str, Any]]:
        objs = self.objects.get(store_key, [])
        if namespace is None:
            return list(objs)
        return [o for o in objs if (o.get("metadata") or {}).get("namespace", "") == namespace]


class SelectorError(ValueError):
    """A label selector that cannot be evaluated (unknown operator, missing values)."""


def selector_is_empty(selector: Mapping[str, Any] | None) -> bool:
    return not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions"))


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """``metav1.LabelSelector`` semantics: an empty selector ``{}`` (or None here) matches everything."""
    labels = labels or {}
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key = expr.get("key", "")
        op = expr.get("operator", "")
        values = expr.get("values") or []
        if op == "In":
            if not values:
                raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty (key {key})")
            if key not in labels or labels[key] not in values:
                return False
        elif op == "NotIn":
            if not values:
                raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty (key {key})")
            if key in labels and labels[key] in values:
                return False
        elif op == "Exists":
            if key not in labels:
                return False
        elif op == "DoesNotExist":
            if key in labels:
                return False
        else:
            raise SelectorError(f'"{op}" is not a valid label selector operator')
    return True
