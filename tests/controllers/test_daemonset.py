"""DaemonSet: one pod per eligible node, taints vs tolerations, late nodes, rolling update, status."""

from __future__ import annotations

from typing import Any

from kubeclient.client import Kube
from testbed.controllers import util
from testbed.controllers.daemonset import HASH_LABEL, should_run

from .conftest import FakeNodes, wait_for

Obj = dict[str, Any]


def daemonset(
    name: str,
    image: str = "agent:v1",
    tolerations: list[Obj] | None = None,
    node_selector: dict[str, str] | None = None,
) -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": image}]}
    if tolerations:
        spec["tolerations"] = tolerations
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"ds": name}},
            "template": {"metadata": {"labels": {"ds": name}}, "spec": spec},
        },
    }


def live_pods(kube: Kube, ns: str, name: str) -> list[Obj]:
    items = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=f"ds={name}")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def rolled_out(kube: Kube, ns: str, name: str, desired: int) -> Obj | None:
    """The DaemonSet when ``kubectl rollout status ds/x`` would report success."""
    ds = kube.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/{name}")
    st = ds.get("status") or {}
    ok = (
        st.get("observedGeneration", 0) >= ds["metadata"]["generation"]
        and st.get("desiredNumberScheduled") == desired
        and st.get("updatedNumberScheduled", 0) >= desired
        and st.get("numberAvailable", 0) >= desired
    )
    return ds if ok else None


def test_daemonset_nodes_taints_and_update(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("ds-a", labels={"pool": "gpu"})
    nodes.add_node("ds-b", labels={"pool": "gpu"})
    nodes.add_node(
        "ds-tainted",
        labels={"pool": "gpu"},
        taints=[{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}],
    )
    nodes.add_node("ds-other", labels={"pool": "cpu"})
    kube.create(
        f"/apis/apps/v1/namespaces/{ns}/daemonsets", daemonset("plain", node_selector={"pool": "gpu"})
    )
    kube.create(
        f"/apis/apps/v1/namespaces/{ns}/daemonsets",
        daemonset(
            "tolerant",
            node_selector={"pool": "gpu"},
            tolerations=[{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        ),
    )
    ds = wait_for(lambda: rolled_out(kube, ns, "plain", 2), what="plain ds on 2 nodes")
    assert ds["status"]["currentNumberScheduled"] == 2
    assert ds["status"]["numberReady"] == 2
    assert ds["status"]["numberMisscheduled"] == 0
    assert sorted(p["spec"]["nodeName"] for p in live_pods(kube, ns, "plain")) == ["ds-a", "ds-b"]
    wait_for(lambda: rolled_out(kube, ns, "tolerant", 3), what="tolerant ds on 3 nodes")
    assert sorted(p["spec"]["nodeName"] for p in live_pods(kube, ns, "tolerant")) == [
        "ds-a",
        "ds-b",
        "ds-tainted",
    ]

    pod = live_pods(kube, ns, "plain")[0]
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [pod["spec"]["nodeName"]]}]}
    ]
    keys = {(t.get("key"), t.get("effect")) for t in pod["spec"]["tolerations"]}
    for key, effect in (
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ):
        assert (key, effect) in keys
    ref = pod["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("DaemonSet", "plain", True)
    h = pod["metadata"]["labels"][HASH_LABEL]
    revs = kube.get(f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
    mine = [r for r in revs if r["metadata"]["ownerReferences"][0]["name"] == "plain"]
    assert [r["metadata"]["name"] for r in mine] == [f"plain-{h}"] and mine[0]["revision"] == 1

    # a node added later gets a pod
    nodes.add_node("ds-late", labels={"pool": "gpu"})
    wait_for(lambda: rolled_out(kube, ns, "plain", 3), what="pod on the late node")
    assert "ds-late" in {p["spec"]["nodeName"] for p in live_pods(kube, ns, "plain")}

    # rolling update replaces every pod with the new revision
    kube.patch(
        f"/apis/apps/v1/namespaces/{ns}/daemonsets/plain",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:v2"}]}}}},
        "strategic",
    )

    def updated() -> bool:
        ps = live_pods(kube, ns, "plain")
        return (
            rolled_out(kube, ns, "plain", 3) is not None
            and len(ps) == 3
            and all(p["spec"]["containers"][0]["image"] == "agent:v2" for p in ps)
        )

    wait_for(updated, what="rolling update")
    revs = [
        r
        for r in kube.get(f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
        if r["metadata"]["ownerReferences"][0]["name"] == "plain"
    ]
    assert sorted(r["revision"] for r in revs) == [1, 2]

    # removing the label makes a node ineligible: its pod goes
    kube.patch("/api/v1/nodes/ds-late", {"metadata": {"labels": {"pool": "cpu"}}}, "merge")
    wait_for(
        lambda: (
            "ds-late" not in {p["spec"]["nodeName"] for p in live_pods(kube, ns, "plain")}
            and rolled_out(kube, ns, "plain", 2)
        ),
        what="pod leaves relabelled node",
    )


def test_should_run_uses_the_scheduler_predicates() -> None:
    """The daemon-pod predicate shares the scheduler's toleration and node-affinity rules."""
    node: Obj = {"metadata": {"name": "n1", "labels": {"zone": "a", "gpus": "4"}},
                 "spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}
    ds = daemonset("d")
    assert should_run(ds, node) == (False, True)  # untolerated NoSchedule: keep, never start
    tmpl = ds["spec"]["template"]["spec"]
    tmpl["tolerations"] = [{"key": "gpu", "operator": "Equal", "value": "no", "effect": "NoSchedule"}]
    assert should_run(ds, node) == (False, True)  # value differs
    tmpl["tolerations"] = [{"operator": "Exists"}]
    assert should_run(ds, node) == (True, True)
    term = {"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["2"]}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    tmpl["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [term]}}}
    assert should_run(ds, node) == (True, True)
    term["matchFields"] = [{"key": "metadata.namespace", "operator": "NotIn", "values": ["x"]}]
    assert should_run(ds, node) == (False, False)  # only metadata.name is a node field
    assert util.toleration_tolerates({"key": "gpu", "operator": "Exists"}, node["spec"]["taints"][0])
    assert not util.toleration_tolerates({"key": "gpu", "effect": "NoExecute", "operator": "Exists"},
                                         node["spec"]["taints"][0])
