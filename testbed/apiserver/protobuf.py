"""``application/vnd.kubernetes.protobuf`` request and response bodies.

client-go's typed clientsets, as configured by kubectl (1.30+) and helm 4, encode request bodies as
protobuf, do not retry with JSON when the server answers 415, and list protobuf first in ``Accept``.
With the Kubernetes API schema of the server's minor compiled into the cache
(:mod:`testbed.apiserver.k8sproto`), every kind with a protobuf form is decoded and, when the client
prefers protobuf, answered in protobuf (:mod:`testbed.apiserver.transcode`). Without a cached schema
the server falls back to the small hand-written field table below (the kinds kubectl 1.30+ and
helm 4 were seen to send) and answers JSON, which those clients also accept.

Wire format: the 4 bytes ``k8s\\x00``, then a ``runtime.Unknown`` message whose ``typeMeta`` (field 1:
apiVersion=1, kind=2) names the kind and whose ``raw`` (field 2) is the object's own message. Each
message is generic protobuf wire format; field numbers come from the kinds' ``protobuf:"..."`` tags.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Iterator
from functools import cache
from typing import Any, Union

import orjson

from . import k8sproto
from .errors import APIError
from .transcode import Schema as ApiSchema
from .transcode import TranscodeError, UnknownKind

log = logging.getLogger("testbed.apiserver.protobuf")

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# A field is (json name, type, repeated). The type is a scalar name or a nested schema.
# Scalars: "str", "bytes" (base64 in JSON), "int" (varint, signed), "bool", "time" (metav1.Time),
# "json" (raw JSON bytes), "smap" (map<string,string>), "bmap" (map<string,bytes>). "int?" and "bool?" are
# Go pointer fields: written only when set, so their zero is kept; other zeros are left out like omitempty.
Schema = dict[int, tuple[str, Union[str, "Schema"], bool]]


def _f(name: str, typ: str | Schema, repeated: bool = False) -> tuple[str, str | Schema, bool]:
    return (name, typ, repeated)


OWNER_REFERENCE: Schema = {
    1: _f("kind", "str"),
    3: _f("name", "str"),
    4: _f("uid", "str"),
    5: _f("apiVersion", "str"),
    6: _f("controller", "bool?"),
    7: _f("blockOwnerDeletion", "bool?"),
}
MANAGED_FIELDS_ENTRY: Schema = {
    1: _f("manager", "str"),
    2: _f("operation", "str"),
    3: _f("apiVersion", "str"),
    4: _f("time", "time"),
    6: _f("fieldsType", "str"),
    7: _f("fieldsV1", {1: _f("raw", "json")}),
    8: _f("subresource", "str"),
}
OBJECT_META: Schema = {
    1: _f("name", "str"),
    2: _f("generateName", "str"),
    3: _f("namespace", "str"),
    5: _f("uid", "str"),
    6: _f("resourceVersion", "str"),
    7: _f("generation", "int"),
    8: _f("creationTimestamp", "time"),
    9: _f("deletionTimestamp", "time"),
    10: _f("deletionGracePeriodSeconds", "int?"),
    11: _f("labels", "smap"),
    12: _f("annotations", "smap"),
    13: _f("ownerReferences", OWNER_REFERENCE, True),
    14: _f("finalizers", "str", True),
    17: _f("managedFields", MANAGED_FIELDS_ENTRY, True),
}
OBJECT_REFERENCE: Schema = {
    1: _f("kind", "str"),
    2: _f("namespace", "str"),
    3: _f("name", "str"),
    4: _f("uid", "str"),
    5: _f("apiVersion", "str"),
    6: _f("resourceVersion", "str"),
    7: _f("fieldPath", "str"),
}
LOCAL_OBJECT_REFERENCE: Schema = {1: _f("name", "str")}
POLICY_RULE: Schema = {
    1: _f("verbs", "str", True),
    2: _f("apiGroups", "str", True),
    3: _f("resources", "str", True),
    4: _f("resourceNames", "str", True),
    5: _f("nonResourceURLs", "str", True),
}
SUBJECT: Schema = {
    1: _f("kind", "str"),
    2: _f("apiGroup", "str"),
    3: _f("name", "str"),
    4: _f("namespace", "str"),
}
ROLE_REF: Schema = {1: _f("apiGroup", "str"), 2: _f("kind", "str"), 3: _f("name", "str")}
SELECTOR_ATTRIBUTES: Schema = {1: _f("rawSelector", "str")}
RESOURCE_ATTRIBUTES: Schema = {
    1: _f("namespace", "str"),
    2: _f("verb", "str"),
    3: _f("group", "str"),
    4: _f("version", "str"),
    5: _f("resource", "str"),
    6: _f("subresource", "str"),
    7: _f("name", "str"),
    8: _f("fieldSelector", SELECTOR_ATTRIBUTES),
    9: _f("labelSelector", SELECTOR_ATTRIBUTES),
}
NON_RESOURCE_ATTRIBUTES: Schema = {1: _f("path", "str"), 2: _f("verb", "str")}
BOUND_OBJECT_REFERENCE: Schema = {
    1: _f("kind", "str"),
    2: _f("apiVersion", "str"),
    3: _f("name", "str"),
    4: _f("uid", "str"),
}
LABEL_SELECTOR: Schema = {
    1: _f("matchLabels", "smap"),
    2: _f(
        "matchExpressions",
        {1: _f("key", "str"), 2: _f("operator", "str"), 3: _f("values", "str", True)},
        True,
    ),
}
# Only what ``kubectl create deployment`` fills in; anything else is refused (see decode_message).
CONTAINER: Schema = {
    1: _f("name", "str"),
    2: _f("image", "str"),
    3: _f("command", "str", True),
    4: _f("args", "str", True),
    5: _f("workingDir", "str"),
    6: _f(
        "ports",
        {
            1: _f("name", "str"),
            2: _f("hostPort", "int"),
            3: _f("containerPort", "int"),
            4: _f("protocol", "str"),
            5: _f("hostIP", "str"),
        },
        True,
    ),
    7: _f("env", {1: _f("name", "str"), 2: _f("value", "str")}, True),
    14: _f("imagePullPolicy", "str"),
}
POD_SPEC: Schema = {
    2: _f("containers", CONTAINER, True),
    3: _f("restartPolicy", "str"),
    4: _f("terminationGracePeriodSeconds", "int?"),
    6: _f("dnsPolicy", "str"),
    7: _f("nodeSelector", "smap"),
    8: _f("serviceAccountName", "str"),
    10: _f("nodeName", "str"),
    20: _f("initContainers", CONTAINER, True),
}
POD_TEMPLATE_SPEC: Schema = {1: _f("metadata", OBJECT_META), 2: _f("spec", POD_SPEC)}
PRECONDITIONS: Schema = {1: _f("uid", "str"), 2: _f("resourceVersion", "str")}

KINDS: dict[str, Schema] = {
    "Namespace": {1: _f("metadata", OBJECT_META), 2: _f("spec", {1: _f("finalizers", "str", True)})},
    "ConfigMap": {
        1: _f("metadata", OBJECT_META),
        2: _f("data", "smap"),
        3: _f("binaryData", "bmap"),
        4: _f("immutable", "bool?"),
    },
    "Secret": {
        1: _f("metadata", OBJECT_META),
        2: _f("data", "bmap"),
        3: _f("type", "str"),
        4: _f("stringData", "smap"),
        5: _f("immutable", "bool?"),
    },
    "ServiceAccount": {
        1: _f("metadata", OBJECT_META),
        2: _f("secrets", OBJECT_REFERENCE, True),
        3: _f("imagePullSecrets", LOCAL_OBJECT_REFERENCE, True),
        4: _f("automountServiceAccountToken", "bool?"),
    },
    "Role": {1: _f("metadata", OBJECT_META), 2: _f("rules", POLICY_RULE, True)},
    "ClusterRole": {1: _f("metadata", OBJECT_META), 2: _f("rules", POLICY_RULE, True)},
    "RoleBinding": {
        1: _f("metadata", OBJECT_META),
        2: _f("subjects", SUBJECT, True),
        3: _f("roleRef", ROLE_REF),
    },
    "ClusterRoleBinding": {
        1: _f("metadata", OBJECT_META),
        2: _f("subjects", SUBJECT, True),
        3: _f("roleRef", ROLE_REF),
    },
    "SelfSubjectAccessReview": {
        1: _f("metadata", OBJECT_META),
        2: _f(
            "spec",
            {
                1: _f("resourceAttributes", RESOURCE_ATTRIBUTES),
                2: _f("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES),
            },
        ),
    },
    "SelfSubjectRulesReview": {1: _f("metadata", OBJECT_META), 2: _f("spec", {1: _f("namespace", "str")})},
    "TokenRequest": {
        1: _f("metadata", OBJECT_META),
        2: _f(
            "spec",
            {
                1: _f("audiences", "str", True),
                3: _f("boundObjectRef", BOUND_OBJECT_REFERENCE),
                4: _f("expirationSeconds", "int?"),
            },
        ),
    },
    "Deployment": {
        1: _f("metadata", OBJECT_META),
        2: _f(
            "spec",
            {
                1: _f("replicas", "int?"),
                2: _f("selector", LABEL_SELECTOR),
                3: _f("template", POD_TEMPLATE_SPEC),
                4: _f("strategy", {1: _f("type", "str")}),
                5: _f("minReadySeconds", "int"),
                6: _f("revisionHistoryLimit", "int?"),
                7: _f("paused", "bool"),
                9: _f("progressDeadlineSeconds", "int?"),
            },
        ),
    },
    "DeleteOptions": {
        1: _f("gracePeriodSeconds", "int?"),
        2: _f("preconditions", PRECONDITIONS),
        3: _f("orphanDependents", "bool?"),
        4: _f("propagationPolicy", "str"),
        5: _f("dryRun", "str", True),
    },
}
TYPE_META: Schema = {1: _f("apiVersion", "str"), 2: _f("kind", "str")}
UNKNOWN: Schema = {1: _f("typeMeta", TYPE_META), 2: _f("raw", "raw"), 3: _f("contentEncoding", "str")}
_ZERO_TIME_SECONDS = -62135596800  # Go's zero time.Time, which clients never mean as a timestamp


class ProtobufError(ValueError):
    """The body is not well-formed protobuf."""


class UnsupportedField(ProtobufError):
    """Well-formed, but it sets a field the testbed's table does not know."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(buf: bytes, fixed: bool = False) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) for each field: an int for varints, bytes for length-delimited.
    Fixed-width fields are skipped, or yielded as their raw 8 or 4 bytes when ``fixed`` (the
    descriptor-driven transcoder decodes doubles from them)."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
            yield num, val
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise ProtobufError("truncated field")
            yield num, buf[pos : pos + n]
            pos += n
        elif wire == 1:
            if fixed:
                yield num, buf[pos : pos + 8]
            pos += 8  # fixed64: no field in the table uses it; skip like an unknown field
        elif wire == 5:
            if fixed:
                yield num, buf[pos : pos + 4]
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ProtobufError("truncated field")


