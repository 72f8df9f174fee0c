"""Per-node scheduling state kept incrementally from the informers.

Each node carries its allocatable resources and the summed requests of the pods bound (or assumed)
to it, so a filter pass costs a few dict lookups per node and never a list call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from testbed.k8s.quantity import parse_quantity

Obj = dict[str, Any]

CPU, MEMORY, PODS, EPHEMERAL = "cpu", "memory", "pods", "ephemeral-storage"
# requests assumed for scoring when a container requests nothing (scheduler util.DefaultMilliCPURequest...)
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024


@lru_cache(maxsize=4096)
def amount(name: str, text: str) -> int:
    """A quantity in the unit the scheduler compares: millicores for cpu, plain units otherwise."""
    q = parse_quantity(str(text))
    return q.milli_value() if name == CPU else q.value()


def resource_list(rl: dict[str, Any] | None) -> dict[str, int]:
    return {k: amount(k, str(v)) for k, v in (rl or {}).items()}


@dataclass(frozen=True)
class PodRequest:
    """What one pod asks of a node (effective requests: max(sum of containers, each init container))."""

    res: dict[str, int]
    nonzero_cpu: int
    nonzero_mem: int


def pod_request(pod: Obj) -> PodRequest:
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    nz_cpu = nz_mem = 0
    for c in spec.get("containers") or []:
        req = resource_list((c.get("resources") or {}).get("requests"))
        for k, v in req.items():
            total[k] = total.get(k, 0) + v
        nz_cpu += req.get(CPU, DEFAULT_MILLI_CPU)
        nz_mem += req.get(MEMORY, DEFAULT_MEMORY)
    for c in spec.get("initContainers") or []:
        req = resource_list((c.get("resources") or {}).get("requests"))
        for k, v in req.items():
            if v > total.get(k, 0):
                total[k] = v
        nz_cpu = max(nz_cpu, req.get(CPU, DEFAULT_MILLI_CPU))
        nz_mem = max(nz_mem, req.get(MEMORY, DEFAULT_MEMORY))
    for k, v in resource_list(spec.get("overhead")).items():
        total[k] = total.get(k, 0) + v
    return PodRequest(total, nz_cpu, nz_mem)


def pod_limits_and_requests_names(pod: Obj) -> set[str]:
    """Every resource name a pod's containers request or limit (for extender interest)."""
    names: set[str] = set()
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        r = c.get("resources") or {}
        names.update((r.get("requests") or {}).keys())
        names.update((r.get("limits") or {}).keys())
    return names


@dataclass
class NodeInfo:
    name: str
    node: Obj
    labels: dict[str, str]
    unschedulable: bool
    taints: list[tuple[str, str, str]]  # (key, value, effect) for NoSchedule/NoExecute only
    allocatable: dict[str, int]
    requested: dict[str, int] = field(default_factory=dict)
    nonzero_cpu: int = 0
    nonzero_mem: int = 0
    pods: dict[str, PodRequest] = field(default_factory=dict)  # pod uid -> its request

    @classmethod
    def from_node(cls, node: Obj, old: NodeInfo | None = None) -> NodeInfo:
        meta, spec = node.get("metadata") or {}, node.get("spec") or {}
        taints = [(t.get("key", ""), t.get("value", ""), t.get("effect", ""))
                  for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]
        info = cls(name=meta.get("name", ""), node=node, labels=dict(meta.get("labels") or {}),
                   unschedulable=bool(spec.get("unschedulable")), taints=taints,
                   allocatable=resource_list((node.get("status") or {}).get("allocatable")))
        if old is not None:
            info.requested, info.pods = old.requested, old.pods
            info.nonzero_cpu, info.nonzero_mem = old.nonzero_cpu, old.nonzero_mem
        return info

    def add_pod(self, uid: str, req: PodRequest) -> None:
        if uid in self.pods:
            return
        self.pods[uid] = req
        for k, v in req.res.items():
            self.requested[k] = self.requested.get(k, 0) + v
        self.nonzero_cpu += req.nonzero_cpu
        self.nonzero_mem += req.nonzero_mem

    def remove_pod(self, uid: str) -> None:
        req = self.pods.pop(uid, None)
        if req is None:
            return
        for k, v in req.res.items():
            self.requested[k] = self.requested.get(k, 0) - v
        self.nonzero_cpu -= req.nonzero_cpu
        self.nonzero_mem -= req.nonzero_mem
