"""Workloads' pod waits are watch-driven: every state a pod passes through is seen, and leaving a
watch early leaves the client's connections clean for the next request."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conformance.kube import WaitTimeout, Workloads
from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed

NS = "default"
PODS = f"/api/v1/namespaces/{NS}/pods"


@pytest.fixture(scope="module")
def kube():  # type: ignore[no-untyped-def]
    with EmbeddedTestbed(33, history=50) as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        yield k
        k.close()


def _pod(kube: Kube, name: str) -> dict[str, Any]:
    return kube.create(PODS, {  # type: ignore[no-any-return]
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    })


def _set_phase(kube: Kube, name: str, phase: str) -> None:
    kube.patch(f"{PODS}/{name}/status", {"status": {"phase": phase}}, kind="merge")


def test_a_state_that_lasts_a_moment_is_seen(kube: Kube) -> None:
    _pod(kube, "blink")

    def blink() -> None:
        time.sleep(0.5)
        _set_phase(kube, "blink", "Running")
        _set_phase(kube, "blink", "Succeeded")  # at once: a 0.25 s poll would almost always miss Running

    t = threading.Thread(target=blink)
    t.start()
    try:
        pod = Workloads(kube, NS, timeout=20).wait_phase("blink", ("Running",))
    finally:
        t.join()
    assert pod["status"]["phase"] == "Running"
    assert kube.get(f"{PODS}/blink")["status"]["phase"] == "Succeeded"


def test_leaving_a_watch_early_keeps_later_requests_right(kube: Kube) -> None:
    _pod(kube, "early")
    kube.create(f"/api/v1/namespaces/{NS}/configmaps", {"metadata": {"name": "after"}, "data": {"k": "v"}})
    threading.Timer(0.3, _set_phase, (kube, "early", "Running")).start()
    Workloads(kube, NS, timeout=20).wait_running("early")
    # the watch's server side still streams on its connection: later events must not reach the
    # answers of later requests
    _set_phase(kube, "early", "Failed")
    for _ in range(20):
        assert kube.get(f"/api/v1/namespaces/{NS}/configmaps/after")["data"] == {"k": "v"}
        assert kube.get(f"{PODS}/early")["status"]["phase"] == "Failed"


def test_a_timeout_reads_as_before(kube: Kube) -> None:
    _pod(kube, "stuck")
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 2s waiting for pod default/stuck to be bound "
                                          r"to a node; last seen: phase="):
        Workloads(kube, NS, timeout=2).wait_scheduled("stuck")
    assert time.monotonic() - t0 < 6


def test_binding_waits_take_the_schedule_timeout_and_other_waits_do_not(kube: Kube) -> None:
    """On a real kube-scheduler a refused bind is retried at its queue's flush: waits for binding
    (only those) use ``schedule_timeout`` (REAL_SCHEDULER_RETRY_S in the workloads fixture)."""
    _pod(kube, "unbound")  # nothing schedules it: spec.nodeName stays empty
    w = Workloads(kube, NS, timeout=0.5, schedule_timeout=1.5)
    t = time.monotonic()
    with pytest.raises(WaitTimeout):
        w.wait_scheduled("unbound")
    assert 1.4 < time.monotonic() - t < 5
    # a phase past Pending needs the pod bound first: that part also gets the schedule timeout (a
    # probe pod on a real 1.18 waited out a node lock and the queue's flush past the 60 s probe wait)
    t = time.monotonic()
    with pytest.raises(WaitTimeout, match="to be bound"):
        w.wait_phase("unbound", ("Succeeded",))
    assert 1.4 < time.monotonic() - t < 5
    assert w.wait_phase("unbound", ("Pending",))["metadata"]["name"] == "unbound"  # at once
    # a bound pod waits only the ordinary timeout for its phase
    kube.create(PODS, {"metadata": {"name": "bound"},
                       "spec": {"nodeName": "nowhere", "containers": [{"name": "main", "image": "busybox"}]}})
    t = time.monotonic()
    with pytest.raises(WaitTimeout, match="to reach phase Succeeded"):
        w.wait_phase("bound", ("Succeeded",))
    assert time.monotonic() - t < 1.4
    # without a schedule timeout (the emulated scheduler) nothing changes: one wait, one timeout
    plain = Workloads(kube, NS, timeout=0.5)
    t = time.monotonic()
    with pytest.raises(WaitTimeout, match="to reach phase Succeeded"):
        plain.wait_phase("unbound", ("Succeeded",))
    assert time.monotonic() - t < 1.4
