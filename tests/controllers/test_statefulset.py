"""StatefulSet: ordered creation with stable names and claims, scale down from the top, rolling update."""

from __future__ import annotations

from typing import Any

from kubeclient.client import Kube

from .conftest import FakeNodes, wait_for

Obj = dict[str, Any]


def sts(name: str, replicas: int, image: str = "busybox", **spec: Any) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
            **spec,
        },
    }


def _pods(kube: Kube, ns: str, name: str) -> list[Obj]:
    items = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app={name}")["items"]
    return sorted(
        (p for p in items if not p["metadata"].get("deletionTimestamp")), key=lambda p: p["metadata"]["name"]
    )


def test_ordered_pods_claims_scale_and_update(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("sts-n1")
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    kube.create(f"/apis/apps/v1/namespaces/{ns}/statefulsets", sts("web", 3, volumeClaimTemplates=[claim]))
    path = f"/apis/apps/v1/namespaces/{ns}/statefulsets/web"
    st = wait_for(lambda: (s := kube.get(path)["status"]).get("readyReplicas") == 3 and s, what="3 ready")
    pods = _pods(kube, ns, "web")
    assert [p["metadata"]["name"] for p in pods] == ["web-0", "web-1", "web-2"]
    # ordered: each ordinal was created after the one before it was running
    created = [p["metadata"]["creationTimestamp"] for p in pods]
    assert created == sorted(created)
    p0 = pods[0]
    assert p0["spec"]["hostname"] == "web-0" and p0["spec"]["subdomain"] == "web"
    assert p0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "web-0"
    assert p0["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "0"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}} in p0["spec"]["volumes"]
    claims = kube.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["data-web-0", "data-web-1", "data-web-2"]
    assert st["currentRevision"] == st["updateRevision"] and st["currentReplicas"] == 3
    # scale down removes the highest ordinal
    kube.patch(path, {"spec": {"replicas": 2}}, "merge")
    wait_for(
        lambda: [p["metadata"]["name"] for p in _pods(kube, ns, "web")] == ["web-0", "web-1"],
        what="web-2 removed",
    )
    # a template change rolls the pods from the top down to the new revision
    kube.patch(
        path,
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}},
        "strategic",
    )
    st = wait_for(
        lambda: (
            (s := kube.get(path)["status"]).get("updateRevision") != st["updateRevision"]
            and s.get("updatedReplicas") == 2
            and s.get("readyReplicas") == 2
            and s["currentRevision"] == s["updateRevision"]
            and s
        ),
        what="rolled",
        timeout=30,
    )
    assert {p["spec"]["containers"][0]["image"] for p in _pods(kube, ns, "web")} == {"busybox:2"}
    revisions = kube.get(f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
    assert sorted(r["revision"] for r in revisions) == [1, 2]


def test_parallel_creates_all_at_once(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("sts-n2")
    kube.create(f"/apis/apps/v1/namespaces/{ns}/statefulsets", sts("par", 3, podManagementPolicy="Parallel"))
    wait_for(lambda: len(_pods(kube, ns, "par")) == 3, what="3 pods")
