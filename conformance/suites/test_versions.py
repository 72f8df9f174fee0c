"""Versions: the stack's scheduler configuration is one this Kubernetes minor's scheduler accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from conformance.cases import rule, unknown, violated
from conformance.kube import Workloads, gpu_pod

pytestmark = [pytest.mark.nvidia, pytest.mark.versions]

# Which kube-scheduler minors accept each configuration API (Policy: --policy-config-file, gone in 1.23).
ACCEPTED: dict[str, tuple[int, int]] = {
    "Policy/v1": (18, 22),
    "kubescheduler.config.k8s.io/v1alpha2": (18, 18),
    "kubescheduler.config.k8s.io/v1beta1": (19, 22),
    "kubescheduler.config.k8s.io/v1beta2": (22, 27),
    "kubescheduler.config.k8s.io/v1beta3": (23, 28),
    "kubescheduler.config.k8s.io/v1": (25, 99),
}


def scheduler_configs(kube: Any, namespace: str) -> list[tuple[str, str]]:
    """(configmap/key, api) of every scheduler configuration found in HAMi's namespace."""
    out = []
    for cm in kube.get(f"/api/v1/namespaces/{namespace}/configmaps").get("items") or []:
        for key, text in (cm.get("data") or {}).items():
            api = _api_of(key, text)
            if api:
                out.append((f"{cm['metadata']['name']}/{key}", api))
    return out


def _api_of(key: str, text: str) -> str | None:
    try:
        doc = json.loads(text) if key.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("kind") == "Policy":
        return "Policy/v1"
    if doc.get("kind") == "KubeSchedulerConfiguration":
        return str(doc.get("apiVersion"))
    return None


@rule(
    "VER-SCHEDCFG-1", "The rendered scheduler configuration uses an API this minor's kube-scheduler accepts"
)
def test_config_api_accepted(kube: Any, cluster: Any) -> None:
    configs = scheduler_configs(kube, cluster.hami_namespace)
    if not configs:
        unknown(f"no scheduler configuration ConfigMap readable in namespace {cluster.hami_namespace}")
    minor = int(cluster.minor.split(".")[1])
    for where, api in configs:
        lo, hi = ACCEPTED.get(api, (0, -1))
        assert lo <= minor <= hi, violated(
            "VER-SCHEDCFG-1", f"{where} is {api}, which kube-scheduler 1.{minor} does not accept"
        )


@rule("VER-SCHED-2", "HAMi's kube-scheduler runs without restarts and schedules a GPU pod on this minor")
def test_scheduler_running(workloads: Workloads, kube: Any, cluster: Any) -> None:
    pods = kube.get(f"/api/v1/namespaces/{cluster.hami_namespace}/pods").get("items") or []
    sched = [
        p
        for p in pods
        if any(
            "kube-scheduler" in (c.get("name", "") + " ".join(c.get("command") or []))
            for c in p["spec"].get("containers") or []
        )
    ]
    assert sched, violated(
        "VER-SCHED-2", f"no kube-scheduler container in namespace {cluster.hami_namespace}"
    )
    for p in sched:
        for st in (p.get("status") or {}).get("containerStatuses") or []:
            assert st.get("ready") and st.get("restartCount", 0) == 0, violated(
                "VER-SCHED-2",
                f"{p['metadata']['name']}/{st['name']}: ready={st.get('ready')} "
                f"restarts={st.get('restartCount')}",
            )
    workloads.create(gpu_pod("versioned", gpus=1, mem=1000))
    pod = workloads.wait_scheduled("versioned")
    assert pod["spec"].get("schedulerName") == cluster.scheduler_name, violated(
        "VER-SCHED-2", f"scheduled by {pod['spec'].get('schedulerName')!r}"
    )
