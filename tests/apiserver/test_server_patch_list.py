"""Patch types, selectors and pagination through the official client."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.rest import ApiException

from .helpers import raw_json


def _pod(name: str, labels: dict[str, str] | None = None) -> dict:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]}]
        },
    }


def test_json_patch(core, ns):
    core.create_namespaced_pod(ns, _pod("p"))
    p = core.patch_namespaced_pod("p", ns, [{"op": "add", "path": "/metadata/labels/k", "value": "v"}])
    assert p.metadata.labels["k"] == "v"


def test_json_patch_failed_test_op_changes_nothing(core, ns):
    core.create_namespaced_pod(ns, _pod("p", {"a": "1"}))
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_pod(
            "p",
            ns,
            [
                {"op": "test", "path": "/metadata/labels/a", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "3"},
            ],
        )
    assert e.value.status in (422, 500)
    assert core.read_namespaced_pod("p", ns).metadata.labels["a"] == "1"


def test_merge_patch_replaces_lists(testbed, core, ns):
    core.create_namespaced_pod(ns, _pod("p"))
    code, body = raw_json(
        testbed,
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/p",
        {"metadata": {"annotations": {"x": "y"}}},
        content_type="application/merge-patch+json",
    )
    assert code == 200 and body["metadata"]["annotations"] == {"x": "y"}


def test_strategic_merge_patch_merges_containers_and_env_by_name(api, ns):
    from kubernetes import client

    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "d"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {
                        "containers": [
                            {"name": "c", "image": "busybox:1.36", "env": [{"name": "A", "value": "1"}]},
                            {"name": "side", "image": "busybox:1.36"},
                        ]
                    },
                },
            },
        },
    )
    d = apps.patch_namespaced_deployment(
        "d",
        ns,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "c", "image": "busybox:1.37", "env": [{"name": "B", "value": "2"}]}
                        ]
                    }
                }
            }
        },
    )
    cs = {c.name: c for c in d.spec.template.spec.containers}
    assert set(cs) == {"c", "side"}
    assert cs["c"].image == "busybox:1.37"
    assert {e.name: e.value for e in cs["c"].env} == {"A": "1", "B": "2"}


def test_pod_spec_is_immutable_except_images(core, ns):
    core.create_namespaced_pod(ns, _pod("p"))
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_pod(
            "p", ns, {"spec": {"containers": [{"name": "c", "env": [{"name": "B", "value": "2"}]}]}}
        )
    assert e.value.status == 422
    assert "pod updates may not change fields" in json.loads(e.value.body)["message"]
    p = core.patch_namespaced_pod("p", ns, {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}})
    assert p.spec.containers[0].image == "busybox:1.37"
    assert [e.name for e in p.spec.containers[0].env] == ["A"]


def test_unsupported_patch_type_is_415(testbed, core, ns):
    core.create_namespaced_pod(ns, _pod("p"))
    code, body = raw_json(
        testbed,
        "PATCH",
        f"/api/v1/namespaces/{ns}/pods/p",
        {"metadata": {}},
        content_type="application/x-frob",
    )
    assert code == 415 and body["reason"] == "UnsupportedMediaType"


def test_server_side_apply_creates_and_updates(testbed, ns):
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}}
    code, body = raw_json(
        testbed,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/ssa?fieldManager=me",
        doc,
        content_type="application/apply-patch+yaml",
    )
    assert code in (200, 201), body
    assert body["data"] == {"a": "1", "b": "2"}
    doc["data"] = {"a": "9"}
    code, body = raw_json(
        testbed,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/ssa?fieldManager=me",
        doc,
        content_type="application/apply-patch+yaml",
    )
    assert code == 200
    assert body["data"] == {"a": "9"}
    assert any(m["manager"] == "me" for m in body["metadata"]["managedFields"])
    code, body = raw_json(
        testbed,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/ssa",
        doc,
        content_type="application/apply-patch+yaml",
    )
    assert code == 400 and "fieldManager" in body["message"]


def test_label_selectors_set_based(core, ns):
    for i, (env, tier) in enumerate([("prod", "gpu"), ("dev", "gpu"), ("prod", "cpu"), ("test", "")]):
        labels = {"env": env}
        if tier:
            labels["tier"] = tier
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"c{i}", "labels": labels}})

    def names(sel: str) -> list[str]:
        return sorted(
            c.metadata.name
            for c in core.list_namespaced_config_map(ns, label_selector=sel).items
            if c.metadata.name.startswith("c")
        )

    assert names("env=prod") == ["c0", "c2"]
    assert names("env!=prod") == ["c1", "c3"]
    assert names("env in (dev,test)") == ["c1", "c3"]
    assert names("env notin (prod),tier") == ["c1"]
    assert names("!tier") == ["c3"]
    assert names("tier=gpu,env==prod") == ["c0"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, label_selector="env in prod")
    assert e.value.status == 400


def test_field_selectors(core, ns):
    core.create_namespaced_pod(ns, _pod("a"))
    core.create_namespaced_pod(ns, _pod("b"))
    core.create_namespaced_binding(
        ns, {"metadata": {"name": "a"}, "target": {"kind": "Node", "name": "n1"}}, _preload_content=False
    )
    on_n1 = core.list_namespaced_pod(ns, field_selector="spec.nodeName=n1").items
    assert [p.metadata.name for p in on_n1] == ["a"]
    unbound = core.list_namespaced_pod(ns, field_selector="spec.nodeName=").items
    assert [p.metadata.name for p in unbound] == ["b"]
    assert [
        p.metadata.name for p in core.list_namespaced_pod(ns, field_selector="metadata.name=b").items
    ] == ["b"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod(ns, field_selector="spec.frob=1")
    assert e.value.status == 400


def test_pagination_with_limit_and_continue(core, ns):
    for i in range(7):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"p{i}"}})
    seen: list[str] = []
    cont = None
    pages = 0
    while True:
        r = core.list_namespaced_config_map(ns, limit=3, _continue=cont)
        pages += 1
        seen += [c.metadata.name for c in r.items]
        cont = r.metadata._continue
        if not cont:
            break
        assert r.metadata.remaining_item_count > 0
    expected = sorted([f"p{i}" for i in range(7)] + ["kube-root-ca.crt"])
    assert seen == expected
    assert pages == 3
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, limit=3, _continue="garbage!")
    assert e.value.status == 400


def test_binding_twice_is_conflict(core, ns):
    core.create_namespaced_pod(ns, _pod("b"))
    core.create_namespaced_binding(
        ns, {"metadata": {"name": "b"}, "target": {"kind": "Node", "name": "n1"}}, _preload_content=False
    )
    p = core.read_namespaced_pod("b", ns)
    assert p.spec.node_name == "n1"
    assert any(c.type == "PodScheduled" and c.status == "True" for c in p.status.conditions)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_binding(
            ns, {"metadata": {"name": "b"}, "target": {"kind": "Node", "name": "n2"}}, _preload_content=False
        )
    assert e.value.status == 409
    assert 'already assigned to node "n1"' in json.loads(e.value.body)["message"]
    assert core.read_namespaced_pod("b", ns).spec.node_name == "n1"
