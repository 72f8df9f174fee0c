"""Workload helpers the suites use: namespaces, pods, events, logs and the probe pod.

Everything goes through the Kubernetes API (``kubeclient.Kube``: plain JSON over the official
client's transport), so the suites run unchanged against the testbed, k3s or a real cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import urllib3

from conformance import contract as C
from conformance.cases import current_rule, violated, with_rule
from conformance.probe.result import MARKER, find_result
from kubeclient.client import ApiError, Kube

PROBE_IMAGE = "ghcr.io/hami-conformance/hami-conformance-probe:0.1.0"
CASE_LABEL = "conformance.hami.io/case"
Pod = dict[str, Any]
T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time. The message names the rule of the running case, what was
    awaited and what was seen last: ``[RULE-ID] timed out after Ns waiting for <what>; last seen: ...``."""


def timeout_message(rule_id: str | None, seconds: float, what: str, last_seen: str) -> str:
    return with_rule(f"timed out after {seconds:.0f}s waiting for {what}; last seen: {last_seen}", rule_id)


def poll(
    what: str,
    observe: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    *,
    describe: Callable[[T | None], str] | None = None,
    interval: float = 0.25,
    rule_id: str | None = None,
    deadline: float | None = None,
) -> T:
    """Observe until ``done(observation)``; return that observation.

    On timeout raise :class:`WaitTimeout` naming the rule (``rule_id`` or the running case's),
    ``what`` and ``describe(last observation)``. An API error while polling is not fatal (the
    condition may still come true); the last one is reported if the wait times out. ``deadline``
    (a ``time.monotonic()`` instant) ends a wait that started earlier with ``timeout`` seconds.
    """
    rule_id = rule_id or current_rule()
    if deadline is None:
        deadline = time.monotonic() + timeout
    last: T | None = None
    seen_any = False
    error: ApiError | None = None
    while True:
        try:
            obs = observe()
        except ApiError as e:
            error = e
        else:
            error = None
            if done(obs):
                return obs
            last, seen_any = obs, True
        if time.monotonic() >= deadline:
            if seen_any:
                text = describe(last) if describe is not None else _short(last)
            else:
                text = "nothing (no observation succeeded)"
            if error is not None:
                text += f"; last API error: {_short(str(error), 200)}"
            raise WaitTimeout(timeout_message(rule_id, timeout, what, text))
        time.sleep(interval)


def wait_for(
    what: str,
    fn: Callable[[], Any],
    timeout: float,
    interval: float = 0.25,
    *,
    describe: Callable[[Any], str] | None = None,
    rule_id: str | None = None,
) -> Any:
    """Poll ``fn`` until it returns a truthy value (see :func:`poll` for the failure message)."""
    return poll(what, fn, bool, timeout, describe=describe, interval=interval, rule_id=rule_id)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def describe_pod(pod: Pod | None) -> str:
    """One line of what a pod looks like now: phase, node, scheduling condition, container states
    and HAMi's allocation annotations (what a reader needs to see why a wait did not end)."""
    if not pod:
        return "no pod"
    status = pod.get("status") or {}
    parts = [f"phase={status.get('phase') or '-'}", f"node={(pod.get('spec') or {}).get('nodeName') or '-'}"]
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            parts.append(f"PodScheduled={cond.get('status')} ({cond.get('reason')}: {cond.get('message')})")
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        for kind, detail in state.items():
            why = (detail or {}).get("reason") or ""
            code = (detail or {}).get("exitCode")
            parts.append(f"{cs.get('name')} {kind}" + (f" ({why})" if why else "")
                         + (f" exit {code}" if code is not None else ""))
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    for key in (C.VGPU_NODE, C.BIND_PHASE, C.NVIDIA_ALLOCATED):
        if key in ann:
            parts.append(f"{key}={_short(ann[key], 120)}")
    return ", ".join(parts)


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


