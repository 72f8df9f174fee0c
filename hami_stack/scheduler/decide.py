"""The filter decision (sections 5.1-5.4) over device snapshots: pure, no I/O, no cache locking.

For one pod and one node: every container in order (init containers first, each on a fresh copy
of the node's usage; app containers on one shared copy so they accumulate), for every family the
container asks: order the family's devices by the GPU policy (:func:`order_devices`), let the
family ``fit``, count the picks. The first failing container gives the node's reason. The node
score is the usage score *before* this pod plus each family's ``score_node``. The best node is
the highest score under binpack, the lowest under spread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import faults
from ..devices.base import (
    ContainerDeviceRequest,
    DeviceFamily,
    DeviceUsage,
    FitContext,
    add_usage,
    containers,
)
from ..devices.scoring import best_node, node_score, order_devices
from ..protocol import annotations as ann
from ..protocol import events as ev
from ..protocol.assignment import PodDevices
from ..protocol.policy import (
    GpuPolicy,
    ScoringWeights,
    gpu_policy,
    node_policy,
    numa_bind_requested,
    scoring_weights,
)
from .cache import clone

Obj = dict[str, Any]
QuotaFits = Callable[[str, DeviceFamily, int, int], bool]


@dataclass(frozen=True)
class PodPlan:
    """What a pod asks, resolved once per /filter call."""

    requests: tuple[tuple[DeviceFamily, tuple[ContainerDeviceRequest | None, ...]], ...]
    n_init: int
    n_containers: int
    node_policy: str
    gpu_policy: GpuPolicy
    weights: ScoringWeights

    @property
    def empty(self) -> bool:
        return not self.requests

    def signature(self, pod: Obj) -> tuple[Any, ...]:
        """Everything a node's fit result depends on besides the node itself (memo key)."""
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        relevant = tuple(sorted((k, v) for k, v in annotations.items() if not ann.is_scheduler_owned(k)))
        reqs = tuple((f.common_word, r) for f, r in self.requests)
        return (reqs, self.n_init, self.node_policy, self.gpu_policy, self.weights, relevant)


def plan_pod(
    pod: Obj, families: Sequence[DeviceFamily], default_node_policy: str, default_gpu_policy: str
) -> PodPlan:
    """Resolve requests and policies; raises ProtocolError on invalid scoring weights."""
    ctrs = containers(pod)
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    requests = []
    for f in families:
        reqs = tuple(f.container_request(c) for c in ctrs)
        if any(r is not None for r in reqs):
            requests.append((f, reqs))
    numa_bind = numa_bind_requested(annotations.get(ann.NVIDIA_NUMA_BIND))
    numa_bind = numa_bind and not faults.on("scheduler-ignores-numa-bind")
    weights = scoring_weights(annotations.get(ann.DEVICE_SCORING_WEIGHTS)) if requests else ScoringWeights()
    return PodPlan(
        tuple(requests),
        len((pod.get("spec") or {}).get("initContainers") or []),
        len(ctrs),
        # the annotation verbatim when present, even empty (HAMi: "" is a non-spread node policy
        # and a single, spread-sorting GPU policy)
        node_policy(
            _fault_swap(
                "scheduler-node-policy-swapped",
                annotations.get(ann.NODE_SCHEDULER_POLICY, default_node_policy),
            ),
            default_node_policy,
        ),
        gpu_policy(
            _fault_swap(
                "scheduler-gpu-policy-swapped", annotations.get(ann.GPU_SCHEDULER_POLICY, default_gpu_policy)
            ),
            default_gpu_policy,
            numa_bind,
        ),
        weights,
    )


@dataclass
class NodeFit:
    ok: bool
    score: float = 0.0
    devices: dict[str, PodDevices] = field(default_factory=dict)  # family -> per-container picks
    reason: str = ""
    reason_types: tuple[str, ...] = ()  # the reason words, for the event summary


def _fail(reason: str) -> NodeFit:
    # only "<n>/<m> <Reason>" parts name a reason type (HAMi's ParseReason): a bare reason such
    # as NodeInsufficientDevice fails the node without a per-reason event
    return NodeFit(False, reason=reason, reason_types=tuple(sorted(ev.parse_reason(reason))))


