"""Vectors for the four PATCH formats (testbed.apiserver.patch)."""

from __future__ import annotations

import copy
import json

import pytest

from testbed.apiserver.errors import APIError
from testbed.apiserver.patch import (
    PATCH_TYPES,
    REJECTED,
    PatchFailure,
    apply_json_patch,
    apply_merge_patch,
    apply_server_side,
    apply_strategic_merge_patch,
    strategic_supported,
)


def j(v: object) -> bytes:
    return json.dumps(v).encode()


def deployment() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "fe"},
                     "finalizers": ["a/x", "b/y"]},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.25",
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                          {"name": "cfg", "mountPath": "/etc/cfg"}],
                         "args": ["--a", "--b"]},
                        {"name": "sidecar", "image": "busybox"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}},
                                {"name": "cfg", "configMap": {"name": "c"}}],
                    "tolerations": [{"key": "k1", "operator": "Exists"}, {"key": "k2", "operator": "Exists"}],
                },
            },
        },
    }


def smp(obj: dict, patch: object, group: str = "apps", kind: str = "Deployment") -> dict:
    return apply_strategic_merge_patch(obj, j(patch), group, kind)


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_patch_types_table() -> None:
    assert PATCH_TYPES["application/strategic-merge-patch+json"] == "strategic"
    assert set(PATCH_TYPES.values()) == {"json", "merge", "strategic", "apply"}


# --- JSON patch -----------------------------------------------------------------------------------


def test_json_patch_ops() -> None:
    obj = deployment()
    out = apply_json_patch(obj, j([
        {"op": "replace", "path": "/spec/replicas", "value": 5},
        {"op": "add", "path": "/metadata/labels/new~1key", "value": "v"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "c/z"},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
        {"op": "move", "from": "/metadata/finalizers/0", "path": "/metadata/finalizers/1"},
        {"op": "test", "path": "/spec/replicas", "value": 5},
    ]))
    assert out["spec"]["replicas"] == 5
    assert out["metadata"]["labels"] == {"app": "web", "new/key": "v", "copy": "web"}
    assert out["metadata"]["finalizers"] == ["b/y", "a/x", "c/z"]


def test_json_patch_negative_index_and_replace_missing_key_like_v4() -> None:
    out = apply_json_patch(deployment(), j([
        {"op": "remove", "path": "/metadata/finalizers/-1"},
        {"op": "replace", "path": "/metadata/labels/absent", "value": "added"},
    ]))
    assert out["metadata"]["finalizers"] == ["a/x"]
    assert out["metadata"]["labels"]["absent"] == "added"


def test_json_patch_test_failure_is_422_with_fixed_message() -> None:
    with pytest.raises(APIError) as ei:
        apply_json_patch(deployment(), j([{"op": "test", "path": "/spec/replicas", "value": 3}]))
    err = ei.value
    assert (err.code, err.reason, err.message, err.details) == (422, "Invalid", REJECTED, {})
    assert isinstance(err.__cause__, PatchFailure)
    assert "testing value /spec/replicas failed" in str(err.__cause__)


@pytest.mark.parametrize("ops", [
    [{"op": "remove", "path": "/metadata/labels/nope"}],
    [{"op": "add", "path": "/no/such/parent", "value": 1}],
    [{"op": "replace", "path": "/metadata/finalizers/7", "value": "x"}],
    [{"op": "frobnicate", "path": "/spec"}],
])
def test_json_patch_unappliable_is_422(ops: list) -> None:
    with pytest.raises(APIError) as ei:
        apply_json_patch(deployment(), j(ops))
    assert ei.value.code == 422 and ei.value.message == REJECTED


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid character 'n' looking for beginning of object key string"),
    (b"", "unexpected end of JSON input"),
    (b'{"op": "add"}', "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
    (b'["x"]', "json: cannot unmarshal string into Go value of type jsonpatch.Operation"),
])
def test_json_patch_malformed_is_400(body: bytes, message: str) -> None:
    with pytest.raises(APIError) as ei:
        apply_json_patch(deployment(), body)
    assert (ei.value.code, ei.value.reason, ei.value.message) == (400, "BadRequest", message)


