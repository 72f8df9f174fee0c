"""Volume binding as kind has it: the default StorageClass ``standard`` (local-path, WaitForFirstConsumer),
the DefaultStorageClass admission, kube-scheduler's VolumeBinding (an unbound claim that binds
Immediately keeps the pod Pending with its message; a delayed claim gets the chosen node), and the
persistentvolume-binder with the local-path provisioner."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.controllers import ControllerManager
from testbed.embedded import EmbeddedTestbed

from .helpers import events_for, get_pod, make_node, start_scheduler, wait_for


@pytest.fixture(scope="module")
def kube() -> Iterator[Kube]:
    with EmbeddedTestbed(33) as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        make_node(k, "vol-node")
        sched = start_scheduler(k)
        cm = ControllerManager(k, 33, controllers="persistentvolume-binder").start()
        yield k
        cm.stop()
        sched.stop()
        k.close()


def _claim(kube: Kube, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, **spec},
    }
    return kube.create("/api/v1/namespaces/default/persistentvolumeclaims", body)


def _pod(kube: Kube, name: str, claim: str) -> None:
    kube.create(
        "/api/v1/namespaces/default/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}],
            },
        },
    )


def test_default_class_is_kinds_and_claims_get_it(kube: Kube) -> None:
    sc = kube.get("/apis/storage.k8s.io/v1/storageclasses/standard")
    assert sc["provisioner"] == "rancher.io/local-path" and sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert _claim(kube, "defaulted")["spec"]["storageClassName"] == "standard"
    assert "storageClassName" in _claim(kube, "no-class", storageClassName="")["spec"]
    # gone again, so that the static volume of the next test has a single claim to go to
    kube.delete("/api/v1/namespaces/default/persistentvolumeclaims/no-class")


def test_delayed_claim_is_provisioned_on_the_chosen_node(kube: Kube) -> None:
    _claim(kube, "data")
    _pod(kube, "uses-data", "data")
    node = wait_for(lambda: get_pod(kube, "uses-data")["spec"].get("nodeName"), timeout=30)
    assert node == "vol-node"
    pvc = kube.get("/api/v1/namespaces/default/persistentvolumeclaims/data")
    assert pvc["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "vol-node"
    assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == f"pvc-{pvc['metadata']['uid']}"
    pv = kube.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == ["vol-node"] and pv["spec"]["claimRef"]["name"] == "data"


def test_unbound_immediate_claim_keeps_the_pod_pending_until_a_volume_exists(kube: Kube) -> None:
    _claim(kube, "static", storageClassName="")
    _pod(kube, "waits", "static")
    events = wait_for(lambda: events_for(kube, "waits", reason="FailedScheduling"), timeout=20)
    assert events[0]["message"] == (
        "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.."
    )
    assert not get_pod(kube, "waits")["spec"].get("nodeName")
    kube.create(
        "/api/v1/persistentvolumes",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "manual"},
            "spec": {
                "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "hostPath": {"path": "/tmp/manual"},
            },
        },
    )
    wait_for(
        lambda: kube.get("/api/v1/namespaces/default/persistentvolumeclaims/static")["spec"].get(
            "volumeName"
        ),
        timeout=20,
    )
    assert wait_for(lambda: get_pod(kube, "waits")["spec"].get("nodeName"), timeout=30) == "vol-node"


def test_missing_claim_is_named(kube: Kube) -> None:
    _pod(kube, "orphan", "nope")
    events = wait_for(lambda: events_for(kube, "orphan", reason="FailedScheduling"), timeout=20)
    assert events[0]["message"].startswith('0/1 nodes are available: persistentvolumeclaim "nope" not found.')
