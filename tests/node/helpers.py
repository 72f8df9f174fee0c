"""Shared helpers for the node-agent tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubeclient.client import ApiError, Kube


def wait_for(fn: Callable[[], Any], timeout: float = 15, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s; last value: {last!r}")


def create_bound_pod(
    kube: Kube, ns: str, node: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    pod = kube.create(
        f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    )
    kube.create(
        f"/api/v1/namespaces/{ns}/pods/{name}/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        },
    )
    return pod


def get_pod(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def pod_gone(kube: Kube, ns: str, name: str) -> bool:
    try:
        get_pod(kube, ns, name)
    except ApiError as e:
        return e.status == 404
    return False


def cond(pod: dict[str, Any], ctype: str) -> str:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return str(c["status"])
    return ""


def events(kube: Kube, ns: str, name: str) -> list[dict[str, Any]]:
    items = kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]