def test_json_patch_failure_leaves_input_untouched() -> None:
    obj = deployment()
    before = copy.deepcopy(obj)
    with pytest.raises(APIError):
        apply_json_patch(obj, j([{"op": "replace", "path": "/spec/replicas", "value": 9},
                                 {"op": "test", "path": "/spec/replicas", "value": 1}]))
    assert obj == before


# --- JSON merge patch -----------------------------------------------------------------------------


def test_merge_patch_rfc7386() -> None:
    obj = deployment()
    out = apply_merge_patch(obj, j({"metadata": {"labels": {"tier": None, "x": "y"}},
                                    "spec": {"template": {"spec": {"tolerations": [{"key": "only"}]}}},
                                    "status": {"a": {"b": None, "c": 1}}}))
    assert out["metadata"]["labels"] == {"app": "web", "x": "y"}
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "only"}]  # lists replace
    assert out["status"] == {"a": {"c": 1}}  # nulls pruned from new objects
    assert obj["metadata"]["labels"]["tier"] == "fe"


@pytest.mark.parametrize("body", [b"{oops", b"null", b'"str"'])
def test_merge_patch_bad_body(body: bytes) -> None:
    with pytest.raises(APIError) as ei:
        apply_merge_patch(deployment(), body)
    assert (ei.value.code, ei.value.message) == (400, "Invalid JSON Patch")


# --- strategic merge patch ------------------------------------------------------------------------


def test_smp_kubectl_apply_patch_with_set_element_order_and_new_image() -> None:
    obj = deployment()
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
        "containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}}
    out = smp(obj, patch)
    cs = containers(out)
    assert [c["name"] for c in cs] == ["nginx", "sidecar"]
    assert cs[0]["image"] == "nginx:1.27"
    assert cs[0]["env"] == containers(obj)[0]["env"]  # untouched fields survive
    assert "$setElementOrder/containers" not in out["spec"]["template"]["spec"]


def test_smp_set_element_order_reorders_and_adds() -> None:
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "new"}, {"name": "nginx"}],
        "containers": [{"name": "new", "image": "x"}]}}}}
    out = smp(deployment(), patch)
    assert [c["name"] for c in containers(out)] == ["sidecar", "new", "nginx"]


def test_smp_set_element_order_mismatch_is_500() -> None:
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}],
        "containers": [{"name": "sidecar", "image": "x"}]}}}}
    with pytest.raises(APIError) as ei:
        smp(deployment(), patch)
    assert ei.value.code == 500 and "doesn't match $setElementOrder list" in ei.value.message


def test_smp_delete_container_by_directive() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"}]}}}})
    assert [c["name"] for c in containers(out)] == ["nginx"]


def test_smp_env_merges_by_name() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "nginx", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}]}}}})
    assert containers(out)[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "20"},
                                         {"name": "C", "value": "3"}]


def test_smp_volume_mounts_merge_by_mount_path() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "nginx", "volumeMounts": [{"mountPath": "/data", "readOnly": True},
                                           {"mountPath": "/new", "name": "n"}]}]}}}})
    mounts = containers(out)[0]["volumeMounts"]
    assert {m["mountPath"] for m in mounts} == {"/data", "/etc/cfg", "/new"}
    assert next(m for m in mounts if m["mountPath"] == "/data") == {
        "name": "data", "mountPath": "/data", "readOnly": True}


def test_smp_ports_merge_by_container_port() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"name": "nginx", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}}}})
    assert containers(out)[0]["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"},
                                           {"containerPort": 443}]


def test_smp_atomic_lists_are_replaced() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "tolerations": [{"key": "k3", "operator": "Exists"}],
        "containers": [{"name": "nginx", "args": ["--c"]}]}}}})
    assert out["spec"]["template"]["spec"]["tolerations"] == [{"key": "k3", "operator": "Exists"}]
    assert containers(out)[0]["args"] == ["--c"]


