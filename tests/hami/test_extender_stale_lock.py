"""A node lock whose holder has finished allocating is taken over before it expires; a lock held by a
pod still allocating, or by a live pod HAMi did not allocate, is not (upstream's rule)."""

from __future__ import annotations

import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.protocol import events as ev
from hami_stack.scheduler.extender import Extender

from .fake_apiserver import FakeKube
from .test_extender_bind_safety import bind, filt, live, new_pod, world


def _hold(kube: FakeKube, ext: Extender, holder_phase: str | None, pod_phase: str) -> None:
    """The first pod binds (takes the lock); then the plugin never releases it."""
    first = new_pod(kube, "first", mem=1000)
    assert filt(ext, first, ["n1"])["NodeNames"] == ["n1"]
    assert bind(ext, live(kube, "first"), "n1") == ""
    pod = live(kube, "first")
    if holder_phase is None:
        pod["metadata"]["annotations"].pop(ann.BIND_PHASE, None)
    else:
        pod["metadata"]["annotations"][ann.BIND_PHASE] = holder_phase
    pod.setdefault("status", {})["phase"] = pod_phase


@pytest.mark.parametrize(
    ("holder_phase", "pod_phase", "taken_over"),
    [
        (ev.PHASE_SUCCESS, "Running", True),
        (ev.PHASE_FAILED, "Pending", True),
        (ev.PHASE_ALLOCATING, "Running", True),  # containers started: Allocate is behind it
        (ev.PHASE_ALLOCATING, "Failed", True),
        (ev.PHASE_ALLOCATING, "Pending", False),  # still allocating: the lock is its
        (None, "Running", False),  # a live pod HAMi did not allocate: until expiry, as upstream
    ],
)
def test_lock_of_a_holder_done_allocating_is_taken_over(
    holder_phase: str | None, pod_phase: str, taken_over: bool
) -> None:
    kube, ext = world(n_gpus=2)
    _hold(kube, ext, holder_phase, pod_phase)
    lock = kube.nodes["n1"]["metadata"]["annotations"][ann.NODE_LOCK]
    assert lock.endswith(",default,first")
    second = new_pod(kube, "second", mem=1000)
    res = filt(ext, second, ["n1"])
    assert res["Error"] == "" and res["NodeNames"] == ["n1"], res
    err = bind(ext, live(kube, "second"), "n1")
    if taken_over:
        assert err == "", err
        assert kube.nodes["n1"]["metadata"]["annotations"][ann.NODE_LOCK].endswith(",default,second")
        assert live(kube, "second")["spec"]["nodeName"] == "n1"
    else:
        assert "lock" in err.lower(), err
        assert kube.nodes["n1"]["metadata"]["annotations"][ann.NODE_LOCK] == lock
        assert not live(kube, "second")["spec"].get("nodeName")
