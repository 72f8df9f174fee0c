"""Swagger 2.0 documents in gnostic's protobuf form (``openapi_v2.Document``), which kubectl and Helm
fetch from ``/openapi/v2`` and decode with ``github.com/google/gnostic``.

Only the parts of the schema language that the testbed's documents use are written: paths with one
``patch`` operation, and definitions made of ``$ref``, ``type``, ``format``, ``description``,
``required``, ``enum``, ``properties``, ``items``, ``additionalProperties``, ``allOf`` and ``x-``
extensions.
Extensions are gnostic ``Any`` values holding YAML text; JSON is YAML, so a value is written as its
JSON text (kubectl reads ``x-kubernetes-group-version-kind`` as a list of maps from it).
"""

from __future__ import annotations

import json
from typing import Any

from .protobuf import encode_field

# Field numbers of github.com/google/gnostic openapiv2/OpenAPIv2.proto used below.
# Document: swagger 1, info 2, paths 8.  Info: title 1, version 2.  Paths: path 2 (NamedPathItem:
# name 1, value 2).  PathItem: patch 8, parameters 9.  Operation: tags 1, description 3,
# operation_id 5, produces 6, consumes 7, parameters 8, responses 9, vendor_extension 13.
# ParametersItem: parameter 1.  Parameter: body_parameter 1, non_body_parameter 2.
# BodyParameter: description 1, name 2, in 3, required 4, schema 5.  Schema: type 22 (TypeItem:
# value 1).  NonBodyParameter: query_parameter_sub_schema 3, path_parameter_sub_schema 4.
# QueryParameterSubSchema: required 1, in 2, description 3, name 4, type 6, unique_items 20.
# PathParameterSubSchema: required 1, in 2, description 3, name 4, type 5, unique_items 19.
# Responses: response_code 1 (NamedResponseValue: name 1, value 2 -> ResponseValue: response 1
# -> Response: description 1).  NamedAny: name 1, value 2 (Any: yaml 2).
# Document.definitions 9 (Definitions: additional_properties 1, repeated NamedSchema: name 1, value 2).
# Schema: _ref 1, format 2, description 4, required 19, enum 20 (repeated Any), additional_properties 21
# (AdditionalPropertiesItem: schema 1), type 22 (TypeItem: value 1), items 23 (ItemsItem: schema 1),
# all_of 24, properties 25 (Properties: additional_properties 1, repeated NamedSchema),
# vendor_extension 31 (NamedAny).

def _len_field(num: int, payload: bytes) -> bytes:
    return encode_field(num, payload)


def _str(num: int, value: str) -> bytes:
    return encode_field(num, value) if value else b""


def _bool(num: int, value: bool) -> bytes:
    return encode_field(num, True) if value else b""


def _yaml_scalar(v: str) -> str:
    return json.dumps(v) if v == "" or not v.replace("-", "").replace(".", "").isalnum() else v


def _yaml(value: Any) -> str:
    """YAML text of a string or flat string map, the form gnostic keeps vendor extensions in."""
    if isinstance(value, dict):
        return "".join(f"{k}: {_yaml_scalar(str(v))}\n" for k, v in sorted(value.items()))
    return f"{_yaml_scalar(str(value))}\n"


def _named_any(name: str, value: Any) -> bytes:
    return _str(1, name) + _len_field(2, _str(2, _yaml(value)))


def _param(prm: dict[str, Any]) -> bytes:
    where = prm["in"]
    if where == "body":
        schema = _len_field(22, _str(1, prm["schema"]["type"]))
        body = (_str(1, prm.get("description", "")) + _str(2, prm["name"]) + _str(3, where)
                + _bool(4, bool(prm.get("required"))) + _len_field(5, schema))
        parameter = _len_field(1, body)
    else:
        common = (_bool(1, bool(prm.get("required"))) + _str(2, where) + _str(3, prm.get("description", ""))
                  + _str(4, prm["name"]))
        if where == "query":
            sub = _len_field(3, common + _str(6, prm["type"]) + _bool(20, bool(prm.get("uniqueItems"))))
        else:
            sub = _len_field(4, common + _str(5, prm["type"]) + _bool(19, bool(prm.get("uniqueItems"))))
        parameter = _len_field(2, sub)
    return _len_field(1, parameter)  # ParametersItem.parameter


def _operation(op: dict[str, Any]) -> bytes:
    out = b"".join(_str(1, t) for t in op.get("tags", []))
    out += _str(3, op.get("description", "")) + _str(5, op.get("operationId", ""))
    out += b"".join(_str(6, t) for t in op.get("produces", []))
    out += b"".join(_str(7, t) for t in op.get("consumes", []))
    out += b"".join(_len_field(8, _param(prm)) for prm in op.get("parameters", []))
    responses = b"".join(
        _len_field(1, _str(1, code) + _len_field(2, _len_field(1, _str(1, resp.get("description", "")))))
        for code, resp in op.get("responses", {}).items())
    out += _len_field(9, responses)
    out += b"".join(_len_field(13, _named_any(k, v)) for k, v in op.items() if k.startswith("x-"))
    return out


def encode_document(doc: dict[str, Any]) -> bytes:
    """A swagger 2.0 document (as :mod:`testbed.apiserver.openapi` builds it) in gnostic's wire format."""
    info = _str(1, doc["info"]["title"]) + _str(2, doc["info"]["version"])
    paths = b""
    for name, item in doc["paths"].items():
        body = b""
        if "patch" in item:
            body += _len_field(8, _operation(item["patch"]))
        body += b"".join(_len_field(9, _param(prm)) for prm in item.get("parameters", []))
        paths += _len_field(2, _str(1, name) + _len_field(2, body))
    defs = b"".join(_len_field(1, _named_schema(name, schema))
                    for name, schema in doc.get("definitions", {}).items())
    return (_str(1, doc["swagger"]) + _len_field(2, info) + _len_field(8, paths)
            + (_len_field(9, defs) if defs else b""))


def _schema(s: dict[str, Any]) -> bytes:
    out = _str(1, s.get("$ref", "")) + _str(2, s.get("format", "")) + _str(4, s.get("description", ""))
    out += b"".join(_str(19, r) for r in s.get("required", []))
    out += b"".join(_len_field(20, _str(2, json.dumps(v) + "\n")) for v in s.get("enum", []))
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        out += _len_field(21, _len_field(1, _schema(extra)))
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        out += _len_field(22, b"".join(_str(1, t) for t in types))
    if "items" in s:
        out += _len_field(23, _len_field(1, _schema(s["items"])))
    out += b"".join(_len_field(24, _schema(sub)) for sub in s.get("allOf", []))
    if "properties" in s:
        props = b"".join(_len_field(1, _named_schema(k, v)) for k, v in s["properties"].items())
        out += _len_field(25, props)
    out += b"".join(_len_field(31, _named_json(k, v)) for k, v in s.items() if k.startswith("x-"))
    return out


def _named_schema(name: str, schema: dict[str, Any]) -> bytes:
    return _str(1, name) + _len_field(2, _schema(schema))


def _named_json(name: str, value: Any) -> bytes:
    return _str(1, name) + _len_field(2, _str(2, json.dumps(value) + "\n"))