def test_smp_finalizers_merge_as_set_and_delete_from_primitive_list() -> None:
    out = smp(deployment(), {"metadata": {"finalizers": ["c/z", "a/x"]}})
    assert sorted(out["metadata"]["finalizers"]) == ["a/x", "b/y", "c/z"]
    assert len(out["metadata"]["finalizers"]) == 3
    out = smp(deployment(), {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x"]}})
    assert out["metadata"]["finalizers"] == ["b/y"]


def test_smp_null_deletes_keys() -> None:
    out = smp(deployment(), {"metadata": {"labels": {"tier": None}}, "spec": {"replicas": None}})
    assert out["metadata"]["labels"] == {"app": "web"}
    assert "replicas" not in out["spec"]


def test_smp_nulls_in_new_subtrees_are_discarded() -> None:
    obj = deployment()
    del obj["metadata"]["labels"]
    out = smp(obj, {"metadata": {"labels": {"a": "1", "gone": None}}})
    assert out["metadata"]["labels"] == {"a": "1"}


def test_smp_patch_replace_in_map_and_list() -> None:
    out = smp(deployment(), {"metadata": {"labels": {"$patch": "replace", "only": "this"}}})
    assert out["metadata"]["labels"] == {"only": "this"}
    out = smp(deployment(), {"spec": {"template": {"spec": {
        "containers": [{"name": "solo", "image": "x"}, {"$patch": "replace"}]}}}})
    assert containers(out) == [{"name": "solo", "image": "x"}]


def test_smp_patch_delete_on_map() -> None:
    out = smp(deployment(), {"metadata": {"labels": {"$patch": "delete"}}})
    assert out["metadata"]["labels"] == {}


def test_smp_retain_keys_clears_other_keys() -> None:
    obj = deployment()
    obj["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}
    out = smp(obj, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_smp_retain_keys_must_cover_patch() -> None:
    obj = deployment()
    obj["spec"]["strategy"] = {"type": "RollingUpdate"}
    with pytest.raises(APIError) as ei:
        smp(obj, {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}})
    assert (ei.value.code, ei.value.message) == (400, "invalid patch format of retainKeys")


def test_smp_volume_retain_keys_inside_list_item() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"volumes": [
        {"name": "cfg", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}]}}}})
    vols = out["spec"]["template"]["spec"]["volumes"]
    assert vols[1] == {"name": "cfg", "secret": {"secretName": "s"}}


def test_smp_missing_merge_key_is_500_with_go_message() -> None:
    with pytest.raises(APIError) as ei:
        smp(deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})
    assert ei.value.code == 500
    assert ei.value.message == "map: map[image:x] does not contain declared merge key: name"


def test_smp_unknown_directive_is_500() -> None:
    with pytest.raises(APIError) as ei:
        smp(deployment(), {"metadata": {"labels": {"$patch": "explode"}}})
    assert ei.value.code == 500 and ei.value.message.startswith("unknown patch type: explode in map:")


def test_smp_list_of_lists_is_422() -> None:
    obj = deployment()
    obj["metadata"]["finalizers"] = [["a"]]
    with pytest.raises(APIError) as ei:
        smp(obj, {"metadata": {"finalizers": [["b"]]}})
    assert (ei.value.code, ei.value.message) == (422, REJECTED)


def test_smp_pod_status_conditions_merge_by_type_and_node_addresses() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []},
           "status": {"conditions": [{"type": "Ready", "status": "False"},
                                     {"type": "PodScheduled", "status": "True"}],
                      "containerStatuses": [{"name": "a", "ready": False}]}}
    out = smp(pod, {"status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "containerStatuses": [{"name": "a", "ready": True}]}}, "", "Pod")
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"},
                                           {"type": "PodScheduled", "status": "True"}]
    assert out["status"]["containerStatuses"] == [{"name": "a", "ready": True}]
    node = {"metadata": {"name": "n"}, "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}
    out = smp(node, {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]},
                     "status": {"addresses": [{"type": "Hostname", "address": "n"}]}}, "", "Node")
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoSchedule"}]  # taints are atomic
    # New items without a $setElementOrder land before server-only ones, as in apimachinery.
    assert [a["type"] for a in out["status"]["addresses"]] == ["Hostname", "InternalIP"]


