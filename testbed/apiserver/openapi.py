"""OpenAPI documents: ``/openapi/v2`` (JSON and gnostic protobuf) and ``/openapi/v3`` (per group-version).

Schemas: ``definitions`` (v2) and ``components.schemas`` (v3) hold every built-in type of the minor,
derived from its ``k8s.io/api``/``apimachinery`` sources (:mod:`testbed.apiserver.openapi_source`,
built with the protobuf cache by ``make clients``); the kinds of each served group-version carry
``x-kubernetes-group-version-kind``, so ``kubectl explain`` finds them (v2 for kubectl before 1.27
and for servers before 1.24, v3 otherwise). A v3 group-version document holds its kinds and every
schema they reach, references wrapped in ``allOf`` where a description sits beside them, and
``IntOrString``/``Quantity`` as ``oneOf`` (kubectl explain prints their names). Without the cached
sources the documents keep their paths and have no schemas. Everything is built on first request
and kept in memory (the encoded v2 protobuf also on disk); nothing is done at start-up.

Paths: what kubectl (and Helm, which builds objects through kubectl's factory) reads from them:

* ``/openapi/v2`` is fetched with ``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``
  and decoded as a gnostic ``openapi_v2.Document`` (:mod:`testbed.apiserver.openapi_gnostic`).
  Client-side schema validation (``--validate``; all kubectl 1.18-1.24, and 1.25+ when the server
  lacks server-side field validation) looks each object's kind up in ``definitions`` by its
  ``x-kubernetes-group-version-kind`` and skips kinds it cannot find (custom resources).
* Client-side ``kubectl apply`` / ``edit`` compute strategic-merge patches from OpenAPI when the kind
  has a schema and otherwise fall back to the patch metadata compiled into kubectl (built-in kinds)
  or JSON merge patch (unknown kinds).
* Query-parameter support is read from ``paths``: for a kind, the first path whose ``patch``
  operation carries its ``x-kubernetes-group-version-kind`` is searched for a query parameter named
  ``dryRun`` (``--dry-run=server``, ``kubectl diff``: "doesn't support dry-run" when absent) or
  ``fieldValidation`` (1.25+ kubectl: present means the server validates fields and kubectl sends
  ``fieldValidation=Strict`` instead of validating locally). Kinds absent from ``paths`` are treated
  as custom resources after checking that ``Namespace`` supports the parameter. So every served
  kind gets one ``PATCH`` path here, with those parameters (``fieldValidation`` only where the
  minor validates server-side); no other operation is listed.
* ``/openapi/v3`` (1.24+) lists one document per group-version by ``serverRelativeURL`` with a
  ``hash`` query (clients cache by URL). kubectl 1.27+ reads the same query-parameter facts from the
  group-version document first and falls back to v2; kubectl 1.29+ ``apply`` computes patches from v3
  only when the kind's ``PATCH`` request body offers ``application/strategic-merge-patch+json``, so
  the request bodies here list only JSON patch, merge patch and apply patch and kubectl falls back
  silently to its compiled-in patch metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from . import k8sproto, openapi_gnostic, openapi_source
from .resources import ResourceType, lookup
from .versions import GroupVersion, VersionProfile

# What clients put in Accept (client-go's constant) ...
PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# ... and what the real server answers with: '@' is not a valid media-type character and Go's
# mime parser in client-go rejects it ("mime: unexpected content after media subtype"), so
# kube-openapi writes the dotted form in the response Content-Type.
PROTOBUF_V2_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json", "application/apply-patch+yaml")
# v3 request bodies omit strategic merge patch on purpose (see the module docstring)
_V3_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                   "application/apply-patch+yaml")
_PRODUCES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")

_QUERY_DOC = {
    "dryRun": "When present, indicates that modifications should not be persisted. Valid value: All",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is making "
                    "these changes.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the request "
                       "containing unknown or duplicate fields. Valid values: Ignore, Warn, Strict",
    "force": "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests.",
    "pretty": "If 'true', then the output is pretty printed.",
}


# -- what is documented ----------------------------------------------------------------------
def _patchable(gv: GroupVersion) -> list[ResourceType]:
    out = []
    for plural in gv.resources:
        r = lookup(gv.group, plural)
        if r is not None and not r.virtual and "patch" in r.verbs:
            out.append(r)
    return out


def _gv_path(gv: GroupVersion) -> str:
    return f"api/{gv.version}" if not gv.group else f"apis/{gv.group}/{gv.version}"


def _item_path(gv: GroupVersion, r: ResourceType) -> str:
    scope = "/namespaces/{namespace}" if r.namespaced else ""
    return f"/{_gv_path(gv)}{scope}/{r.plural}/{{name}}"


def _group_word(group: str) -> str:
    if not group:
        return "Core"
    return "".join(w[:1].upper() + w[1:] for w in group.removesuffix(".k8s.io").split("."))


def _operation_id(gv: GroupVersion, r: ResourceType) -> str:
    scope = "Namespaced" if r.namespaced else ""
    return f"patch{_group_word(gv.group)}{gv.version[:1].upper()}{gv.version[1:]}{scope}{r.kind}"


def _tag(gv: GroupVersion) -> str:
    word = _group_word(gv.group)
    return f"{word[:1].lower()}{word[1:]}_{gv.version}"


def _query_names(p: VersionProfile) -> list[str]:
    names = ["dryRun", "fieldManager"]
    if p.field_validation:
        names.append("fieldValidation")
    names.append("force")
    return names


def _gvk(gv: GroupVersion, r: ResourceType) -> dict[str, str]:
    return {"group": gv.group, "kind": r.kind, "version": gv.version}


# -- definitions (the kinds' schemas) ----------------------------------------------------------
# API groups whose Go package (and so definition name) is not the group's first label
_PACKAGE_OF_GROUP = {"internal.apiserver.k8s.io": "apiserverinternal", "": "core"}


def _package(gv: GroupVersion) -> str:
    return f"io.k8s.api.{_PACKAGE_OF_GROUP.get(gv.group, gv.group.split('.')[0])}.{gv.version}"


@cache
def _definitions(p: VersionProfile) -> tuple[dict[str, Any], dict[tuple[str, str], tuple[str, ...]]]:
    """Every definition of the minor (``{}`` when its sources are not cached), the kinds of each
    served group-version tagged with ``x-kubernetes-group-version-kind`` as the real server's scheme
    registers them (a type of that group-version's package that embeds ``TypeMeta``); and, per
    served (group, version), the names of those kinds' definitions."""
    source = openapi_source.load(p.minor)
    if source is None:
        return {}, {}
    defs = dict(source)
    by_package: dict[str, list[str]] = {}
    for name, schema in defs.items():
        props = schema.get("properties", {})
        if "apiVersion" in props and "kind" in props:
            by_package.setdefault(name.rpartition(".")[0], []).append(name)
    kinds: dict[tuple[str, str], tuple[str, ...]] = {}
    for gv in p.served:
        names = tuple(by_package.get(_package(gv), ()))
        kinds[(gv.group, gv.version)] = names
        for name in names:
            gvk = {"group": gv.group, "kind": name.rpartition(".")[2], "version": gv.version}
            defs[name] = {**defs[name], "x-kubernetes-group-version-kind": [gvk]}
    return defs, kinds


# -- OpenAPI v2 ------------------------------------------------------------------------------
def _v2_path_item(p: VersionProfile, gv: GroupVersion, r: ResourceType) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "body", "in": "body", "required": True,
                                     "schema": {"type": "object"}}]
    params += [{"uniqueItems": True, "type": "string", "description": _QUERY_DOC[n], "name": n,
                "in": "query"} for n in _query_names(p)]
    path_params: list[dict[str, Any]] = [
        {"uniqueItems": True, "type": "string", "description": f"name of the {r.kind}", "name": "name",
         "in": "path", "required": True}]
    if r.namespaced:
        path_params.append({"uniqueItems": True, "type": "string",
                            "description": "object name and auth scope, such as for teams and projects",
                            "name": "namespace", "in": "path", "required": True})
    path_params.append({"uniqueItems": True, "type": "string", "description": _QUERY_DOC["pretty"],
                        "name": "pretty", "in": "query"})
    return {
        "patch": {
            "description": f"partially update the specified {r.kind}",
            "consumes": list(_PATCH_TYPES),
            "produces": list(_PRODUCES),
            "tags": [_tag(gv)],
            "operationId": _operation_id(gv, r),
            "parameters": params,
            "responses": {"200": {"description": "OK"}, "201": {"description": "Created"},
                          "401": {"description": "Unauthorized"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": _gvk(gv, r),
        },
        "parameters": path_params,
    }


@cache
def _v2_cached(p: VersionProfile) -> str:
    paths: dict[str, Any] = {}
    for gv in p.served:
        for r in _patchable(gv):
            paths[_item_path(gv, r)] = _v2_path_item(p, gv, r)
    doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": p.git_version},
           "paths": dict(sorted(paths.items())), "definitions": _definitions(p)[0]}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


@cache
def openapi_v2_json_bytes(p: VersionProfile) -> bytes:
    """The swagger 2.0 document as the server sends it (built once; re-encoding 2 MB per request
    would cost more than the request)."""
    return _v2_cached(p).encode() + b"\n"


def openapi_v2_json(p: VersionProfile) -> dict[str, Any]:
    """The swagger 2.0 document (a fresh dict; callers may mutate it)."""
    result: dict[str, Any] = json.loads(_v2_cached(p))
    return result


def _v2_disk_key(p: VersionProfile) -> str | None:
    """What the v2 document depends on: the definitions file (path, size, mtime), the profile and the
    code that builds and encodes it; ``None`` when there are no definitions (a small document)."""
    source = openapi_source.source_path(p.minor)
    if source is None:
        return None
    st = source.stat()
    h = hashlib.sha256(repr((p, str(source), st.st_size, st.st_mtime_ns)).encode())
    for module in (__file__, openapi_gnostic.__file__, openapi_source.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:32]


@cache
def openapi_v2_protobuf(p: VersionProfile) -> bytes:
    """The v2 document as a gnostic ``openapi_v2.Document`` in protobuf wire format.

    Building and encoding the full document takes a few hundred milliseconds, which the first kubectl
    of every testbed would wait for; so the result is also kept on disk beside the proto cache, under
    a digest of everything it is made from (:func:`_v2_disk_key`)."""
    key = _v2_disk_key(p)
    path = k8sproto.cache_root() / "openapi" / f"v2-1.{p.minor}-{key}.pb" if key else None
    if path is not None:
        try:
            return path.read_bytes()
        except OSError:
            pass
    body = openapi_gnostic.encode_document(json.loads(_v2_cached(p)))
    if path is not None:
        try:  # published by an atomic rename; a cache that cannot be written only costs the next start
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(body)
            os.replace(tmp, path)
        except OSError:
            pass
    return body


# -- OpenAPI v3 ------------------------------------------------------------------------------
def _v3_path_item(p: VersionProfile, gv: GroupVersion, r: ResourceType) -> dict[str, Any]:
    str_schema = {"type": "string", "uniqueItems": True}
    params = [{"name": n, "in": "query", "description": _QUERY_DOC[n], "schema": str_schema}
              for n in _query_names(p)]
    path_params: list[dict[str, Any]] = [
        {"name": "name", "in": "path", "description": f"name of the {r.kind}", "required": True,
         "schema": str_schema}]
    if r.namespaced:
        path_params.append({"name": "namespace", "in": "path", "required": True, "schema": str_schema,
                            "description": "object name and auth scope, such as for teams and projects"})
    path_params.append({"name": "pretty", "in": "query", "description": _QUERY_DOC["pretty"],
                        "schema": str_schema})
    obj_schema = {"schema": {"type": "object"}}
    return {
        "patch": {
            "tags": [_tag(gv)],
            "description": f"partially update the specified {r.kind}",
            "operationId": _operation_id(gv, r),
            "parameters": params,
            "requestBody": {"content": {t: obj_schema for t in _V3_PATCH_TYPES}, "required": True},
            "responses": {
                "200": {"description": "OK", "content": {t: obj_schema for t in _PRODUCES}},
                "201": {"description": "Created", "content": {t: obj_schema for t in _PRODUCES}},
                "401": {"description": "Unauthorized"},
            },
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": _gvk(gv, r),
        },
        "parameters": path_params,
    }


_V2_REF = "#/definitions/"
_V3_REF = "#/components/schemas/"


def _v3_schema(s: dict[str, Any]) -> dict[str, Any]:
    """A v2 schema in OpenAPI 3 form: references point into ``components/schemas``, and a reference
    with a description (or extensions) beside it is wrapped in ``allOf``, since OpenAPI 3 ignores
    siblings of ``$ref`` (kube-openapi writes its v3 documents that way)."""
    out: dict[str, Any] = {}
    for k, v in s.items():
        if k == "$ref":
            continue
        if k in ("items", "additionalProperties") and isinstance(v, dict):
            v = _v3_schema(v)
        elif k == "properties":
            v = {name: _v3_schema(sub) for name, sub in v.items()}
        out[k] = v
    if "$ref" in s:
        ref = _V3_REF + s["$ref"].removeprefix(_V2_REF)
        if out:
            out["allOf"] = [{"$ref": ref}]
        else:
            out["$ref"] = ref
    return out


# kube-openapi's v3 form of the two types that are either of two JSON types: no "type", so
# kubectl explain names them (<IntOrString>, <map[string]Quantity>) instead of printing "string"
_V3_ONE_OF = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": [{"type": "integer"}, {"type": "string"}],
    "io.k8s.apimachinery.pkg.api.resource.Quantity": [{"type": "string"}, {"type": "number"}],
}