def _is_zero(val: int | bytes) -> bool:
    """A zero varint, an empty field, or a message all of whose fields are zero (e.g. an empty status)."""
    if isinstance(val, int) or not val:
        return not val
    try:
        return all(_is_zero(v) for _n, v in _fields(val))
    except ProtobufError:
        return False


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _time(buf: bytes) -> str | None:
    secs = 0
    for num, val in _fields(buf):
        if num == 1 and isinstance(val, int):
            secs = _signed(val)
    if not buf or secs == _ZERO_TIME_SECONDS:
        return None
    return dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    key, value = b"", b""
    for num, val in _fields(buf):
        if num == 1 and isinstance(val, bytes):
            key = val
        elif num == 2 and isinstance(val, bytes):
            value = val
    return key.decode(), value


def _scalar(typ: str, val: int | bytes) -> Any:
    typ = typ.rstrip("?")
    if typ == "int":
        return _signed(val) if isinstance(val, int) else None
    if typ == "bool":
        return bool(val) if isinstance(val, int) else None
    if not isinstance(val, bytes):
        raise ProtobufError(f"expected a length-delimited field for {typ}")
    if typ == "str":
        return val.decode()
    if typ in ("bytes",):
        return base64.b64encode(val).decode()
    if typ == "raw":
        return val
    if typ == "time":
        return _time(val)
    if typ == "json":
        return orjson.loads(val) if val else {}
    raise ProtobufError(f"unknown scalar type {typ}")


