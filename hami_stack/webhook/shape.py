"""Structural checks of an admission request, before any decision or family code reads it.

The decision code and the families index into the pod freely (``metadata.annotations``, each
container's ``resources.limits``), so every value they touch is checked here first. A wrong type is
answered 400 with the JSON path of the field and what it holds, for example
``request.object.metadata: expected an object, got string``. ``null`` is accepted wherever
Kubernetes omits an empty field; a missing required part (the object, the pod's ``spec``) is named
as missing.
"""

from __future__ import annotations

import json
from typing import Any

Obj = dict[str, Any]

_ARTICLE = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "boolean": "a boolean",
    "quantity": "a quantity (string or number)",
}
_MAX_KEY_IN_MESSAGE = 80


class ShapeError(ValueError):
    """A field of the request has the wrong JSON type; the message names it."""


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value (``object``, ``array``, ``string``, ``number``...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _key(path: str, key: str) -> str:
    shown = key if len(key) <= _MAX_KEY_IN_MESSAGE else key[:_MAX_KEY_IN_MESSAGE] + "..."
    return f"{path}[{json.dumps(shown)}]"


def _expect(value: Any, want: str, path: str, *, nullable: bool = True) -> None:
    if value is None and nullable:
        return
    got = json_type(value)
    ok = got == want or (want == "quantity" and got in ("string", "number"))
    if not ok:
        raise ShapeError(f"{path}: expected {_ARTICLE[want]}, got {got}")


def _string_map(value: Any, path: str) -> None:
    _expect(value, "object", path)
    for k, v in (value or {}).items():
        _expect(v, "string", _key(path, k), nullable=False)


def check_metadata(pod: Obj, path: str) -> None:
    meta = pod.get("metadata")
    _expect(meta, "object", f"{path}.metadata")
    meta = meta or {}
    for name in ("name", "namespace", "generateName", "uid"):
        _expect(meta.get(name), "string", f"{path}.metadata.{name}")
    _string_map(meta.get("annotations"), f"{path}.metadata.annotations")
    _string_map(meta.get("labels"), f"{path}.metadata.labels")


def _check_container(c: Any, path: str) -> None:
    _expect(c, "object", path, nullable=False)
    _expect(c.get("name"), "string", f"{path}.name")
    resources = c.get("resources")
    _expect(resources, "object", f"{path}.resources")
    for part in ("limits", "requests"):
        values = (resources or {}).get(part)
        _expect(values, "object", f"{path}.resources.{part}")
        for k, v in (values or {}).items():
            _expect(v, "quantity", _key(f"{path}.resources.{part}", k), nullable=False)
    env = c.get("env")
    _expect(env, "array", f"{path}.env")
    for i, e in enumerate(env or []):
        _expect(e, "object", f"{path}.env[{i}]", nullable=False)
    sc = c.get("securityContext")
    _expect(sc, "object", f"{path}.securityContext")
    _expect((sc or {}).get("privileged"), "boolean", f"{path}.securityContext.privileged")


def check_pod(pod: Any, path: str, *, with_spec: bool = True) -> None:
    """Raise :class:`ShapeError` for the first field of ``pod`` the webhook could not read."""
    if pod is None:
        raise ShapeError(f"{path}: missing")
    _expect(pod, "object", path, nullable=False)
    _expect(pod.get("kind"), "string", f"{path}.kind")
    check_metadata(pod, path)
    if not with_spec:
        return
    spec = pod.get("spec")
    if spec is None:
        raise ShapeError(f"{path}.spec: missing")
    _expect(spec, "object", f"{path}.spec", nullable=False)
    for name in ("schedulerName", "nodeName", "runtimeClassName"):
        _expect(spec.get(name), "string", f"{path}.spec.{name}")
    for part in ("initContainers", "containers"):
        items = spec.get(part)
        _expect(items, "array", f"{path}.spec.{part}")
        for i, c in enumerate(items or []):
            _check_container(c, f"{path}.spec.{part}[{i}]")


def check_request(request: Obj) -> None:
    """The fields of ``AdmissionReview.request`` that the webhook reads (raises :class:`ShapeError`)."""
    _expect(request.get("uid"), "string", "request.uid")
    _expect(request.get("operation"), "string", "request.operation")
    user = request.get("userInfo")
    _expect(user, "object", "request.userInfo")
    _expect((user or {}).get("username"), "string", "request.userInfo.username")
    operation = request.get("operation") or "CREATE"
    if operation not in ("CREATE", "UPDATE"):
        return
    check_pod(request.get("object"), "request.object")
    if operation == "UPDATE":
        check_pod(request.get("oldObject"), "request.oldObject", with_spec=False)
