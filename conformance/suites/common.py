"""What several suites share: holding pods, finding an idle GPU, expecting a filter failure.

Not a test module (pytest collects ``test_*.py`` only).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from conformance import contract as C
from conformance.cases import violated
from conformance.kube import (
    ContainerSpec,
    Pod,
    Workloads,
    gpu_nodes,
    pod_manifest,
    poll,
    registered_devices,
)

# A probe that touches nothing and stays Running: its allocation counts on the GPU while it lives.
HOLD = ["--alloc-mib", "0", "--kernel-seconds", "0", "--hold-seconds", "180"]
QUICK = ["--alloc-mib", "0", "--kernel-seconds", "0"]
MIB = 1 << 20
LIVE_PHASES = ("Pending", "Running")


@dataclass(frozen=True)
class Gpu:
    node: str
    uuid: str
    devmem: int  # MiB
    devcore: int
    count: int  # split slots
    type: str
    numa: int = 0
    index: int = 0


def all_gpus(kube: Any) -> list[Gpu]:
    out = []
    for n in gpu_nodes(kube):
        for d in registered_devices(n):
            out.append(
                Gpu(n["metadata"]["name"], d.id, d.devmem, d.devcore, d.count, d.type, d.numa, d.index)
            )
    return sorted(out, key=lambda g: (g.node, g.uuid))


def _busy_uuids(kube: Any) -> set[str]:
    """GPUs some live pod (anywhere in the cluster) holds an allocation on."""
    busy: set[str] = set()
    for pod in kube.get("/api/v1/pods").get("items") or []:
        if (pod.get("status") or {}).get("phase") not in LIVE_PHASES:
            continue
        value = ((pod.get("metadata") or {}).get("annotations") or {}).get(C.NVIDIA_ALLOCATED)
        if not value:
            continue
        try:
            for seg in C.decode_assignment(value):
                busy.update(d.uuid for d in seg)
        except C.ContractError:
            continue
    return busy


def idle_gpu(kube: Any, *, node: str | None = None, timeout: float = 90) -> Gpu:
    """A GPU no live pod holds (earlier cases' namespaces may still be going away: wait for one).

    Capacity cases fill one GPU and must start from an empty one, or leftovers decide the outcome."""

    def pick(busy: set[str]) -> Gpu | None:
        for g in reversed(all_gpus(kube)):
            if g.uuid not in busy and (node is None or g.node == node):
                return g
        return None

    ready = pick(_busy_uuids(kube))
    if ready is not None:
        return ready
    busy = poll(
        f"an NVIDIA GPU{' on ' + node if node else ''} that no live pod holds",
        lambda: _busy_uuids(kube),
        lambda b: pick(b) is not None,
        timeout,
        interval=1,
        describe=lambda b: f"busy GPUs {sorted(b or ())}",
    )
    gpu = pick(busy)
    assert gpu is not None
    time.sleep(SCHEDULER_CATCH_UP_S)  # it was freed just now: let the scheduler see that too
    return gpu


# The scheduler learns of a deleted pod through its informer a moment after the API stops showing it:
# a case that had to wait for an earlier case's pods gives it this long before relying on idle GPUs.
SCHEDULER_CATCH_UP_S = 3


def idle_node_gpus(kube: Any, node: str, timeout: float = 90) -> None:
    """Wait until no live pod holds any GPU of ``node`` (and the scheduler has caught up with that)."""
    uuids = {g.uuid for g in all_gpus(kube) if g.node == node}
    if not _busy_uuids(kube) & uuids:
        return
    poll(
        f"no live GPU pod on node {node}",
        lambda: _busy_uuids(kube) & uuids,
        lambda busy: not busy,
        timeout,
        interval=1,
        describe=lambda b: f"busy GPUs of {node}: {sorted(b or ())}",
    )
    time.sleep(SCHEDULER_CATCH_UP_S)


def on_gpu(
    name: str,
    uuid: str,
    *,
    mem: int | None = None,
    cores: int | None = None,
    mem_pct: int | None = None,
    gpus: int = 1,
    containers: int = 1,
    args: list[str] | None = None,
    annotations: dict[str, str] | None = None,
) -> Pod:
    """A pod pinned to one GPU by ``nvidia.com/use-gpuuuid`` (no nodeSelector), holding by default."""
    specs = [
        ContainerSpec(
            name="main" if i == 0 else f"c{i}",
            gpus=gpus,
            mem=mem,
            cores=cores,
            mem_pct=mem_pct,
            args=list(args if args is not None else HOLD),
        )
        for i in range(containers)
    ]
    return pod_manifest(name, specs, annotations={C.USE_GPUUUID: uuid, **(annotations or {})})


def failure_messages(w: Workloads, name: str) -> list[str]:
    """Where a refused pod's reasons show: HAMi's FilteringFailed events (a summary and one per reason
    type), kube-scheduler's FailedScheduling events and the PodScheduled condition (which carry the
    extender's per-node reasons, e.g. a bare NodeInsufficientDevice that raises no event of its own)."""
    out = [
        f"{e.get('reason')}: {e.get('message') or ''}"
        for e in w.events(name)
        if e.get("reason") in (C.FILTERING_FAILED, "FailedScheduling")
    ]
    for cond in (w.get(name).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            out.append(f"PodScheduled: {cond.get('message') or ''}")
    return out


def expect_filter_failure(w: Workloads, name: str, reason: str, rule_id: str) -> None:
    """The pod's scheduling failure names ``reason`` (see :func:`failure_messages`) and it stays
    unbound. A pod that gets bound instead fails the rule at once, not after a timeout."""

    def observe() -> tuple[str, list[str]]:
        node = (w.get(name).get("spec") or {}).get("nodeName") or ""
        return node, failure_messages(w, name)

    node, msgs = poll(
        f"a scheduling failure of pod {w.ns}/{name} naming {reason}",
        observe,
        lambda obs: bool(obs[0]) or any(reason in m for m in obs[1]),
        w.timeout,
        describe=lambda obs: f"failure messages {obs[1]!r}" if obs else "nothing",
        rule_id=rule_id,
    )
    assert not node, violated(
        rule_id, f"pod {name} was bound to {node} although it does not fit ({reason}); messages {msgs!r}"
    )
    # stays unbound a moment longer: a refusal that a retry turns into a bind is no refusal
    time.sleep(1)
    node = (w.get(name).get("spec") or {}).get("nodeName")
    assert not node, violated(rule_id, f"pod {name} was bound to {node} right after refusals naming {reason}")


def expect_bound_to(w: Workloads, name: str, uuid: str, rule_id: str, *, running: bool = False) -> Pod:
    """The pod is bound and every device of its assignment is ``uuid``; with ``running``, it also
    runs (a pod that holds usage for the case must live: a failed pod's usage is given back)."""
    pod = w.wait_scheduled(name)
    value = (pod["metadata"].get("annotations") or {}).get(C.NVIDIA_ALLOCATED, "")
    got = {d.uuid for seg in C.decode_assignment(value) for d in seg} if value else set()
    assert got == {uuid}, violated(rule_id, f"pod {name} was assigned {sorted(got)} ({value!r}), want {uuid}")
    if running:
        pod = w.wait_phase(name, ("Running", "Succeeded", "Failed"))
        phase = (pod.get("status") or {}).get("phase")
        assert phase == "Running", violated(
            rule_id,
            f"pod {name}, which holds usage on {uuid} for this case, is {phase}: {w.describe(name, pod)}",
        )
    return pod


def probe_limit_mib(doc: dict[str, Any], index: int = 0) -> int | None:
    """The container's CUDA_DEVICE_MEMORY_LIMIT_<index> in MiB (``<n>m``), None when unset."""
    value = (doc.get("env") or {}).get(f"CUDA_DEVICE_MEMORY_LIMIT_{index}")
    if value is None:
        return None
    text = str(value).strip().lower()
    factor = {"g": 1024, "m": 1, "k": 1 / 1024}.get(text[-1:], 1 / MIB)
    digits = text[:-1] if text[-1:] in "gmk" else text
    return int(int(digits) * factor)


def cuda_devices(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list((doc.get("cuda") or {}).get("devices") or [])


def nvml_devices(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list((doc.get("nvml") or {}).get("devices") or [])


class NodeAnnotationWatch:
    """Every value one annotation of a node takes from ``resource_version`` on (None = absent), seen
    through a watch, so a value that lasts only a moment (a lock held during a bind, a handshake
    answer the scheduler overwrites at once) is not missed between two polls."""

    def __init__(self, kube: Any, node: str, key: str, resource_version: str | None = None) -> None:
        self.key = key
        self.values: list[str | None] = []
        if resource_version is None:
            current = kube.get(f"/api/v1/nodes/{node}")
            self.values.append(self._of(current))
            resource_version = current["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(kube, node, resource_version), daemon=True)
        self._thread.start()

    def _of(self, node: dict[str, Any]) -> str | None:
        return ((node.get("metadata") or {}).get("annotations") or {}).get(self.key)

    def _run(self, kube: Any, node: str, rv: str) -> None:
        try:
            for ev in kube.watch(
                "/api/v1/nodes",
                resource_version=rv,
                timeout_seconds=90,
                fieldSelector=f"metadata.name={node}",
            ):
                obj = ev.get("object") or {}
                if ev.get("type") in ("ADDED", "MODIFIED") and obj.get("metadata"):
                    value = self._of(obj)
                    if not self.values or self.values[-1] != value:
                        self.values.append(value)
        except Exception as e:  # the watch is evidence only; its end is not the case's failure
            self.values.append(f"<watch ended: {e}>")