def _keep(typ: str | Schema, value: Any) -> bool:
    if isinstance(typ, str) and typ.endswith("?"):
        return True
    return value is not None and value not in ("", {}, 0, False)


def decode_message(buf: bytes, schema: Schema, where: str = "") -> dict[str, Any]:
    """Decode one message with ``schema``. Empty strings and empty messages are left out, as JSON's omitempty
    would. Go clients write every non-pointer field, so a field the table lacks is skipped when it holds
    the zero value; a non-zero one is refused rather than silently dropped."""
    out: dict[str, Any] = {}
    for num, val in _fields(buf):
        spec = schema.get(num)
        if spec is None:
            if _is_zero(val):
                continue
            raise UnsupportedField(f"field {num} of {where or 'the object'} is not in the testbed's table")
        name, typ, repeated = spec
        if typ in ("smap", "bmap"):
            if not isinstance(val, bytes):
                raise ProtobufError(f"map field {name} is not length-delimited")
            k, v = _map_entry(val)
            out.setdefault(name, {})[k] = v.decode() if typ == "smap" else base64.b64encode(v).decode()
            continue
        if isinstance(typ, dict):
            if not isinstance(val, bytes):
                raise ProtobufError(f"message field {name} is not length-delimited")
            value: Any = decode_message(val, typ, f"{where}.{name}" if where else name)
        else:
            value = _scalar(typ, val)
        if repeated:
            out.setdefault(name, []).append(value)
        elif _keep(typ, value):
            out[name] = value
    return out


