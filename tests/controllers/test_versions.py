"""Controllers against an older minor (1.20): discovery.k8s.io/v1beta1 slices, no Job ``ready``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.controllers import ControllerManager
from testbed.controllers.nodelifecycle import grace_default
from testbed.embedded import EmbeddedTestbed

from .conftest import FakeNodes, wait_for


@pytest.fixture(scope="module")
def testbed() -> Iterator[EmbeddedTestbed]:
    with EmbeddedTestbed(20, bookmark_interval=0.5, history=5000) as tb:
        yield tb


def test_grace_period_defaults_per_minor(kube: Kube) -> None:
    assert grace_default(18) == grace_default(31) == 40.0
    assert grace_default(32) == grace_default(33) == 50.0
    assert ControllerManager(kube, 31).options.node_monitor_grace_period == 40.0
    assert ControllerManager(kube, 32).options.node_monitor_grace_period == 50.0
    assert ControllerManager(kube, 20, controllers="*,-job,-podgc").names == [
        "deployment",
        "replicaset",
        "daemonset",
        "statefulset",
        "cronjob",
        "nodelifecycle",
        "endpoint",
        "endpointslice",
        "persistentvolume-binder",
    ]
    with pytest.raises(ValueError, match='"nope" is not in the list of known controllers'):
        ControllerManager(kube, 20, controllers="*,-nope")


def test_old_minor_workloads(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("old-n1")
    kube.create(
        f"/apis/batch/v1/namespaces/{ns}/jobs",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "j"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "x", "command": ["true"]}],
                    },
                }
            },
        },
    )
    job = wait_for(
        lambda: (
            (x := kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/j")).get("status", {}).get("conditions")
            and x
        ),
        what="job finished",
    )
    assert [c["type"] for c in job["status"]["conditions"]] == ["Complete"]
    assert "reason" not in job["status"]["conditions"][0]
    assert "ready" not in job["status"] and "uncountedTerminatedPods" not in job["status"]
    kube.create(
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"selector": {"app": "s"}, "ports": [{"port": 80}]},
        },
    )
    kube.create(
        f"/api/v1/namespaces/{ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "s-0", "labels": {"app": "s"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        },
    )

    def slice_() -> dict[str, Any] | None:
        items = kube.get(f"/apis/discovery.k8s.io/v1beta1/namespaces/{ns}/endpointslices")["items"]
        return items[0] if items and items[0].get("endpoints") else None

    sl = wait_for(slice_, what="v1beta1 slice")
    ep = sl["endpoints"][0]
    assert ep["conditions"] == {"ready": True}
    assert ep["topology"] == {"kubernetes.io/hostname": "old-n1"}
    assert "nodeName" not in ep
