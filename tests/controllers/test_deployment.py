"""Deployment -> ReplicaSet -> Pod: scale, rolling update, Recreate, status and conditions."""

from __future__ import annotations

from typing import Any

from kubeclient.client import Kube
from testbed.controllers.deployment import HASH_LABEL, REVISION

from .conftest import FakeNodes, wait_for

Obj = dict[str, Any]


def deployment(name: str, replicas: int, image: str = "app:v1", strategy: Obj | None = None) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }


def rolled_out(kube: Kube, ns: str, name: str) -> Obj | None:
    """The deployment when ``kubectl rollout status`` would report success."""
    d = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    st, want = d.get("status") or {}, d["spec"]["replicas"]
    if st.get("observedGeneration", 0) < d["metadata"]["generation"]:
        return None
    if st.get("updatedReplicas", 0) < want or st.get("replicas", 0) > st.get("updatedReplicas", 0):
        return None
    if st.get("availableReplicas", 0) < st.get("updatedReplicas", 0):
        return None
    conds = {c["type"]: c for c in st.get("conditions") or []}
    if conds.get("Progressing", {}).get("reason") != "NewReplicaSetAvailable":
        return None
    return d


def pods(kube: Kube, ns: str, selector: str) -> list[Obj]:
    items: list[Obj] = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_create_scale_and_rolling_update(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("dep-n1")
    nodes.add_node("dep-n2")
    kube.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("web", 3))
    d = wait_for(lambda: rolled_out(kube, ns, "web"), what="first rollout")
    st = d["status"]
    assert (st["replicas"], st["readyReplicas"], st["availableReplicas"]) == (3, 3, 3)
    assert d["metadata"]["annotations"][REVISION] == "1"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Available"]["status"] == "True"
    assert conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Available"]["message"] == "Deployment has minimum availability."
    rs_list = kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
    assert len(rs_list) == 1
    rs = rs_list[0]
    h = rs["metadata"]["labels"][HASH_LABEL]
    assert rs["metadata"]["name"] == f"web-{h}"
    assert conds["Progressing"]["message"] == f'ReplicaSet "web-{h}" has successfully progressed.'
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert rs["metadata"]["ownerReferences"][0]["controller"] is True
    running = pods(kube, ns, "app=web")
    assert len(running) == 3 and all(p["metadata"]["labels"][HASH_LABEL] == h for p in running)
    assert all(p["spec"]["nodeName"] in ("dep-n1", "dep-n2") for p in running)

    # scale up and down
    kube.patch(f"/apis/apps/v1/namespaces/{ns}/deployments/web", {"spec": {"replicas": 5}}, "merge")
    wait_for(
        lambda: (x := rolled_out(kube, ns, "web")) and x["status"]["availableReplicas"] == 5, what="scale 5"
    )
    assert len(pods(kube, ns, "app=web")) == 5
    kube.patch(f"/apis/apps/v1/namespaces/{ns}/deployments/web", {"spec": {"replicas": 2}}, "merge")
    wait_for(lambda: len(pods(kube, ns, "app=web")) == 2, what="scale down to 2")
    wait_for(lambda: (x := rolled_out(kube, ns, "web")) and x["status"]["replicas"] == 2, what="status 2")

    # rolling update: a second ReplicaSet takes over, the first is scaled to zero and kept
    kube.patch(
        f"/apis/apps/v1/namespaces/{ns}/deployments/web",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:v2"}]}}}},
        "strategic",
    )
    d = wait_for(
        lambda: (x := rolled_out(kube, ns, "web")) and x["metadata"]["annotations"][REVISION] == "2" and x,
        what="second rollout",
    )
    rs_list = kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
    by_rev = {r["metadata"]["annotations"][REVISION]: r for r in rs_list}
    assert set(by_rev) == {"1", "2"}
    assert by_rev["1"]["spec"]["replicas"] == 0
    assert by_rev["2"]["spec"]["replicas"] == 2
    live = pods(kube, ns, "app=web")
    wait_for(
        lambda: all(p["spec"]["containers"][0]["image"] == "app:v2" for p in pods(kube, ns, "app=web")),
        what="old pods gone",
    )
    assert len(live) >= 2
    assert d["status"]["updatedReplicas"] == 2


def test_recreate_and_unavailable(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("dep-n3")
    kube.create(
        f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("rc", 2, strategy={"type": "Recreate"})
    )
    wait_for(lambda: rolled_out(kube, ns, "rc"), what="recreate first rollout")
    kube.patch(
        f"/apis/apps/v1/namespaces/{ns}/deployments/rc",
        {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:v2"}]}}}},
        "strategic",
    )
    wait_for(
        lambda: (x := rolled_out(kube, ns, "rc")) and x["metadata"]["annotations"][REVISION] == "2",
        what="recreate second rollout",
    )
    assert all(p["spec"]["containers"][0]["image"] == "app:v2" for p in pods(kube, ns, "app=rc"))
    # a pod losing readiness makes the deployment lose minimum availability (maxUnavailable 0)
    victim = pods(kube, ns, "app=rc")[0]
    nodes.set_ready(ns, victim["metadata"]["name"], False)

    def unavailable() -> Obj | None:
        d = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/rc")
        conds = {c["type"]: c for c in d["status"].get("conditions") or []}
        return d if conds["Available"]["status"] == "False" else None

    d = wait_for(unavailable, what="Available=False")
    avail = next(c for c in d["status"]["conditions"] if c["type"] == "Available")
    assert avail["reason"] == "MinimumReplicasUnavailable"
    assert d["status"]["unavailableReplicas"] == 1


def test_rollout_undo_reuses_the_old_replicaset(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    """``kubectl rollout undo`` writes the old ReplicaSet's template back into the Deployment: the
    controller scales that ReplicaSet up again under the next revision, it makes no new one."""
    nodes.add_node("undo-n1")
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/u"
    kube.create(f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("u", 1))
    wait_for(lambda: rolled_out(kube, ns, "u"), what="v1 rolled out")
    kube.patch(path, {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app:v2"}]}}}})
    wait_for(lambda: (d := rolled_out(kube, ns, "u")) and d["status"]["observedGeneration"] >= 2, what="v2")
    rs = {r["spec"]["template"]["spec"]["containers"][0]["image"]: r
          for r in kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]}
    assert set(rs) == {"app:v1", "app:v2"}
    old = rs["app:v1"]
    template = old["spec"]["template"]
    template["metadata"]["labels"].pop(HASH_LABEL)  # what kubectl rollout undo does
    kube.patch(path, [{"op": "replace", "path": "/spec/template", "value": template}], "json")
    wait_for(
        lambda: (d := rolled_out(kube, ns, "u")) and d["status"]["observedGeneration"] >= 3, what="undone"
    )
    after = kube.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
    assert sorted(r["metadata"]["name"] for r in after) == sorted(r["metadata"]["name"] for r in rs.values())
    again = next(r for r in after if r["metadata"]["name"] == old["metadata"]["name"])
    assert again["metadata"]["annotations"][REVISION] == "3" and again["spec"]["replicas"] == 1
