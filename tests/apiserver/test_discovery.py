"""Discovery documents, aggregated-discovery negotiation and the OpenAPI stubs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from testbed.apiserver import discovery, openapi
from testbed.apiserver.versions import MINORS, profile

V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
PB_V2 = "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
CLIENT_GO_26 = f"{V2BETA1},application/json"          # client-go 0.26-0.29
CLIENT_GO_30 = f"{V2},{V2BETA1},application/json"     # client-go 0.30+


# -- /version, /api, /apis ---------------------------------------------------------------------
def test_version_info_before_1_33_has_no_emulation_fields() -> None:
    info = discovery.version_info(profile(32))
    assert list(info) == ["major", "minor", "gitVersion", "gitCommit", "gitTreeState", "buildDate",
                          "goVersion", "compiler", "platform"]
    assert (info["major"], info["minor"], info["gitVersion"]) == ("1", "32", "v1.32.13")
    assert len(info["gitCommit"]) == 40 and info["gitTreeState"] == "clean"


def test_version_info_1_33_carries_emulation_fields_in_struct_order() -> None:
    info = discovery.version_info(profile(33))
    assert list(info)[:6] == ["major", "minor", "emulationMajor", "emulationMinor",
                              "minCompatibilityMajor", "minCompatibilityMinor"]
    assert (info["emulationMinor"], info["minCompatibilityMinor"]) == ("33", "32")


def test_core_api_versions() -> None:
    body = discovery.core_api_versions(profile(20), "127.0.0.1:6443")
    assert body == {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}


def test_api_group_list_shape_and_order() -> None:
    body = discovery.api_group_list(profile(18))
    assert (body["kind"], body["apiVersion"]) == ("APIGroupList", "v1")
    names = [g["name"] for g in body["groups"]]
    assert names[:3] == ["apiregistration.k8s.io", "apps", "events.k8s.io"]
    assert "" not in names
    autoscaling = body["groups"][names.index("autoscaling")]
    assert autoscaling == {
        "name": "autoscaling",
        "versions": [{"groupVersion": "autoscaling/v1", "version": "v1"},
                     {"groupVersion": "autoscaling/v2beta1", "version": "v2beta1"},
                     {"groupVersion": "autoscaling/v2beta2", "version": "v2beta2"}],
        "preferredVersion": {"groupVersion": "autoscaling/v1", "version": "v1"}}


def test_api_group() -> None:
    g = discovery.api_group(profile(21), "policy")
    assert g is not None
    assert (g["kind"], g["apiVersion"], g["name"]) == ("APIGroup", "v1", "policy")
    assert g["preferredVersion"] == {"groupVersion": "policy/v1", "version": "v1"}
    assert discovery.api_group(profile(19), "flowcontrol.apiserver.k8s.io") is None
    assert discovery.api_group(profile(33), "extensions") is None
    assert discovery.api_group(profile(33), "") is None


# -- APIResourceList ---------------------------------------------------------------------------
def _by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in body["resources"]}


def test_core_resource_list_shape() -> None:
    body = discovery.api_resource_list(profile(33), "", "v1")
    assert body is not None
    assert list(body) == ["kind", "groupVersion", "resources"]  # the core list has no apiVersion
    names = [r["name"] for r in body["resources"]]
    assert names == sorted(names)
    res = _by_name(body)
    assert res["pods"]["singularName"] == "pod" and res["pods"]["shortNames"] == ["po"]
    assert res["pods"]["categories"] == ["all"]
    assert res["pods"]["storageVersionHash"] == "xPOwRZ+Yhw8="      # as a real server writes it
    assert res["configmaps"]["storageVersionHash"] == "qFsyl6wFWjQ="
    assert "storageVersionHash" not in res["bindings"]
    assert "storageVersionHash" not in res["componentstatuses"]
    assert res["pods/status"] == {"name": "pods/status", "singularName": "", "namespaced": True,
                                  "kind": "Pod", "verbs": ["get", "patch", "update"]}
    assert res["pods/eviction"] == {"name": "pods/eviction", "singularName": "", "namespaced": True,
                                    "group": "policy", "version": "v1", "kind": "Eviction",
                                    "verbs": ["create"]}
    assert (res["serviceaccounts/token"]["group"], res["serviceaccounts/token"]["kind"]) == (
        "authentication.k8s.io", "TokenRequest")
    assert res["namespaces"]["verbs"] == ["create", "delete", "get", "list", "patch", "update", "watch"]


def test_resource_list_minor_differences() -> None:
    old = _by_name(discovery.api_resource_list(profile(21), "", "v1"))
    assert old["pods/eviction"]["version"] == "v1beta1"
    assert old["pods/ephemeralcontainers"]["kind"] == "EphemeralContainers"
    assert old["pods"]["singularName"] == ""
    assert _by_name(discovery.api_resource_list(profile(26), "", "v1"))["pods"]["singularName"] == ""
    assert _by_name(discovery.api_resource_list(profile(27), "", "v1"))["pods"]["singularName"] == "pod"
    new = _by_name(discovery.api_resource_list(profile(22), "", "v1"))
    assert new["pods/ephemeralcontainers"]["kind"] == "Pod"


def test_group_resource_list() -> None:
    body = discovery.api_resource_list(profile(33), "apps", "v1")
    assert list(body)[:3] == ["kind", "apiVersion", "groupVersion"]
    assert (body["apiVersion"], body["groupVersion"]) == ("v1", "apps/v1")
    res = _by_name(body)
    assert res["deployments/scale"]["group"] == "autoscaling" and res["deployments/scale"]["kind"] == "Scale"
    assert "group" not in res["deployments/status"]
    assert res["deployments"]["shortNames"] == ["deploy"]
    events = _by_name(discovery.api_resource_list(profile(33), "events.k8s.io", "v1"))["events"]
    assert events["storageVersionHash"] == "r2yiGXH7wu8="  # stored as core v1 Event
    assert discovery.api_resource_list(profile(25), "batch", "v1beta1") is None
    assert discovery.api_resource_list(profile(33), "nosuch.example.com", "v1") is None


# -- aggregated discovery --------------------------------------------------------------------------
@pytest.mark.parametrize(("minor", "accept", "expected"), [
    (25, CLIENT_GO_30, None),
    (26, CLIENT_GO_26, None),                       # gate alpha, off
    (27, CLIENT_GO_26, "v2beta1"),
    (27, CLIENT_GO_30, "v2beta1"),                  # v2 unknown to 1.27: skipped
    (27, V2, None),
    (29, CLIENT_GO_26, "v2beta1"),
    (30, CLIENT_GO_30, "v2"),
    (30, CLIENT_GO_26, "v2beta1"),
    (32, CLIENT_GO_26, "v2beta1"),
    (33, CLIENT_GO_26, None),                       # beta type removed: legacy answer
    (33, CLIENT_GO_30, "v2"),
    (33, f"{PB_V2},{V2},application/json", "v2"),   # protobuf is not offered; JSON v2 next
    (33, f"application/json,{V2}", None),           # legacy listed first wins
    (33, f"application/json;q=0.5,{V2};q=0.9", "v2"),
    (33, f"{V2};q=0,application/json", None),
    (33, f"{V2} ; q=1.0 , application/json", "v2"),
    (33, "*/*", None),
    (33, "", None),
])
def test_aggregated_negotiation(minor: int, accept: str, expected: str | None) -> None:
    result = discovery.aggregated_discovery(profile(minor), accept)
    if expected is None:
        assert result is None
        return
    assert result is not None
    body, ctype = result
    assert ctype == f"application/json;g=apidiscovery.k8s.io;v={expected};as=APIGroupDiscoveryList"
    assert body["apiVersion"] == f"apidiscovery.k8s.io/{expected}"
    assert body["kind"] == "APIGroupDiscoveryList"


def test_aggregated_core_document() -> None:
    body, _ = discovery.aggregated_discovery(profile(33), CLIENT_GO_30, core=True)
    assert body["metadata"] == {}
    assert len(body["items"]) == 1
    item = body["items"][0]
    assert item["metadata"] == {"creationTimestamp": None}
    assert [v["version"] for v in item["versions"]] == ["v1"]
    v1 = item["versions"][0]
    assert v1["freshness"] == "Current"
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "", "kind": "Pod"}
    assert (pods["scope"], pods["singularResource"], pods["shortNames"]) == ("Namespaced", "pod", ["po"])
    subs = {s["subresource"]: s for s in pods["subresources"]}
    assert subs["eviction"]["responseKind"] == {"group": "policy", "version": "v1", "kind": "Eviction"}
    assert subs["status"]["responseKind"] == {"group": "", "version": "", "kind": "Pod"}
    nodes = next(r for r in v1["resources"] if r["resource"] == "nodes")
    assert nodes["scope"] == "Cluster"


def test_aggregated_groups_document() -> None:
    p = profile(30)
    body, _ = discovery.aggregated_discovery(p, CLIENT_GO_30, core=False)
    assert [i["metadata"]["name"] for i in body["items"]] == p.groups()
    flow = next(i for i in body["items"] if i["metadata"]["name"] == "flowcontrol.apiserver.k8s.io")
    assert [v["version"] for v in flow["versions"]] == ["v1", "v1beta3"]
    apps = next(i for i in body["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    scale = next(s for s in deploy["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert "storageVersionHash" not in deploy


# -- OpenAPI v2 protobuf -----------------------------------------------------------------------
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _decode(data: bytes) -> dict[int, list[Any]]:
    """Protobuf wire format -> {field: [int | bytes, ...]} (varint and length-delimited only)."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            n, pos = _varint(data, pos)
            value, pos = data[pos:pos + n], pos + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        fields.setdefault(num, []).append(value)
    return fields


