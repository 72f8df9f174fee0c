"""The four PATCH formats of the apiserver, as pure functions on stored objects (plain JSON dicts).

* JSON patch (RFC 6902) follows the json-patch v4 library the apiserver vendors, quirks included:
  negative array indices count from the end, ``replace`` of a missing object key adds it, a ``test``
  of a missing key against ``null`` passes, and any failure to apply answers 422 with the fixed
  text "the server rejected our request due to an error in our request" and empty details.
* JSON merge patch (RFC 7386): a body that is not JSON, or is ``null``, answers 400 "Invalid JSON Patch".
* Strategic merge patch: the apimachinery algorithm (merge keys from :mod:`patchmeta`, ``$patch``,
  ``$retainKeys``, ``$setElementOrder/``, ``$deleteFromPrimitiveList/``, null deletes), with its
  error mapping: malformed directives 400, lists of lists 422, anything else a bare 500 whose
  message is the library's error text (the real server answers such errors with an empty reason).
  Kinds without metadata (custom resources) answer 415, as the real server does for CRs.
* Server-side apply and the field ownership of every other write, as the real field manager keeps
  it: create, update and non-apply patches add "Update" entries (the manager is ``fieldManager``, or
  the User-Agent up to its first "/"; status and scale writes are their own managers with
  ``subresource`` from 1.22), updates take the fields they change from everyone, and an apply that
  changes a field another manager owns answers 409 with the real message (``conflict with
  "kubectl-patch" using v1: .data.a``) unless ``force=true``. Simplified as below.

=====================================  ==========================================================
real field manager                     here
=====================================  ==========================================================
typed field sets from OpenAPI           field sets from the SMP merge keys (one key per list; the
                                        real list-map keys such as port+protocol are not used)
"." marks for granular maps (labels)    only list items carry "."
list order follows the applied config   live order kept, new items appended
status wiped on main-resource apply     not done (the caller's strategy decides)
apiVersion/kind checks, defaulting      only the group of apiVersion is checked, no defaulting
"before-first-apply" Update entry       not created
over 10 Update managers: the oldest     never merged
merged into "ancient-changes"
null in the applied config              treated as "field not applied"
=====================================  ==========================================================
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any

import yaml

from testbed.apiserver import patchmeta
from testbed.apiserver.errors import APIError, Cause, bad_request, invalid, invalid_value
from testbed.apiserver.patchmeta import Field, Schema

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}

REJECTED = "the server rejected our request due to an error in our request"
# Media types a custom resource accepts (the real 415 lists exactly these).
CR_PATCH_TYPES = (
    "application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
MAX_JSON_PATCH_OPERATIONS = 10000

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList"


class PatchFailure(Exception):
    """Why a JSON patch operation did not apply; chained to the 422 for logs and tests."""


# ---------------------------------------------------------------------------------------------
# Go-flavoured helpers: JSON decoding errors and %v formatting, so messages read like the real ones


def _go_char(c: str) -> str:
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return "'" + json.dumps(c)[1:-1] + "'"


def _open_container(doc: str, pos: int) -> str:
    """The innermost bracket open at ``pos``, skipping strings; tells Go's two ',' messages apart."""
    stack: list[str] = []
    in_str = esc = False
    for ch in doc[:pos]:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _go_json_error(exc: json.JSONDecodeError) -> str:
    doc, pos = exc.doc, exc.pos
    if pos >= len(doc) or exc.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    c = _go_char(doc[pos])
    msg = exc.msg
    if msg.startswith("Expecting property name"):
        return f"invalid character {c} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {c} after object key"
    if msg.startswith("Expecting ','"):
        where = "object key:value pair" if _open_container(doc, pos) == "{" else "array element"
        return f"invalid character {c} after {where}"
    if msg.startswith("Extra data"):
        return f"invalid character {c} after top-level value"
    if msg.startswith("Invalid control character"):
        return f"invalid character {c} in string literal"
    return f"invalid character {c} looking for beginning of value"


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_json(body: bytes) -> Any:
    """Decode like Go's encoding/json; raises ValueError with Go's message text."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else str(body)
    except UnicodeDecodeError as e:
        raise ValueError("invalid character in string literal") from e
    if not text.strip():
        raise ValueError("unexpected end of JSON input")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ValueError(_go_json_error(e)) from e
    except ValueError as e:  # NaN / Infinity, which Go rejects at their first letter
        pos = max(text.find(str(e)), 0)
        raise ValueError(f"invalid character {_go_char(text[pos])} looking for beginning of value") from e


def _json_kind(v: Any) -> str:
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    return "number"


def gofmt(v: Any) -> str:
    """Go's ``%v`` of a decoded JSON value (maps print with sorted keys)."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{gofmt(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(gofmt(x) for x in v) + "]"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    return str(v)


def _go_kind(v: Any) -> str:
    """reflect.Kind of a value decoded with PreserveInts."""
    if isinstance(v, dict):
        return "map"
    if isinstance(v, list):
        return "slice"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int64"
    if isinstance(v, float):
        return "float64"
    return "invalid"


def _same(a: Any, b: Any) -> bool:
    """Go's ``==`` on interface values: equal dynamic type and value (1 != 1.0, true != 1)."""
    return type(a) is type(b) and a == b


