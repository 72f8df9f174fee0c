"""What real kubectl shows of the scheduler's work: `get pods -o wide` and `describe pod` events."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from kubeclient.client import Kube
from testbed import clients
from testbed.embedded import EmbeddedTestbed

from .helpers import events_for, make_node, make_pod, node_of, start_scheduler, wait_for


@pytest.fixture(scope="module", params=[20, 33])
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[EmbeddedTestbed, Kube, str]]:
    kubectl = clients.kubectl_path(request.param)
    if kubectl is None:
        pytest.skip(clients.skip_reason(request.param))
    with EmbeddedTestbed(request.param) as tb:
        kube = Kube.from_config(str(tb.kubeconfig_path))
        make_node(kube, "small", cpu="1")
        sched = start_scheduler(kube, request.param)
        try:
            yield tb, kube, str(kubectl)
        finally:
            sched.stop()
            kube.close()


def _kubectl(tb: EmbeddedTestbed, kubectl: str, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(tb.kubeconfig_path), "HOME": str(tb.data_dir)}
    out = subprocess.run([kubectl, *args], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_describe_pending_pod_shows_failed_scheduling(cluster) -> None:  # type: ignore[no-untyped-def]
    tb, kube, kubectl = cluster
    make_pod(kube, "too-big", requests={"cpu": "2"})
    wait_for(lambda: events_for(kube, "too-big", reason="FailedScheduling"))
    text = _kubectl(tb, kubectl, "describe", "pod", "too-big")
    assert "Status:" in text and "Pending" in text
    assert "FailedScheduling" in text
    assert "0/1 nodes are available: 1 Insufficient cpu." in text


def test_get_pods_wide_shows_the_node(cluster) -> None:  # type: ignore[no-untyped-def]
    tb, kube, kubectl = cluster
    make_pod(kube, "fits", requests={"cpu": "100m"})
    assert wait_for(lambda: node_of(kube, "fits")) == "small"
    rows = [line.split() for line in _kubectl(tb, kubectl, "get", "pods", "-o", "wide").splitlines()]
    header, body = rows[0], {r[0]: r for r in rows[1:]}
    assert header[:3] == ["NAME", "READY", "STATUS"] and "NODE" in header
    assert body["fits"][header.index("NODE")] == "small"