def test_smp_service_ports_merge_on_port() -> None:
    svc = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": 8080},
                                                         {"port": 443, "targetPort": 8443}]}}
    out = smp(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, "", "Service")
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443, "targetPort": 8443}]


def test_smp_owner_references_merge_by_uid_for_any_builtin_kind() -> None:
    cm = {"metadata": {"name": "c", "ownerReferences": [{"uid": "1", "name": "a"}]}, "data": {"k": "v"}}
    out = smp(cm, {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}, "data": {"k2": "v2"}},
              "", "ConfigMap")
    assert [o["uid"] for o in out["metadata"]["ownerReferences"]] == ["2", "1"]
    assert out["data"] == {"k": "v", "k2": "v2"}


def test_smp_cronjob_pod_template_is_reached() -> None:
    cj = {"metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}}}}}}
    out = smp(cj, {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "b", "image": "2"}]}}}}}}, "batch", "CronJob")
    cs = out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert cs == [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]


def test_smp_unsupported_for_custom_resources() -> None:
    assert strategic_supported("apps", "Deployment")
    assert strategic_supported("", "ConfigMap")
    assert not strategic_supported("example.com", "Widget")
    with pytest.raises(APIError) as ei:
        smp({"metadata": {}}, {"spec": {}}, "example.com", "Widget")
    assert (ei.value.code, ei.value.reason) == (415, "UnsupportedMediaType")
    assert ei.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")


@pytest.mark.parametrize(("body", "message"), [
    (b"{bad", "invalid character 'b' looking for beginning of object key string"),
    (b"[1]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
])
def test_smp_malformed_body_is_400(body: bytes, message: str) -> None:
    with pytest.raises(APIError) as ei:
        apply_strategic_merge_patch(deployment(), body, "apps", "Deployment")
    assert (ei.value.code, ei.value.message) == (400, message)


def test_smp_never_mutates_input() -> None:
    obj = deployment()
    before = copy.deepcopy(obj)
    smp(obj, {"metadata": {"labels": {"tier": None}, "$deleteFromPrimitiveList/finalizers": ["a/x"]},
              "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"},
                                                            {"name": "nginx", "image": "z"}]}}}})
    with pytest.raises(APIError):
        smp(obj, {"spec": {"template": {"spec": {"containers": [{"image": "no-key"}]}}}})
    assert obj == before


# --- server-side apply ----------------------------------------------------------------------------

CM_V1 = b"""
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  labels: {app: demo}
data:
  a: "1"
  b: "2"
"""


def managed(obj: dict, manager: str) -> dict:
    return next(e for e in obj["metadata"]["managedFields"] if e["manager"] == manager)


def test_ssa_create_records_managed_fields() -> None:
    out = apply_server_side(None, CM_V1, "", "ConfigMap", "kubectl", False, now="2024-01-01T00:00:00Z")
    assert out["data"] == {"a": "1", "b": "2"}
    assert out["metadata"]["name"] == "cfg"
    entry = managed(out, "kubectl")
    assert entry == {"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                     "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}},
                                  "f:metadata": {"f:labels": {"f:app": {}}}}}


def test_ssa_reapply_without_a_field_removes_it() -> None:
    live = apply_server_side(None, CM_V1, "", "ConfigMap", "kubectl", False)
    live["data"]["extra"] = "set by someone untracked"
    v2 = CM_V1.replace(b'  b: "2"\n', b"").replace(b"  labels: {app: demo}\n", b"")
    out = apply_server_side(live, v2, "", "ConfigMap", "kubectl", False)
    assert out["data"] == {"a": "1", "extra": "set by someone untracked"}
    assert "labels" not in out["metadata"]
    assert managed(out, "kubectl")["fieldsV1"] == {"f:data": {"f:a": {}}}