def decode_table(raw: bytes) -> dict[str, Any]:
    """Turn a protobuf request body into its JSON-shaped dict with the hand-written table above.

    Raises ``APIError`` 415 for a kind the table lacks and 400 for a malformed body."""
    if not raw.startswith(MAGIC):
        raise APIError(400, "BadRequest", "provided object is not a protobuf message: missing the k8s prefix")
    try:
        unknown = decode_message(raw[len(MAGIC) :], UNKNOWN)
        type_meta = unknown.get("typeMeta") or {}
        kind = type_meta.get("kind", "")
        schema = KINDS.get(kind)
        if schema is None:
            raise APIError(
                415,
                "UnsupportedMediaType",
                f"the testbed decodes {MEDIA_TYPE} bodies only for the kinds "
                f"{', '.join(sorted(KINDS))} (got kind {kind!r}) when no Kubernetes API schema is cached "
                "(python -m testbed.apiserver.k8sproto fetch); send application/json",
            )
        obj = decode_message(unknown.get("raw", b""), schema, kind)
    except UnsupportedField as e:
        raise APIError(415, "UnsupportedMediaType", f"unable to decode {MEDIA_TYPE} body: {e}") from e
    except (ProtobufError, UnicodeDecodeError, orjson.JSONDecodeError) as e:
        raise APIError(400, "BadRequest", f"unable to decode {MEDIA_TYPE} body: {e}") from e
    return {"kind": kind, "apiVersion": type_meta.get("apiVersion", ""), **obj}