def _decoded_paths(doc: bytes) -> dict[str, dict[int, list[Any]]]:
    top = _decode(doc)
    paths = _decode(top[8][0])
    out = {}
    for named in paths[2]:
        item = _decode(named)
        out[item[1][0].decode()] = _decode(item[2][0])
    return out


def _query_params(path_item: dict[int, list[Any]]) -> list[str]:
    op = _decode(path_item[8][0])
    names = []
    for raw in op[8]:
        parameter = _decode(_decode(raw)[1][0])
        if 2 in parameter:  # non-body
            sub = _decode(parameter[2][0])
            if 3 in sub:
                names.append(_decode(sub[3][0])[4][0].decode())
    return names


def _extensions(path_item: dict[int, list[Any]]) -> dict[str, str]:
    op = _decode(path_item[8][0])
    out = {}
    for raw in op.get(13, []):
        named = _decode(raw)
        out[named[1][0].decode()] = _decode(named[2][0])[2][0].decode()
    return out


def test_openapi_v2_protobuf_document_header() -> None:
    top = _decode(openapi.openapi_v2_protobuf(profile(33)))
    assert top[1] == [b"2.0"]
    info = _decode(top[2][0])
    assert info[1] == [b"Kubernetes"] and info[2] == [b"v1.33.13"]


