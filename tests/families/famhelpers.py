"""Shared by the family tests: the webhook run on a pod, and a synthetic capacity node."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import jsonpatch

from hami_stack.devices.base import DeviceFamily
from hami_stack.webhook.admit import AdmissionResponse, WebhookConfig, admit


def pod(
    *containers: dict[str, Any], name: str = "p", annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A pod of ``containers`` (each ``{"name":..., "limits":{...}, "requests":{...}}``)."""
    ctrs = []
    for c in containers:
        res = {k: dict(c[k]) for k in ("limits", "requests") if k in c}
        ctrs.append({"name": c["name"], "image": "x", "resources": res})
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": dict(annotations or {})},
        "spec": {"containers": ctrs},
    }


def run_webhook(
    p: dict[str, Any], families: Sequence[DeviceFamily]
) -> tuple[AdmissionResponse, dict[str, Any]]:
    """The webhook's answer to creating ``p`` and the pod as it would be stored (patch applied)."""
    review = {"uid": "1", "operation": "CREATE", "object": copy.deepcopy(p)}
    resp = admit(review, WebhookConfig(families=list(families), trusted_users=()))
    out = jsonpatch.JsonPatch(resp.patch).apply(copy.deepcopy(p)) if resp.allowed else p
    return resp, out


def capacity_node(name: str, capacity: dict[str, str]) -> dict[str, Any]:
    cap = {"cpu": "8", "memory": "32Gi", "pods": "110", **capacity}
    return {"metadata": {"name": name, "annotations": {}}, "status": {"capacity": cap, "allocatable": cap}}
