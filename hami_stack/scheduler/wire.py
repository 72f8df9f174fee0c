"""The extender wire types of ``k8s.io/kube-scheduler/extender/v1``.

Those Go structs carry no JSON tags: the kube-scheduler sends and expects the Go field names
(``Pod``, ``Nodes``, ``NodeNames``; ``PodName``, ``PodNamespace``, ``PodUID``, ``Node``), and Go's
decoder matches keys case-insensitively, so requests are read that way here and replies use the
Go names exactly.

Decoding also type-checks every field the extender goes on to read (:func:`check_pod`,
:func:`check_node`): a wrong type raises :class:`WireError` naming the field's path, e.g.
``Nodes.items: expected a list, got int`` or ``Pod.spec.containers[0].resources.limits['nvidia.com/gpu']:
expected a quantity string, got list``, which the server answers with 400.
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


# --- structural checks ------------------------------------------------------------------------
# Only the fields the extender reads are checked, with the types Go's decoder would insist on, so a
# malformed body is answered 400 with the field named instead of failing deep inside a decision.


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object" if isinstance(value, dict) else type(value).__name__


def _obj(value: Any, path: str) -> Obj:
    """An object or null (Go decodes null to the zero value); anything else names ``path``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WireError(f"{path}: expected an object, got {_type_name(value)}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WireError(f"{path}: expected a list, got {_type_name(value)}")
    return value


def _str(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireError(f"{path}: expected a string, got {_type_name(value)}")
    return value


def _str_map(value: Any, path: str) -> None:
    for k, v in _obj(value, path).items():
        _str(v, f"{path}[{k!r}]")


def _quantities(value: Any, path: str) -> None:
    for k, v in _obj(value, path).items():
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise WireError(f"{path}[{k!r}]: expected a quantity string, got {_type_name(v)}")


def _metadata(value: Any, path: str) -> None:
    meta = _obj(value, path)
    for key in ("name", "namespace", "uid", "resourceVersion", "generateName"):
        _str(meta.get(key), f"{path}.{key}")
    _str_map(meta.get("annotations"), f"{path}.annotations")
    _str_map(meta.get("labels"), f"{path}.labels")
    if meta.get("deletionTimestamp") is not None:
        _str(meta.get("deletionTimestamp"), f"{path}.deletionTimestamp")


def _containers(value: Any, path: str) -> None:
    for i, c in enumerate(_list(value, path)):
        cp = f"{path}[{i}]"
        ctr = _obj(c, cp)
        if c is None:
            raise WireError(f"{cp}: expected an object, got null")
        _str(ctr.get("name"), f"{cp}.name")
        res = _obj(ctr.get("resources"), f"{cp}.resources")
        _quantities(res.get("limits"), f"{cp}.resources.limits")
        _quantities(res.get("requests"), f"{cp}.resources.requests")
        _list(ctr.get("env"), f"{cp}.env")


def check_pod(value: Any, path: str = "Pod") -> Obj:
    """The fields of a Pod the extender reads, type-checked; returns the pod."""
    pod = _obj(value, path)
    if value is None:
        raise WireError(f"{path}: required")
    _metadata(pod.get("metadata"), f"{path}.metadata")
    spec = _obj(pod.get("spec"), f"{path}.spec")
    _containers(spec.get("containers"), f"{path}.spec.containers")
    _containers(spec.get("initContainers"), f"{path}.spec.initContainers")
    for key in ("schedulerName", "nodeName", "priorityClassName"):
        _str(spec.get(key), f"{path}.spec.{key}")
    _obj(spec.get("schedulingGroup"), f"{path}.spec.schedulingGroup")
    status = _obj(pod.get("status"), f"{path}.status")
    _str(status.get("phase"), f"{path}.status.phase")
    statuses = _list(status.get("initContainerStatuses"), f"{path}.status.initContainerStatuses")
    for i, st in enumerate(statuses):
        sp = f"{path}.status.initContainerStatuses[{i}]"
        state = _obj(_obj(st, sp).get("state"), f"{sp}.state")
        term = _obj(state.get("terminated"), f"{sp}.state.terminated")
        code = term.get("exitCode")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise WireError(f"{sp}.state.terminated.exitCode: expected an integer, got {_type_name(code)}")
    return pod


def check_node(value: Any, path: str) -> Obj:
    node = _obj(value, path)
    if value is None:
        raise WireError(f"{path}: expected an object, got null")
    _metadata(node.get("metadata"), f"{path}.metadata")
    status = _obj(node.get("status"), f"{path}.status")
    _quantities(status.get("allocatable"), f"{path}.status.allocatable")
    _quantities(status.get("capacity"), f"{path}.status.capacity")
    return node


def decode_filter_args(body: Any) -> FilterArgs:
    if not isinstance(body, dict):
        raise WireError(f"ExtenderArgs: expected an object, got {_type_name(body)}")
    pod = check_pod(ci_get(body, "Pod"))
    nodes_raw = ci_get(body, "Nodes")
    nodes: list[Obj] | None = None
    if nodes_raw is not None:
        wrapper = _obj(nodes_raw, "Nodes")
        items = _list(ci_get(wrapper, "items"), "Nodes.items")
        nodes = [check_node(n, f"Nodes.items[{i}]") for i, n in enumerate(items)]
    names_raw = ci_get(body, "NodeNames")
    names: list[str] | None = None
    if names_raw is not None:
        names = [_str(n, f"NodeNames[{i}]") for i, n in enumerate(_list(names_raw, "NodeNames"))]
    return FilterArgs(pod, nodes, names)


def decode_bind_args(body: Any) -> BindArgs:
    if not isinstance(body, dict):
        raise WireError(f"ExtenderBindingArgs: expected an object, got {_type_name(body)}")
    fields = {
        key: _str(ci_get(body, key), f"ExtenderBindingArgs.{key}")
        for key in ("PodName", "PodNamespace", "PodUID", "Node")
    }
    for key in ("PodName", "Node"):
        if not fields[key]:
            raise WireError(f"ExtenderBindingArgs.{key}: required")
    return BindArgs(fields["PodName"], fields["PodNamespace"], fields["PodUID"], fields["Node"])


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