def _v3_definition(name: str, s: dict[str, Any]) -> dict[str, Any]:
    out = _v3_schema(s)
    if name in _V3_ONE_OF:
        out.pop("type", None)
        out["oneOf"] = _V3_ONE_OF[name]
    return out


def _refs(s: Any, found: set[str]) -> None:
    if isinstance(s, dict):
        for k, v in s.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v.removeprefix(_V2_REF))
            else:
                _refs(v, found)
    elif isinstance(s, list):
        for v in s:
            _refs(v, found)


def _v3_schemas(p: VersionProfile, gv: GroupVersion) -> dict[str, Any]:
    """The kinds of one group-version and every definition they reach, as the real server's
    per-group-version documents hold them."""
    defs, kinds = _definitions(p)
    todo = list(kinds.get((gv.group, gv.version), ()))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        found: set[str] = set()
        _refs(defs[name], found)
        todo += sorted(found - seen)
    return {name: _v3_definition(name, defs[name]) for name in sorted(seen)}


def _parse_gv_path(path: str) -> tuple[str, str] | None:
    path = path.split("?", 1)[0].strip("/")
    path = path.removeprefix("openapi/v3/")
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "api":
        return "", parts[1]
    if len(parts) == 3 and parts[0] == "apis" and parts[1]:
        return parts[1], parts[2]
    return None


