"""Checks before any test runs: the cluster answers, HAMi is installed, the vendor has nodes.

Each failure is a :class:`BackendError` whose message says what was tried and what to do, so the
user sees it once, before collection output, with exit code 4.
"""

from __future__ import annotations

from typing import Any

from conformance import contract as C
from conformance.backends import BackendError, check_minor
from kubeclient.client import ApiError, Kube

WEBHOOK_NAME = "vgpu.hami.io"


def connect(kubeconfig: str | None) -> Kube:
    try:
        return Kube.from_config(kubeconfig, user_agent="hami-conformance")
    except Exception as e:  # the official client raises several unrelated types for bad kubeconfigs
        where = kubeconfig or "$KUBECONFIG / in-cluster config"
        raise BackendError(f"cannot load kubeconfig {where}: {e}") from None


def server_version(kube: Kube, where: str) -> dict[str, Any]:
    try:
        return kube.request("GET", "/version", timeout=10)  # type: ignore[no-any-return]
    except ApiError as e:
        raise BackendError(f"the cluster at {where} answered /version with HTTP {e.status}: {e}") from None
    except Exception as e:  # connection refused, TLS, DNS: urllib3 wraps them differently
        raise BackendError(f"cannot reach the cluster at {where}: {type(e).__name__}: {e}") from None


def served_minor(version: dict[str, Any]) -> str:
    major = str(version.get("major", "")).strip("+")
    minor = str(version.get("minor", "")).strip("+")
    return check_minor(f"{major}.{minor}")


def hami_installed(kube: Kube, namespace: str) -> list[str]:
    """Evidence that HAMi runs here: its webhook, its pods, or registered devices. Empty: not found."""
    evidence: list[str] = []
    try:
        for cfg in (
            kube.get("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations").get("items") or []
        ):
            if any(w.get("name") == WEBHOOK_NAME for w in cfg.get("webhooks") or []):
                evidence.append(f"mutating webhook {cfg['metadata']['name']} ({WEBHOOK_NAME})")
    except ApiError:
        pass  # 1.18 still serves v1; a 404/403 here just means no evidence from this source
    try:
        pods = kube.get(f"/api/v1/namespaces/{namespace}/pods").get("items") or []
        if pods:
            evidence.append(f"{len(pods)} pods in namespace {namespace}")
    except ApiError:
        pass
    nodes = kube.get("/api/v1/nodes").get("items") or []
    registered = [
        n["metadata"]["name"]
        for n in nodes
        if any(k.startswith("hami.io/node-") for k in (n["metadata"].get("annotations") or {}))
    ]
    if registered:
        evidence.append(f"HAMi node annotations on {', '.join(registered)}")
    return evidence


def discover_vendors(kube: Kube) -> dict[str, list[str]]:
    """Vendor family -> nodes showing it (register annotations or capacity)."""
    out: dict[str, list[str]] = {}
    for node in kube.get("/api/v1/nodes").get("items") or []:
        for vendor in C.vendors_on_node(node):
            out.setdefault(vendor, []).append(node["metadata"]["name"])
    return out


def check(
    kube: Kube, *, where: str, namespace: str, vendor: str, expect_minor: str | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Run every preflight check; returns (server version, vendors found)."""
    version = server_version(kube, where)
    minor = served_minor(version)
    if expect_minor and minor != expect_minor:
        raise BackendError(
            f"the cluster at {where} serves Kubernetes {minor}, not the requested {expect_minor}"
        )
    try:
        evidence = hami_installed(kube, namespace)
    except ApiError as e:
        raise BackendError(f"cannot list nodes on {where} (HTTP {e.status}): {e}") from None
    if not evidence:
        raise BackendError(
            f"HAMi is not installed on the cluster at {where}: no mutating webhook {WEBHOOK_NAME}, "
            f"no pods in namespace {namespace} and no hami.io/node-* annotations "
            "(install the chart, or pass --hami-namespace)"
        )
    vendors = discover_vendors(kube)
    for wanted in vendor.split(","):  # several vendors in one cell: each must have nodes
        if wanted not in vendors:
            found = ", ".join(f"{v} ({len(n)} nodes)" for v, n in sorted(vendors.items())) or "none"
            raise BackendError(
                f'no node of vendor "{wanted}" on the cluster at {where}: vendors found: {found}'
            )
    return version, vendors
