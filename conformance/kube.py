"""Workload helpers the suites use: namespaces, pods, events, logs and the probe pod.

Everything goes through the Kubernetes API (``kubeclient.Kube``: plain JSON over the official
client's transport), so the suites run unchanged against the testbed, k3s or a real cluster.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance import contract as C
from conformance.cases import violated
from kubeclient.client import ApiError, Kube

PROBE_IMAGE = "ghcr.io/hami-conformance/hami-conformance-probe:0.1.0"
CASE_LABEL = "conformance.hami.io/case"
Pod = dict[str, Any]


class WaitTimeout(AssertionError):
    """A condition did not hold in time; the message says what was awaited and what was seen."""


def wait_for(what: str, fn: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Poll ``fn`` until it returns a truthy value; raise with ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what} (last seen: {_short(last)})"
            )
        time.sleep(interval)


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class ContainerSpec:
    name: str = "main"
    gpus: int | None = None
    mem: int | None = None
    cores: int | None = None
    mem_pct: int | None = None
    image: str = PROBE_IMAGE
    args: list[str] | None = None
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    privileged: bool = False
    extra_limits: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        limits: dict[str, str] = dict(self.extra_limits)
        for key, value in (
            (C.GPU, self.gpus),
            (C.GPUMEM, self.mem),
            (C.GPUCORES, self.cores),
            (C.GPUMEM_PCT, self.mem_pct),
        ):
            if value is not None:
                limits[key] = str(value)
        c: dict[str, Any] = {"name": self.name, "image": self.image}
        if self.command is not None:
            c["command"] = self.command
        c["args"] = self.args if self.args is not None else ["--alloc-mib", "0", "--kernel-seconds", "0"]
        if limits:
            c["resources"] = {"limits": limits}
        if self.env:
            c["env"] = [{"name": k, "value": v} for k, v in self.env.items()]
        if self.privileged:
            c["securityContext"] = {"privileged": True}
        return c


def pod_manifest(
    name: str,
    containers: list[ContainerSpec],
    *,
    init: list[ContainerSpec] | None = None,
    annotations: dict[str, str] | None = None,
    scheduler_name: str | None = None,
    node_name: str | None = None,
    restart_policy: str = "Never",
) -> Pod:
    spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": 1,
        "containers": [c.to_dict() for c in containers],
    }
    if init:
        spec["initContainers"] = [c.to_dict() for c in init]
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": dict(annotations or {}), "labels": {CASE_LABEL: name}},
        "spec": spec,
    }


def gpu_pod(
    name: str,
    *,
    gpus: int | None = 1,
    mem: int | None = None,
    cores: int | None = None,
    annotations: dict[str, str] | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Pod:
    return pod_manifest(
        name,
        [ContainerSpec(gpus=gpus, mem=mem, cores=cores, args=args, env=dict(env or {}))],
        annotations=annotations,
    )


class Workloads:
    """Pods in one test's namespace, with the waits and reads the cases need."""

    def __init__(self, kube: Kube, namespace: str, *, timeout: float = 60.0,
                 scheduler_name: str = C.DEFAULT_SCHEDULER_NAME) -> None:
        self.kube = kube
        self.ns = namespace
        self.timeout = timeout
        self.scheduler_name = scheduler_name
        self.created: list[str] = []

    @property
    def pods_path(self) -> str:
        return f"/api/v1/namespaces/{self.ns}/pods"

    def create(self, pod: Pod) -> Pod:
        out = self.kube.create(self.pods_path, pod)
        self.created.append(pod["metadata"]["name"])
        self._check_admitted_to_hami(pod, out)
        return out  # type: ignore[no-any-return]

    def _check_admitted_to_hami(self, sent: Pod, stored: Pod) -> None:
        """Every case that runs a device pod depends on admission: fail it at once, naming that rule,
        instead of waiting out a pod the HAMi scheduler never sees."""
        if sent.get("spec", {}).get("schedulerName") or not _requests_devices(sent):
            return
        got = stored.get("spec", {}).get("schedulerName", "")
        if got != self.scheduler_name:
            raise AssertionError(violated(
                "ADM-SCHED-1", f"pod {self.ns}/{sent['metadata']['name']} requests devices but was admitted "
                f"with schedulerName {got!r}, not {self.scheduler_name!r}; this case cannot run"))

    def try_create(self, pod: Pod) -> tuple[Pod | None, ApiError | None]:
        """Create, returning the admission error instead of raising it (denial cases)."""
        try:
            return self.create(pod), None
        except ApiError as e:
            return None, e

    def get(self, name: str) -> Pod:
        return self.kube.get(f"{self.pods_path}/{name}")  # type: ignore[no-any-return]

    def delete(self, name: str) -> None:
        try:
            self.kube.delete(f"{self.pods_path}/{name}", gracePeriodSeconds=0)
        except ApiError as e:
            if e.status != 404:
                raise

    def wait_scheduled(self, name: str, timeout: float | None = None) -> Pod:
        return wait_for(  # type: ignore[no-any-return]
            f"pod {self.ns}/{name} to be bound to a node",
            lambda: p if (p := self.get(name))["spec"].get("nodeName") else None,
            timeout or self.timeout,
        )

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float | None = None) -> Pod:
        seen: dict[str, Any] = {}

        def check() -> Pod | None:
            p = self.get(name)
            seen["phase"] = p.get("status", {}).get("phase")
            return p if seen["phase"] in phases else None

        try:
            return wait_for(f"pod {self.ns}/{name} phase in {phases}", check, timeout or self.timeout)  # type: ignore[no-any-return]
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}; events: {self.event_summary(name)}") from None

    def wait_running(self, name: str, timeout: float | None = None) -> Pod:
        return self.wait_phase(name, ("Running", "Succeeded"), timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        items = (
            self.kube.get(
                f"/api/v1/namespaces/{self.ns}/events",
                fieldSelector=f"involvedObject.name={name}",
            ).get("items")
            or []
        )
        return [e for e in items if (e.get("involvedObject") or {}).get("kind", "Pod") == "Pod"]

    def event_summary(self, name: str) -> str:
        try:
            evs = self.events(name)
        except ApiError as e:
            return f"(events unavailable: {e})"
        return "; ".join(f"{e.get('reason')}: {e.get('message')}" for e in evs[-8:]) or "(none)"

    def wait_event(self, name: str, reason: str, timeout: float | None = None) -> dict[str, Any]:
        return wait_for(  # type: ignore[no-any-return]
            f"event {reason} on pod {self.ns}/{name}",
            lambda: next((e for e in self.events(name) if e.get("reason") == reason), None),
            timeout or self.timeout,
        )

    def log(self, name: str, container: str = "main") -> str:
        return self.kube.text(f"{self.pods_path}/{name}/log", container=container)

    def probe(self, name: str, container: str = "main", timeout: float | None = None) -> dict[str, Any]:
        """Wait for the probe container to finish and return its JSON document."""
        pod = self.wait_phase(name, ("Succeeded", "Failed"), timeout)
        text = self.log(name, container)
        doc = parse_probe_output(text)
        if doc is None:
            raise AssertionError(
                f"probe in {self.ns}/{name} printed no JSON document (phase {pod['status'].get('phase')}); "
                f"log tail: {text[-500:]!r}; events: {self.event_summary(name)}"
            )
        return doc

    def probe_running(
        self, name: str, container: str = "main", timeout: float | None = None
    ) -> dict[str, Any]:
        """For a probe that holds after printing: wait until its document is in the log."""

        def read() -> dict[str, Any] | None:
            try:
                return parse_probe_output(self.log(name, container))
            except ApiError:
                return None

        return wait_for(f"probe output of {self.ns}/{name}", read, timeout or self.timeout)  # type: ignore[no-any-return]


def parse_probe_output(text: str) -> dict[str, Any] | None:
    """The probe prints one JSON document (indented or compact); anything before it is ignored."""
    start = text.find("{")
    while start >= 0:
        try:
            doc, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(doc, dict) and "probe" in doc:
            return doc
        start = text.find("{", start + 1)
    return None


def allocated(pod: Pod) -> list[list[C.AssignedDevice]]:
    value = (pod["metadata"].get("annotations") or {}).get(C.NVIDIA_ALLOCATED)
    if value is None:
        raise AssertionError(f"pod {pod['metadata']['name']} has no {C.NVIDIA_ALLOCATED} annotation")
    return C.decode_assignment(value)


def container_limits(pod: Pod, container: str = "main") -> dict[str, str]:
    for c in pod["spec"].get("containers") or []:
        if c["name"] == container:
            return dict((c.get("resources") or {}).get("limits") or {})
    raise KeyError(container)


def create_namespace(kube: Kube, prefix: str = "hc") -> str:
    name = unique_name(prefix)
    kube.create(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "hami-conformance"}},
        },
    )
    return name


def delete_namespace(kube: Kube, name: str) -> None:
    try:
        kube.delete(f"/api/v1/namespaces/{name}")
    except ApiError as e:
        if e.status != 404:
            raise


def gpu_nodes(kube: Kube) -> list[dict[str, Any]]:
    """Nodes that registered NVIDIA devices with HAMi."""
    nodes = kube.get("/api/v1/nodes").get("items") or []
    return [n for n in nodes if C.NVIDIA_REGISTER in (n["metadata"].get("annotations") or {})]


def registered_devices(node: dict[str, Any]) -> list[C.RegisteredDevice]:
    return C.parse_register(node["metadata"]["annotations"][C.NVIDIA_REGISTER])


def _requests_devices(pod: Pod) -> bool:
    spec = pod.get("spec", {})
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        limits = (c.get("resources") or {}).get("limits") or {}
        if any(k in limits for k in (C.GPU, C.GPUMEM, C.GPUCORES, C.GPUMEM_PCT)):
            return True
    return False
