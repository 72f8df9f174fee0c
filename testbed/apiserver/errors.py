"""Kubernetes API errors as ``metav1.Status`` bodies.

One place for the reasons, codes and message shapes the real apiserver uses, so that every
rejection the testbed produces reads exactly like the real one to clients such as kubectl.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Cause:
    """One entry of ``status.details.causes`` (a field-level validation error)."""

    reason: str  # e.g. FieldValueRequired, FieldValueInvalid, FieldValueNotSupported
    message: str
    field: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def sentence(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def required(field: str) -> Cause:
    return Cause("FieldValueRequired", "Required value", field)


def invalid_value(field: str, value: Any, detail: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return Cause("FieldValueInvalid", f"Invalid value: {shown}: {detail}", field)


def not_supported(field: str, value: Any, supported: list[str]) -> Cause:
    opts = ", ".join(f'"{s}"' for s in supported)
    return Cause("FieldValueNotSupported", f'Unsupported value: "{value}": supported values: {opts}', field)


def forbidden_field(field: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", f"Forbidden: {detail}", field)


def duplicate(field: str, value: Any) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return Cause("FieldValueDuplicate", f"Duplicate value: {shown}", field)


class APIError(Exception):
    """An error that the apiserver answers with a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The Status body, keys in the order of Go's ``metav1.Status`` fields (clients compare text)."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(group: str, kind_or_resource: str, name: str | None) -> dict[str, Any]:
    """StatusDetails, keys in Go's field order: name, group, kind (then uid, causes)."""
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    d["kind"] = kind_or_resource
    return d


def group_resource(group: str, plural: str) -> str:
    """The ``<plural>.<group>`` spelling used in error messages (``pods``, ``deployments.apps``)."""
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> APIError:
    gr = group_resource(group, plural)
    return APIError(404, "NotFound", f'{gr} "{name}" not found', details=_details(group, plural, name))


def already_exists(group: str, plural: str, name: str) -> APIError:
    gr = group_resource(group, plural)
    return APIError(
        409, "AlreadyExists", f'{gr} "{name}" already exists', details=_details(group, plural, name)
    )


def conflict(group: str, plural: str, name: str, why: str) -> APIError:
    gr = group_resource(group, plural)
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {gr} "{name}": {why}',
        details=_details(group, plural, name),
    )


STALE_OBJECT = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(group: str, kind: str, name: str, causes: list[Cause]) -> APIError:
    text = ", ".join(c.sentence() for c in causes) if causes else "invalid object"
    if len(causes) > 1:
        text = "[" + text + "]"
    details = _details(group, kind, name)
    details["causes"] = [c.to_dict() for c in causes]
    return APIError(
        422,
        "Invalid",
        f'{kind}.{group} "{name}" is invalid: {text}' if group else f'{kind} "{name}" is invalid: {text}',
        details=details,
    )


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def forbidden(
    user: str,
    verb: str,
    group: str,
    resource: str,
    subresource: str,
    namespace: str,
    name: str,
    reason: str = "",
) -> APIError:
    res = f"{resource}/{subresource}" if subresource else resource
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    target = f' "{name}"' if name else ""
    msg = (
        f'{res}{"." + group if group else ""}{target} is forbidden: User "{user}" cannot {verb} '
        f'resource "{res}" in API group "{group}"{where}'
    )
    if reason:
        msg += f": {reason}"
    return APIError(403, "Forbidden", msg, details=_details(group, resource, name))


def unauthorized() -> APIError:
    return APIError(401, "Unauthorized", "Unauthorized")


def gone(message: str) -> APIError:
    return APIError(410, "Expired", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str, strategic: bool = True) -> APIError:
    accepted = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
    if strategic:
        accepted.append("application/strategic-merge-patch+json")
    return APIError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def not_acceptable(message: str) -> APIError:
    return APIError(406, "NotAcceptable", message)


def internal(message: str) -> APIError:
    return APIError(500, "InternalError", f"Internal error occurred: {message}")


def timeout(message: str) -> APIError:
    return APIError(504, "Timeout", message)


def too_many_requests(message: str) -> APIError:
    return APIError(429, "TooManyRequests", message)