# A pod whose bind HAMi refused (node lock contention while the previous pod's Allocate runs) waits in
# a real kube-scheduler's unschedulable queue: the lock's release is a node annotation, which moves no
# pod, so it is retried at the queue's periodic flush (60 s in 1.20, unschedulableQTimeInterval) after
# its backoff (up to 10 s). On a real 1.20 control plane SCHED-LOCK-4 and SCHED-BINPACK-1 were still
# pending after 60 s and bound when re-run. A pod of a batch on one node can meet the lock twice (the
# pods before it each hold it for their Allocate): SCHED-SLOTS-1's sixth pod on real 1.20 under six
# concurrent cells was still pending after 90 s. So two flushes and their backoffs, plus slack. The
# emulated scheduler retries at once.
REAL_SCHEDULER_RETRY_S = 2 * (60.0 + 10.0) + 20.0


class Workloads:
    """Pods in one test's namespace, with the waits and reads the cases need.

    Every wait that times out names the running case's rule, what it waited for and the pod's last
    state (phase, node, scheduling condition, containers, HAMi annotations, events). Logs read
    from probes are kept (``logs``) so a failed case can attach them raw.
    """

    def __init__(self, kube: Kube, namespace: str, *, timeout: float = 60.0,
                 scheduler_name: str = C.DEFAULT_SCHEDULER_NAME,
                 attach: Callable[[str, str], Any] | None = None,
                 schedule_timeout: float | None = None) -> None:
        self.kube = kube
        self.ns = namespace
        self.timeout = timeout
        # how long a pod may take to be bound (default: timeout); see REAL_SCHEDULER_RETRY_S
        self.schedule_timeout = schedule_timeout
        self.scheduler_name = scheduler_name
        self.created: list[str] = []
        self.attach = attach  # attach(name, text): evidence of the running case
        self.logs: dict[tuple[str, str], str] = {}  # (pod, container) -> last log read

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
            raise AssertionError(with_rule(violated(
                "ADM-SCHED-1", f"pod {self.ns}/{sent['metadata']['name']} requests devices but was admitted "
                f"with schedulerName {got!r}, not {self.scheduler_name!r}; this case cannot run")))

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

    def describe(self, name: str, pod: Pod | None = None) -> str:
        """The pod's state and its recent events, for a failure message."""
        return f"{describe_pod(pod)}; events: {self.event_summary(name)}"

    def wait_pod(
        self, name: str, what: str, done: Callable[[Pod], bool], timeout: float | None = None
    ) -> Pod:
        """Wait until ``done(pod)`` for pod ``name``; ``what`` completes "waiting for pod ns/name to ...".

        Watch-driven: one read, then a watch of that pod from the read's resourceVersion, so every
        state the pod passes through is seen the moment it is stored (a poll every 0.25 s cost the
        API server and this process a read each time, most of a cell's waiting). Should the watch
        fail (an error event, a broken stream), the wait goes on by polling until the same deadline,
        and a timeout reads exactly as before."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        try:
            pod: Pod | None = self.get(name)
        except ApiError:
            pod = None
        if pod is not None:
            if done(pod):
                return pod
            hit = self._watch_pod(name, pod, done, deadline)
            if hit is not None:
                return hit
        return poll(
            f"pod {self.ns}/{name} {what}",
            lambda: self.get(name),
            done,
            timeout,
            describe=lambda p: self.describe(name, p),
            deadline=deadline,
        )

    def _watch_pod(self, name: str, pod: Pod, done: Callable[[Pod], bool], deadline: float) -> Pod | None:
        """The first state of the pod from ``pod`` on that satisfies ``done``, seen through a watch;
        None when the deadline comes first or the watch cannot go on (the caller then polls)."""
        rv = str((pod.get("metadata") or {}).get("resourceVersion") or "")
        while rv:
            left = deadline - time.monotonic()
            if left < 1:
                return None
            try:
                events = self.kube.watch(self.pods_path, resource_version=rv, timeout_seconds=int(left),
                                         bookmarks=False, fieldSelector=f"metadata.name={name}")
                for ev in events:
                    obj = ev.get("object") or {}
                    if ev.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
                        return None  # ERROR (e.g. 410 Gone): let polling take over
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if ev.get("type") != "DELETED" and done(obj):
                        return obj
            except (ApiError, OSError, urllib3.exceptions.HTTPError, ValueError):
                return None
        return None

    def wait_scheduled(self, name: str, timeout: float | None = None) -> Pod:
        return self.wait_pod(name, "to be bound to a node",
                             lambda p: bool((p.get("spec") or {}).get("nodeName")),
                             timeout or self.schedule_timeout)

    def wait_phase(self, name: str, phases: tuple[str, ...], timeout: float | None = None) -> Pod:
        """Wait for one of ``phases``; where binding may take longer than ``timeout`` (a real
        scheduler's retry, ``schedule_timeout``), the pod is first given that long to be bound (no
        phase past Pending comes before), then ``timeout`` for the phase."""
        if self.schedule_timeout and "Pending" not in phases:
            self.wait_scheduled(name)
        return self.wait_pod(name, f"to reach phase {' or '.join(phases)}",
                             lambda p: (p.get("status") or {}).get("phase") in phases, timeout)

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
        return summarize_events(evs)

    def wait_event(self, name: str, reason: str, timeout: float | None = None) -> dict[str, Any]:
        def pod_state(_evs: list[dict[str, Any]] | None) -> str:
            try:
                pod: Pod | None = self.get(name)
            except ApiError:
                pod = None
            return f"{describe_pod(pod)}; events: {summarize_events(_evs or [])}"

        evs = poll(
            f"event {reason} on pod {self.ns}/{name}",
            lambda: self.events(name),
            lambda items: any(e.get("reason") == reason for e in items),
            timeout or self.timeout,
            describe=pod_state,
        )
        return next(e for e in evs if e.get("reason") == reason)

    def log(self, name: str, container: str = "main") -> str:
        text = self.kube.text(f"{self.pods_path}/{name}/log", container=container)
        self.logs[(name, container)] = text
        return text  # type: ignore[no-any-return]

    def _attach_log(self, name: str, container: str, text: str) -> str:
        file = f"log-{name}-{container}.txt"
        if self.attach is not None:
            self.attach(file, text)
        return file

    def probe(self, name: str, container: str = "main", timeout: float | None = None) -> dict[str, Any]:
        """Wait for the probe container to finish and return its result document.

        No result line in the log fails the running case's rule, with the log attached raw."""
        pod = self.wait_phase(name, ("Succeeded", "Failed"), timeout)
        text = self.log(name, container)
        doc = parse_probe_output(text)
        if doc is None:
            file = self._attach_log(name, container, text)
            raise AssertionError(with_rule(
                f"probe {self.ns}/{name} container {container} printed no {MARKER} result "
                f"({describe_pod(pod)}); raw log attached as {file}; log tail: {text[-400:]!r}; "
                f"events: {self.event_summary(name)}"
            ))
        return doc

    def probe_running(
        self, name: str, container: str = "main", timeout: float | None = None
    ) -> dict[str, Any]:
        """For a probe that holds after printing: wait until its result is in the log.

        The log is read only once the pod has started (watched until then, see :meth:`wait_pod`):
        before that each read is a round trip through the API server to the node for nothing."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        self._until_started(name, deadline)
        seen: dict[str, str] = {}

        def read() -> dict[str, Any] | None:
            seen["log"] = self.log(name, container)
            return parse_probe_output(seen["log"])

        def last(_doc: Any) -> str:
            try:
                pod: Pod | None = self.get(name)
            except ApiError:
                pod = None
            file = self._attach_log(name, container, seen.get("log", ""))
            return f"{self.describe(name, pod)}; log tail {seen.get('log', '')[-300:]!r} (raw log: {file})"

        return poll(  # type: ignore[no-any-return]
            f"the {MARKER} line of probe {self.ns}/{name} container {container}",
            read,
            lambda doc: doc is not None,
            timeout,
            describe=last,
            deadline=deadline,
        )

    def _until_started(self, name: str, deadline: float) -> None:
        """Until the pod runs or ended, or the deadline; whatever the caller waits for next decides
        (and reports) the outcome."""

        def started(pod: Pod) -> bool:
            return (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed")

        try:
            pod = self.get(name)
        except ApiError:
            return
        if not started(pod):
            self._watch_pod(name, pod, started, deadline)


def summarize_events(events: list[dict[str, Any]], last: int = 8) -> str:
    return "; ".join(f"{e.get('reason')}: {e.get('message')}" for e in events[-last:]) or "(none)"


def parse_probe_output(text: str) -> dict[str, Any] | None:
    """The probe's result document in a container log (see :mod:`conformance.probe.result`)."""
    return find_result(text)


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