@cache
def _v3_doc_cached(p: VersionProfile, group: str, version: str) -> str | None:
    gv = p.group_version(group, version)
    if gv is None or not p.openapi_v3:
        return None
    paths = {_item_path(gv, r): _v3_path_item(p, gv, r) for r in _patchable(gv)}
    doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": p.git_version},
           "paths": dict(sorted(paths.items())), "components": {"schemas": _v3_schemas(p, gv)}}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def openapi_v3_group_bytes(p: VersionProfile, path: str) -> bytes | None:
    """The body of ``openapi_v3_group``: the very text the root's ``hash`` was computed over."""
    gv = _parse_gv_path(path)
    text = _v3_doc_cached(p, *gv) if gv is not None else None
    return None if text is None else text.encode()


def openapi_v3_group(p: VersionProfile, path: str) -> dict[str, Any] | None:
    """The OpenAPI 3 document of one group-version (``api/v1``, ``apis/apps/v1``, a leading
    ``/openapi/v3/`` and a ``?hash=`` query are accepted); ``None`` when not served."""
    gv = _parse_gv_path(path)
    if gv is None:
        return None
    text = _v3_doc_cached(p, *gv)
    if text is None:
        return None
    result: dict[str, Any] = json.loads(text)
    return result


@cache
def _v3_root_cached(p: VersionProfile) -> str:
    paths: dict[str, Any] = {}
    for gv in p.served:
        text = _v3_doc_cached(p, gv.group, gv.version)
        assert text is not None
        digest = hashlib.sha512(text.encode()).hexdigest().upper()
        rel = _gv_path(gv)
        paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
    return json.dumps({"paths": paths})


def openapi_v3_root(p: VersionProfile) -> dict[str, Any] | None:
    """``GET /openapi/v3``: one entry per served group-version; ``None`` before 1.24."""
    if not p.openapi_v3:
        return None
    result: dict[str, Any] = json.loads(_v3_root_cached(p))
    return result
