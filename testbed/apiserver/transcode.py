"""Protobuf <-> JSON for every built-in kind, driven by the compiled Kubernetes API descriptors.

:mod:`testbed.apiserver.k8sproto` builds the ``FileDescriptorSet`` of ``k8s.io/api`` and
``k8s.io/apimachinery`` of a minor; this module walks it generically, so every kind whose Go type has
a protobuf encoding (all built-in kinds and their lists, ``Status``, ``DeleteOptions``, ``Scale``,
``Eviction``, ``TokenRequest``, the review kinds...) can be read from and written as
``application/vnd.kubernetes.protobuf``. Custom resources, ``APIService`` and
``CustomResourceDefinition`` (other modules) and ``Table`` (no protobuf form) stay JSON.

The JSON shapes follow the Go types' JSON encoding:

* field names are the proto field names, which go-to-protobuf takes from the JSON tags; an embedded
  struct tagged ``json:",inline"`` (``Volume``'s ``volumeSource``) is a field in protobuf and merged
  into its parent object in JSON;
* ``Time``/``MicroTime`` are RFC 3339 strings, ``Duration`` a Go duration string, ``Quantity`` a
  string, ``IntOrString`` a bare int or string, ``RawExtension`` and ``FieldsV1`` embedded JSON;
* a message whose only field is a repeated ``items`` of scalars (``ExtraValue``, ``Verbs``) is a list;
* decoding: a non-pointer scalar holding its zero value is left out where its JSON tag says
  ``omitempty`` (a Go server decoding into its structs cannot tell it from absent) and kept where it
  does not (``currentReplicas: 0``); a pointer field is kept even when zero, so ``replicas: 0``
  stays 0 (both facts from the Go types, ``fields-v2.json``);
* encoding: fields in field-number order, map entries sorted by key, as Go's marshaller writes them.

Wire format of a whole object: ``k8s\\x00`` then ``runtime.Unknown{typeMeta{apiVersion, kind}, raw,
contentEncoding, contentType}`` with the object's message in ``raw``.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import descriptor_pb2

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_TIME = f".{META}.Time"
_MICROTIME = f".{META}.MicroTime"
_DURATION = f".{META}.Duration"
_FIELDSV1 = f".{META}.FieldsV1"
_QUANTITY = ".k8s.io.apimachinery.pkg.api.resource.Quantity"
_INTORSTR = ".k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAWEXT = ".k8s.io.apimachinery.pkg.runtime.RawExtension"
_ZERO_TIME = -62135596800  # Go's zero time.Time in Unix seconds: a field never set
_SPECIAL = {_TIME, _MICROTIME, _DURATION, _FIELDSV1, _QUANTITY, _INTORSTR, _RAWEXT}

F = descriptor_pb2.FieldDescriptorProto
_VARINTS = {F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_BOOL, F.TYPE_ENUM}
_ZERO_OF: dict[int, Any] = {
    F.TYPE_STRING: "",
    F.TYPE_BOOL: False,
    F.TYPE_BYTES: "",
    F.TYPE_DOUBLE: 0.0,
    F.TYPE_FLOAT: 0.0,
}
# API groups whose proto package is not named after the group's first label
_PACKAGE_OF_GROUP = {"internal.apiserver.k8s.io": "apiserverinternal", "": "core"}


class TranscodeError(ValueError):
    """A body that is not valid protobuf, or a JSON value that does not fit its field."""


class UnknownKind(TranscodeError):
    """No protobuf message for this apiVersion/kind in the schema."""


@dataclass
class Field:
    number: int
    name: str
    type: int
    type_name: str
    repeated: bool
    pointer: bool
    always: bool = False  # Go's JSON writes it even at zero (no omitempty)
    inline: bool = False  # an embedded struct whose fields JSON puts in the parent object


@dataclass
class Message:
    full_name: str
    by_number: dict[int, Field] = field(default_factory=dict)
    by_name: dict[str, Field] = field(default_factory=dict)
    map_entry: bool = False

    @property
    def items_wrapper(self) -> bool:
        """``ExtraValue``-style messages: only a repeated scalar ``items``, written as a JSON list."""
        f = self.by_name.get("items")
        return len(self.by_number) == 1 and f is not None and f.repeated and f.type != F.TYPE_MESSAGE


class Schema:
    """The messages of one descriptor set, and the kind -> message index."""

    def __init__(self, descriptor_set: bytes, facts: dict[str, dict[str, list[int]]]) -> None:
        fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
        self.messages: dict[str, Message] = {}
        for f in fds.file:
            for m in f.message_type:
                self._add(f".{f.package}", m, facts)

    def _add(
        self, scope: str, m: descriptor_pb2.DescriptorProto, facts: dict[str, dict[str, list[int]]]
    ) -> None:
        full = f"{scope}.{m.name}"
        mine = facts.get(full[1:], {})
        ptr, always = set(mine.get("pointer", ())), set(mine.get("always", ()))
        inline = set(mine.get("inline", ()))
        msg = Message(full, map_entry=m.options.map_entry)
        for fd in m.field:
            fl = Field(
                fd.number, fd.name, fd.type, fd.type_name, fd.label == F.LABEL_REPEATED, fd.number in ptr
            )
            fl.always = fd.number in always
            fl.inline = fd.number in inline
            msg.by_number[fd.number] = fl
            msg.by_name[fd.name] = fl
        self.messages[full] = msg
        for nested in m.nested_type:
            self._add(full, nested, facts)

    def message_for(self, api_version: str, kind: str) -> Message:
        group, _, version = api_version.rpartition("/")
        label = _PACKAGE_OF_GROUP.get(group, group.split(".")[0])
        candidates = [f".k8s.io.api.{label}.{version}.{kind}"]
        if group in ("", "meta.k8s.io"):
            candidates.append(f".{META}.{kind}")
        for name in candidates:
            msg = self.messages.get(name)
            if msg is not None:
                return msg
        raise UnknownKind(f"no protobuf message for kind {kind!r} of {api_version!r}")

    # -- decoding -------------------------------------------------------------------------------
    def decode_object(self, raw: bytes) -> dict[str, Any]:
        """A ``k8s\\x00`` envelope -> the JSON-shaped object with its ``kind`` and ``apiVersion``."""
        if not raw.startswith(MAGIC):
            raise TranscodeError("provided object is not a protobuf message: missing the k8s prefix")
        env: dict[int, Any] = {}
        for num, val in _fields(raw[len(MAGIC) :]):
            env[num] = val
        type_meta = {n: v for n, v in _fields(_bytes(env.get(1, b"")))}
        api_version = _bytes(type_meta.get(1, b"")).decode()
        kind = _bytes(type_meta.get(2, b"")).decode()
        if _bytes(env.get(3, b"")):
            raise TranscodeError(f"unsupported content encoding {_bytes(env[3]).decode()!r}")
        msg = self.message_for(api_version, kind)
        obj = self.decode_message(_bytes(env.get(2, b"")), msg)
        return {"kind": kind, "apiVersion": api_version, **obj}

    def decode_message(self, buf: bytes, msg: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for num, val in _fields(buf):
            f = msg.by_number.get(num)
            if f is None:
                continue  # a field of a newer release: Go's decoder skips it too
            if f.type == F.TYPE_MESSAGE and self.messages.get(f.type_name, _NO_MSG).map_entry:
                entry = self.messages[f.type_name]
                key, value = self._map_entry(_bytes(val), entry)
                out.setdefault(f.name, {})[key] = value
                continue
            value = self._value(f, val)
            if f.inline and isinstance(value, dict):
                out.update(value)
                continue
            if f.repeated:
                out.setdefault(f.name, []).append(value)
            elif f.pointer or f.always or not _omitted(f, value):
                out[f.name] = value
            else:
                out.pop(f.name, None)
        return out

    def _map_entry(self, buf: bytes, entry: Message) -> tuple[str, Any]:
        key: Any = ""
        value: Any = None
        kf, vf = entry.by_number[1], entry.by_number[2]
        for num, val in _fields(buf):
            if num == 1:
                key = self._value(kf, val)
            elif num == 2:
                value = self._value(vf, val)
        if value is None:
            value = self._value(vf, b"" if vf.type in (F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE) else 0)
        return str(key), value

    def _value(self, f: Field, val: int | bytes) -> Any:
        t = f.type
        if t in _VARINTS:
            if not isinstance(val, int):
                raise TranscodeError(f"field {f.name} expects a varint")
            if t == F.TYPE_BOOL:
                return bool(val)
            if t == F.TYPE_INT32:
                return _signed(val, 32)
            return _signed(val, 64) if t == F.TYPE_INT64 else val
        if t == F.TYPE_DOUBLE:
            return struct.unpack("<d", _fixed(val, 8))[0]
        if t == F.TYPE_FLOAT:
            return struct.unpack("<f", _fixed(val, 4))[0]
        b = _bytes(val)
        if t == F.TYPE_STRING:
            return b.decode()
        if t == F.TYPE_BYTES:
            return base64.b64encode(b).decode()
        if t == F.TYPE_MESSAGE:
            return self._special_decode(f.type_name, b)
        raise TranscodeError(f"field {f.name}: unsupported protobuf type {t}")

    def _special_decode(self, type_name: str, b: bytes) -> Any:
        if type_name in (_TIME, _MICROTIME):
            secs = nanos = 0
            for num, v in _fields(b):
                if num == 1 and isinstance(v, int):
                    secs = _signed(v, 64)
                elif num == 2 and isinstance(v, int):
                    nanos = _signed(v, 32)
            if secs == _ZERO_TIME:
                return None
            return format_time(secs, nanos, micro=type_name == _MICROTIME)
        if type_name == _DURATION:
            nanos = 0
            for num, v in _fields(b):
                if num == 1 and isinstance(v, int):
                    nanos = _signed(v, 64)
            return format_duration(nanos)
        if type_name == _QUANTITY:
            return next((_bytes(v).decode() for n, v in _fields(b) if n == 1), "")
        if type_name == _INTORSTR:
            parts = {n: v for n, v in _fields(b)}
            if parts.get(1, 0) == 1:
                return _bytes(parts.get(3, b"")).decode()
            return _signed(int(parts.get(2, 0)), 32)
        if type_name in (_RAWEXT, _FIELDSV1):
            raw = next((_bytes(v) for n, v in _fields(b) if n == 1), b"")
            if not raw:
                return None
            if raw.startswith(MAGIC):
                return self.decode_object(raw)
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise TranscodeError(f"embedded object is neither protobuf nor JSON: {e}") from e
        msg = self.messages.get(type_name)
        if msg is None:
            raise TranscodeError(f"message type {type_name} is not in the schema")
        if msg.items_wrapper:
            f = msg.by_name["items"]
            return [self._value(f, v) for _n, v in _fields(b)]
        return self.decode_message(b, msg)

    # -- Go's JSON shape ------------------------------------------------------------------------
    def fill_always(self, obj: dict[str, Any]) -> None:
        """Add, in place, what Go's JSON writes even when zero, wherever it is missing: scalar fields
        without ``omitempty`` and every non-pointer struct field (as ``{}``, then filled in turn). This
        is what the real server sends for every object of a kind, such as
        ``nodeInfo.kubeProxyVersion: ""`` or an HPA's ``status.desiredReplicas: 0``. The special
        types (times, quantities, int-or-string, embedded objects) are not added, and kinds without a
        message (custom resources) are left alone."""
        try:
            msg = self.message_for(obj.get("apiVersion", ""), obj.get("kind", ""))
        except UnknownKind:
            return
        self._fill(obj, msg)

    def _fill(self, obj: dict[str, Any], msg: Message) -> None:
        for f in msg.by_number.values():
            if f.inline:
                self._fill(obj, self.messages[f.type_name])
                continue
            value = obj.get(f.name)
            if f.type != F.TYPE_MESSAGE:
                if value is None and f.always and not f.repeated and f.name not in obj:
                    obj[f.name] = _ZERO_OF.get(f.type, 0)
                continue
            sub = self.messages.get(f.type_name)
            if sub is None or sub.items_wrapper or f.type_name in _SPECIAL:
                continue
            if value is None and f.name not in obj and not (f.pointer or f.repeated or sub.map_entry):
                # Go's JSON writes every non-pointer struct field, omitempty or not ("status": {})
                value = obj[f.name] = {}
            if sub.map_entry:
                vf = sub.by_number.get(2)
                inner = (
                    self.messages.get(vf.type_name) if vf is not None and vf.type == F.TYPE_MESSAGE else None
                )
                if (
                    inner is not None
                    and isinstance(value, dict)
                    and vf is not None
                    and vf.type_name not in _SPECIAL
                ):
                    for v in value.values():
                        if isinstance(v, dict):
                            self._fill(v, inner)
            elif isinstance(value, list):
                for v in value:
                    if isinstance(v, dict):
                        self._fill(v, sub)
            elif isinstance(value, dict):
                self._fill(value, sub)

    # -- encoding -------------------------------------------------------------------------------
    def encode_object(self, obj: dict[str, Any]) -> bytes:
        """A JSON-shaped object with ``kind``/``apiVersion`` -> its ``k8s\\x00`` envelope."""
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        msg = self.message_for(api_version, kind)
        raw = self.encode_message(obj, msg)
        type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
        return MAGIC + _field(1, type_meta) + _field(2, raw) + _field(3, b"") + _field(4, b"")

    def encode_message(self, obj: dict[str, Any], msg: Message) -> bytes:
        if not isinstance(obj, dict):
            raise TranscodeError(f"{msg.full_name[1:]} expects an object, got {type(obj).__name__}")
        chunks: list[tuple[int, bytes]] = []
        for f in msg.by_number.values():
            if f.inline:
                sub = self.messages[f.type_name]
                keys = self._json_names(sub)
                part = {k: v for k, v in obj.items() if k in keys}
                if part:  # absent and empty read the same; Go would write the empty message
                    chunks.append((f.number, _field(f.number, self.encode_message(part, sub))))
        for name, value in obj.items():
            f = msg.by_name.get(name)
            if f is None or value is None or f.inline:
                continue  # kind/apiVersion live in the envelope; unknown keys Go would drop too
            entry = self.messages.get(f.type_name) if f.type == F.TYPE_MESSAGE else None
            if entry is not None and entry.map_entry:
                if not isinstance(value, dict):
                    raise TranscodeError(f"field {name} expects an object")
                kf, vf = entry.by_number[1], entry.by_number[2]
                body = b"".join(
                    _field(f.number, self._encode_one(kf, 1, k) + self._encode_one(vf, 2, value[k]))
                    for k in sorted(value)
                    if value[k] is not None
                )
                chunks.append((f.number, body))
            elif f.repeated:
                if not isinstance(value, list):
                    raise TranscodeError(f"field {name} expects a list")
                chunks.append((f.number, b"".join(self._encode_one(f, f.number, v) for v in value)))
            else:
                chunks.append((f.number, self._encode_one(f, f.number, value)))
        chunks.sort(key=lambda c: c[0])
        return b"".join(c for _n, c in chunks)

    def _json_names(self, msg: Message) -> set[str]:
        """The JSON keys of ``msg``, with those of its inlined structs."""
        names = {f.name for f in msg.by_number.values() if not f.inline}
        for f in msg.by_number.values():
            if f.inline:
                names |= self._json_names(self.messages[f.type_name])
        return names

    def _encode_one(self, f: Field, num: int, value: Any) -> bytes:
        t = f.type
        try:
            if t == F.TYPE_BOOL:
                return _varint_field(num, 1 if value else 0)
            if t in _VARINTS:
                return _varint_field(num, int(value))
            if t == F.TYPE_DOUBLE:
                return _key(num, 1) + struct.pack("<d", float(value))
            if t == F.TYPE_FLOAT:
                return _key(num, 5) + struct.pack("<f", float(value))
            if t == F.TYPE_STRING:
                return _field(num, str(value).encode())
            if t == F.TYPE_BYTES:
                return _field(num, base64.b64decode(value))
        except (TypeError, ValueError) as e:
            raise TranscodeError(f"field {f.name}: {value!r} does not fit {t}: {e}") from e
        if t == F.TYPE_MESSAGE:
            return _field(num, self._special_encode(f.type_name, value, f.name))
        raise TranscodeError(f"field {f.name}: unsupported protobuf type {t}")

    def _special_encode(self, type_name: str, value: Any, where: str) -> bytes:
        if type_name in (_TIME, _MICROTIME):
            secs, nanos = parse_time(str(value))
            return _varint_field(1, secs) + (_varint_field(2, nanos) if nanos else b"")
        if type_name == _DURATION:
            return _varint_field(1, parse_duration(str(value)))
        if type_name == _QUANTITY:
            return _field(1, str(value).encode())
        if type_name == _INTORSTR:
            if isinstance(value, str):
                return _varint_field(1, 1) + _varint_field(2, 0) + _field(3, value.encode())
            return _varint_field(1, 0) + _varint_field(2, int(value)) + _field(3, b"")
        if type_name in (_RAWEXT, _FIELDSV1):
            return _field(1, orjson.dumps(value))
        msg = self.messages.get(type_name)
        if msg is None:
            raise TranscodeError(f"message type {type_name} is not in the schema")
        if msg.items_wrapper:
            f = msg.by_name["items"]
            if not isinstance(value, list):
                raise TranscodeError(f"field {where} expects a list")
            return b"".join(self._encode_one(f, f.number, v) for v in value)
        return self.encode_message(value, msg)


_NO_MSG = Message("")


# -- wire helpers -------------------------------------------------------------------------------
def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs, fixed-width fields as raw bytes: protobuf.py's wire decoder."""
    try:
        return list(_wire.iter_fields(buf, fixed=True))
    except _wire.ProtobufError as e:
        raise TranscodeError(str(e)) from e