def _json_equal(a: Any, b: Any) -> bool:
    """Structural JSON equality: numbers by value, booleans distinct from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _rejected(why: str) -> APIError:
    err = APIError(422, "Invalid", REJECTED, details={})
    err.__cause__ = PatchFailure(why)
    return err


def _server_error(message: str) -> APIError:
    # A plain Go error reaching the handler: code 500, empty reason, the error text as message.
    return APIError(500, "", message)


def _require_object(result: Any) -> dict:
    """A patched document that is not an object fails to decode: 422 on the field "patch"."""
    if not isinstance(result, dict):
        text = json.dumps(result, separators=(",", ":"))
        detail = (f"json: cannot unmarshal {_json_kind(result)} "
                  "into Go value of type map[string]interface {}")
        raise invalid("", "", "", [invalid_value("patch", text, detail)])
    return result


# ---------------------------------------------------------------------------------------------
# JSON patch (RFC 6902, json-patch v4 semantics)

_INDEX = re.compile(r"^[+-]?\d+$")


def _decode_token(t: str) -> str:
    return t.replace("~1", "/").replace("~0", "~")


def _index(key: str) -> int:
    if not _INDEX.match(key):
        raise PatchFailure(f"value was not a proper array index: '{key}'")
    return int(key)


def _get(con: dict | list, key: str) -> tuple[bool, Any]:
    """(present, value); a missing object key is not an error in v4, a bad array index is."""
    if isinstance(con, dict):
        return (key in con, con.get(key))
    idx = _index(key)
    if idx < 0:
        if idx < -len(con):
            raise PatchFailure(f"Unable to access invalid index: {idx}: invalid index referenced")
        idx += len(con)
    if idx >= len(con):
        raise PatchFailure(f"Unable to access invalid index: {idx}: invalid index referenced")
    return (True, con[idx])


def _find(doc: Any, path: str) -> tuple[dict | list | None, str]:
    split = path.split("/")
    if len(split) < 2:
        return None, ""
    con = doc
    for part in split[1:-1]:
        try:
            present, nxt = _get(con, _decode_token(part))
        except PatchFailure:
            return None, ""
        if not present or not isinstance(nxt, dict | list):
            return None, ""
        con = nxt
    return con, _decode_token(split[-1])


def _add(con: dict | list, key: str, val: Any) -> None:
    if isinstance(con, dict):
        con[key] = val
        return
    if key == "-":
        con.append(val)
        return
    idx = _index(key)
    if idx > len(con) or idx < -(len(con) + 1):
        raise PatchFailure(f"Unable to access invalid index: {idx}: invalid index referenced")
    if idx < 0:
        idx += len(con) + 1
    con.insert(idx, val)


def _remove(con: dict | list, key: str) -> Any:
    if isinstance(con, dict):
        if key not in con:
            raise PatchFailure(f"Unable to remove nonexistent key: {key}: missing value")
        return con.pop(key)
    idx = _index(key)
    if idx >= len(con) or idx < -len(con):
        raise PatchFailure(f"Unable to access invalid index: {idx}: invalid index referenced")
    return con.pop(idx)


def _set(con: dict | list, key: str, val: Any) -> None:
    if isinstance(con, dict):
        con[key] = val
        return
    idx = _index(key)
    if idx >= len(con) or idx < -len(con):
        raise PatchFailure(f"Unable to access invalid index: {idx}: invalid index referenced")
    con[idx] = val


def _op_path(op: dict, field: str = "path") -> str:
    p = op.get(field)
    if not isinstance(p, str):
        raise PatchFailure(f"operation missing {field} field")
    return p


def _apply_op(doc: dict, op: Any) -> dict:
    kind = op.get("op") if isinstance(op, dict) else None
    kind = kind if isinstance(kind, str) else "unknown"
    if kind not in ("add", "remove", "replace", "move", "copy", "test"):
        raise PatchFailure(f"Unexpected kind: {kind}")
    path = _op_path(op)
    value = copy.deepcopy(op.get("value"))
    if kind == "test" and path == "":
        if not _json_equal(doc, value):
            raise PatchFailure(f"testing value {path} failed: test failed")
        return doc
    if kind == "replace" and path == "":
        if not isinstance(value, dict):
            raise PatchFailure("replace operation value must be object or array")
        return value
    if kind in ("move", "copy"):
        src = _op_path(op, "from")
        con, key = _find(doc, src)
        if con is None:
            raise PatchFailure(f"{kind} operation does not apply: doc is missing from path: {src}")
        present, value = _get(con, key)
        if kind == "move":
            value = _remove(con, key)
        elif not present:
            raise PatchFailure(f"error in copy for from: '{src}': missing value")
        else:
            value = copy.deepcopy(value)
    con, key = _find(doc, path)
    if con is None:
        raise PatchFailure(f"{kind} operation does not apply: doc is missing path: {path}")
    if kind in ("add", "move", "copy"):
        _add(con, key, value)
    elif kind == "remove":
        _remove(con, key)
    elif kind == "replace":
        _get(con, key)  # a bad array index fails; a missing object key does not (v4 behaviour)
        _set(con, key, value)
    else:  # test
        present, current = _get(con, key)
        if current is None and value is None:
            return doc
        if current is None or value is None or not _json_equal(current, value):
            raise PatchFailure(f"testing value {path} failed: test failed")
    return doc


def apply_json_patch(obj: dict, body: bytes) -> dict:
    try:
        ops = _parse_json(body)
    except ValueError as e:
        raise bad_request(str(e)) from e
    if ops is None:
        ops = []
    if not isinstance(ops, list):
        raise bad_request(f"json: cannot unmarshal {_json_kind(ops)} into Go value of type jsonpatch.Patch")
    for op in ops:
        if op is not None and not isinstance(op, dict):
            raise bad_request(
                f"json: cannot unmarshal {_json_kind(op)} into Go value of type jsonpatch.Operation")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise APIError(413, "RequestEntityTooLarge",
                       "Request entity too large: The allowed maximum operations in a JSON patch is "
                       f"{MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}")
    doc: Any = json_copy(obj)
    for op in ops:
        try:
            doc = _apply_op(doc, op)
        except PatchFailure as e:
            raise _rejected(str(e)) from e
    return _require_object(doc)


# ---------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386, json-patch v4 MergePatch semantics)


def _prune_nulls(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _prune_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_prune_nulls(x) if x is not None else None for x in v]
    return v


def json_copy(v: Any) -> Any:
    """A deep copy of a decoded JSON document (what the store holds): each patch starts from one of
    the stored object. Dicts and lists are rebuilt and everything else is immutable and shared, which
    is several times cheaper than ``copy.deepcopy`` (its memo and dispatch), a pod's or node's status
    patch paid for that in full. Other containers (a subclass, a tuple) get ``copy.deepcopy``."""
    t = type(v)
    if t is dict:
        return {k: json_copy(x) for k, x in v.items()}
    if t is list:
        return [json_copy(x) for x in v]
    if t in (str, int, float, bool) or v is None:
        return v
    return copy.deepcopy(v)


def _merge_docs(doc: dict, patch: dict) -> None:
    for k, v in patch.items():
        if v is None:
            doc.pop(k, None)
            continue
        cur = doc.get(k)
        if isinstance(cur, dict) and isinstance(v, dict):
            _merge_docs(cur, v)
        elif isinstance(cur, dict):
            doc[k] = v  # json-patch v4 keeps a non-object patch value as sent here
        else:
            doc[k] = _prune_nulls(v)


def apply_merge_patch(obj: dict, body: bytes) -> dict:
    try:
        patch = _parse_json(body)
    except ValueError as e:
        raise bad_request("Invalid JSON Patch") from e
    if patch is None or isinstance(patch, str | int | float | bool):
        raise bad_request("Invalid JSON Patch")
    if isinstance(patch, list):
        return _require_object(_prune_nulls(patch))
    doc = json_copy(obj)
    _merge_docs(doc, patch)
    return doc


# ---------------------------------------------------------------------------------------------
# Strategic merge patch


class _SMPError(Exception):
    """An error of the strategic-merge algorithm; ``kind`` picks the status the server answers."""

    def __init__(self, message: str, kind: str = "server") -> None:
        super().__init__(message)
        self.kind = kind  # "bad" -> 400, "invalid" -> 422, "server" -> 500


_ERR_RETAIN_KEYS = "invalid patch format of retainKeys"
_ERR_SET_ORDER = "invalid patch format of setElementOrder list"
_ERR_PRIMITIVE_LIST = "invalid patch format of primitive list"


def _no_merge_key(m: dict, key: str) -> _SMPError:
    return _SMPError(f"map: {gofmt(m)} does not contain declared merge key: {key}")


def _bad_arg_type(expected: str, actual: Any) -> _SMPError:
    return _SMPError(f"expected a {expected}, but received a {_go_kind(actual)}")


def _extract_key(key: str, prefix: str) -> str:
    parts = key.split("/", 1)
    if len(parts) <= 1 or parts[0] != prefix:
        raise _SMPError(_ERR_PRIMITIVE_LIST if prefix == _DELETE_PRIMITIVE else _ERR_SET_ORDER, "bad")
    return parts[1]


def _is_directive_key(k: str) -> bool:
    return k in (_DIRECTIVE, _RETAIN_KEYS) or k.startswith(_SET_ORDER) or k.startswith(_DELETE_PRIMITIVE)


def _clean(v: Any) -> tuple[Any, bool]:
    """A raw patch value made storable: nulls and directives dropped; False if it was a delete."""
    if isinstance(v, dict):
        if v.get(_DIRECTIVE) == "delete":
            return None, False
        out = {}
        for k, x in v.items():
            if x is None or _is_directive_key(k):
                continue
            cx, keep = _clean(x)
            if keep:
                out[k] = cx
        return out, True
    if isinstance(v, list):
        items = []
        for x in v:
            if isinstance(x, dict) and _DIRECTIVE in x:
                continue  # list directives ($patch: delete/replace) carry no element
            cx, keep = _clean(x)
            if keep:
                items.append(cx)
        return items, True
    return v, True


def _strip_directives(v: Any) -> Any:
    """Typed decoding drops unknown keys; directive keys left anywhere vanish the same way."""
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if not _is_directive_key(k)}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


def _element_kind(*lists: list) -> str:
    prev: type | None = None
    for lst in lists:
        for v in lst:
            t = type(v)
            if prev is None:
                prev = t
                if t is list:
                    raise _SMPError("lists of lists are not supported", "invalid")
            elif prev is not t:
                raise _SMPError("list element types are not identical: "
                                + gofmt([list(x) for x in lists]))
    if prev is None:
        raise _SMPError("no elements in any of the given slices")
    return "map" if prev is dict else "scalar"


def _dedupe_scalars(s: list) -> list:
    # Same order-scrambling algorithm as apimachinery (a duplicate is overwritten by the last item).
    s = list(s)
    length = len(s) - 1
    i = 0
    while i < length:
        j = i + 1
        while j <= length:
            if _same(s[i], s[j]):
                s[j] = s[length]
                s = s[:length]
                length -= 1
                j -= 1
            j += 1
        i += 1
    return s


def _key_of(item: Any, merge_key: str, kind: str) -> Any:
    if kind == "map":
        return item.get(merge_key) if isinstance(item, dict) else None
    return item


def _index_in(lst: list, item: Any, merge_key: str, kind: str) -> int:
    want = _key_of(item, merge_key, kind)
    for i, v in enumerate(lst):
        if _same(_key_of(v, merge_key, kind), want):
            return i
    return -1


def _check_merge_keys(merge_key: str, *lists: list) -> None:
    for lst in lists:
        for item in lst:
            if not isinstance(item, dict):
                raise _bad_arg_type("map", item)
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)


def _normalize_slice_order(to_sort: list, order: list, merge_key: str, kind: str) -> list:
    to_delete: list = []
    if kind == "map":
        _check_merge_keys(merge_key, to_sort, order)
        keep = [v for v in to_sort if v.get(_DIRECTIVE) != "delete"]
        to_delete = [v for v in to_sort if v.get(_DIRECTIVE) == "delete"]
        to_sort = keep

    def less(a: Any, b: Any) -> bool:
        ia = _index_in(order, a, merge_key, kind)
        if ia >= 0:
            ib = _index_in(order, b, merge_key, kind)
            if ib >= 0:
                return ia < ib
        return True

    # Insertion sort with the same (not always consistent) comparator as Go's sort.SliceStable.
    out = list(to_sort)
    for i in range(1, len(out)):
        j = i
        while j > 0 and less(out[j], out[j - 1]):
            out[j], out[j - 1] = out[j - 1], out[j]
            j -= 1
    return out + to_delete


def _merge_sorted(left: list, right: list, server_order: list, merge_key: str, kind: str) -> list:
    """Interleave server-only items (left) into patch items (right), keeping both relative orders."""
    out: list = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index_in(server_order, left[i], merge_key, kind)
            ri = _index_in(server_order, right[j], merge_key, kind)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _partition(merged: list, by: list, merge_key: str, kind: str) -> tuple[list, list]:
    in_patch: list = []
    server_only: list = []
    for v in merged:
        if kind == "map":
            if not isinstance(v, dict):
                raise _bad_arg_type("map", v)
            if merge_key not in v:
                raise _no_merge_key(v, merge_key)
            found = any(isinstance(p, dict) and _same(p.get(merge_key), v[merge_key]) for p in by)
        else:
            found = any(_same(p, v) for p in by)
        (in_patch if found else server_only).append(v)
    return in_patch, server_only


def _order(merged: list, patch_order: list, server_order: list, merge_key: str, kind: str) -> list:
    in_patch, server_only = _partition(merged, patch_order, merge_key, kind)
    in_patch = _normalize_slice_order(in_patch, patch_order, merge_key, kind)
    server_only = _normalize_slice_order(server_only, server_order, merge_key, kind)
    return _merge_sorted(server_only, in_patch, server_order, merge_key, kind)


def _find_by_key(lst: list, merge_key: str, value: Any) -> int:
    for i, v in enumerate(lst):
        if not isinstance(v, dict):
            raise _SMPError(f"value for key {i} is not a map.")
        if merge_key in v and _same(v[merge_key], value):
            return i
    return -1


def _merge_slice(original: list, patch: list, fld: Field, delete_list: bool) -> list:
    if not original and not patch:
        return original
    kind = _element_kind(original, patch)
    merge_key = fld.merge_key if kind == "map" else ""
    if kind != "map":
        if delete_list:
            return [v for v in original if not any(_same(v, d) for d in patch)]
        merged = _dedupe_scalars(original + patch)
    else:
        if not fld.merge_key:
            raise _SMPError("cannot merge lists without merge key for type struct")
        plain: list = []
        replace = False
        for item in patch:
            if _DIRECTIVE not in item:
                plain.append(item)
                continue
            directive = item[_DIRECTIVE]
            if directive == "delete":
                if merge_key not in item:
                    raise _no_merge_key(item, merge_key)
                original = [v for v in original
                            if not (isinstance(v, dict) and _same(v.get(merge_key), item[merge_key]))]
            elif directive == "replace":
                replace = True
            elif directive == "merge":
                raise _SMPError("merging lists cannot yet be specified in the patch")
            else:
                raise _SMPError(f"unknown patch type: {gofmt(directive)} in map: {gofmt(item)}")
        if replace:
            original, plain = [_clean(v)[0] for v in plain], []
        patch = plain
        merged = list(original)
        for item in patch:
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            at = _find_by_key(merged, merge_key, item[merge_key])
            if at >= 0:
                merged[at] = _merge_map(merged[at], item, fld.schema)
            else:
                merged.append(_clean(item)[0])
    return _order(merged, patch, original, merge_key, kind)


def _merge_slice_field(original: Any, patch: Any, fld: Field, delete_list: bool) -> list:
    if fld.strategy == "merge":
        return _merge_slice(original, patch, fld, delete_list)
    return _clean(patch)[0]


def _apply_retain_keys(original: dict, patch: dict) -> dict:
    keys = patch.pop(_RETAIN_KEYS)
    if not isinstance(keys, list):
        raise _SMPError(_ERR_RETAIN_KEYS, "bad")
    for k, v in patch.items():
        if v is None or k.startswith(_DELETE_PRIMITIVE) or k.startswith(_SET_ORDER):
            continue
        if not any(_same(k, x) for x in keys):
            raise _SMPError(_ERR_RETAIN_KEYS, "bad")
    return {k: v for k, v in original.items() if any(_same(k, x) for x in keys)}


def _check_set_order(patch_list: list, order: list, merge_key: str) -> None:
    if not order or not patch_list:
        return
    if merge_key:
        for v in patch_list:
            if not isinstance(v, dict):
                raise _bad_arg_type("map", v)
        items = [v for v in patch_list if v.get(_DIRECTIVE) != "delete"]
    else:
        items = patch_list
    pi = oi = 0
    while pi < len(items) and oi < len(order):
        if isinstance(items[pi], dict) and _DIRECTIVE in items[pi]:
            pi += 1
            continue
        if merge_key:
            left, right = items[pi], order[oi]
            if not isinstance(right, dict):
                raise _bad_arg_type("map", right)
            for m in (left, right):
                if merge_key not in m:
                    raise _no_merge_key(m, merge_key)
            equal = _same(left[merge_key], right[merge_key])
        else:
            equal = _same(items[pi], order[oi])
        if equal:
            pi += 1
        oi += 1
    if pi < len(items) and oi >= len(order):
        raise _SMPError(f"The order in patch list:\n{gofmt(patch_list)}\n doesn't match {_SET_ORDER} "
                        f"list:\n{gofmt(order)}\n")


def _apply_set_element_order(original: dict, patch: dict, schema: Schema) -> None:
    for key in [k for k in patch if k.startswith(_SET_ORDER)]:
        order = patch.pop(key)
        if not isinstance(order, list):
            raise _bad_arg_type("slice", order)
        name = _extract_key(key, _SET_ORDER)
        orig_list = original.get(name) if name in original else None
        patch_list = patch.get(name) if name in patch else None
        if orig_list is not None and not isinstance(orig_list, list):
            raise _bad_arg_type("slice", orig_list)
        if patch_list is not None and not isinstance(patch_list, list):
            raise _bad_arg_type("slice", patch_list)
        fld = patchmeta.lookup(schema, name)
        _check_set_order(patch_list or [], order, fld.merge_key)
        if orig_list is not None and patch_list is None:
            merged = orig_list
        elif orig_list is None and patch_list is not None:
            merged = _clean(patch_list)[0]
        elif orig_list is not None and patch_list is not None:
            merged = _merge_slice_field(orig_list, patch_list, fld, False)
        else:
            continue
        kind = _element_kind(orig_list or [], patch_list or [])
        merge_key = fld.merge_key if kind == "map" else ""
        original[name] = _order(merged, order, orig_list or [], merge_key, kind)
        patch.pop(name, None)


def _merge_map(original: dict | None, patch: dict, schema: Schema) -> dict:
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        if directive == "replace":
            return _clean({k: v for k, v in patch.items() if k != _DIRECTIVE})[0]
        if directive == "delete":
            return {}
        raise _SMPError(f"unknown patch type: {gofmt(directive)} in map: {gofmt(patch)}")
    original = {} if original is None else original
    patch = dict(patch)
    if _RETAIN_KEYS in patch:
        original = _apply_retain_keys(original, patch)
    _apply_set_element_order(original, patch, schema)
    for key, value in patch.items():
        name, delete_list = key, False
        if key.startswith(_DELETE_PRIMITIVE):
            name, delete_list = _extract_key(key, _DELETE_PRIMITIVE), True
        if value is None:
            original.pop(name, None)
            continue
        if name not in original or type(original[name]) is not type(value):
            if not delete_list:
                cleaned, keep = _clean(value)
                if keep:
                    original[name] = cleaned
                else:
                    original.pop(name, None)
            continue
        fld = patchmeta.lookup(schema, name)
        current = original[name]
        if isinstance(current, dict):
            if fld.strategy == "replace":
                original[name] = _clean(value)[0]
            else:
                original[name] = _merge_map(current, value, fld.schema)
        elif isinstance(current, list):
            original[name] = _merge_slice_field(current, value, fld, delete_list)
        else:
            original[name] = value
    return original


def strategic_supported(group: str, kind: str) -> bool:
    return patchmeta.has_metadata(group, kind)


def _smp_unsupported() -> APIError:
    return APIError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    + ", ".join(CR_PATCH_TYPES))


def apply_strategic_merge_patch(obj: dict, body: bytes, group: str, kind: str) -> dict:
    if not strategic_supported(group, kind):
        raise _smp_unsupported()
    try:
        patch = _parse_json(body)
    except ValueError as e:
        raise bad_request(str(e)) from e
    if patch is None:
        patch = {}
    if not isinstance(patch, dict):
        raise bad_request(
            f"json: cannot unmarshal {_json_kind(patch)} into Go value of type map[string]interface {{}}")
    try:
        merged = _merge_map(json_copy(obj), patch, patchmeta.schema_for(group, kind))
    except _SMPError as e:
        if e.kind == "bad":
            raise bad_request(str(e)) from e
        if e.kind == "invalid":
            raise _rejected(str(e)) from e
        raise _server_error(str(e)) from e
    return _strip_directives(merged)


# ---------------------------------------------------------------------------------------------
# Server-side apply

# Paths are tuples of path elements: ("f", name) for a field, ("k", (key, value)) for a keyed
# list item, ("v", value) for a member of a set-like list of scalars.
PathElem = tuple[str, Any]
Path = tuple[PathElem, ...]

# Never owned by anyone (the real field manager strips these before computing sets).
_STRIPPED_META = {"name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName",
                  "generation", "managedFields", "resourceVersion"}


def _hashable(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _field_set(value: Any, schema: Schema, prefix: Path, out: dict[Path, Any]) -> None:
    """Record every owned path of ``value`` (leaves and keyed list items) with its value."""
    for name, v in value.items():
        if v is None:
            continue
        if not prefix and name in ("apiVersion", "kind"):
            continue
        if prefix == (("f", "metadata"),) and name in _STRIPPED_META:
            continue
        path = (*prefix, ("f", name))
        fld = patchmeta.lookup(schema, name)
        if isinstance(v, dict) and v and fld.strategy != "replace":
            _field_set(v, fld.schema, path, out)
        elif isinstance(v, list) and fld.strategy == "merge" and v:
            for item in v:
                if isinstance(item, dict) and fld.merge_key and fld.merge_key in item:
                    ipath = (*path, ("k", (fld.merge_key, _hashable(item[fld.merge_key]))))
                    out[ipath] = item
                    _field_set(item, fld.schema, ipath, out)
                elif not isinstance(item, dict | list):
                    out[(*path, ("v", _hashable(item)))] = item
                else:
                    out[path] = v  # an item without its key: own the list whole
                    break
        else:
            out[path] = v


def _elem_to_fields_key(e: PathElem) -> str:
    tag, val = e
    if tag == "f":
        return "f:" + val
    if tag == "k":
        key, enc = val
        return "k:" + json.dumps({key: json.loads(enc)}, separators=(",", ":"))
    return "v:" + val


def _to_fields_v1(paths: set[Path]) -> dict:
    root: dict = {}
    for path in sorted(paths, key=len):
        node = root
        for e in path:
            node = node.setdefault(_elem_to_fields_key(e), {})
        if path and path[-1][0] == "k":
            node["."] = {}
    # A list item only present as a prefix still names itself with ".": add it where missing.
    _mark_items(root)
    return root


def _mark_items(node: dict) -> None:
    for k, child in node.items():
        if k.startswith("k:") and child and "." not in child:
            child["."] = {}
        if isinstance(child, dict):
            _mark_items(child)


def _from_fields_v1(node: Any, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    if not isinstance(node, dict):
        return paths
    for k, child in node.items():
        if k == ".":
            paths.add(prefix)
            continue
        tag, _, rest = k.partition(":")
        if tag == "f":
            elem: PathElem = ("f", rest)
        elif tag == "k":
            try:
                item = json.loads(rest)
            except ValueError:
                continue
            if not isinstance(item, dict) or len(item) != 1:
                continue  # multi-key items (real list-map keys) are outside this simplification
            ((key, val),) = item.items()
            elem = ("k", (key, _hashable(val)))
        elif tag == "v":
            elem = ("v", rest)
        else:
            continue
        path = (*prefix, elem)
        if isinstance(child, dict) and child:
            paths |= _from_fields_v1(child, path)
        else:
            paths.add(path)
    return paths


def _path_string(path: Path) -> str:
    out = ""
    for tag, val in path:
        if tag == "f":
            out += "." + val
        elif tag == "k":
            out += f"[{val[0]}={val[1]}]"
        else:
            out += f"[={val}]"
    return out


def _lookup_path(obj: Any, path: Path) -> tuple[bool, Any]:
    cur = obj
    for tag, val in path:
        if tag == "f":
            if not isinstance(cur, dict) or val not in cur:
                return False, None
            cur = cur[val]
        elif tag == "k":
            if not isinstance(cur, list):
                return False, None
            key, enc = val
            hit = [i for i in cur if isinstance(i, dict) and key in i and _hashable(i[key]) == enc]
            if not hit:
                return False, None
            cur = hit[0]
        else:
            if not isinstance(cur, list) or not any(_hashable(i) == val for i in cur):
                return False, None
            cur = json.loads(val)
    return True, cur


def _delete_path(obj: dict, path: Path) -> None:
    present, _ = _lookup_path(obj, path[:-1])
    if not present:
        return
    _, parent = _lookup_path(obj, path[:-1])
    tag, val = path[-1]
    if tag == "f" and isinstance(parent, dict):
        parent.pop(val, None)
    elif tag == "k" and isinstance(parent, list):
        key, enc = val
        parent[:] = [i for i in parent if not (isinstance(i, dict) and key in i and _hashable(i[key]) == enc)]
    elif tag == "v" and isinstance(parent, list):
        parent[:] = [i for i in parent if _hashable(i) != val]


def _prune_empty(obj: dict, path: Path, keep: set[Path]) -> None:
    """After a removal, drop maps/lists left empty (Go's omitempty does), up to the top level."""
    for cut in range(len(path) - 1, 1, -1):
        parent_path = path[:cut]
        if parent_path in keep:
            return
        present, value = _lookup_path(obj, parent_path)
        if not present or value not in ({}, []) or parent_path[-1][0] != "f":
            return
        _delete_path(obj, parent_path)


def _ssa_merge(live: Any, applied: Any, fld: Field) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict) and fld.strategy != "replace":
        out = dict(live)
        for name, v in applied.items():
            if v is None:
                continue
            sub = patchmeta.lookup(fld.schema, name)
            out[name] = _ssa_merge(live.get(name), v, sub) if name in live else copy.deepcopy(v)
        return out
    if isinstance(live, list) and isinstance(applied, list) and fld.strategy == "merge":
        key = fld.merge_key
        if key and all(isinstance(i, dict) and key in i for i in live + applied):
            out_list = list(live)
            for item in applied:
                at = next((n for n, i in enumerate(out_list) if _json_equal(i[key], item[key])), -1)
                if at >= 0:
                    out_list[at] = _ssa_merge(out_list[at], item, Field(schema=fld.schema))
                else:
                    out_list.append(copy.deepcopy(item))
            return out_list
        if not key and all(not isinstance(i, dict | list) for i in live + applied):
            return list(live) + [i for i in applied if not any(_json_equal(i, x) for x in live)]
    return copy.deepcopy(applied)


