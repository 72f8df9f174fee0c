"""Filter and score plugins, with the failure reasons each minor prints.

Reasons are counted per node into the ``0/N nodes are available: ...`` message, so their wording
is part of the observable behaviour; the per-minor table lives in :class:`Messages`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testbed.k8s.scheduling import node_selector_term_matches, tolerates

from .nodeinfo import CPU, MEMORY, PODS, NodeInfo, PodRequest

Obj = dict[str, Any]

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


@dataclass(frozen=True)
class Messages:
    minor: int

    @property
    def affinity(self) -> str:
        if self.minor <= 20:
            return "node(s) didn't match node selector"
        if self.minor <= 22:
            return "node(s) didn't match Pod's node affinity"
        return "node(s) didn't match Pod's node affinity/selector"

    @property
    def node_name(self) -> str:
        return ("node(s) didn't match the requested hostname" if self.minor <= 19
                else "node(s) didn't match the requested node name")

    unschedulable = "node(s) were unschedulable"

    def taint(self, key: str, value: str) -> str:
        if self.minor <= 21:
            return "node(s) had taints that the pod didn't tolerate"
        if self.minor <= 24:
            return f"node(s) had taint {{{key}: {value}}}, that the pod didn't tolerate"
        return f"node(s) had untolerated taint {{{key}: {value}}}"


# (reasons, unresolvable) -- unresolvable statuses are the ones preemption cannot help with
Failure = tuple[list[str], bool]



@dataclass
class PodView:
    """What the filters need from one pod, computed once per scheduling attempt."""

    pod: Obj
    request: PodRequest
    node_name: str
    node_selector: dict[str, str]
    required_terms: list[Obj] | None
    tolerations: list[Obj]
    tolerates_unschedulable: bool

    @classmethod
    def of(cls, pod: Obj, request: PodRequest) -> PodView:
        spec = pod.get("spec") or {}
        aff = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution")
        terms = aff.get("nodeSelectorTerms") if isinstance(aff, dict) else None
        tol = spec.get("tolerations") or []
        return cls(pod, request, spec.get("nodeName") or "", spec.get("nodeSelector") or {}, terms, tol,
                   tolerates(tol, UNSCHEDULABLE_TAINT, "", "NoSchedule"))


def make_filter(msgs: Messages, ignored: set[str], ignored_groups: set[str]
                ) -> Callable[[PodView, NodeInfo], Failure | None]:
    """The profile's filter chain, in the order the minor's default plugin list runs them."""

    def node_unschedulable(p: PodView, n: NodeInfo) -> Failure | None:
        if n.unschedulable and not p.tolerates_unschedulable:
            return [msgs.unschedulable], True
        return None

    def node_name(p: PodView, n: NodeInfo) -> Failure | None:
        if p.node_name and p.node_name != n.name:
            return [msgs.node_name], True
        return None

    def taint_toleration(p: PodView, n: NodeInfo) -> Failure | None:
        for key, value, effect in n.taints:
            if not tolerates(p.tolerations, key, value, effect):
                return [msgs.taint(key, value)], True
        return None

    def node_affinity(p: PodView, n: NodeInfo) -> Failure | None:
        labels = n.labels
        for k, v in p.node_selector.items():
            if labels.get(k) != v:
                return [msgs.affinity], True
        if p.required_terms is not None and not any(
                node_selector_term_matches(t, labels, n.name) for t in p.required_terms):
            return [msgs.affinity], True
        return None

    def resources_fit(p: PodView, n: NodeInfo) -> Failure | None:
        reasons: list[str] = []
        alloc, used = n.allocatable, n.requested
        if len(n.pods) + 1 > alloc.get(PODS, 0):
            reasons.append("Too many pods")
        for name, want in p.request.res.items():
            if want == 0 or name in ignored or (
                    "/" in name and name.split("/", 1)[0] in ignored_groups):
                continue
            if want > alloc.get(name, 0) - used.get(name, 0):
                reasons.append(f"Insufficient {name}")
        return (reasons, False) if reasons else None

    if msgs.minor <= 18:
        chain = (node_unschedulable, resources_fit, node_name, node_affinity, taint_toleration)
    else:
        chain = (node_unschedulable, node_name, taint_toleration, node_affinity, resources_fit)

    def run(p: PodView, n: NodeInfo) -> Failure | None:
        for f in chain:
            r = f(p, n)
            if r is not None:
                return r
        return None

    return run


def score(p: PodView, n: NodeInfo) -> int:
    """LeastAllocated (cpu, memory) plus BalancedAllocation, each 0..100 as the real plugins."""
    ac, am = n.allocatable.get(CPU, 0), n.allocatable.get(MEMORY, 0)
    rc, rm = n.nonzero_cpu + p.request.nonzero_cpu, n.nonzero_mem + p.request.nonzero_mem
    least = 0
    fc = fm = 1.0
    if ac > 0:
        least += max(ac - rc, 0) * 100 // ac
        fc = min(rc / ac, 1.0)
    if am > 0:
        least += max(am - rm, 0) * 100 // am
        fm = min(rm / am, 1.0)
    balanced = int((1 - abs(fc - fm)) * 100)
    return least // 2 + balanced
