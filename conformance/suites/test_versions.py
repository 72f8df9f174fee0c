"""Versions: the stack's scheduler configuration is one this Kubernetes minor's scheduler accepts.

The same checks run for Ascend (``ASC-VER-*``), the pod that proves the scheduler works asking an NPU."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from conformance.cases import rule, unknown, violated
from conformance.kube import Workloads, gpu_pod

pytestmark = [pytest.mark.versions]  # the vendor marker is on each case

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


def check_config_api(kube: Any, cluster: Any, rule_id: str) -> None:
    configs = scheduler_configs(kube, cluster.hami_namespace)
    if not configs:
        unknown(f"no scheduler configuration ConfigMap readable in namespace {cluster.hami_namespace}")
    minor = int(cluster.minor.split(".")[1])
    for where, api in configs:
        lo, hi = ACCEPTED.get(api, (0, -1))
        assert lo <= minor <= hi, violated(
            rule_id, f"{where} is {api}, which kube-scheduler 1.{minor} does not accept"
        )


@pytest.mark.nvidia
@rule(
    "VER-SCHEDCFG-1", "The rendered scheduler configuration uses an API this minor's kube-scheduler accepts"
)
def test_config_api_accepted(kube: Any, cluster: Any) -> None:
    check_config_api(kube, cluster, "VER-SCHEDCFG-1")


@pytest.mark.ascend
# Ascend rules are marked directly (not @rule): they belong to the ascend profile, not the NVIDIA one
@pytest.mark.rule(
    "ASC-VER-SCHEDCFG-1", "The scheduler configuration (Ascend cell) uses an API this minor accepts"
)
def test_ascend_config_api_accepted(kube: Any, cluster: Any) -> None:
    check_config_api(kube, cluster, "ASC-VER-SCHEDCFG-1")


def check_scheduler_running(kube: Any, cluster: Any, rule_id: str) -> None:
    """HAMi's kube-scheduler containers are ready and never restarted."""
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
        rule_id, f"no kube-scheduler container in namespace {cluster.hami_namespace}"
    )
    for p in sched:
        for st in (p.get("status") or {}).get("containerStatuses") or []:
            assert st.get("ready") and st.get("restartCount", 0) == 0, violated(
                rule_id,
                f"{p['metadata']['name']}/{st['name']}: ready={st.get('ready')} "
                f"restarts={st.get('restartCount')}",
            )


@pytest.mark.nvidia
@rule("VER-SCHED-2", "HAMi's kube-scheduler runs without restarts and schedules a GPU pod on this minor")
def test_scheduler_running(workloads: Workloads, kube: Any, cluster: Any) -> None:
    check_scheduler_running(kube, cluster, "VER-SCHED-2")
    workloads.create(gpu_pod("versioned", gpus=1, mem=1000))
    pod = workloads.wait_scheduled("versioned")
    assert pod["spec"].get("schedulerName") == cluster.scheduler_name, violated(
        "VER-SCHED-2", f"scheduled by {pod['spec'].get('schedulerName')!r}"
    )


@pytest.mark.ascend
@pytest.mark.rule("ASC-VER-SCHED-2", "HAMi's kube-scheduler runs without restarts and schedules an NPU pod")
def test_ascend_scheduler_running(workloads: Workloads, kube: Any, cluster: Any) -> None:
    from conformance.suites.test_ascend import chip, npu_pod

    check_scheduler_running(kube, cluster, "ASC-VER-SCHED-2")
    cw, _ = chip(kube)
    workloads.create(npu_pod("npuversioned", cw))
    pod = workloads.wait_scheduled("npuversioned")
    assert pod["spec"].get("schedulerName") == cluster.scheduler_name, violated(
        "ASC-VER-SCHED-2", f"scheduled by {pod['spec'].get('schedulerName')!r}"
    )
