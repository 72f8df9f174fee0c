"""The extender wire types of ``k8s.io/kube-scheduler/extender/v1``.

Those Go structs carry no JSON tags: the kube-scheduler sends and expects the Go field names
(``Pod``, ``Nodes``, ``NodeNames``; ``PodName``, ``PodNamespace``, ``PodUID``, ``Node``), and Go's
decoder matches keys case-insensitively, so requests are read that way here and replies use the
Go names exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


class WireError(ValueError):
    """A body that is not the expected extender argument."""


def ci_get(obj: Any, key: str) -> Any:
    """``obj[key]`` matched as Go's decoder does: exact key first, then case-insensitively."""
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


@dataclass
class FilterArgs:
    pod: Obj
    nodes: list[Obj] | None  # full Node objects (non-cache-capable / simulation); None when absent
    node_names: list[str] | None


@dataclass
class BindArgs:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


def decode_filter_args(body: Any) -> FilterArgs:
    if not isinstance(body, dict):
        raise WireError("ExtenderArgs must be a JSON object")
    pod = ci_get(body, "Pod")
    if not isinstance(pod, dict):
        raise WireError("ExtenderArgs.Pod is missing")
    nodes_raw = ci_get(body, "Nodes")
    nodes: list[Obj] | None = None
    if isinstance(nodes_raw, dict):
        items = ci_get(nodes_raw, "items")
        nodes = [n for n in items or [] if isinstance(n, dict)]
    names_raw = ci_get(body, "NodeNames")
    names = [str(n) for n in names_raw] if isinstance(names_raw, list) else None
    return FilterArgs(pod, nodes, names)


def decode_bind_args(body: Any) -> BindArgs:
    if not isinstance(body, dict):
        raise WireError("ExtenderBindingArgs must be a JSON object")
    return BindArgs(
        str(ci_get(body, "PodName") or ""),
        str(ci_get(body, "PodNamespace") or ""),
        str(ci_get(body, "PodUID") or ""),
        str(ci_get(body, "Node") or ""),
    )


def filter_result(
    *,
    node_names: list[str] | None = None,
    nodes: list[Obj] | None = None,
    failed: dict[str, str] | None = None,
    error: str = "",
) -> Obj:
    """``ExtenderFilterResult`` with Go field names (nil slices/lists encode as null)."""
    return {
        "Nodes": {"metadata": {}, "items": nodes} if nodes is not None else None,
        "NodeNames": node_names,
        "FailedNodes": failed or {},
        "FailedAndUnresolvableNodes": {},
        "Error": error,
    }


def bind_result(error: str = "") -> Obj:
    return {"Error": error}