def test_ssa_list_items_by_merge_key_and_item_removal() -> None:
    v1 = b"""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - {name: a, image: "a:1"}
      - {name: b, image: "b:1"}
"""
    live = apply_server_side(None, v1, "apps", "Deployment", "helm", False)
    fields = managed(live, "helm")["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert fields['k:{"name":"a"}'] == {".": {}, "f:image": {}, "f:name": {}}
    live["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    v2 = v1.replace(b'      - {name: b, image: "b:1"}\n', b"").replace(b"a:1", b"a:2")
    out = apply_server_side(live, v2, "apps", "Deployment", "helm", False)
    cs = out["spec"]["template"]["spec"]["containers"]
    assert cs == [{"name": "a", "image": "a:2", "resources": {"limits": {"cpu": "1"}}}]


def test_ssa_conflict_with_other_manager_and_force() -> None:
    live = apply_server_side(None, CM_V1, "", "ConfigMap", "alice", False)
    other = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: changed}\n"
    with pytest.raises(APIError) as ei:
        apply_server_side(live, other, "", "ConfigMap", "bob", False)
    assert ei.value.code == 409 and ei.value.reason == "Conflict"
    assert ei.value.message == 'Apply failed with 1 conflict: conflict with "alice": .data.a'
    out = apply_server_side(live, other, "", "ConfigMap", "bob", True)
    assert out["data"]["a"] == "changed"
    assert managed(out, "bob")["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert "f:a" not in managed(out, "alice")["fieldsV1"]["f:data"]
    # Same value as the owner: shared ownership, no conflict.
    same = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {b: '2'}\n"
    shared = apply_server_side(live, same, "", "ConfigMap", "carol", False)
    assert shared["data"]["b"] == "2"


def test_ssa_field_kept_while_another_manager_owns_it() -> None:
    head = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
    live = apply_server_side(None, CM_V1, "", "ConfigMap", "alice", False)
    live = apply_server_side(live, head + b"data: {b: '2'}\n", "", "ConfigMap", "bob", False)
    out = apply_server_side(live, head + b"data: {a: '1'}\n", "", "ConfigMap", "alice", False)
    assert out["data"] == {"a": "1", "b": "2"}  # bob still owns b


def test_ssa_finalizers_are_a_set() -> None:
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, finalizers: [x/y]}\n"
    live = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a/b"]}}
    out = apply_server_side(live, body, "", "ConfigMap", "m", False)
    assert out["metadata"]["finalizers"] == ["a/b", "x/y"]
    assert managed(out, "m")["fieldsV1"] == {"f:metadata": {"f:finalizers": {'v:"x/y"': {}}}}


@pytest.mark.parametrize(("body", "fragment"), [
    (b"a: b: c", "error decoding YAML: error converting YAML to JSON: yaml: line 1:"),
    (b"- 1\n- 2\n", "cannot unmarshal array into Go value of type map[string]interface {}"),
    (b"apiVersion: apps/v1\nkind: ConfigMap\n", "Incorrect version specified in apply patch"),
    (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {managedFields: []}\n",
     "metadata.managedFields must be nil"),
])
def test_ssa_bad_bodies_are_400(body: bytes, fragment: str) -> None:
    with pytest.raises(APIError) as ei:
        apply_server_side(None, body, "", "ConfigMap", "m", False)
    assert ei.value.code == 400 and fragment in ei.value.message


def test_ssa_requires_field_manager() -> None:
    with pytest.raises(APIError) as ei:
        apply_server_side(None, CM_V1, "", "ConfigMap", "", False)
    assert ei.value.code == 422
    assert "fieldManager: Required value: is required for apply patch" in ei.value.message


def test_ssa_checks_version_when_given_and_never_mutates_input() -> None:
    with pytest.raises(APIError):
        apply_server_side(None, CM_V1, "", "ConfigMap", "m", False, version="v2")
    live = apply_server_side(None, CM_V1, "", "ConfigMap", "m", False, version="v1")
    before = copy.deepcopy(live)
    apply_server_side(live, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n", "", "ConfigMap",
                      "m", False)
    assert live == before


def test_ssa_custom_resource_lists_are_atomic() -> None:
    live = apply_server_side(None, b"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
                             b"spec: {items: [1, 2]}\n", "example.com", "Widget", "m", False)
    out = apply_server_side(live, b"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"
                            b"spec: {items: [3]}\n", "example.com", "Widget", "m", False)
    assert out["spec"]["items"] == [3]