def _parse_apply_body(body: bytes) -> dict:
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise bad_request(
            f"error decoding YAML: error converting YAML to JSON: yaml: {where}{problem}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise bad_request("error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot "
                          f"unmarshal {_json_kind(data)} into Go value of type map[string]interface {{}}")
    # YAML timestamps and the like come back as Python objects; the wire form is JSON. A null
    # means "not applied", so nulls inside objects are dropped up front.
    return _prune_nulls(json.loads(json.dumps(data, default=str)))


def manager_label(entry: dict) -> str:
    """How the real server names a manager in conflict messages (Go's ``printManager``).

    Update managers carry the API version they wrote with, subresource writers the subresource:
    ``"kubectl-patch" using v1``, ``"kubelet" with subresource "status" using v1``.
    """
    label = json.dumps(str(entry.get("manager", "")))
    if entry.get("subresource"):
        label += f" with subresource {json.dumps(str(entry['subresource']))}"
    if entry.get("operation") == "Update":
        label += f" using {entry.get('apiVersion', '')}"
    return label


def _conflict_error(conflicts: list[tuple[str, Path]]) -> APIError:
    """409 naming every conflicting (manager, field) pair; managers sorted, as the real message is."""
    conflicts = sorted(conflicts, key=lambda c: (c[0], _path_string(c[1])))
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {m}",
               "field": _path_string(p)} for m, p in conflicts]
    if len(conflicts) == 1:
        m, p = conflicts[0]
        msg = f"Apply failed with 1 conflict: conflict with {m}: {_path_string(p)}"
    else:
        lines: list[str] = []
        for m in sorted({m for m, _ in conflicts}):
            lines.append(f"conflicts with {m}:")
            lines.extend(f"- {_path_string(p)}" for mm, p in conflicts if mm == m)
        msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return APIError(409, "Conflict", msg, details={"causes": causes})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_server_side(obj: dict | None, body: bytes, group: str, kind: str, manager: str, force: bool,
                      *, version: str | None = None, now: str | None = None) -> dict:
    """Apply a configuration (``PATCH`` with ``application/apply-patch+yaml``) for ``manager``.

    ``version``, when given, is the version served at the URL; the applied apiVersion must match
    it, as the real field manager requires. ``now`` fixes the managedFields timestamp (tests).
    """
    if not manager:
        raise invalid("meta.k8s.io", "PatchOptions", "", [
            Cause("FieldValueRequired", "Required value: is required for apply patch", "fieldManager")])
    applied = _parse_apply_body(body)
    api_version = applied.get("apiVersion") if isinstance(applied.get("apiVersion"), str) else ""
    expected = (f"{group}/{version}" if group else version) if version else None
    if expected is not None and api_version != expected:
        raise bad_request("Incorrect version specified in apply patch. Specified patch version: "
                          f"{api_version}, expected: {expected}")
    if expected is None and api_version.rpartition("/")[0] != group:
        raise bad_request(f"Incorrect version specified in apply patch. Specified patch version: "
                          f"{api_version}, expected group: {group or 'core'}")
    meta = applied.get("metadata")
    if isinstance(meta, dict) and meta.get("managedFields") is not None:
        raise bad_request("metadata.managedFields must be nil")

    schema = patchmeta.schema_for(group, kind)
    applied_fields: dict[Path, Any] = {}
    _field_set(applied, schema, (), applied_fields)
    new_set = set(applied_fields)

    live = json_copy(obj) if obj is not None else {}
    entries = [e for e in (live.get("metadata") or {}).get("managedFields") or [] if isinstance(e, dict)]
    mine = [e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"
            and not e.get("subresource")]
    others = [e for e in entries if e not in mine]
    old_set: set[Path] = set()
    for e in mine:
        old_set |= _from_fields_v1(e.get("fieldsV1"))
    other_sets = [(e, _from_fields_v1(e.get("fieldsV1"))) for e in others]

    conflicts: list[tuple[str, Path]] = []
    for path, value in applied_fields.items():
        if path[-1][0] != "f":
            continue  # owning a list item or set member is about presence, which cannot differ
        present, current = _lookup_path(live, path)
        if not present or _json_equal(current, value):
            continue
        for e, owned in other_sets:
            if path in owned:
                conflicts.append((manager_label(e), path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    if force:
        # Forcing takes the conflicting fields away from their previous owners.
        taken = {p for _, p in conflicts}
        other_sets = [(e, owned - taken) for e, owned in other_sets]

    merged = _ssa_merge(live, applied, Field(schema=schema))
    owned_by_others: set[Path] = set().union(*(s for _, s in other_sets)) if other_sets else set()
    still_owned = new_set | owned_by_others
    for path in sorted(old_set - still_owned, key=len):
        if any(len(p) > len(path) and p[:len(path)] == path for p in still_owned):
            continue  # someone still owns a field inside it, so the container stays
        _delete_path(merged, path)
        _prune_empty(merged, path, still_owned)

    stamp = now or _now()
    new_entries: list[dict] = []
    for e, owned in other_sets:
        if owned:
            e = dict(e)
            e["fieldsV1"] = _to_fields_v1(owned) if owned != _from_fields_v1(e.get("fieldsV1")) else e.get(
                "fieldsV1")
            new_entries.append(e)
    if new_set:
        new_entries.append({"manager": manager, "operation": "Apply", "apiVersion": api_version,
                            "time": stamp, "fieldsType": "FieldsV1", "fieldsV1": _to_fields_v1(new_set)})
    metadata = merged.setdefault("metadata", {})
    if new_entries:
        metadata["managedFields"] = _sort_entries(new_entries)
    else:
        metadata.pop("managedFields", None)
    return merged


# ---------------------------------------------------------------------------------------------
# Field ownership of the other writes (create, update, non-apply patches): "Update" entries


def manager_from_user_agent(user_agent: str) -> str:
    """The manager of a write without ``fieldManager``: the User-Agent up to its first "/" (at
    most 128 characters), as kube-apiserver names it ("kubectl", "OpenAPI-Generator", "helm")."""
    return user_agent.split("/", 1)[0][:128]


def _sort_entries(entries: list[dict]) -> list[dict]:
    # The real encoder's order: Apply before Update, then oldest first, then manager, version, subresource.
    return sorted(entries, key=lambda e: (str(e.get("operation", "")), str(e.get("time", "")),
                                          str(e.get("manager", "")), str(e.get("apiVersion", "")),
                                          str(e.get("subresource", ""))))


def _tracked_fields(obj: dict | None, schema: Schema, subresource: str, has_status: bool) -> dict[Path, Any]:
    """The fields a write may own: a status write owns only status, a scale write the replicas, a
    main-resource write of a kind with a status subresource never owns status (the real
    strategies' reset fields)."""
    out: dict[Path, Any] = {}
    if obj is None:
        return out
    if subresource == "status":
        view = {"status": obj["status"]} if obj.get("status") is not None else {}
    elif subresource == "scale":
        replicas = (obj.get("spec") or {}).get("replicas")
        view = {"spec": {"replicas": replicas}} if replicas is not None else {}
    elif subresource:
        return out
    elif has_status:
        view = {k: v for k, v in obj.items() if k != "status"}
    else:
        view = obj
    _field_set(view, schema, (), out)
    return out


def _identity(e: dict) -> tuple[str, str, str, str]:
    # The real manager identifier: Apply entries are one manager whatever version they applied.
    op = str(e.get("operation", ""))
    return (str(e.get("manager", "")), op, "" if op == "Apply" else str(e.get("apiVersion", "")),
            str(e.get("subresource", "")))


def track_update(old: dict | None, new: dict, manager: str, *, group: str, kind: str, api_version: str,
                 subresource: str = "", has_status: bool = False, record_subresource: bool = True,
                 now: str | None = None) -> None:
    """Record in ``new``'s managedFields what a create/update/patch by ``manager`` changed.

    As the real field manager: managedFields sent in the request replace the stored ones (omitted
    or ``[]``: keep them; ``[{}]``: clear them); the writer takes every field it added or changed
    away from the other managers (updates never conflict), fields it removed leave every set, and
    its own "Update" entry (one per manager, API version and subresource) grows by what it changed.
    """
    meta = new.setdefault("metadata", {})
    incoming = meta.get("managedFields")
    if not incoming:
        # entries are never changed in place (a changed one is a new dict), so a shallow copy will do
        entries = [dict(e) for e in ((old or {}).get("metadata") or {}).get("managedFields") or []
                   if isinstance(e, dict)]
    elif incoming == [{}]:
        entries = []
    else:
        entries = [e for e in incoming if isinstance(e, dict)]
    if manager:
        schema = patchmeta.schema_for(group, kind)
        before = _tracked_fields(old, schema, subresource, has_status)
        after = _tracked_fields(new, schema, subresource, has_status)
        removed = set(before) - set(after)
        changed = set(after) - set(before)
        changed |= {p for p in set(after) & set(before)
                    if p[-1][0] == "f" and not _json_equal(after[p], before[p])}
        me = (manager, "Update", api_version, subresource if record_subresource else "")
        mine: set[Path] = set()
        previous: dict | None = None
        kept: list[dict] = []
        for e in entries:
            if _identity(e) == me:
                previous = e
                mine = _from_fields_v1(e.get("fieldsV1"))
                continue
            if not (changed or removed):
                kept.append(e)
                continue
            owned = _from_fields_v1(e.get("fieldsV1"))
            left = owned - changed - removed
            if left == owned:
                kept.append(e)
            elif left:
                kept.append({**e, "fieldsV1": _to_fields_v1(left)})
        mine = (mine - removed) | changed
        if mine:
            entry: dict[str, Any] = {"manager": manager, "operation": "Update", "apiVersion": api_version,
                                     "time": (now or _now()) if changed or previous is None
                                     else previous.get("time", now or _now()),
                                     "fieldsType": "FieldsV1", "fieldsV1": _to_fields_v1(mine)}
            if subresource and record_subresource:
                entry["subresource"] = subresource
            kept.append(entry)
        entries = kept
    if entries:
        meta["managedFields"] = _sort_entries(entries)
    else:
        meta.pop("managedFields", None)
