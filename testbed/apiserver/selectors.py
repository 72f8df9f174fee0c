"""Label and field selectors, parsed and matched as the real apiserver does.

Label selectors follow the grammar, lexer and error texts of apimachinery's ``labels.Parse`` (keys
and values validated, requirements sorted by key). Field selectors follow ``fields.ParseSelector``
(``=``, ``==``, ``!=``, backslash escapes) plus the per-kind field label conversion the apiserver
runs on every term: a label the kind does not register is a 400 with that kind's own message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from testbed.apiserver.errors import bad_request

# ---------------------------------------------------------------------------------------------
# name and value rules shared with validation.py


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"

_DNS1123_LABEL_RE = re.compile(f"^{DNS1123_LABEL_FMT}$")
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{DNS1123_SUBDOMAIN_FMT}$")
_DNS1035_LABEL_RE = re.compile(f"^{DNS1035_LABEL_FMT}$")
_QUALIFIED_NAME_RE = re.compile(f"^{QUALIFIED_NAME_FMT}$")
_LABEL_VALUE_RE = re.compile(f"^{LABEL_VALUE_FMT}$")

_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)


def _full(rx: re.Pattern[str], value: str) -> bool:
    # Go's regexp `$` has no trailing-newline leniency, so insist on a full match
    return rx.fullmatch(value) is not None


# The minor whose wording a request is answered in (the apiserver sets it per request): a few
# apimachinery messages changed between releases, checked in each release's k8s.io/apimachinery.
WORDING_MINOR: ContextVar[int] = ContextVar("WORDING_MINOR", default=99)


def _dns_word() -> str:
    """"a DNS-1123 ..." up to 1.19 (apimachinery v0.19), "a lowercase RFC 1123 ..." from 1.20."""
    return "a DNS-1123" if WORDING_MINOR.get() < 20 else "a lowercase RFC 1123"


def is_dns1123_label(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append(max_len_error(63))
    if not _full(_DNS1123_LABEL_RE, value):
        if _full(_DNS1123_SUBDOMAIN_RE, value):
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(
                f"{_dns_word()} label must consist of lower case alphanumeric characters or '-', "
                "and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 253:
        errs.append(max_len_error(253))
    if not _full(_DNS1123_SUBDOMAIN_RE, value):
        errs.append(_regex_error(
            f"{_dns_word()} subdomain must consist of lower case alphanumeric characters, '-' or "
            "'.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append(max_len_error(63))
    if not _full(_DNS1035_LABEL_RE, value):
        errs.append(_regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys, finalizers, resource names (``[prefix/]name``)."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + max_len_error(63))
    if not _full(_QUALIFIED_NAME_RE, name):
        errs.append("name part " + _regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT,
                                                 "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append(max_len_error(63))
    if not _full(_LABEL_VALUE_RE, value):
        errs.append(_regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
            "'.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def go_quote(value: str) -> str:
    """Go's %q for the strings the API carries (printable text, common escapes)."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# label selectors

IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GT, LT = "exists", "!", "gt", "lt"
_BINARY_OPS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GT, LT)
_ALL_OPS = (*_BINARY_OPS, EXISTS, DOES_NOT_EXIST)


def _invalid_text(path: str, value: Any, detail: str) -> str:
    shown = go_quote(value) if isinstance(value, str) else _go_value(value)
    return f"{path}: Invalid value: {shown}: {detail}"


def _go_value(value: Any) -> str:
    if isinstance(value, list):
        return "[]string{" + ", ".join(go_quote(v) for v in value) + "}"
    return str(value)


def _aggregate(msgs: list[str]) -> str:
    unique = list(dict.fromkeys(msgs))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        if op in (GT, LT):
            if self.key not in labels or len(self.values) != 1:
                return False
            try:
                have, want = _parse_int64(labels[self.key]), _parse_int64(self.values[0])
            except ValueError:
                return False
            return have > want if op == GT else have < want
        return False

    def __str__(self) -> str:
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        if self.operator == EXISTS:
            return self.key
        vals = ",".join(sorted(self.values))
        if self.operator in (IN, NOT_IN):
            return f"{self.key} {self.operator} ({vals})"
        sym = {GT: ">", LT: "<"}.get(self.operator, self.operator)
        return f"{self.key}{sym}{vals}"


_INT64_RE = re.compile(r"[+-]?[0-9]+")


def _parse_int64(text: str) -> int:
    if not _INT64_RE.fullmatch(text):
        raise ValueError(text)
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(text)
    return value