def _bytes(v: int | bytes) -> bytes:
    if not isinstance(v, bytes):
        raise TranscodeError("expected a length-delimited field")
    return v


def _fixed(v: int | bytes, size: int) -> bytes:
    if not isinstance(v, bytes) or len(v) != size:
        raise TranscodeError("expected a fixed-size field")
    return v


def _signed(v: int, bits: int) -> int:
    v &= (1 << 64) - 1
    if v >= 1 << 63:
        v -= 1 << 64
    if bits == 32:
        v = (v + (1 << 31)) % (1 << 32) - (1 << 31)
    return v


def _omitted(f: Field, v: Any) -> bool:
    """Whether a non-pointer field's decoded value is left out of the JSON form. Scalars at their zero
    value are (``omitempty``); structs are not (Go's JSON always writes them, e.g. ``"spec": {}``),
    except the types whose JSON form of zero means "unset": a zero ``Time`` (null), an empty
    ``RawExtension``, and a zero ``IntOrString`` (which defaulting treats as unset)."""
    if v is None:
        return True
    if f.type == F.TYPE_MESSAGE:
        return f.type_name == _INTORSTR and v in (0, "")
    return v in ("", 0, False)


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


def _key(num: int, wire: int) -> bytes:
    return _encode_varint(num << 3 | wire)


