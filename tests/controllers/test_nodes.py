"""Node lifecycle (lease expiry, taints, recovery, eviction) and pod garbage collection."""

from __future__ import annotations

from typing import Any

from kubeclient.client import ApiError, Kube

from .conftest import FakeNodes, wait_for

Obj = dict[str, Any]


def pod(name: str, node: str, tolerations: list[Obj] | None = None) -> Obj:
    spec: Obj = {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def gone(kube: Kube, path: str) -> bool:
    try:
        kube.get(path)
    except ApiError as e:
        return e.status == 404
    return False


def test_deleting_a_node_deletes_its_pods(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("gc-a")
    nodes.add_node("gc-b")
    kube.create(f"/api/v1/namespaces/{ns}/pods", pod("on-a", "gc-a"))
    kube.create(f"/api/v1/namespaces/{ns}/pods", pod("on-b", "gc-b"))
    wait_for(
        lambda: kube.get(f"/api/v1/namespaces/{ns}/pods/on-a")["status"]["phase"] == "Running",
        what="pod running",
    )
    nodes.delete_node("gc-a")
    wait_for(lambda: gone(kube, f"/api/v1/namespaces/{ns}/pods/on-a"), what="orphaned pod deleted")
    assert kube.get(f"/api/v1/namespaces/{ns}/pods/on-b")["metadata"]["name"] == "on-b"


def test_lease_expiry_marks_unknown_and_recovery_clears(
    kube: Kube, nodes: FakeNodes, manager: Any, ns: str
) -> None:
    nodes.add_node("nl-a")
    # one pod tolerates unreachable for a long time, one for 1 s, one not at all (explicit empty list
    # would be defaulted by admission to 300 s, so it gets a different NoExecute toleration instead)
    long = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]
    short = [
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 1,
        }
    ]
    kube.create(f"/api/v1/namespaces/{ns}/pods", pod("stays", "nl-a", long))
    kube.create(f"/api/v1/namespaces/{ns}/pods", pod("leaves", "nl-a", short))
    wait_for(
        lambda: kube.get(f"/api/v1/namespaces/{ns}/pods/leaves")["status"]["phase"] == "Running",
        what="pod running",
    )
    node = kube.get("/api/v1/nodes/nl-a")
    assert not node["spec"].get("taints")
    nodes.pause("nl-a")

    def unknown() -> Obj | None:
        n = kube.get("/api/v1/nodes/nl-a")
        ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        return n if ready["status"] == "Unknown" and len(n["spec"].get("taints") or []) == 2 else None

    n = wait_for(unknown, what="node Unknown with taints")
    ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NodeStatusUnknown"
    assert ready["message"] == "Kubelet stopped posting node status."
    taints = {t["effect"]: t for t in n["spec"]["taints"]}
    assert taints["NoSchedule"]["key"] == taints["NoExecute"]["key"] == "node.kubernetes.io/unreachable"
    assert taints["NoExecute"]["timeAdded"] and "timeAdded" not in taints["NoSchedule"]
    # the pod tolerating for 1 s is evicted (its deletion waits for the absent kubelet)
    wait_for(
        lambda: kube.get(f"/api/v1/namespaces/{ns}/pods/leaves")["metadata"].get("deletionTimestamp"),
        what="eviction of the 1 s pod",
    )
    assert any(
        e["reason"] == "TaintManagerEviction" and e["involvedObject"]["name"] == "leaves"
        for e in kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
    )
    assert not kube.get(f"/api/v1/namespaces/{ns}/pods/stays")["metadata"].get("deletionTimestamp")
    # MarkPodsNotReady: the pod of an Unknown node no longer counts as Ready
    wait_for(
        lambda: next(c for c in kube.get(f"/api/v1/namespaces/{ns}/pods/stays")["status"]["conditions"]
                     if c["type"] == "Ready")["status"] == "False",
        what="pod on the Unknown node marked NotReady",
    )

    nodes.resume("nl-a")

    def recovered() -> Obj | None:
        n = kube.get("/api/v1/nodes/nl-a")
        ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        return n if ready["status"] == "True" and not n["spec"].get("taints") else None

    wait_for(recovered, what="taints removed after recovery")
    # the returning kubelet finishes the eviction; the tolerating pod stays
    wait_for(lambda: gone(kube, f"/api/v1/namespaces/{ns}/pods/leaves"), what="evicted pod removed")
    assert kube.get(f"/api/v1/namespaces/{ns}/pods/stays")["status"]["phase"] == "Running"