def new_requirement(key: str, operator: str, values: list[str], *, path: str = "") -> Requirement:
    """Build a validated requirement; ValueError carries the real aggregate error text."""
    errs: list[str] = []
    key_path = f"{path}.key" if path else "key"
    values_path = f"{path}.values" if path else "values"
    key_errs = is_qualified_name(key)
    if key_errs:
        errs.append(_invalid_text(key_path, key, "; ".join(key_errs)))
    bad = ""
    if operator in (IN, NOT_IN):
        bad = "" if values else "for 'in', 'notin' operators, values set can't be empty"
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        bad = "" if len(values) == 1 else "exact-match compatibility requires one single value"
    elif operator in (EXISTS, DOES_NOT_EXIST):
        bad = "values set must be empty for exists and does not exist" if values else ""
    elif operator in (GT, LT):
        bad = "" if len(values) == 1 else "for 'Gt', 'Lt' operators, exactly one value is required"
    if bad:
        errs.append(_invalid_text(values_path, values, bad))
    if operator in (GT, LT):
        for i, v in enumerate(values):
            try:
                _parse_int64(v)
            except ValueError:
                errs.append(_invalid_text(f"{values_path}[{i}]", v,
                                          "for 'Gt', 'Lt' operators, the value must be an integer"))
    elif operator not in _ALL_OPS:
        supported = ", ".join(go_quote(o) for o in _ALL_OPS)
        op_path = f"{path}.operator" if path else "operator"
        errs.append(f"{op_path}: Unsupported value: {go_quote(operator)}: supported values: {supported}")
    for i, v in enumerate(values):
        val_errs = is_label_value(v)
        if val_errs:
            errs.append(_invalid_text(f"{values_path}[{i}][{key}]", v, "; ".join(val_errs)))
    if errs:
        raise ValueError(_aggregate(errs))
    return Requirement(key, operator, tuple(values))


class LabelSelector:
    """A parsed, immutable label selector (AND of requirements). ``nothing`` matches no labels."""

    __slots__ = ("_nothing", "requirements")

    def __init__(self, requirements: tuple[Requirement, ...] = (), *, nothing: bool = False) -> None:
        self.requirements = tuple(sorted(requirements, key=lambda r: r.key))
        self._nothing = nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self._nothing:
            return False
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)

    def empty(self) -> bool:
        return not self._nothing and not self.requirements

    def matches_nothing(self) -> bool:
        return self._nothing

    def requires_exact_match(self, key: str) -> str | None:
        for r in self.requirements:
            if r.key == key:
                if r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                    return r.values[0]
                return None
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "LabelSelector(<nothing>)" if self._nothing else f"LabelSelector({str(self)!r})"


EVERYTHING = LabelSelector()
NOTHING = LabelSelector(nothing=True)

# lexer tokens
_T_ERROR, _T_END, _T_CLOSE, _T_COMMA, _T_NOT, _T_DEQ, _T_EQ, _T_GT = range(8)
_T_ID, _T_IN, _T_LT, _T_NEQ, _T_NOTIN, _T_OPEN = range(8, 14)
_STRING_TO_TOKEN = {")": _T_CLOSE, ",": _T_COMMA, "!": _T_NOT, "==": _T_DEQ, "=": _T_EQ, ">": _T_GT,
                    "in": _T_IN, "<": _T_LT, "!=": _T_NEQ, "notin": _T_NOTIN, "(": _T_OPEN}
_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")


