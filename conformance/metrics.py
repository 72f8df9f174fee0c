"""Reading HAMi's Prometheus endpoints from outside: through the apiserver's service/pod proxy
first (works on any cluster the kubeconfig reaches), then straight to the pod IP (the testbed, or a
harness running inside the cluster network)."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from kubeclient.client import ApiError, Kube

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            continue
    return out


def scrape_namespace(kube: Kube, namespace: str, timeout: float = 5) -> dict[str, str]:
    """``source -> exposition text`` for every endpoint in ``namespace`` that answers /metrics."""
    found: dict[str, str] = {}
    try:
        services = kube.get(f"/api/v1/namespaces/{namespace}/services").get("items") or []
    except ApiError:
        services = []
    for svc in services:
        name = svc["metadata"]["name"]
        # a DaemonSet's service (HAMi's monitor) fronts one pod per node, and its proxy answers from
        # one of them: scrape every pod behind it, so a pod on any node shows up
        per_pod = _scrape_endpoints(kube, namespace, name)
        if per_pod:
            found.update(per_pod)
            continue
        for port in (svc.get("spec") or {}).get("ports") or []:
            try:
                text = kube.text(
                    f"/api/v1/namespaces/{namespace}/services/{name}:{port['port']}/proxy/metrics"
                )
            except Exception:  # proxy unsupported, TLS port, not a metrics port
                continue
            if "hami_" in text or "vGPU" in text or "GPUDevice" in text:
                found[f"service {name}:{port['port']}"] = text
    if found:
        return found
    pods = kube.get(f"/api/v1/namespaces/{namespace}/pods").get("items") or []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        for c in (pod.get("spec") or {}).get("containers") or []:
            for port in c.get("ports") or []:
                src = f"pod {pod['metadata']['name']}:{port['containerPort']}"
                text = _direct(ip, int(port["containerPort"]), timeout) if ip else None
                if text and ("hami_" in text or "vGPU" in text):
                    found[src] = text
    return found


def _scrape_endpoints(kube: Kube, namespace: str, service: str) -> dict[str, str]:
    """``pod <name>:<port> -> text`` through the apiserver's pod proxy, for each pod behind ``service``
    (empty when the service has at most one pod or the proxy does not answer)."""
    try:
        ep = kube.get(f"/api/v1/namespaces/{namespace}/endpoints/{service}")
    except Exception:
        return {}
    targets = [
        ((a.get("targetRef") or {}).get("name"), p.get("port"))
        for sub in ep.get("subsets") or []
        for a in sub.get("addresses") or []
        for p in sub.get("ports") or []
    ]
    if len({pod for pod, _ in targets}) < 2 or not all(pod for pod, _ in targets):
        return {}
    out: dict[str, str] = {}
    for pod, port in targets:
        try:
            text = kube.text(f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/metrics")
        except Exception:
            continue
        if "hami_" in text or "vGPU" in text or "GPUDevice" in text:
            out[f"pod {pod}:{port}"] = text
    return out


def _direct(ip: str, port: int, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=timeout) as r:
            return r.read().decode(errors="replace")
    except Exception:
        return None


def find(
    samples_by_source: dict[str, str], names: tuple[str, ...], **labels: str
) -> list[tuple[str, dict[str, str], float]]:
    hits: list[tuple[str, dict[str, str], float]] = []
    for text in samples_by_source.values():
        for name, lbls, value in parse(text):
            if name in names and all(lbls.get(k) == v for k, v in labels.items()):
                hits.append((name, lbls, value))
    return hits


def any_label(
    samples: list[tuple[str, dict[str, str], float]], keys: tuple[str, ...], value: str
) -> list[Any]:
    return [s for s in samples if any(s[1].get(k) == value for k in keys)]


Sample = tuple[str, dict[str, str], float]


def wait_series(
    kube: Kube,
    namespace: str,
    names: tuple[str, ...],
    ok: Any,
    what: str,
    *,
    timeout: float = 45,
    interval: float = 2,
) -> tuple[list[Sample], dict[str, str]]:
    """Scrape ``namespace`` until ``ok(samples of names)`` holds; return (samples, scraped texts).

    On timeout the failure names the running case's rule, ``what`` and the last values of the
    series seen (``[RULE] timed out after Ns waiting for <what>; last seen: ...``); when no HAMi
    endpoint answered at all the case is ``unknown`` (it could not apply), not failed.
    """
    from conformance.cases import unknown
    from conformance.kube import WaitTimeout, poll

    scraped: dict[str, str] = {}

    def observe() -> list[Sample]:
        scraped.clear()
        scraped.update(scrape_namespace(kube, namespace))
        return find(scraped, names)

    def describe(samples: list[Sample] | None) -> str:
        shown = "; ".join(f"{n}{{{_labels(lbl)}}} {v:g}" for n, lbl, v in (samples or [])[:12])
        head = f"{len(samples or [])} {'/'.join(names)} sample(s) from {', '.join(scraped) or 'no endpoint'}"
        return head + (f": {shown}" if shown else "")

    try:
        samples = poll(what, observe, ok, timeout, describe=describe, interval=interval)
    except WaitTimeout:
        if not scraped:
            unknown(
                f"no HAMi metrics endpoint reachable in namespace {namespace} "
                "(neither through the apiserver proxy nor at the pod IPs)"
            )
        raise
    return samples, dict(scraped)


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
