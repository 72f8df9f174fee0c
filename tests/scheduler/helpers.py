"""Shared helpers for the scheduler tests: nodes and pods created straight through the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubeclient.client import Kube
from testbed.scheduler import Scheduler
from testbed.scheduler.config import LeaderElection, Profile, SchedulerConfig


def make_node(kube: Kube, name: str, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
              labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
              unschedulable: bool = False, extra: dict[str, str] | None = None) -> dict[str, Any]:
    alloc = {"cpu": cpu, "memory": memory, "pods": pods, **(extra or {})}
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return kube.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                         "metadata": {"name": name, "labels": labels or {}},
                                         "spec": spec, "status": {"allocatable": alloc, "capacity": alloc}})


def make_pod(kube: Kube, name: str, ns: str = "default", requests: dict[str, str] | None = None,
             limits: dict[str, str] | None = None, scheduler: str | None = None,
             **spec: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    body: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox", "resources": res}], **spec}
    if scheduler:
        body["schedulerName"] = scheduler
    return kube.create(f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod",
                                                         "metadata": {"name": name}, "spec": body})


def get_pod(kube: Kube, name: str, ns: str = "default") -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def wait_for(fn: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def node_of(kube: Kube, name: str, ns: str = "default") -> str:
    return get_pod(kube, name, ns)["spec"].get("nodeName") or ""


def events_for(kube: Kube, pod: str, ns: str = "default", reason: str | None = None) -> list[dict[str, Any]]:
    items = kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
    return [e for e in items if (e.get("involvedObject") or {}).get("name") == pod
            and (reason is None or e.get("reason") == reason)]


def start_scheduler(kube: Kube, minor: int = 33, *, names: tuple[str, ...] = ("default-scheduler",),
                    leader_elect: bool = False, **kw: Any) -> Scheduler:
    cfg = SchedulerConfig(profiles=[Profile(n) for n in names],
                          leader_election=LeaderElection(leader_elect=leader_elect), **kw)
    return Scheduler(kube, cfg, minor).start()