@cache
def schema(minor: int) -> ApiSchema | None:
    """The compiled Kubernetes API schema of ``minor`` from the cache, or None where none is cached."""
    try:
        descriptors, pointers = k8sproto.load(minor)
    except k8sproto.ProtoUnavailable as e:
        log.info("%s; protobuf bodies fall back to the built-in table, responses stay JSON", e)
        return None
    return ApiSchema(descriptors, pointers)


def decode(raw: bytes, minor: int | None = None) -> dict[str, Any]:
    """A protobuf request body -> its JSON-shaped dict: every kind with the compiled schema of ``minor``,
    else the built-in table. ``APIError`` 415 for a kind without a protobuf form, 400 for a bad body."""
    sch = schema(minor) if minor is not None else None
    if sch is None:
        return decode_table(raw)
    try:
        return sch.decode_object(raw)
    except UnknownKind as e:
        raise APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                       f"accepted media types include: application/json, application/yaml ({e})") from e
    except (TranscodeError, UnicodeDecodeError) as e:
        raise APIError(400, "BadRequest", f"unable to decode {MEDIA_TYPE} body: {e}") from e


# Times Go's JSON writes as null when unset (non-pointer metav1.Time / MicroTime fields), for the
# kinds where the answer shows them: a core/v1 Event's, on every minor 1.18-1.35 (measured).
_NULL_TIMES = {("v1", "Event"): ("firstTimestamp", "lastTimestamp", "eventTime")}


def fill_always(obj: dict[str, Any], minor: int) -> None:
    """The zero-valued fields Go's JSON always writes, added where missing (the schema's part is a
    no-op without a schema)."""
    for name in _NULL_TIMES.get((obj.get("apiVersion", ""), obj.get("kind", "")), ()):
        obj.setdefault(name, None)
    sch = schema(minor)
    if sch is not None:
        sch.fill_always(obj)


def encoded_size(obj: dict[str, Any], minor: int) -> int | None:
    """The size of ``obj`` in protobuf, what etcd stores for a built-in kind; None without a form."""
    sch = schema(minor)
    if sch is None:
        return None
    try:
        return len(sch.encode_object(obj))
    except TranscodeError:
        return None


def prefers_protobuf(accept: str) -> bool:
    """Whether the first media range of ``Accept`` the server can serve is protobuf (as the real server
    negotiates: order decides; ``as=`` variants such as Table have no protobuf form here)."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        if media == MEDIA_TYPE:
            if any(p.startswith("as=") for p in params):
                continue
            return True
        if media in ("application/json", "application/yaml", "application/*", "*/*"):
            return False
    return False


def encode_response(body: bytes, minor: int) -> bytes | None:
    """A JSON response body as protobuf, or None where the kind has no protobuf form (the JSON stays)."""
    sch = schema(minor)
    if sch is None:
        return None
    try:
        obj = orjson.loads(body)
        if not isinstance(obj, dict):
            return None
        return sch.encode_object(obj)
    except UnknownKind:
        return None
    except (TranscodeError, orjson.JSONDecodeError, ValueError) as e:
        log.warning("answering JSON: could not encode a %s response as protobuf: %s", MEDIA_TYPE, e)
        return None


def _encode_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_field(num: int, value: int | bytes | str) -> bytes:
    """One protobuf field (varint for ints, length-delimited otherwise); tests build bodies with it."""
    if isinstance(value, bool | int):
        return _encode_varint(num << 3) + _encode_varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return _encode_varint(num << 3 | 2) + _encode_varint(len(data)) + data


def envelope(api_version: str, kind: str, body: bytes) -> bytes:
    """Wrap an object's message in the ``k8s\\x00`` + ``runtime.Unknown`` envelope."""
    type_meta = encode_field(1, api_version) + encode_field(2, kind)
    return MAGIC + encode_field(1, type_meta) + encode_field(2, body)


iter_fields = _fields  # the wire decoder, shared with transcode.py

__all__ = ["KINDS", "MEDIA_TYPE", "decode", "decode_message", "decode_table", "encode_field",
           "encode_response", "encoded_size", "envelope", "fill_always", "prefers_protobuf", "schema"]
