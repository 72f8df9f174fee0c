"""The OpenAPI definitions of every built-in type of a minor, built from the upstream modules' sources.

Nothing here comes from a Kubernetes OpenAPI document: the definitions are derived, the way
kube-openapi's generator derives them, from the same ``k8s.io/api`` and ``k8s.io/apimachinery``
modules that :mod:`testbed.apiserver.k8sproto` downloads and hash-checks:

* each ``generated.proto`` is compiled again with its comments kept (``--include_source_info``); a
  message's comment is its type's Go doc, a field's comment the field's Go doc plus generator tags
  (``+optional``, ``+listType=map``, ``+listMapKey=name``, ``+mapType``, ``+structType``);
* the Go struct tags of the same packages give what protobuf cannot: the JSON name, ``omitempty``,
  ``json:"-"`` fields, embedded ``json:",inline"`` structs (merged into their parent), embedded
  ``TypeMeta`` (``apiVersion``/``kind``, documented from ``metav1.TypeMeta``'s own comments), and
  the ``patchStrategy``/``patchMergeKey`` tags.

Result (``definitions-v2.json`` in the minor's cache directory, beside ``descriptors.pb``): swagger
2.0 ``definitions`` keyed ``io.k8s.api.core.v1.Pod`` etc., without ``x-kubernetes-group-version-kind``
(which kinds a minor serves is the apiserver's business, :mod:`testbed.apiserver.openapi`).
Mapping rules, as kube-openapi applies them:

* scalars: ``string``; ``int32``/``int64`` integers with that ``format``; ``double`` numbers;
  ``bytes`` are ``string``/``byte``; ``map<k, v>`` objects with ``additionalProperties``; repeated
  fields arrays; messages ``$ref`` (with the field's description beside it);
* ``Quantity`` and ``Duration`` are strings, ``IntOrString`` a string of format ``int-or-string``,
  ``Time``/``MicroTime`` ``date-time`` strings, ``RawExtension``, ``FieldsV1`` and ``Patch`` plain
  objects; a named slice type (``ExtraValue``: a message whose only field is a repeated ``items``)
  is an array in place;
* a field whose Go type is a string type tagged ``+enum`` lists the type's constants in ``enum`` and,
  with their docs, under "Possible enum values" in its description;
* a field is ``required`` when its JSON tag lacks ``omitempty`` and its doc lacks ``+optional``;
* descriptions: the doc text with generator tags and ``TODO`` lines dropped, everything after a
  ``---`` line dropped, lines of a paragraph joined by spaces, indented and bulleted lines kept on
  their own line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

DEFINITIONS = "definitions-v2.json"  # a new layout gets a new name, so old caches rebuild

_META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_PRIMITIVE_DEFS: dict[str, dict[str, Any]] = {
    "k8s.io.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    f"{_META}.Time": {"type": "string", "format": "date-time"},
    f"{_META}.MicroTime": {"type": "string", "format": "date-time"},
    f"{_META}.Duration": {"type": "string"},
    f"{_META}.FieldsV1": {"type": "object"},
    f"{_META}.Fields": {"type": "object"},
    f"{_META}.Patch": {"type": "object"},
    "k8s.io.apimachinery.pkg.runtime.RawExtension": {"type": "object"},
}
# wire-only messages that never appear in JSON documents
_SKIP_PACKAGES = ("k8s.io.apimachinery.pkg.runtime.schema",)
_SKIP = {"k8s.io.apimachinery.pkg.runtime.Unknown", "k8s.io.apimachinery.pkg.runtime.TypeMeta",
         f"{_META}.Timestamp"}

F = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[int, dict[str, str]] = {
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int32"},
    F.TYPE_INT64: {"type": "integer", "format": "int64"},
    F.TYPE_SINT64: {"type": "integer", "format": "int64"},
    F.TYPE_UINT64: {"type": "integer", "format": "int64"},
    F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    F.TYPE_FLOAT: {"type": "number", "format": "float"},
}


def openapi_name(proto_name: str) -> str:
    """``k8s.io.api.core.v1.Pod`` -> ``io.k8s.api.core.v1.Pod`` (kube-openapi names by Go import path,
    whose first element is the reversed domain)."""
    return "io.k8s." + proto_name.removeprefix(".").removeprefix("k8s.io.")


# -- descriptions --------------------------------------------------------------------------------
def describe(raw: str) -> str:
    """A doc comment as kube-openapi writes it into ``description``."""
    out = ""
    for line in raw.split("\n---")[0].split("\n"):
        line = line.rstrip()
        text = line.lstrip()
        if text == "---":
            break
        if not line:
            out = out[:-1] if out else out
            out += "\n\n"
        elif text.startswith(("TODO", "+")):
            continue
        elif line.startswith((" ", "\t", "- ", "* ")):
            out = out[:-1] if out else out
            out += "\n" + line + "\n"
        else:
            out += line + " "
    return out.rstrip("\n").strip(" ")


def _tags(raw: str) -> dict[str, list[str]]:
    """Generator tags (``+name=value`` lines) of a doc comment; a name may repeat (``+listMapKey``)."""
    out: dict[str, list[str]] = {}
    for line in raw.split("\n"):
        m = re.match(r"\s*\+([\w:.-]+)(?:=(.*))?$", line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return out


def _comment_lines(proto_comment: str) -> str:
    # protoc keeps the text after "//": drop the one space that follows it on every line
    return "\n".join(line[1:] if line.startswith(" ") else line for line in proto_comment.split("\n"))


# -- Go struct tags --------------------------------------------------------------------------------
_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)
_GO_FIELD = re.compile(r"^(\*?[\w.]+)(?:[ \t]+([^`]+?))?[ \t]+`([^`]*)`")
_GO_TAG = re.compile(r'(\w+):"([^"]*)"')


_IMPORT = re.compile(r'^\s*(?:(\w+)\s+)?"(k8s\.io/[\w./-]+)"\s*$', re.M)
_ENUM_TYPE = re.compile(r"type (\w+) string\b")
_CONST = re.compile(r'(?:const\s+)?(\w+)\s+(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def go_imports(go_source: str) -> dict[str, str]:
    """Import name -> proto package of the Kubernetes packages a Go file imports."""
    return {(alias or path.rsplit("/", 1)[-1]): path.replace("/", ".")
            for alias, path in _IMPORT.findall(go_source[: go_source.find("\n)")])}


def go_enums(go_source: str) -> dict[str, list[tuple[str, str]]]:
    """Enum type name (a string type tagged ``+enum``) -> [(value, doc of its constant)], sorted by value."""
    if "+enum" not in go_source:
        return {}
    lines = go_source.split("\n")
    types: dict[str, list[tuple[str, str]]] = {}
    for pass_ in ("types", "constants"):
        comment: list[str] = []
        for line in lines:
            text = line.strip()
            if text.startswith("//"):
                comment.append(text[2:].strip())
                continue
            if pass_ == "types":
                m = _ENUM_TYPE.match(text)
                if m and "+enum" in comment:
                    types[m.group(1)] = []
            else:
                c = _CONST.match(text)
                if c and c.group(2) in types:
                    doc = " ".join(x for x in comment if x and not x.startswith("+"))
                    types[c.group(2)].append((c.group(3), doc))
            comment = []
    # one entry per value (two constants may name the same value; the first one's doc is kept)
    return {t: sorted({value: doc for value, doc in reversed(v)}.items()) for t, v in types.items()}


def go_structs(go_source: str) -> dict[str, dict[str, Any]]:
    """Struct name -> {"fields": {proto field number: {json, omitempty, inline, skip, patchStrategy,
    patchMergeKey}}, "typemeta": embeds TypeMeta inline, "docs": {Go field name: doc}}."""
    out: dict[str, dict[str, Any]] = {}
    for m in _STRUCT.finditer(go_source):
        fields: dict[int, dict[str, Any]] = {}
        docs: dict[str, str] = {}
        typemeta = False
        comment: list[str] = []
        for line in m.group(2).split("\n"):
            s = line.strip()
            if s.startswith("//"):
                comment.append(s[2:].removeprefix(" "))
                continue
            f = _GO_FIELD.match(s)
            if f is None:
                comment = []
                continue
            tags = dict(_GO_TAG.findall(f.group(3)))
            js_name, *opts = tags.get("json", "").split(",")
            go_name = f.group(1) if f.group(2) is not None else f.group(1).rsplit(".", 1)[-1].lstrip("*")
            docs[go_name] = "\n".join(comment)
            comment = []
            if f.group(2) is None and go_name == "TypeMeta" and "inline" in opts:
                typemeta = True
            pb = tags.get("protobuf", "").split(",")
            if len(pb) < 2 or not pb[1].isdigit():
                continue
            fields[int(pb[1])] = {
                "gotype": f.group(2) or "", "json": js_name, "omitempty": "omitempty" in opts,
                "skip": js_name == "-",
                "inline": not js_name and "inline" in opts,
                "patchStrategy": tags.get("patchStrategy", ""),
                "patchMergeKey": tags.get("patchMergeKey", ""),
            }
        out[m.group(1)] = {"fields": fields, "typemeta": typemeta, "docs": docs}
    return out


# -- definitions -----------------------------------------------------------------------------------
class _Builder:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet, go: dict[str, dict[str, Any]],
                 enums: dict[str, list[tuple[str, str]]]) -> None:
        self.go = go
        self.enums = enums
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str, dict[int, str]]] = {}
        self.map_entries: dict[str, descriptor_pb2.DescriptorProto] = {}
        for f in fds.file:
            if not f.package.startswith("k8s.io."):
                continue
            docs: dict[tuple[int, ...], str] = {
                tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location
                if loc.leading_comments}
            for i, msg in enumerate(f.message_type):
                full = f"{f.package}.{msg.name}"
                field_docs = {j: _comment_lines(docs.get((4, i, 2, j), "")) for j in range(len(msg.field))}
                self.messages[full] = (msg, _comment_lines(docs.get((4, i), "")), field_docs)
                for nested in msg.nested_type:
                    if nested.options.map_entry:
                        self.map_entries[f"{full}.{nested.name}"] = nested
        self._props: dict[str, tuple[dict[str, Any], list[str]]] = {}

    def _array_alias(self, full: str) -> dict[str, Any] | None:
        """A named slice type (``type ExtraValue []string``): go-to-protobuf wraps it in a message
        with one repeated ``items`` field; JSON and OpenAPI show the bare list."""
        entry = self.messages.get(full)
        if entry is None:
            return None
        msg, doc, _ = entry
        if (len(msg.field) == 1 and msg.field[0].name == "items" and msg.field[0].label == F.LABEL_REPEATED
                and "+protobuf.nullable=true" in doc):
            return {"type": "array", "items": self._elem(msg.field[0])}
        return None

    def _elem(self, fd: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if fd.type in (F.TYPE_MESSAGE, F.TYPE_GROUP):
            name = fd.type_name.removeprefix(".")
            alias = self._array_alias(name)
            if alias is not None:
                return alias
            return {"$ref": f"#/definitions/{openapi_name(name)}"}
        if fd.type == F.TYPE_ENUM:
            return {"type": "string"}
        return dict(_SCALARS.get(fd.type, {"type": "string"}))

    def _field_schema(self, fd: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        entry = self.map_entries.get(fd.type_name.removeprefix(".")) if fd.type == F.TYPE_MESSAGE else None
        if entry is not None:
            return {"type": "object", "additionalProperties": self._elem(entry.field[1])}
        if fd.label == F.LABEL_REPEATED:
            return {"type": "array", "items": self._elem(fd)}
        return self._elem(fd)

    def _typemeta(self) -> tuple[dict[str, Any], list[str]]:
        docs = self.go.get(f"{_META}.TypeMeta", {}).get("docs", {})
        props = {}
        for go_name, json_name in (("APIVersion", "apiVersion"), ("Kind", "kind")):
            props[json_name] = {"type": "string"}
            text = describe(docs.get(go_name, ""))
            if text:
                props[json_name]["description"] = text
        return props, []

    def properties(self, full: str) -> tuple[dict[str, Any], list[str]]:
        """(properties, required) of a message, inline structs merged in."""
        if full in self._props:
            return self._props[full]
        msg, _, field_docs = self.messages[full]
        go = self.go.get(full, {})
        go_fields: dict[int, dict[str, Any]] = go.get("fields", {})
        props: dict[str, Any] = {}
        required: list[str] = []
        if go.get("typemeta"):
            props.update(self._typemeta()[0])
        for j, fd in enumerate(msg.field):
            facts = go_fields.get(fd.number, {})
            if facts.get("skip"):
                continue
            if facts.get("inline") and fd.type == F.TYPE_MESSAGE:
                sub_props, sub_req = self.properties(fd.type_name.removeprefix("."))
                props.update(sub_props)
                required += sub_req
                continue
            name = facts.get("json") or fd.name
            raw = field_docs.get(j, "")
            tags = _tags(raw)
            schema = self._field_schema(fd)
            text = describe(raw)
            if text:
                schema["description"] = text
            values = self.enums.get(facts.get("enum", ""))
            if values:
                # as kube-openapi: the values, and in the description each with its constant's doc
                target = schema["items"] if schema.get("type") == "array" else schema
                target["enum"] = [v for v, _ in values]
                lines = "\n".join(f" - `{json.dumps(v)}`" + (f" {d}" if d else "") for v, d in values)
                schema["description"] = (text + "\n\n" if text else "") + "Possible enum values:\n" + lines
            if facts.get("patchMergeKey"):
                schema["x-kubernetes-patch-merge-key"] = facts["patchMergeKey"]
            if facts.get("patchStrategy"):
                schema["x-kubernetes-patch-strategy"] = facts["patchStrategy"]
            if tags.get("listType"):
                schema["x-kubernetes-list-type"] = tags["listType"][0]
            if tags.get("listMapKey"):
                schema["x-kubernetes-list-map-keys"] = tags["listMapKey"]
            if tags.get("mapType"):
                schema["x-kubernetes-map-type"] = tags["mapType"][0]
            props[name] = schema
            optional = facts.get("omitempty", True) or "optional" in tags or "k8s:optional" in tags
            if not optional:
                required.append(name)
        self._props[full] = (props, required)
        return props, required

    def definition(self, full: str) -> dict[str, Any] | None:
        if full in _SKIP or full.startswith(_SKIP_PACKAGES) or self._array_alias(full) is not None:
            return None
        _, doc, _ = self.messages[full]
        text = describe(doc)
        schema: dict[str, Any] = {}
        if text:
            schema["description"] = text
        if full in _PRIMITIVE_DEFS:
            schema.update(_PRIMITIVE_DEFS[full])
            return schema
        props, required = self.properties(full)
        schema["type"] = "object"
        if props:
            schema["properties"] = props
        if required:
            schema["required"] = sorted(set(required), key=required.index)
        tags = _tags(doc)
        for tag in ("structType", "mapType"):
            if tags.get(tag):
                schema["x-kubernetes-map-type"] = tags[tag][0]
        return schema

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for full in sorted(self.messages):
            d = self.definition(full)
            if d is not None:
                out[openapi_name(full)] = d
        return out


def build_definitions(src: Path, protos: list[str], go_by_package: dict[str, list[str]]) -> dict[str, Any]:
    """The definitions of the ``generated.proto`` files ``protos`` (relative to ``src``) and the Go
    sources of their packages (proto package -> file texts)."""
    with_info = src.parent / "descriptors-with-docs.pb"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--descriptor_set_out={with_info}",
           "--include_imports", "--include_source_info", *protos]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"protoc failed: {res.stderr.strip()[:2000]}")
    fds = descriptor_pb2.FileDescriptorSet.FromString(with_info.read_bytes())
    go: dict[str, dict[str, Any]] = {}
    enums: dict[str, list[tuple[str, str]]] = {}
    for package, texts in go_by_package.items():
        for text in texts:
            imports = go_imports(text)
            for name, values in go_enums(text).items():
                enums[f"{package}.{name}"] = values
            for name, facts in go_structs(text).items():
                for field in facts["fields"].values():
                    field["enum"] = _qualify(field.pop("gotype"), package, imports)
                go[f"{package}.{name}"] = facts
    return _Builder(fds, go, enums).all()


def _qualify(go_type: str, package: str, imports: dict[str, str]) -> str:
    """``[]*v1.PullPolicy`` in a file importing core/v1 as v1 -> ``k8s.io.api.core.v1.PullPolicy``."""
    name = go_type.lstrip("[]*")
    alias, _, base = name.rpartition(".")
    if not alias:
        return f"{package}.{name}"
    return f"{imports[alias]}.{base}" if alias in imports else ""


def write(out_dir: Path, src: Path, protos: list[str], go_by_package: dict[str, list[str]]) -> None:
    """Build the definitions and publish them in ``out_dir`` by an atomic rename."""
    defs = build_definitions(src, protos, go_by_package)
    tmp = src.parent / DEFINITIONS
    tmp.write_text(json.dumps(defs, sort_keys=True, separators=(",", ":")))
    os.replace(tmp, out_dir / DEFINITIONS)


def present(minor_dir: Path) -> bool:
    return (minor_dir / DEFINITIONS).exists()


def load(minor: int) -> dict[str, Any] | None:
    """The cached definitions of ``minor`` (or of the nearest cached minor, as :func:`k8sproto.load`
    picks it), ``None`` when no minor near it has them; read from disk once per process."""
    return _load(minor)


def source_path(minor: int) -> Path | None:
    """The definitions file :func:`load` reads for ``minor``."""
    from .k8sproto import cache_root, module_version

    root = cache_root()
    for m in [minor, *range(minor + 1, minor + 8), *range(minor - 1, minor - 8, -1)]:
        path = root / module_version(m) / DEFINITIONS
        if path.exists():
            return path
    return None


@cache
def _load(minor: int) -> dict[str, Any] | None:
    path = source_path(minor)
    if path is None:
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result
