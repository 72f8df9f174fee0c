"""Conversion between the versions a resource is served in.

Objects are stored in one form per store (the core ``v1`` form for events, as the real apiserver's
storage version). Most kinds have identical shapes across the versions served in 1.18-1.33, so only
``apiVersion`` changes; events.k8s.io renames fields and gets a real mapping here.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

# events.k8s.io field -> core/v1 Event field (both directions apply)
_EVENT_RENAMES = {
    "note": "message",
    "regarding": "involvedObject",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}


def to_storage(group: str, version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Turn a request body of ``group/version`` into the stored form (a new dict)."""
    out = dict(obj)
    if group == "events.k8s.io" and kind == "Event":
        for new, old in _EVENT_RENAMES.items():
            if new in out:
                out[old] = out.pop(new)
        if "related" in out:
            out["related"] = out.pop("related")
        out["apiVersion"] = "v1"
    elif group == "" and kind == "Secret":
        merge_string_data(out)
    return out


def merge_string_data(secret: dict[str, Any]) -> None:
    """A Secret's write-only ``stringData``, as the real server stores it (in place): each entry
    base64-encoded into ``data`` (replacing an entry of the same key there), ``stringData`` dropped."""
    string_data = secret.get("stringData")
    if "stringData" not in secret:
        return
    del secret["stringData"]
    if not isinstance(string_data, dict) or not string_data:
        return
    data = dict(secret.get("data") or {})
    for key, value in string_data.items():
        text = "" if value is None else value if isinstance(value, str) else str(value)
        data[key] = base64.b64encode(text.encode()).decode()
    secret["data"] = data


def from_storage(group: str, version: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The stored object as a client of ``group/version`` sees it (a new dict when it differs)."""
    api_version = f"{group}/{version}" if group else version
    if group == "events.k8s.io" and kind == "Event":
        out = copy.copy(obj)
        for new, old in _EVENT_RENAMES.items():
            if old in out:
                out[new] = out.pop(old)
        out["apiVersion"] = api_version
        return out
    if obj.get("apiVersion") == api_version:
        return obj
    out = copy.copy(obj)
    out["apiVersion"] = api_version
    return out


def needs_conversion(group: str, version: str, kind: str, stored_api_version: str) -> bool:
    api_version = f"{group}/{version}" if group else version
    return api_version != stored_api_version or (group == "events.k8s.io" and kind == "Event")
