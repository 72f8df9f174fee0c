"""OpenAPI v2/v3 documents carry every built-in kind's schema, derived from the minor's module sources
(testbed/apiserver/openapi_source.py); the documents real clients read are in test_openapi_explain.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from testbed.apiserver import k8sproto, openapi, openapi_source
from testbed.apiserver.protobuf import iter_fields
from testbed.apiserver.resources import lookup
from testbed.apiserver.versions import profile


@pytest.fixture(scope="module", autouse=True)
def sources() -> None:
    """The schemas of the minors used here (`make clients` caches them; fetched here when missing)."""
    for minor in (20, 33, 35):
        k8sproto.build(minor)


_OTHER_MODULES = ("apiextensions.k8s.io", "apiregistration.k8s.io")


def _defs(minor: int) -> dict[str, Any]:
    result: dict[str, Any] = openapi.openapi_v2_json(profile(minor))["definitions"]
    return result


# -- how sources become schemas ------------------------------------------------------------------
def test_description_drops_tags_and_todos_and_joins_paragraph_lines() -> None:
    raw = ("Name of the thing.\nMore info: here.\n\nSecond paragraph:\n- a bullet\n  indented example\n"
           "TODO: not for users\n+optional\n+listType=map\n---\nhidden after the rule")
    assert openapi_source.describe(raw) == (
        "Name of the thing. More info: here.\n\nSecond paragraph:\n- a bullet\n  indented example")


def test_go_struct_tags_give_json_names_inline_and_patch_keys() -> None:
    go = '''
type Widget struct {
\tmetav1.TypeMeta `json:",inline"`
\t// Doc of spec.
\tSpec WidgetSpec `json:"spec" protobuf:"bytes,2,opt,name=spec"`
\tParts []Part `json:"parts,omitempty" patchStrategy:"merge" patchMergeKey:"name" protobuf:"bytes,3,rep"`
\tWidgetSource `json:",inline" protobuf:"bytes,4,opt,name=widgetSource"`
\tOld string `json:"-" protobuf:"bytes,5,opt,name=old"`
\tPolicy v1.PullPolicy `json:"policy,omitempty" protobuf:"bytes,6,opt,name=policy"`
}
'''
    w = openapi_source.go_structs(go)["Widget"]
    assert w["typemeta"] is True
    spec, parts, source, old = (w["fields"][n] for n in (2, 3, 4, 5))
    assert (spec["json"], spec["omitempty"]) == ("spec", False)
    assert (parts["patchStrategy"], parts["patchMergeKey"], parts["omitempty"]) == ("merge", "name", True)
    assert source["inline"] and old["skip"]
    assert w["docs"]["Spec"] == "Doc of spec."
    assert w["fields"][6]["gotype"] == "v1.PullPolicy"


def test_go_enums_are_string_types_tagged_enum_with_their_constants() -> None:
    go = '''
// +enum
type Mode string

const (
\t// Fast goes fast.
\tModeFast Mode = "Fast"
\tModeSlow Mode = "Slow"
\t// An alias: one entry per value.
\tModeSluggish Mode = "Slow"
)

type Plain string

const PlainA Plain = "a"
'''
    assert openapi_source.go_enums(go) == {"Mode": [("Fast", "Fast goes fast."), ("Slow", "")]}


# -- the documents ----------------------------------------------------------------------------------
def test_pod_schema_as_kube_openapi_writes_it() -> None:
    defs = _defs(33)
    pod = defs["io.k8s.api.core.v1.Pod"]
    meta = "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert set(pod["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert pod["properties"]["apiVersion"]["description"].startswith("APIVersion defines the versioned")
    assert pod["properties"]["metadata"]["$ref"] == meta
    spec = defs["io.k8s.api.core.v1.PodSpec"]
    assert spec["required"] == ["containers"]
    containers = spec["properties"]["containers"]
    assert containers["items"] == {"$ref": "#/definitions/io.k8s.api.core.v1.Container"}
    ext = {k: v for k, v in containers.items() if k.startswith("x-")}
    assert ext == {"x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "name",
                   "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
    container = defs["io.k8s.api.core.v1.Container"]
    assert container["required"] == ["name"]
    policy = container["properties"]["imagePullPolicy"]
    assert policy["enum"] == ["Always", "IfNotPresent", "Never"]
    assert "Possible enum values:\n - `\"Always\"`" in policy["description"]
    limits = defs["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"]
    assert limits["additionalProperties"]["$ref"].endswith("/io.k8s.apimachinery.pkg.api.resource.Quantity")
    # Volume inlines VolumeSource; ObjectMeta's json:"-" clusterName is gone
    assert {"name", "configMap", "hostPath"} <= set(defs["io.k8s.api.core.v1.Volume"]["properties"])
    assert "clusterName" not in defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert defs["io.k8s.api.apps.v1.DeploymentSpec"]["required"] == ["selector", "template"]


def test_special_types() -> None:
    defs = _defs(33)
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert defs["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["format"] == "date-time"
    assert defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"
    assert defs["io.k8s.apimachinery.pkg.runtime.RawExtension"]["type"] == "object"
    extra = defs["io.k8s.api.authentication.v1.UserInfo"]["properties"]["extra"]
    assert extra["additionalProperties"] == {"type": "array", "items": {"type": "string"}}  # ExtraValue
    assert defs["io.k8s.api.core.v1.Secret"]["properties"]["data"]["additionalProperties"] == {
        "type": "string", "format": "byte"}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


@pytest.mark.parametrize("minor", [20, 33, 35])
def test_v2_every_reference_resolves_and_served_kinds_have_a_gvk(minor: int) -> None:
    defs = _defs(minor)
    missing = {r for r in _refs(defs) if r.removeprefix("#/definitions/") not in defs}
    assert not missing
    gvks = {(g["group"], g["version"], g["kind"]) for d in defs.values()
            for g in d.get("x-kubernetes-group-version-kind", [])}
    p = profile(minor)
    served = {(gv.group, gv.version, r.kind) for gv in p.served for plural in gv.resources
              if (r := lookup(gv.group, plural)) is not None}
    # CustomResourceDefinition and APIService are Go types of other modules than k8s.io/api
    assert served - gvks == {(g, v, k) for g, v, k in served if g in _OTHER_MODULES}
    assert ("", "v1", "ConfigMapList") in gvks
    assert (("batch", "v1", "CronJob") in gvks) == (minor >= 21)
    assert (("batch", "v1beta1", "CronJob") in gvks) == (minor < 25)


@pytest.mark.parametrize("minor", [33, 35])
def test_v3_group_documents_hold_every_schema_they_reference(minor: int) -> None:
    p = profile(minor)
    for gv in p.served:
        path = f"apis/{gv.group}/{gv.version}" if gv.group else f"api/{gv.version}"
        doc = openapi.openapi_v3_group(p, f"/openapi/v3/{path}")
        assert doc is not None
        schemas = doc["components"]["schemas"]
        assert {r.removeprefix("#/components/schemas/") for r in _refs(schemas)} <= set(schemas), gv
    core = openapi.openapi_v3_group(p, "api/v1")
    assert core is not None
    schemas = core["components"]["schemas"]
    meta = schemas["io.k8s.api.core.v1.Pod"]["properties"]["metadata"]
    assert meta["allOf"] == [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert "oneOf" in schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert "type" not in schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert "io.k8s.api.apps.v1.Deployment" not in schemas


def test_v2_protobuf_carries_the_definitions() -> None:
    p = profile(33)
    doc = dict(iter_fields(openapi.openapi_v2_protobuf(p)))
    names = []
    for num, named in iter_fields(doc[9]):  # Document.definitions -> NamedSchema
        assert num == 1 and isinstance(named, bytes)
        names.append(dict(iter_fields(named))[1].decode())
    assert names == list(openapi.openapi_v2_json(p)["definitions"])
    assert b'\x12\x0f"IfNotPresent"\n' in doc[9]  # an enum value: Any.yaml (field 2) holding JSON text


def test_without_the_sources_the_documents_stay_minimal(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("HAMI_K8S_PROTO_CACHE", str(tmp_path))
    caches = (openapi_source._load, openapi._definitions, openapi._v2_cached, openapi._v3_doc_cached)
    for c in caches:
        c.cache_clear()
    try:
        p = profile(33)
        assert openapi.openapi_v2_json(p)["definitions"] == {}
        assert openapi.openapi_v2_json(p)["paths"]
        doc = openapi.openapi_v3_group(p, "api/v1")
        assert doc is not None and doc["components"]["schemas"] == {}
    finally:
        monkeypatch.undo()
        for c in caches:
            c.cache_clear()
    assert json.dumps(openapi.openapi_v2_json(profile(33))["definitions"]).count("io.k8s.api.core.v1.Pod") > 0


def test_v2_protobuf_is_kept_on_disk_per_source(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The encoded document is written beside the proto cache and read back by the next process; a
    changed definitions file gives a new key (so a stale document is never served)."""
    src = openapi_source.source_path(33)
    assert src is not None
    copy = tmp_path / src.parent.name / src.name
    copy.parent.mkdir()
    copy.write_bytes(src.read_bytes())
    monkeypatch.setenv("HAMI_K8S_PROTO_CACHE", str(tmp_path))
    caches = (openapi_source._load, openapi._definitions, openapi._v2_cached, openapi.openapi_v2_protobuf)
    try:
        for c in caches:
            c.cache_clear()
        body = openapi.openapi_v2_protobuf(profile(33))
        [kept] = (tmp_path / "openapi").iterdir()
        assert kept.read_bytes() == body
        for c in caches:  # a new process: the document comes from disk, not from the encoder
            c.cache_clear()

        def no_encoding(doc: Any) -> bytes:
            raise AssertionError("encoded again")

        monkeypatch.setattr(openapi.openapi_gnostic, "encode_document", no_encoding)
        assert openapi.openapi_v2_protobuf(profile(33)) == body
        openapi.openapi_v2_protobuf.cache_clear()
        copy.write_text(copy.read_text() + " ")  # another definitions file: another key
        with pytest.raises(AssertionError, match="encoded again"):
            openapi.openapi_v2_protobuf(profile(33))
    finally:
        monkeypatch.undo()
        for c in caches:
            c.cache_clear()
