"""CRUD semantics of the testbed apiserver, driven by the official kubernetes Python client."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from .helpers import raw, raw_json


def _pod(name: str = "", **spec_extra) -> dict:  # type: ignore[no-untyped-def]
    meta = {"name": name} if name else {"generateName": "gen-"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], **spec_extra},
    }


def test_create_get_assigns_metadata_and_defaults(core, ns):
    p = core.create_namespaced_pod(ns, _pod("a"))
    assert p.metadata.uid and len(p.metadata.uid) == 36
    assert p.metadata.creation_timestamp is not None
    assert int(p.metadata.resource_version) > 0
    assert p.spec.scheduler_name == "default-scheduler"
    assert p.spec.restart_policy == "Always"
    assert p.spec.termination_grace_period_seconds == 30
    assert p.spec.service_account_name == "default"
    assert p.status.phase == "Pending"
    tol = {(t.key, t.effect, t.toleration_seconds) for t in p.spec.tolerations}
    assert ("node.kubernetes.io/not-ready", "NoExecute", 300) in tol
    assert ("node.kubernetes.io/unreachable", "NoExecute", 300) in tol
    vols = [v.name for v in p.spec.volumes]
    assert any(v.startswith("kube-api-access-") for v in vols)
    got = core.read_namespaced_pod("a", ns)
    assert got.metadata.uid == p.metadata.uid


def test_generate_name_and_monotonic_resource_versions(core, ns):
    a = core.create_namespaced_pod(ns, _pod())
    b = core.create_namespaced_pod(ns, _pod())
    assert a.metadata.name.startswith("gen-") and len(a.metadata.name) == len("gen-") + 5
    assert a.metadata.name != b.metadata.name
    assert int(b.metadata.resource_version) > int(a.metadata.resource_version)


def test_already_exists_and_not_found_bodies(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"k": "v"}})
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}})
    assert e.value.status == 409
    body = json.loads(e.value.body)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "cm" already exists'
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("nope", ns)
    assert e.value.status == 404
    assert json.loads(e.value.body)["message"] == 'configmaps "nope" not found'


def test_stale_resource_version_conflicts_and_changes_nothing(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "1"}})
    cm.data = {"k": "2"}
    core.replace_namespaced_config_map("c", ns, cm)
    cm.data = {"k": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("c", ns, cm)
    assert e.value.status == 409
    body = json.loads(e.value.body)
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    assert core.read_namespaced_config_map("c", ns).data == {"k": "2"}


def test_invalid_name_is_422_with_field_cause(core, ns):
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "Bad_Name"}})
    assert e.value.status == 422
    body = json.loads(e.value.body)
    assert body["reason"] == "Invalid"
    assert any(c["field"] == "metadata.name" for c in body["details"]["causes"])
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("Bad_Name", ns)


def test_pod_without_containers_is_rejected(core, ns):
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, {"metadata": {"name": "empty"}, "spec": {"containers": []}})
    assert e.value.status == 422
    assert "spec.containers" in json.loads(e.value.body)["message"]


def test_malformed_json_is_400(testbed, ns):
    code, body = raw_json(testbed, "POST", f"/api/v1/namespaces/{ns}/configmaps", b'{"metadata": ')
    assert code == 400
    assert body["reason"] == "BadRequest"
    assert "json parse error" in body["message"]


def test_yaml_body_is_accepted(testbed, ns):
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n"
    code, _, data = raw(
        testbed, "POST", f"/api/v1/namespaces/{ns}/configmaps", doc, content_type="application/yaml"
    )
    assert code == 201
    assert json.loads(data)["data"] == {"a": "b"}


def test_wrong_kind_and_namespace_mismatch_are_400(testbed, ns):
    code, body = raw_json(
        testbed,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}},
    )
    assert code == 400 and "kind" in body["message"]
    code, body = raw_json(
        testbed,
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "other"}},
    )
    assert code == 400
    assert "does not match the namespace" in body["message"]


def test_unknown_resource_and_group_version_404(testbed):
    code, body = raw_json(testbed, "GET", "/api/v1/frobs")
    assert code == 404 and body["reason"] == "NotFound"
    code, _ = raw_json(
        testbed, "GET", "/apis/admissionregistration.k8s.io/v1beta1/mutatingwebhookconfigurations"
    )
    assert code == 404  # removed in 1.22


def test_create_in_missing_namespace_is_404(core):
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("does-not-exist", {"metadata": {"name": "x"}})
    assert e.value.status == 404
    assert json.loads(e.value.body)["message"] == 'namespaces "does-not-exist" not found'


def test_status_subresource_separates_spec_and_status(core, ns):
    core.create_namespaced_pod(ns, _pod("s"))
    p = core.read_namespaced_pod("s", ns)
    p.status.phase = "Running"
    core.replace_namespaced_pod("s", ns, p)  # main resource: status change ignored
    assert core.read_namespaced_pod("s", ns).status.phase == "Pending"
    core.patch_namespaced_pod_status("s", ns, {"status": {"phase": "Running"}})
    assert core.read_namespaced_pod("s", ns).status.phase == "Running"


def test_invalid_query_parameters_are_rejected(testbed, ns):
    code, body = raw_json(testbed, "GET", f"/api/v1/namespaces/{ns}/pods?limit=abc")
    assert code == 400 and "abc" in body["message"]
    code, body = raw_json(
        testbed, "POST", f"/api/v1/namespaces/{ns}/configmaps?dryRun=Some", {"metadata": {"name": "dr"}}
    )
    assert code == 400 and "All" in body["message"]


def test_dry_run_stores_nothing(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}}, dry_run="All")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("dry", ns)
    assert e.value.status == 404


def test_generation_bumps_on_spec_change_only(api, ns):
    apps = client.AppsV1Api(api)
    dep = {
        "metadata": {"name": "d"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    d = apps.create_namespaced_deployment(ns, dep)
    assert d.metadata.generation == 1
    assert d.spec.strategy.type == "RollingUpdate"
    d = apps.patch_namespaced_deployment("d", ns, {"metadata": {"labels": {"x": "y"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("d", ns, {"spec": {"replicas": 3}})
    assert d.metadata.generation == 2
    s = apps.read_namespaced_deployment_scale("d", ns)
    assert s.spec.replicas == 3
    apps.patch_namespaced_deployment_scale("d", ns, {"spec": {"replicas": 5}})
    assert apps.read_namespaced_deployment("d", ns).spec.replicas == 5


def test_version_and_health(testbed):
    code, body = raw_json(testbed, "GET", "/version", token="")
    assert code == 200
    assert body["gitVersion"].startswith("v1.33.") and body["minor"] == "33"
    code, _, data = raw(testbed, "GET", "/readyz", token="")
    assert code == 200 and data == b"ok"


def test_bad_token_is_401(testbed):
    code, body = raw_json(testbed, "GET", "/api/v1/namespaces", token="not-a-token")
    assert code == 401 and body["reason"] == "Unauthorized"