def _varint_field(num: int, v: int) -> bytes:
    return _key(num, 0) + _encode_varint(v)


def _field(num: int, data: bytes) -> bytes:
    return _key(num, 2) + _encode_varint(len(data)) + data


# -- Go's text forms ----------------------------------------------------------------------------
def format_time(secs: int, nanos: int, micro: bool) -> str:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=secs)
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> tuple[int, int]:
    m = _RFC3339.match(text)
    if not m:
        raise TranscodeError(f"time {text!r} is not RFC 3339")
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac, zone = m.group(7) or "", m.group(8)
    t = dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        t -= sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    secs = int((t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds())
    return secs, int(frac.ljust(9, "0")) if frac else 0


_UNITS = {
    "ns": 1,
    "us": 1000,
    "µs": 1000,
    "μs": 1000,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    s = text.strip()
    sign = -1 if s.startswith("-") else 1
    s = s.lstrip("+-")
    if s == "0":
        return 0
    pos, total = 0, 0
    for m in _DUR_PART.finditer(s):
        if m.start() != pos:
            break
        num, unit = m.group(1), m.group(2)
        whole, _, frac = num.partition(".")
        total += int(whole or 0) * _UNITS[unit]
        if frac:
            total += int(frac) * _UNITS[unit] // 10 ** len(frac)
        pos = m.end()
    if pos != len(s) or not s:
        raise TranscodeError(f"invalid duration {text!r}")
    return sign * total


def format_duration(nanos: int) -> str:
    """Go's time.Duration.String()."""
    if nanos == 0:
        return "0s"
    neg = nanos < 0
    u = -nanos if neg else nanos
    if u < 10**9:
        for unit, size in (("ns", 1), ("µs", 1000), ("ms", 10**6)):
            if u < size * 1000:
                return ("-" if neg else "") + _frac(u, size) + unit
    secs, rem = divmod(u, 10**9)
    text = _frac(rem + (secs % 60) * 10**9, 10**9) + "s"
    mins = secs // 60
    if mins:
        text = f"{mins % 60}m" + text
        if mins >= 60:
            text = f"{mins // 60}h" + text
    return ("-" if neg else "") + text


def _frac(v: int, size: int) -> str:
    whole, rem = divmod(v, size)
    if not rem:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}." + f"{rem:0{digits}d}".rstrip("0")


__all__ = ["MEDIA_TYPE", "Schema", "TranscodeError", "UnknownKind", "format_duration", "parse_duration"]


# Last, not at the top: protobuf.py imports this module's Schema and errors at its top, so whichever of
# the two is imported first, everything protobuf.py needs from here is defined by the time it runs.
from . import protobuf as _wire  # noqa: E402