def _lex(text: str) -> list[tuple[int, str]]:
    items: list[tuple[int, str]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= end:
            items.append((_T_END, ""))
            return items
        if text[pos] in _SPECIAL:
            buf, last = "", None
            while pos < end and text[pos] in _SPECIAL:
                buf += text[pos]
                if buf in _STRING_TO_TOKEN:
                    last = (_STRING_TO_TOKEN[buf], buf)
                    pos += 1
                elif last is not None:
                    break
                else:
                    pos += 1
            items.append(last if last is not None else (_T_ERROR, f"error expected: keyword found '{buf}'"))
        else:
            start = pos
            while pos < end and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
                pos += 1
            word = text[start:pos]
            items.append((_STRING_TO_TOKEN.get(word, _T_ID), word))


class _SelectorParseError(Exception):
    pass


class _Parser:
    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.pos = 0

    def _get(self, values_ctx: bool, advance: bool) -> tuple[int, str]:
        tok, lit = self.items[self.pos]
        if advance:
            self.pos += 1
        if values_ctx and tok in (_T_IN, _T_NOTIN):
            tok = _T_ID
        return tok, lit

    def lookahead(self, values_ctx: bool = True) -> tuple[int, str]:
        return self._get(values_ctx, False)

    def consume(self, values_ctx: bool = True) -> tuple[int, str]:
        return self._get(values_ctx, True)

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead()
            if tok in (_T_ID, _T_NOT):
                try:
                    reqs.append(self.requirement())
                except ValueError as e:
                    raise _SelectorParseError(f"unable to parse requirement: {e}") from None
                t, lit2 = self.consume()
                if t == _T_END:
                    return reqs
                if t == _T_COMMA:
                    t2, l2 = self.lookahead()
                    if t2 not in (_T_ID, _T_NOT):
                        raise _SelectorParseError(f"found '{l2}', expected: identifier after ','")
                else:
                    raise _SelectorParseError(f"found '{lit2}', expected: ',' or 'end of string'")
            elif tok == _T_END:
                return reqs
            else:
                raise _SelectorParseError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        key, op = self.key_and_operator()
        if op in (EXISTS, DOES_NOT_EXIST):
            return new_requirement(key, op, [])
        op = self.operator()
        values = self.set_values() if op in (IN, NOT_IN) else self.exact_value()
        return new_requirement(key, op, sorted(values))

    def key_and_operator(self) -> tuple[str, str]:
        op = ""
        tok, lit = self.consume()
        if tok == _T_NOT:
            op = DOES_NOT_EXIST
            tok, lit = self.consume()
        if tok != _T_ID:
            raise ValueError(f"found '{lit}', expected: identifier")
        errs = is_qualified_name(lit)
        if errs:
            raise ValueError(_invalid_text("<nil>", lit, "; ".join(errs)))
        t, _ = self.lookahead()
        if t in (_T_END, _T_COMMA) and op != DOES_NOT_EXIST:
            op = EXISTS
        return lit, op

    def operator(self) -> str:
        tok, lit = self.consume(values_ctx=False)
        ops = {_T_IN: IN, _T_EQ: EQUALS, _T_DEQ: DOUBLE_EQUALS, _T_GT: GT, _T_LT: LT,
               _T_NOTIN: NOT_IN, _T_NEQ: NOT_EQUALS}
        if tok not in ops:
            if WORDING_MINOR.get() < 22:  # apimachinery up to v0.21 listed them by hand
                raise ValueError(f"found '{lit}', expected: '=', '!=', '==', 'in', notin'")
            raise ValueError(f"found '{lit}', expected: {', '.join(_BINARY_OPS)}")
        return ops[tok]

    def set_values(self) -> set[str]:
        tok, lit = self.consume()
        if tok != _T_OPEN:
            raise ValueError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead()
        if tok in (_T_ID, _T_COMMA):
            values = self.identifiers()
            if self.consume()[0] != _T_CLOSE:
                raise ValueError(f"found '{lit}', expected: ')'")
            return values
        if tok == _T_CLOSE:
            self.consume()
            return {""}
        raise ValueError(f"found '{lit}', expected: ',', ')' or identifier")

    def identifiers(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self.consume()
            if tok == _T_ID:
                values.add(lit)
                t2, l2 = self.lookahead()
                if t2 == _T_COMMA:
                    continue
                if t2 == _T_CLOSE:
                    return values
                raise ValueError(f"found '{l2}', expected: ',' or ')'")
            if tok == _T_COMMA:
                if not values:
                    values.add("")
                t2, _ = self.lookahead()
                if t2 == _T_CLOSE:
                    values.add("")
                    return values
                if t2 == _T_COMMA:
                    values.add("")
            else:
                raise ValueError(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        tok, _ = self.lookahead()
        if tok in (_T_END, _T_COMMA):
            return {""}
        tok, lit = self.consume()
        if tok == _T_ID:
            return {lit}
        raise ValueError(f"found '{lit}', expected: identifier")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the ``labelSelector`` query string; APIError 400 with the real message when invalid."""
    try:
        return LabelSelector(tuple(_Parser(text or "").parse()))
    except _SelectorParseError as e:
        raise bad_request(str(e)) from None


_OBJECT_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def label_selector_from_object(sel: Mapping[str, Any] | None, *, nil_matches: bool = False) -> LabelSelector:
    """Convert a ``metav1.LabelSelector``: ``{}`` selects everything, ``None`` nothing (unless told)."""
    if sel is None:
        return EVERYTHING if nil_matches else NOTHING
    match_labels = sel.get("matchLabels") or {}
    exprs = sel.get("matchExpressions") or []
    if not match_labels and not exprs:
        return EVERYTHING
    reqs: list[Requirement] = []
    try:
        for k, v in match_labels.items():
            reqs.append(new_requirement(k, EQUALS, [v]))
        for expr in exprs:
            op = _OBJECT_OPERATORS.get(expr.get("operator", ""))
            if op is None:
                shown = go_quote(expr.get("operator", ""))
                raise ValueError(f"{shown} is not a valid label selector operator")
            reqs.append(new_requirement(expr.get("key", ""), op, list(expr.get("values") or [])))
    except ValueError as e:
        raise bad_request(str(e)) from None
    return LabelSelector(tuple(reqs))


# ---------------------------------------------------------------------------------------------
# field selectors


def _path(obj: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _b(value: Any) -> str:
    return "true" if value is True else "false"


def _i(value: Any) -> str:
    return str(int(value)) if isinstance(value, int) and not isinstance(value, bool) else "0"


def _pod_ip(obj: Mapping[str, Any]) -> str:
    ips = _path(obj, "status.podIPs") or []
    if ips and isinstance(ips[0], Mapping) and ips[0].get("ip"):
        return str(ips[0]["ip"])
    return _s(_path(obj, "status.podIP"))


def _event_ref(obj: Mapping[str, Any], field: str) -> str:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return _s(ref.get(field))


def _event_reporting(obj: Mapping[str, Any]) -> str:
    return _s(obj.get("reportingComponent") or obj.get("reportingController"))


def _event_source(obj: Mapping[str, Any]) -> str:
    src = obj.get("source") or obj.get("deprecatedSource") or {}
    return _s(src.get("component")) or _event_reporting(obj)


Getter = Callable[[Mapping[str, Any]], str]

_POD_FIELDS: dict[str, Getter] = {
    "spec.nodeName": lambda o: _s(_path(o, "spec.nodeName")),
    "spec.restartPolicy": lambda o: _s(_path(o, "spec.restartPolicy")),
    "spec.schedulerName": lambda o: _s(_path(o, "spec.schedulerName")),
    "spec.serviceAccountName": lambda o: _s(_path(o, "spec.serviceAccountName")),
    "spec.hostNetwork": lambda o: _b(_path(o, "spec.hostNetwork")),
    "status.phase": lambda o: _s(_path(o, "status.phase")),
    "status.podIP": _pod_ip,
    # accepted by the conversion but never set by the real field set, so it reads ""
    "status.podIPs": lambda o: "",
    "status.nominatedNodeName": lambda o: _s(_path(o, "status.nominatedNodeName")),
}

def _ref_getter(field: str) -> Getter:
    return lambda o: _event_ref(o, field)


_EVENT_FIELDS: dict[str, Getter] = {
    **{f"involvedObject.{f}": _ref_getter(f)
       for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
    "reason": lambda o: _s(o.get("reason")),
    "reportingComponent": _event_reporting,
    "source": _event_source,
    "type": lambda o: _s(o.get("type")),
}


@dataclass(frozen=True)
class _KindFields:
    namespaced: bool
    fields: dict[str, Getter]
    aliases: dict[str, str]
    reject: Callable[[str], str]


def _not_supported(label: str) -> str:
    return f"field label not supported: {label}"


def _default_reject(label: str) -> str:
    return f'{go_quote(label)} is not a known field selector: only "metadata.name", "metadata.namespace"'


# Kinds with a registered field label conversion; everything else (apps, rbac, CRDs, ...) only
# knows metadata.name and metadata.namespace, as with the real scheme's default conversion.
_KINDS: dict[tuple[str, str], _KindFields] = {
    ("", "pods"): _KindFields(True, _POD_FIELDS, {"spec.host": "spec.nodeName"}, _not_supported),
    ("", "nodes"): _KindFields(
        False, {"spec.unschedulable": lambda o: _b(_path(o, "spec.unschedulable"))}, {}, _not_supported),
    ("", "namespaces"): _KindFields(
        False, {"status.phase": lambda o: _s(_path(o, "status.phase"))}, {}, _not_supported),
    ("", "secrets"): _KindFields(True, {"type": lambda o: _s(o.get("type"))}, {}, _not_supported),
    ("", "services"): _KindFields(True, {
        "spec.clusterIP": lambda o: _s(_path(o, "spec.clusterIP")),
        "spec.type": lambda o: _s(_path(o, "spec.type")),
    }, {}, _not_supported),
    ("", "replicationcontrollers"): _KindFields(
        True, {"status.replicas": lambda o: _i(_path(o, "status.replicas"))}, {}, _not_supported),
    ("", "events"): _KindFields(True, _EVENT_FIELDS, {}, _not_supported),
    ("events.k8s.io", "events"): _KindFields(True, _EVENT_FIELDS, {
        **{f"regarding.{f}": f"involvedObject.{f}"
           for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reportingController": "reportingComponent",
    }, _not_supported),
    ("batch", "jobs"): _KindFields(
        True, {"status.successful": lambda o: _i(_path(o, "status.succeeded"))}, {},
        lambda label: f"field label {go_quote(label)} not supported for Job"),
    ("certificates.k8s.io", "certificatesigningrequests"): _KindFields(
        False, {"spec.signerName": lambda o: _s(_path(o, "spec.signerName"))}, {}, _not_supported),
}

# events.k8s.io accepts its own spellings, not the core involvedObject.* / reportingComponent ones
_EVENTS_GROUP_ACCEPTED = frozenset(
    {"reason", "source", "type", "reportingController"}
    | {f"regarding.{f}" for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion",
                                  "fieldPath")})

_META_FIELDS: dict[str, Getter] = {
    "metadata.name": lambda o: _s(_path(o, "metadata.name")),
    "metadata.namespace": lambda o: _s(_path(o, "metadata.namespace")),
}


def _convert_label(group: str, plural: str, label: str) -> str:
    kind = _KINDS.get((group, plural))
    if kind is None:
        if label in _META_FIELDS:
            return label
        raise bad_request(_default_reject(label))
    if label == "metadata.name" or (label == "metadata.namespace" and kind.namespaced):
        return label
    if (group, plural) == ("events.k8s.io", "events"):
        if label not in _EVENTS_GROUP_ACCEPTED:
            raise bad_request(kind.reject(label))
        return kind.aliases.get(label, label)
    if label in kind.aliases:
        return kind.aliases[label]
    if label in kind.fields:
        return label
    raise bad_request(kind.reject(label))


@dataclass(frozen=True)
class FieldTerm:
    field: str
    op: str  # "=" (also for "==") or "!="
    value: str


class FieldSelector:
    """A parsed field selector bound to one resource's field set."""

    __slots__ = ("_getters", "terms")

    def __init__(self, terms: tuple[FieldTerm, ...], getters: Mapping[str, Getter]) -> None:
        self.terms = terms
        self._getters = dict(getters)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for t in self.terms:
            getter = self._getters.get(t.field)
            have = getter(obj) if getter else ""
            if (have == t.value) != (t.op == "="):
                return False
        return True

    def empty(self) -> bool:
        return not self.terms

    def requirement_for(self, field: str) -> str | None:
        for t in self.terms:
            if t.field == field and t.op == "=":
                return t.value
        return None

    def __str__(self) -> str:
        return ",".join(f"{t.field}{t.op}{t.value}" for t in self.terms)


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    start, in_slash = 0, False
    for i, ch in enumerate(text):
        if in_slash:
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def _unescape(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out: list[str] = []
    in_slash = False
    for ch in value:
        if in_slash:
            if ch not in "\\,=":
                raise bad_request(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            # the real error prints the rune with %v, i.e. as its code point
            raise bad_request(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if in_slash:
        raise bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str, group: str, plural: str) -> FieldSelector:
    """Parse the ``fieldSelector`` query string for one resource; APIError 400 when invalid."""
    parts = sorted(_split_terms(text)) if text else []
    raw: list[tuple[str, str, str]] = []
    for part in parts:
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        lhs, op, rhs = split
        raw.append((lhs, "!=" if op == "!=" else "=", _unescape(rhs)))
    terms = tuple(FieldTerm(_convert_label(group, plural, f), op, v) for f, op, v in raw)
    kind = _KINDS.get((group, plural))
    getters = dict(_META_FIELDS)
    if kind is not None:
        getters.update(kind.fields)
    return FieldSelector(terms, getters)


def object_fields(group: str, plural: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The selectable field set of an object (what a field selector is matched against)."""
    kind = _KINDS.get((group, plural))
    out = {k: g(obj) for k, g in _META_FIELDS.items()}
    if kind is not None:
        if not kind.namespaced:
            out.pop("metadata.namespace")
        out.update({k: g(obj) for k, g in kind.fields.items()})
    return out
