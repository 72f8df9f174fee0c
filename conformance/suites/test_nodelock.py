"""The node lock (``hami.io/mutex.lock`` on the Node): taken for a pod while it is bound, released
once its devices are allocated, honoured while another live pod holds it, taken over once expired.

The cases write the lock annotation themselves to stage a held or an expired lock; each restores
the node's annotation afterwards.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import ContainerSpec, Workloads, pod_manifest, poll
from conformance.suites.common import HOLD, expect_bound_to, idle_gpu, on_gpu

pytestmark = [pytest.mark.nvidia, pytest.mark.scheduling]
EXPIRED_AGE = timedelta(minutes=30)  # well past HAMi's 5-minute default lock timeout
BLOCKED_FOR_S = 8  # how long a pod must stay unbound while another live pod holds the lock


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lock_of(node: dict[str, Any]) -> str | None:
    return (node["metadata"].get("annotations") or {}).get(C.NODE_LOCK)


def _set_lock(kube: Any, node: str, value: str | None) -> None:
    kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": {C.NODE_LOCK: value}}}, kind="merge")


def _holder(workloads: Workloads, name: str = "holder") -> str:
    """A live pod without devices, to name as the lock's holder."""
    workloads.create(pod_manifest(name, [ContainerSpec(args=HOLD)]))
    workloads.wait_phase(name, ("Running",))
    return name


class _LockWatch:
    """Every value the node's lock annotation takes while the watch runs (None = absent)."""

    def __init__(self, kube: Any, node: str) -> None:
        self.values: list[str | None] = []
        current = kube.get(f"/api/v1/nodes/{node}")
        self.values.append(_lock_of(current))
        rv = current["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(kube, node, rv), daemon=True)
        self._thread.start()

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
                    value = _lock_of(obj)
                    if not self.values or self.values[-1] != value:
                        self.values.append(value)
        except Exception as e:  # the watch is evidence only; its end is not the case's failure
            self.values.append(f"<watch ended: {e}>")


@rule(
    "SCHED-LOCK-1",
    "Binding a pod takes the node lock naming <namespace>,<pod> and allocation releases it afterwards",
)
def test_lock_taken_and_released(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    watch = _LockWatch(kube, gpu.node)
    workloads.create(on_gpu("locker", gpu.uuid, mem=1000))
    workloads.wait_phase("locker", ("Running",))
    suffix = f",{workloads.ns},locker"
    final = poll(
        f"the node lock on {gpu.node} to stop naming {workloads.ns}/locker after the pod started",
        lambda: _lock_of(kube.get(f"/api/v1/nodes/{gpu.node}")) or "",
        lambda v: not v.endswith(suffix),
        20,
        describe=lambda v: f"{C.NODE_LOCK}={v!r}",
    )
    time.sleep(0.5)  # let the watch deliver the release it has seen
    held = [v for v in watch.values if v and v.endswith(suffix)]
    assert held, violated(
        "SCHED-LOCK-1",
        f"{C.NODE_LOCK} on {gpu.node} never named {workloads.ns}/locker during the bind "
        f"(values seen: {watch.values})",
    )
    stamp = held[0].split(",", 1)[0]
    try:
        datetime.strptime(stamp.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        pytest.fail(violated("SCHED-LOCK-1", f"lock value {held[0]!r} does not start with an RFC3339 time"))
    assert not (final or "").endswith(suffix), violated("SCHED-LOCK-1", f"lock still held: {final!r}")


def _staged(kube: Any, node: str, value: str) -> str | None:
    before = _lock_of(kube.get(f"/api/v1/nodes/{node}"))
    _set_lock(kube, node, value)
    return before


@rule(
    "SCHED-LOCK-2",
    "An expired node lock naming a pod that does not exist does not stop a new pod from binding and running",
)
def test_expired_lock_of_missing_pod(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    old = _rfc3339(datetime.now(UTC) - EXPIRED_AGE)
    _staged(kube, gpu.node, f"{old},{workloads.ns},no-such-pod")
    try:
        workloads.create(on_gpu("after-expiry", gpu.uuid, mem=1000))
        expect_bound_to(workloads, "after-expiry", gpu.uuid, "SCHED-LOCK-2")
        workloads.wait_phase("after-expiry", ("Running",))
    finally:
        _release_if(kube, gpu.node, f",{workloads.ns},no-such-pod")


@rule(
    "SCHED-LOCK-3",
    "An expired node lock is taken over even while the pod it names still exists",
)
def test_expired_lock_of_live_pod(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    holder = _holder(workloads)
    old = _rfc3339(datetime.now(UTC) - EXPIRED_AGE)
    _staged(kube, gpu.node, f"{old},{workloads.ns},{holder}")
    try:
        workloads.create(on_gpu("takeover", gpu.uuid, mem=1000))
        expect_bound_to(workloads, "takeover", gpu.uuid, "SCHED-LOCK-3")
        workloads.wait_phase("takeover", ("Running",))
    finally:
        _release_if(kube, gpu.node, f",{workloads.ns},{holder}")


@rule(
    "SCHED-LOCK-4",
    "A fresh node lock held by another live pod keeps a new pod off that node until it is released",
)
def test_fresh_lock_blocks(workloads: Workloads, kube: Any) -> None:
    gpu = idle_gpu(kube)
    holder = _holder(workloads)
    _staged(kube, gpu.node, f"{_rfc3339(datetime.now(UTC))},{workloads.ns},{holder}")
    try:
        workloads.create(on_gpu("waiter", gpu.uuid, mem=1000))
        deadline = time.monotonic() + BLOCKED_FOR_S
        while time.monotonic() < deadline:
            node = workloads.get("waiter")["spec"].get("nodeName")
            assert not node, violated(
                "SCHED-LOCK-4",
                f"pod waiter was bound to {node} while {workloads.ns}/{holder} held its node lock "
                f"(events: {workloads.event_summary('waiter')})",
            )
            time.sleep(0.5)
    finally:
        _release_if(kube, gpu.node, f",{workloads.ns},{holder}")
    # released: the pod goes on (kube-scheduler retries after its backoff)
    expect_bound_to(workloads, "waiter", gpu.uuid, "SCHED-LOCK-4")


def _release_if(kube: Any, node: str, suffix: str) -> None:
    """Remove a lock this case staged (only if it still names the staged holder)."""
    value = _lock_of(kube.get(f"/api/v1/nodes/{node}"))
    if value and value.endswith(suffix):
        _set_lock(kube, node, None)