def test_openapi_v2_protobuf_paths_match_json() -> None:
    p = profile(25)
    decoded = _decoded_paths(openapi.openapi_v2_protobuf(p))
    assert sorted(decoded) == sorted(openapi.openapi_v2_json(p)["paths"])
    item = decoded["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    gvk_yaml = "group: apps\nkind: Deployment\nversion: v1\n"
    assert _extensions(item) == {"x-kubernetes-action": "patch\n",
                                 "x-kubernetes-group-version-kind": gvk_yaml}
    assert _query_params(item) == ["dryRun", "fieldManager", "fieldValidation", "force"]
    ns = decoded["/api/v1/namespaces/{name}"]
    assert _extensions(ns)["x-kubernetes-group-version-kind"] == 'group: ""\nkind: Namespace\nversion: v1\n'


def test_openapi_v2_field_validation_only_where_served() -> None:
    decoded = _decoded_paths(openapi.openapi_v2_protobuf(profile(24)))
    assert _query_params(decoded["/api/v1/namespaces/{namespace}/pods/{name}"]) == [
        "dryRun", "fieldManager", "force"]
    assert "/apis/batch/v1beta1/namespaces/{namespace}/cronjobs/{name}" in decoded
    assert "/apis/policy/v1beta1/podsecuritypolicies/{name}" in decoded
    assert not any("/tokenreviews/" in path for path in decoded)  # create-only kinds have no PATCH


def test_openapi_v2_json_document() -> None:
    doc = openapi.openapi_v2_json(profile(18))
    assert doc["swagger"] == "2.0" and doc["info"] == {"title": "Kubernetes", "version": "v1.18.20"}
    path = "/apis/admissionregistration.k8s.io/v1beta1/mutatingwebhookconfigurations/{name}"
    op = doc["paths"][path]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {
        "group": "admissionregistration.k8s.io", "kind": "MutatingWebhookConfiguration", "version": "v1beta1"}
    assert "application/strategic-merge-patch+json" in op["consumes"]
    doc["paths"].clear()
    assert openapi.openapi_v2_json(profile(18))["paths"]  # callers get a fresh copy


# -- OpenAPI v3 ---------------------------------------------------------------------------------
def test_openapi_v3_absent_before_1_24() -> None:
    assert openapi.openapi_v3_root(profile(23)) is None
    assert openapi.openapi_v3_group(profile(23), "api/v1") is None


def test_openapi_v3_root_and_group_documents() -> None:
    p = profile(27)
    root = openapi.openapi_v3_root(p)
    assert root is not None
    assert set(root["paths"]) == {("api/" if not gv.group else f"apis/{gv.group}/") + gv.version
                                  for gv in p.served}
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    prefix, _, digest = url.partition("?hash=")
    assert prefix == "/openapi/v3/apis/apps/v1"
    assert len(digest) == 128 and digest == digest.upper()
    doc = openapi.openapi_v3_group(p, url)
    assert doc is not None and doc["openapi"].startswith("3.")
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha512(canonical.encode()).hexdigest().upper() == digest
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/daemonsets/{name}"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "kind": "DaemonSet", "version": "v1"}
    assert [prm["name"] for prm in op["parameters"] if prm["in"] == "query"] == [
        "dryRun", "fieldManager", "fieldValidation", "force"]
    # no strategic merge patch: kubectl then falls back to its compiled-in patch metadata
    assert "application/strategic-merge-patch+json" not in op["requestBody"]["content"]
    assert openapi.openapi_v3_group(p, "api/v1") == openapi.openapi_v3_group(p, "/openapi/v3/api/v1?hash=x")


def test_openapi_v3_group_rejects_unserved_paths() -> None:
    p = profile(33)
    assert openapi.openapi_v3_group(p, "apis/batch/v1beta1") is None
    assert openapi.openapi_v3_group(p, "apis/apps") is None
    assert openapi.openapi_v3_group(p, "version") is None


def test_every_minor_builds_every_document() -> None:
    for m in MINORS:
        p = profile(m)
        assert discovery.api_group_list(p)["groups"]
        for gv in p.served:
            assert discovery.api_resource_list(p, gv.group, gv.version)["resources"]
        assert _decoded_paths(openapi.openapi_v2_protobuf(p))


# -- discovery 404s (measured on real 1.18, 1.27 and 1.35) ----------------------------------------
@pytest.mark.parametrize("minor", [18, 35])
def test_discovery_404s_answer_as_the_real_server(minor: int, tmp_path: Any) -> None:
    import urllib3
    import yaml

    from testbed.embedded import EmbeddedTestbed

    with EmbeddedTestbed(minor, data_dir=tmp_path / "api") as tb:
        cfg = yaml.safe_load(tb.kubeconfig_path.read_text())
        server = cfg["clusters"][0]["cluster"]["server"]
        token = cfg["users"][0]["user"]["token"]  # the embedded testbed's admin is a bearer token
        http = urllib3.PoolManager(cert_reqs="CERT_NONE")
        headers = {"Authorization": f"Bearer {token}"}

        def get(path: str) -> tuple[int, str, bytes]:
            r = http.request("GET", server + path, headers=headers)
            return r.status, r.headers.get("Content-Type", ""), r.data

        for path in ("/apis/nope.example.com", "/apis/nope.example.com/v1"):
            status, ctype, body = get(path)  # a group nobody serves: the mux's plain 404
            assert (status, body) == (404, b"404 page not found\n") and ctype.startswith("text/plain"), path
        for path in ("/apis/apps/v9", "/api/v2", "/apis/apps/v1/nopes"):
            status, _, body = get(path)  # a served group, a version or resource it does not serve
            status_obj = json.loads(body)
            assert status == 404 and status_obj["reason"] == "NotFound", path
            assert status_obj["details"] == {}, path
        status, _, body = get("/apis/apps")
        assert status == 200 and json.loads(body)["kind"] == "APIGroup"