def fit_node(
    pod: Obj,
    plan: PodPlan,
    node: Obj | None,
    devices: Mapping[str, list[DeviceUsage]],
    quota_fits: QuotaFits | None,
) -> NodeFit:
    """Fit ``pod`` on one node whose ``devices`` (family -> usage) are a private copy (mutated here)."""
    if faults.active():
        pod, node = _fault_view(pod, node, devices)
    score = node_score(d for devs in devices.values() for d in devs)
    picks: dict[str, PodDevices] = {
        f.common_word: [[] for _ in range(plan.n_containers)] for f, _ in plan.requests
    }
    app_usage: Mapping[str, list[DeviceUsage]] | None = None
    for ci in range(plan.n_containers):
        if ci < plan.n_init:
            usage: Mapping[str, list[DeviceUsage]] = {
                cw: [clone(d) for d in ds] for cw, ds in devices.items()
            }
        else:
            if app_usage is None:
                app_usage = devices  # the caller's copy is ours to accumulate on
            usage = app_usage
        ctr_reqs = [reqs[ci] for _, reqs in plan.requests if reqs[ci] is not None]
        for family, reqs in plan.requests:
            req = reqs[ci]
            if req is None:
                continue
            fam_devices = usage.get(family.common_word) or []
            # HAMi refuses a node with fewer devices of the type than asked before fitting
            if req.nums > sum(1 for d in fam_devices if family.matches_type(d)):
                return _fail(ev.NODE_INSUFFICIENT_DEVICE)
            ctx = FitContext(
                pod, node, plan.gpu_policy, plan.weights, quota_fits, picks[family.common_word][:ci]
            )
            # sorted in place: like HAMi's node copy, the next app container starts from this order
            fam_devices[:] = order_devices(fam_devices, ctr_reqs, plan.gpu_policy, plan.weights)
            result = family.fit(fam_devices, req, ctx)
            if not result.ok:
                return _fail(result.reason)
            add_usage(fam_devices, result.devices)
            picks[family.common_word][ci] = list(result.devices)
            if faults.on("scheduler-multi-gpu-one-segment"):
                picks[family.common_word][ci] = picks[family.common_word][ci][:1]
    for family, _ in plan.requests:
        score += family.score_node(
            node or {}, devices.get(family.common_word, []), picks[family.common_word], plan.node_policy
        )
    return NodeFit(True, score, picks)


def _fault_swap(fault: str, policy: str) -> str:
    """Faults ``scheduler-*-policy-swapped``: binpack and spread trade places."""
    if not faults.on(fault):
        return policy
    swap = {"binpack": "spread", "spread": "binpack"}
    return ",".join(swap.get(w.strip(), w.strip()) for w in policy.split(","))


def _fault_view(
    pod: Obj, node: Obj | None, devices: Mapping[str, list[DeviceUsage]]
) -> tuple[Obj, Obj | None]:
    """The scheduler faults that make the filter look at less than it must (a private view)."""
    for devs in devices.values():
        for d in devs:
            if faults.on("scheduler-ignores-used-memory"):
                d.usedmem = 0
            if faults.on("scheduler-ignores-used-cores"):
                d.usedcores = 0
            if faults.on("scheduler-ignores-slot-count"):
                d.used = 0
            if faults.on("scheduler-ignores-memory-fit"):
                d.totalmem = 1 << 40
    drop = set()
    if faults.on("scheduler-ignores-gputype"):
        drop |= {ann.NVIDIA_USE_GPUTYPE, ann.NVIDIA_NOUSE_GPUTYPE}
    if faults.on("scheduler-ignores-gpuuuid"):
        drop |= {ann.NVIDIA_USE_GPUUUID, ann.NVIDIA_NOUSE_GPUUUID}
    if faults.on("scheduler-ignores-numa-bind"):
        drop |= {ann.NVIDIA_NUMA_BIND}
    meta = pod.get("metadata") or {}
    if drop & set(meta.get("annotations") or {}):
        kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in drop}
        pod = {**pod, "metadata": {**meta, "annotations": kept}}
    if node is not None and faults.on("scheduler-ignores-cordon"):
        nmeta = node.get("metadata") or {}
        kept = {k: v for k, v in (nmeta.get("annotations") or {}).items() if k != ann.DEVICE_CORDON}
        node = {**node, "metadata": {**nmeta, "annotations": kept}}
    return pod, node


@dataclass
class FilterOutcome:
    best: str | None
    fits: dict[str, NodeFit]
    failed: dict[str, str]  # node -> reason
    failed_types: dict[str, tuple[str, ...]]

    def success_message(self) -> str:
        assert self.best is not None
        ranked = sorted(((n, f.score) for n, f in self.fits.items()), key=lambda x: x[0])
        return ev.filter_success_message(self.best, len(self.failed), ranked)

    def failure_messages(self) -> list[str]:
        """The FilteringFailed event messages, in HAMi's order: one per reason type
        (``<n> nodes <Reason>(<nodes>)``), then ``no available node, <N> nodes do not meet``."""
        return [*ev.reason_type_messages(self.failed_types), ev.filter_failure_message(len(self.failed))]

    def failure_message(self) -> str:
        """All of :meth:`failure_messages` in one line (logs, errors)."""
        return "; ".join(self.failure_messages())


def choose(
    fits: Mapping[str, NodeFit], failed: dict[str, str], failed_types: dict[str, tuple[str, ...]], policy: str
) -> FilterOutcome:
    ok = {n: f for n, f in fits.items() if f.ok}
    best = best_node({n: f.score for n, f in ok.items()}, policy)
    return FilterOutcome(best, ok, failed, failed_types)
