"""Object validation with the real apiserver's field paths and messages.

``validate_object`` returns the causes; the caller raises ``errors.invalid(...)`` with them. It
works on the wire (v1 JSON) form and expects defaulting to have been done by the caller where the
real server defaults before validating (missing enum fields are treated as their defaults here).
Messages follow the 1.2x-1.31 releases where later releases reworded them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from testbed.apiserver.errors import APIError, Cause, bad_request
from testbed.apiserver.selectors import (
    LabelSelector,
    go_quote,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
    label_selector_from_object,
)
from testbed.k8s.quantity import Quantity

Obj = Mapping[str, Any]

FIELD_IMMUTABLE = "field is immutable"
IS_NEGATIVE = "must be greater than or equal to 0"
NOT_INTEGER = "must be an integer"
TOTAL_ANNOTATION_SIZE = 256 * 1024
MAX_SECRET_SIZE = 1024 * 1024
MAX_INT32 = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# cause builders (Go's field.Error rendering)


class _Raw(str):
    """A value already rendered the way Go prints it (shown without quotes)."""


def go_value(value: Any) -> str:
    """Render a bad value the way field.Error does (%q, %v or %#v)."""
    if isinstance(value, _Raw):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        if all(isinstance(v, str) for v in value.values()):
            inner = ", ".join(f"{go_quote(k)}:{go_quote(v)}" for k, v in sorted(value.items()))
            return "map[string]string{" + inner + "}"
        return str(dict(value))
    if isinstance(value, list | tuple):
        if all(isinstance(v, str) for v in value):
            return "[]string{" + ", ".join(go_quote(v) for v in value) + "}"
        return str(list(value))
    return str(value)


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", f"Invalid value: {go_value(value)}: {detail}", path)


def required(path: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", "Required value" + (f": {detail}" if detail else ""), path)


def forbidden(path: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", "Forbidden" + (f": {detail}" if detail else ""), path)


def not_supported(path: str, value: Any, supported: list[str]) -> Cause:
    opts = ", ".join(go_quote(s) for s in supported)
    msg = f"Unsupported value: {go_value(value)}: supported values: {opts}"
    return Cause("FieldValueNotSupported", msg, path)


def duplicate(path: str, value: Any) -> Cause:
    return Cause("FieldValueDuplicate", f"Duplicate value: {go_value(value)}", path)


def not_found(path: str, value: Any) -> Cause:
    return Cause("FieldValueNotFound", f"Not found: {go_value(value)}", path)


def too_long(path: str, max_bytes: int) -> Cause:
    return Cause("FieldValueTooLong", f"Too long: must have at most {max_bytes} bytes", path)


def _each(path: str, value: str, msgs: list[str]) -> list[Cause]:
    return [invalid(path, value, m) for m in msgs]


# ---------------------------------------------------------------------------------------------
# names


def _mask_trailing_dash(name: str) -> str:
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def name_is_path_segment(name: str, prefix: bool) -> list[str]:
    if not prefix and name in (".", ".."):
        return [f"may not be '{name}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in name]


def name_any(name: str, prefix: bool) -> list[str]:
    """No format at all: PodDisruptionBudgets (their validation skips the object meta) and Events
    written through core/v1 or events.k8s.io/v1beta1 (legacy event validation) take any name."""
    return []


NameFn = Callable[[str, bool], list[str]]

_NAME_RULES: dict[tuple[str, str], NameFn] = {
    ("", "Namespace"): name_is_dns_label,
    ("", "Service"): name_is_dns1035_label,
    ("rbac.authorization.k8s.io", "Role"): name_is_path_segment,
    ("rbac.authorization.k8s.io", "ClusterRole"): name_is_path_segment,
    ("rbac.authorization.k8s.io", "RoleBinding"): name_is_path_segment,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): name_is_path_segment,
    ("policy", "PodDisruptionBudget"): name_any,
}


def name_rule(group: str, kind: str) -> NameFn:
    return _NAME_RULES.get((group, kind), name_is_dns_subdomain)


# ---------------------------------------------------------------------------------------------
# metadata


def validate_labels(labels: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    for k, v in (labels or {}).items():
        out += _each(path, k, is_qualified_name(k))
        out += _each(path, str(v), is_label_value(str(v)))
    return out


def validate_annotations(annotations: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    total = 0
    for k, v in (annotations or {}).items():
        # annotation keys are qualified names, case-insensitively
        out += _each(path, k, is_qualified_name(k.lower()))
        total += len(k.encode()) + len(str(v).encode())
    if total > TOTAL_ANNOTATION_SIZE:
        out.append(too_long(path, TOTAL_ANNOTATION_SIZE))
    return out


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def validate_object_meta(obj: Obj, *, namespaced: bool, name_fn: NameFn,
                         path: str = "metadata") -> list[Cause]:
    meta = _meta(obj)
    out: list[Cause] = []
    name, gen = meta.get("name") or "", meta.get("generateName") or ""
    if gen:
        out += _each(f"{path}.generateName", gen, name_fn(gen, True))
    if not name:
        if not gen:
            out.append(required(f"{path}.name", "name or generateName is required"))
    else:
        out += _each(f"{path}.name", name, name_fn(name, False))
    ns = meta.get("namespace") or ""
    if namespaced:
        if not ns:
            out.append(required(f"{path}.namespace"))
        else:
            out += _each(f"{path}.namespace", ns, is_dns1123_label(ns))
    elif ns:
        out.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    generation = meta.get("generation")
    if isinstance(generation, int) and generation < 0:
        out.append(invalid(f"{path}.generation", generation, IS_NEGATIVE))
    out += validate_labels(meta.get("labels"), f"{path}.labels")
    out += validate_annotations(meta.get("annotations"), f"{path}.annotations")
    for f in meta.get("finalizers") or []:
        out += _each(f"{path}.finalizers", f, is_qualified_name(f))
    return out


def _go_time(value: Any) -> Any:
    """metav1.Time prints through its String(): '2006-01-02 15:04:05 +0000 UTC'."""
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return _Raw(t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"))
    return value


def _immutable(path: str, new: Any, old: Any) -> list[Cause]:
    if _normalize(new) == _normalize(old):
        return []
    return [invalid(path, new, FIELD_IMMUTABLE)]


def validate_object_meta_update(obj: Obj, old: Obj, path: str = "metadata") -> list[Cause]:
    new_m, old_m = _meta(obj), _meta(old)
    out: list[Cause] = []
    if old_m.get("deletionTimestamp"):
        extra = sorted(set(new_m.get("finalizers") or []) - set(old_m.get("finalizers") or []))
        if extra:
            shown = "[]string{" + ", ".join(go_quote(f) for f in extra) + "}"
            out.append(forbidden(f"{path}.finalizers", "no new finalizers can be added if the object is "
                                 f"being deleted, found new finalizers {shown}"))
    for f in ("name", "namespace", "uid"):
        out += _immutable(f"{path}.{f}", new_m.get(f) or "", old_m.get(f) or "")
    for f in ("creationTimestamp", "deletionTimestamp"):
        if _normalize(new_m.get(f)) != _normalize(old_m.get(f)):
            out += _immutable(f"{path}.{f}", _go_time(new_m.get(f)), old_m.get(f))
    if new_m.get("deletionGracePeriodSeconds") != old_m.get("deletionGracePeriodSeconds"):
        out.append(invalid(f"{path}.deletionGracePeriodSeconds", new_m.get("deletionGracePeriodSeconds"),
                           FIELD_IMMUTABLE))
    out += validate_labels(new_m.get("labels"), f"{path}.labels")
    out += validate_annotations(new_m.get("annotations"), f"{path}.annotations")
    return out


def ensure_namespace(obj: dict[str, Any], request_namespace: str, *, namespaced: bool) -> None:
    """Reconcile metadata.namespace with the request, as the real create/update path does first.

    Unset takes the request's namespace; cluster-scoped objects have it cleared; a conflicting
    value is a 400.
    """
    meta = obj.setdefault("metadata", {})
    expected = request_namespace if namespaced else ""
    have = meta.get("namespace") or ""
    if have == expected:
        return
    if not have:
        meta["namespace"] = expected
    elif not expected:
        meta.pop("namespace", None)
    else:
        raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                          "request")


# ---------------------------------------------------------------------------------------------
# semantic comparison: Go zero values and absent JSON fields compare equal


def _normalize(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = {k: _normalize(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", 0, False, [], {})}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# resources and quantities

_STANDARD_CONTAINER = frozenset({"cpu", "memory", "ephemeral-storage"})
_STANDARD_QUOTA = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers", "cpu", "memory",
    "ephemeral-storage", "requests.cpu", "requests.memory", "requests.storage", "requests.ephemeral-storage",
    "limits.cpu", "limits.memory", "limits.ephemeral-storage",
})
_STANDARD = _STANDARD_QUOTA | {"storage"}
_INTEGER_RESOURCES = frozenset({
    "pods", "services", "replicationcontrollers", "resourcequotas", "secrets", "configmaps",
    "persistentvolumeclaims", "services.nodeports", "services.loadbalancers",
})


def is_native_resource(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def is_hugepages(name: str) -> bool:
    return name.startswith("hugepages-")


def is_extended_resource(name: str) -> bool:
    """Domain-qualified, not kubernetes.io, e.g. nvidia.com/gpu."""
    if is_native_resource(name) or name.startswith("requests."):
        return False
    return not is_qualified_name("requests." + name)


def overcommit_allowed(name: str) -> bool:
    return is_native_resource(name) and not is_hugepages(name)


def _is_standard(name: str) -> bool:
    return (name in _STANDARD or is_hugepages(name)
            or name.startswith(("requests.hugepages-", "limits.hugepages-")))


def _validate_resource_name(name: str, path: str) -> list[Cause]:
    errs = _each(path, name, is_qualified_name(name))
    if errs:
        return errs
    if "/" not in name and not _is_standard(name):
        return [invalid(path, name, "must be a standard resource type or fully qualified")]
    return []


def _validate_container_resource_name(name: str, path: str) -> list[Cause]:
    errs = _validate_resource_name(name, path)
    if "/" not in name:
        if name not in _STANDARD_CONTAINER and not is_hugepages(name):
            errs.append(invalid(path, name, "must be a standard resource for containers"))
    elif not is_native_resource(name) and not is_extended_resource(name):
        errs.append(invalid(path, name, "doesn't follow extended resource name standard"))
    return errs


def _quantity(value: Any, path: str) -> tuple[Quantity | None, list[Cause]]:
    try:
        return Quantity.parse(value if isinstance(value, str) else str(value)), []
    except ValueError as e:
        return None, [invalid(path, str(value), str(e))]


def _validate_quantity_value(name: str, q: Quantity, path: str) -> list[Cause]:
    out: list[Cause] = []
    if q.sign() < 0:
        out.append(invalid(path, str(q), IS_NEGATIVE))
    if (name in _INTEGER_RESOURCES or is_extended_resource(name)) and q.milli_value() % 1000:
        out.append(invalid(path, str(q), NOT_INTEGER))
    return out


def validate_resource_requirements(res: Any, path: str) -> list[Cause]:
    res = res or {}
    out: list[Cause] = []
    lim_path, req_path = f"{path}.limits", f"{path}.requests"
    limits: dict[str, Quantity] = {}
    for name, raw in (res.get("limits") or {}).items():
        p = f"{lim_path}[{name}]"
        out += _validate_container_resource_name(name, p)
        q, errs = _quantity(raw, p)
        out += errs
        if q is not None:
            limits[name] = q
            out += _validate_quantity_value(name, q, p)
    for name, raw in (res.get("requests") or {}).items():
        p = f"{req_path}[{name}]"
        out += _validate_container_resource_name(name, p)
        q, errs = _quantity(raw, p)
        out += errs
        if q is None:
            continue
        out += _validate_quantity_value(name, q, p)
        if name in limits:
            lim = limits[name]
            if q != lim and not overcommit_allowed(name):
                out.append(invalid(req_path, str(q), f"must be equal to {name} limit of {lim}"))
            elif q > lim:
                out.append(invalid(req_path, str(q), f"must be less than or equal to {name} limit of {lim}"))
        elif not overcommit_allowed(name):
            out.append(required(lim_path, "Limit must be set for non overcommitable resources"))
    return out


# ---------------------------------------------------------------------------------------------
# pods

_ENV_NAME_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_ENV_NAME_RE = re.compile(_ENV_NAME_FMT)
_ENV_NAME_MSG = (
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', "
    "and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used "
    f"for validation is '{_ENV_NAME_FMT}')"
)
_PORT_RANGE = "must be between 1 and 65535, inclusive"
_PORT_NAME_CHARS = re.compile("[-a-z0-9]+")


def _chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []


def is_env_var_name(value: str) -> list[str]:
    errs = [] if _ENV_NAME_RE.fullmatch(value) else [_ENV_NAME_MSG]
    return errs + _chdir_prefix(value)


def is_valid_port_name(port: str) -> list[str]:
    errs: list[str] = []
    if len(port) > 15:
        errs.append("must be no more than 15 characters")
    if not _PORT_NAME_CHARS.fullmatch(port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _valid_port(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65535


def _validate_ports(ports: list[Any], path: str, host_network: bool) -> list[Cause]:
    out: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        p = f"{path}[{i}]"
        name = port.get("name") or ""
        if name:
            out += _each(f"{p}.name", name, is_valid_port_name(name))
            if name in names:
                out.append(duplicate(f"{p}.name", name))
            names.add(name)
        cp = port.get("containerPort")
        if not cp:
            out.append(required(f"{p}.containerPort"))
        elif not _valid_port(cp):
            out.append(invalid(f"{p}.containerPort", cp, _PORT_RANGE))
        hp = port.get("hostPort")
        if hp and not _valid_port(hp):
            out.append(invalid(f"{p}.hostPort", hp, _PORT_RANGE))
        proto = port.get("protocol") or "TCP"
        if proto not in ("TCP", "UDP", "SCTP"):
            out.append(not_supported(f"{p}.protocol", proto, ["SCTP", "TCP", "UDP"]))
        if host_network and hp and cp and hp != cp:
            out.append(invalid(f"{p}.containerPort", cp, "must match `hostPort` when `hostNetwork` is true"))
    return out


def _validate_container(c: Obj, path: str, volumes: set[str], host_network: bool) -> list[Cause]:
    out: list[Cause] = []
    name = c.get("name") or ""
    if not name:
        out.append(required(f"{path}.name"))
    else:
        out += _each(f"{path}.name", name, is_dns1123_label(name))
    if not c.get("image"):
        out.append(required(f"{path}.image"))
    policy = c.get("imagePullPolicy")
    if policy and policy not in ("Always", "IfNotPresent", "Never"):
        out.append(not_supported(f"{path}.imagePullPolicy", policy, ["Always", "IfNotPresent", "Never"]))
    out += _validate_ports(c.get("ports") or [], f"{path}.ports", host_network)
    for i, env in enumerate(c.get("env") or []):
        ename = env.get("name") or ""
        if not ename:
            out.append(required(f"{path}.env[{i}].name"))
        else:
            out += _each(f"{path}.env[{i}].name", ename, is_env_var_name(ename))
    mount_paths: set[str] = set()
    for i, m in enumerate(c.get("volumeMounts") or []):
        mp = f"{path}.volumeMounts[{i}]"
        mname = m.get("name") or ""
        if not mname:
            out.append(required(f"{mp}.name"))
        elif mname not in volumes:
            out.append(not_found(f"{mp}.name", mname))
        mount_path = m.get("mountPath") or ""
        if not mount_path:
            out.append(required(f"{mp}.mountPath"))
        elif mount_path in mount_paths:
            out.append(invalid(f"{mp}.mountPath", mount_path, "must be unique"))
        mount_paths.add(mount_path)
    out += validate_resource_requirements(c.get("resources"), f"{path}.resources")
    return out


def _validate_tolerations(tols: list[Any], path: str) -> list[Cause]:
    out: list[Cause] = []
    for i, t in enumerate(tols):
        p = f"{path}[{i}]"
        key, op, effect = t.get("key") or "", t.get("operator") or "Equal", t.get("effect") or ""
        if key:
            out += _each(f"{p}.key", key, is_qualified_name(key))
        if not key and op != "Exists":
            out.append(invalid(f"{p}.operator", op,
                               "operator must be Exists when `key` is empty, which means \"match all values "
                               "and all keys\""))
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            out.append(invalid(f"{p}.effect", effect,
                               "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if op == "Equal":
            out += _each(f"{p}.value", t.get("value") or "", is_label_value(t.get("value") or ""))
        elif op == "Exists":
            if t.get("value"):
                out.append(invalid(f"{p}.operator", t.get("value"),
                                   "value must be empty when `operator` is 'Exists'"))
        else:
            out.append(not_supported(f"{p}.operator", op, ["Equal", "Exists"]))
        if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append(not_supported(f"{p}.effect", effect, ["NoSchedule", "PreferNoSchedule", "NoExecute"]))
    return out


def validate_pod_spec(spec: Obj, path: str = "spec") -> list[Cause]:
    out: list[Cause] = []
    volumes: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        p = f"{path}.volumes[{i}]"
        vname = vol.get("name") or ""
        if not vname:
            out.append(required(f"{p}.name"))
        else:
            out += _each(f"{p}.name", vname, is_dns1123_label(vname))
            if vname in volumes:
                out.append(duplicate(f"{p}.name", vname))
            volumes.add(vname)
        sources = [k for k, v in vol.items() if k != "name" and v is not None]
        if not sources:
            out.append(required(p, "must specify a volume type"))
        for extra in sources[1:]:
            out.append(forbidden(f"{p}.{extra}", "may not specify more than 1 volume type"))
    host_network = bool(spec.get("hostNetwork"))
    containers = spec.get("containers") or []
    names: set[str] = set()
    if not containers:
        out.append(required(f"{path}.containers"))
    for i, c in enumerate(containers):
        p = f"{path}.containers[{i}]"
        out += _validate_container(c, p, volumes, host_network)
        cname = c.get("name") or ""
        if cname:
            if cname in names:
                out.append(duplicate(f"{p}.name", cname))
            names.add(cname)
    init_names = set(names)
    for i, c in enumerate(spec.get("initContainers") or []):
        p = f"{path}.initContainers[{i}]"
        out += _validate_container(c, p, volumes, host_network)
        cname = c.get("name") or ""
        if cname:
            if cname in init_names:
                out.append(duplicate(f"{p}.name", cname))
            init_names.add(cname)
    restart = spec.get("restartPolicy")
    if restart is not None and restart not in ("Always", "OnFailure", "Never"):
        out.append(required(f"{path}.restartPolicy") if restart == "" else
                   not_supported(f"{path}.restartPolicy", restart, ["Always", "OnFailure", "Never"]))
    dns = spec.get("dnsPolicy")
    if dns is not None and dns not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        out.append(required(f"{path}.dnsPolicy") if dns == "" else not_supported(
            f"{path}.dnsPolicy", dns, ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]))
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and not (isinstance(ads, int) and 1 <= ads <= MAX_INT32):
        out.append(invalid(f"{path}.activeDeadlineSeconds", ads,
                           f"must be between 1 and {MAX_INT32}, inclusive"))
    for field_name in ("nodeName", "serviceAccountName", "schedulerName", "priorityClassName"):
        value = spec.get(field_name)
        if value:
            out += _each(f"{path}.{field_name}", value, is_dns1123_subdomain(value))
    out += validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    out += _validate_tolerations(spec.get("tolerations") or [], f"{path}.tolerations")
    return out


_UPDATABLE_POD_FIELDS = ",".join([
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
])


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in sorted(set(old) | set(new)):
            _diff(old.get(k), new.get(k), f"{path}.{k}", out)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _diff(a, b, f"{path}[{i}]", out)
    elif old != new:
        out.append(f"- {path}: {old!r}\n+ {path}: {new!r}")


def validate_pod_update(new: Obj, old: Obj) -> list[Cause]:
    new_spec, old_spec = dict(new.get("spec") or {}), old.get("spec") or {}
    out: list[Cause] = []
    for field_name in ("containers", "initContainers"):
        nc, oc = new_spec.get(field_name) or [], old_spec.get(field_name) or []
        if len(nc) != len(oc):
            return [forbidden(f"spec.{field_name}", "pod updates may not add or remove containers")]
        for i, c in enumerate(nc):
            if not c.get("image"):
                out.append(required(f"spec.{field_name}[{i}].image"))
    new_ads, old_ads = new_spec.get("activeDeadlineSeconds"), old_spec.get("activeDeadlineSeconds")
    if new_ads is not None:
        if not 0 <= new_ads <= MAX_INT32:
            return [*out, invalid("spec.activeDeadlineSeconds", new_ads,
                                  f"must be between 0 and {MAX_INT32}, inclusive")]
        if old_ads is not None and old_ads < new_ads:
            return [*out, invalid("spec.activeDeadlineSeconds", new_ads,
                                  "must be less than or equal to previous value")]
    elif old_ads is not None:
        out.append(invalid("spec.activeDeadlineSeconds", None,
                           "must not update from a positive integer to nil value"))
    new_tols = new_spec.get("tolerations") or []
    for old_t in old_spec.get("tolerations") or []:
        base = {k: v for k, v in old_t.items() if k != "tolerationSeconds"}
        if not any({k: v for k, v in t.items() if k != "tolerationSeconds"} == base for t in new_tols):
            out.append(forbidden("spec.tolerations", "existing toleration can not be modified except its "
                                 "tolerationSeconds"))
            break
    # munge the updatable fields to their old values, then anything left over is a forbidden change
    munged = dict(new_spec)
    for field_name in ("containers", "initContainers"):
        olds = old_spec.get(field_name) or []
        if field_name in munged:
            pairs = zip(munged[field_name], olds, strict=False)
            munged[field_name] = [dict(c, image=o.get("image")) for c, o in pairs]
    for field_name in ("activeDeadlineSeconds", "tolerations"):
        munged[field_name] = old_spec.get(field_name)
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    new_grace = new_spec.get("terminationGracePeriodSeconds")
    if isinstance(old_grace, int) and old_grace < 0 and new_grace == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    gates_new = new_spec.get("schedulingGates") or []
    gates_old = old_spec.get("schedulingGates") or []
    if all(g in gates_old for g in gates_new):
        munged["schedulingGates"] = gates_old
    if _normalize(munged) != _normalize(dict(old_spec)):
        lines: list[str] = []
        _diff(_normalize(dict(old_spec)), _normalize(munged), "spec", lines)
        out.append(forbidden("spec", f"pod updates may not change fields other than {_UPDATABLE_POD_FIELDS}\n"
                             + "\n".join(lines)))
    return out


def _pod(obj: Obj, old: Obj | None) -> list[Cause]:
    if old is not None:
        return validate_pod_update(obj, old)
    return validate_pod_spec(obj.get("spec") or {})


# ---------------------------------------------------------------------------------------------
# other core kinds


def _taints(taints: list[Any], path: str) -> list[Cause]:
    out: list[Cause] = []
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(taints):
        p = f"{path}[{i}]"
        key, effect = t.get("key") or "", t.get("effect") or ""
        out += _each(f"{p}.key", key, is_qualified_name(key))
        if t.get("value"):
            out += _each(f"{p}.value", t["value"], is_label_value(t["value"]))
        if not effect:
            out.append(required(f"{p}.effect"))
        elif effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append(not_supported(f"{p}.effect", effect, ["NoSchedule", "PreferNoSchedule", "NoExecute"]))
        if (key, effect) in seen:
            out.append(Cause("FieldValueDuplicate",
                             "Duplicate value: " + go_value({"key": key, "effect": effect})
                             + ": taints must be unique by key and effect pair", p))
        seen.add((key, effect))
    return out


def _resource_list(rl: Any, path: str, *, integer_extended: bool = True) -> list[Cause]:
    out: list[Cause] = []
    for name, raw in (rl or {}).items():
        p = f"{path}[{name}]"
        out += _validate_resource_name(name, p)
        q, errs = _quantity(raw, p)
        out += errs
        if q is not None:
            out += _validate_quantity_value(name, q, p)
    return out


def _node(obj: Obj, old: Obj | None) -> list[Cause]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    out = _taints(spec.get("taints") or [], "spec.taints")
    out += _resource_list(status.get("capacity"), "status.capacity")
    out += _resource_list(status.get("allocatable"), "status.allocatable")
    if old is not None:
        old_cidr = (old.get("spec") or {}).get("podCIDR")
        if old_cidr and spec.get("podCIDR") != old_cidr:
            out.append(forbidden("spec.podCIDR", "node updates may not change podCIDR except from \"\" to "
                                 "valid"))
    return out


def _namespace(obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    for i, f in enumerate((obj.get("spec") or {}).get("finalizers") or []):
        out += _each(f"spec.finalizers[{i}]", f, is_qualified_name(f))
    return out


def _data_size(value: Any, b64: bool) -> int:
    text = value if isinstance(value, str) else str(value)
    if b64:
        try:
            return len(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            return len(text)
    return len(text.encode())


def is_config_map_key(key: str) -> list[str]:
    errs: list[str] = []
    if len(key) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
        errs.append("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
                    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
                    "'[-._a-zA-Z0-9]+')")
    return errs + _chdir_prefix(key)


def _immutable_data(obj: Obj, old: Obj | None) -> list[Cause]:
    if old is None or not old.get("immutable"):
        return []
    out: list[Cause] = []
    if not obj.get("immutable"):
        out.append(forbidden("immutable", "field is immutable when `immutable` is set"))
    for f in ("data", "binaryData"):
        if _normalize(obj.get(f)) != _normalize(old.get(f)):
            out.append(forbidden(f, "field is immutable when `immutable` is set"))
    return out


def _configmap(obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    total = 0
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    for key, value in data.items():
        out += _each(f"data[{key}]", key, is_config_map_key(key))
        if key in binary:
            out.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
        total += _data_size(value, False)
    for key, value in binary.items():
        out += _each(f"binaryData[{key}]", key, is_config_map_key(key))
        total += _data_size(value, True)
    if total > MAX_SECRET_SIZE:
        out.append(too_long("[]", MAX_SECRET_SIZE))
    return out + _immutable_data(obj, old)


_SECRET_REQUIRED_KEYS = {
    "kubernetes.io/dockercfg": [".dockercfg"],
    "kubernetes.io/dockerconfigjson": [".dockerconfigjson"],
    "kubernetes.io/tls": ["tls.crt", "tls.key"],
}


def _secret(obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    data = dict(obj.get("data") or {})
    total = 0
    for key, value in data.items():
        out += _each(f"data[{key}]", key, is_config_map_key(key))
        total += _data_size(value, True)
    for key, value in (obj.get("stringData") or {}).items():
        out += _each(f"stringData[{key}]", key, is_config_map_key(key))
        if key not in data:
            total += _data_size(value, False)
        data[key] = value
    if total > MAX_SECRET_SIZE:
        out.append(too_long("data", MAX_SECRET_SIZE))
    stype = obj.get("type") or "Opaque"
    annotations = _meta(obj).get("annotations") or {}
    sa_key = "kubernetes.io/service-account.name"
    if stype == "kubernetes.io/service-account-token" and not annotations.get(sa_key):
            out.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    for key in _SECRET_REQUIRED_KEYS.get(stype, []):
        if key not in data:
            out.append(required(f"data[{key}]"))
    if stype == "kubernetes.io/basic-auth" and "username" not in data and "password" not in data:
        out.append(required("data[username]"))
    if old is not None:
        old_type = old.get("type") or "Opaque"
        if stype != old_type:
            out.append(invalid("type", stype, FIELD_IMMUTABLE))
    return out + _immutable_data(obj, old)


def _service(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    stype = spec.get("type") or "ClusterIP"
    if stype not in ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"):
        out.append(not_supported("spec.type", stype,
                                 ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]))
    ports = spec.get("ports") or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and stype != "ExternalName":
        out.append(required("spec.ports"))
    names: set[str] = set()
    keys: set[tuple[int, str]] = set()
    for i, port in enumerate(ports):
        p = f"spec.ports[{i}]"
        name = port.get("name") or ""
        if len(ports) > 1 and not name:
            out.append(required(f"{p}.name"))
        elif name:
            out += _each(f"{p}.name", name, is_dns1123_label(name))
            if name in names:
                out.append(duplicate(f"{p}.name", name))
            names.add(name)
        num = port.get("port")
        if not _valid_port(num):
            out.append(invalid(f"{p}.port", num, _PORT_RANGE))
        proto = port.get("protocol") or "TCP"
        if proto not in ("TCP", "UDP", "SCTP"):
            out.append(not_supported(f"{p}.protocol", proto, ["SCTP", "TCP", "UDP"]))
        target = port.get("targetPort")
        if isinstance(target, int) and target != 0 and not _valid_port(target):
            out.append(invalid(f"{p}.targetPort", target, _PORT_RANGE))
        elif isinstance(target, str) and target:
            out += _each(f"{p}.targetPort", target, is_valid_port_name(target))
        node_port = port.get("nodePort")
        if node_port and not _valid_port(node_port):
            out.append(invalid(f"{p}.nodePort", node_port, _PORT_RANGE))
        if isinstance(num, int) and (num, proto) in keys:
            out.append(duplicate(p, {"port": str(num), "protocol": proto}))
        if isinstance(num, int):
            keys.add((num, proto))
    if spec.get("selector"):
        out += validate_labels(spec.get("selector"), "spec.selector")
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") not in (None, old_ip) and stype != "ExternalName":
            out.append(invalid("spec.clusterIP", spec.get("clusterIP"), FIELD_IMMUTABLE))
    return out


def _scopes(spec: Obj) -> list[Cause]:
    known = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass",
             "CrossNamespacePodAffinity")
    out: list[Cause] = []
    scopes = spec.get("scopes") or []
    for s in scopes:
        if s not in known:
            out.append(invalid("spec.scopes", scopes, "unsupported scope"))
    for i, expr in enumerate((spec.get("scopeSelector") or {}).get("matchExpressions") or []):
        p = f"spec.scopeSelector.matchExpressions[{i}]"
        if expr.get("scopeName") not in known:
            out.append(invalid(f"{p}.scopeName", expr.get("scopeName"), "unsupported scope"))
        op = expr.get("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            out.append(invalid(f"{p}.operator", op, "not a valid selector operator"))
        elif op in ("In", "NotIn") and not expr.get("values"):
            out.append(required(f"{p}.values", "must be at least one value when `operator` is 'In' or "
                                "'NotIn' for scope selector"))
    return out


def _resourcequota(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    for section in ("spec", "status"):
        body = obj.get(section) or {}
        for sub in ("hard", "used") if section == "status" else ("hard",):
            for name, raw in (body.get(sub) or {}).items():
                p = f"{section}.{sub}[{name}]"
                errs = _validate_resource_name(name, p)
                if not errs and "/" not in name and name not in _STANDARD_QUOTA \
                        and not name.startswith("requests.hugepages-"):
                    errs.append(invalid(p, name, "must be a standard resource for quota"))
                out += errs
                q, qerrs = _quantity(raw, p)
                out += qerrs
                if q is not None:
                    out += _validate_quantity_value(name, q, p)
    return out + _scopes(spec)


def _serviceaccount(obj: Obj, old: Obj | None) -> list[Cause]:
    return []


def _lease(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    dur = spec.get("leaseDurationSeconds")
    if dur is not None and dur <= 0:
        out.append(invalid("spec.leaseDurationSeconds", dur, "must be greater than 0"))
    trans = spec.get("leaseTransitions")
    if trans is not None and trans < 0:
        out.append(invalid("spec.leaseTransitions", trans, IS_NEGATIVE))
    return out


def _event(obj: Obj, old: Obj | None, *, events_group: bool) -> list[Cause]:
    out: list[Cause] = []
    ns = _meta(obj).get("namespace") or ""
    ref = obj.get("regarding" if events_group else "involvedObject") or {}
    ref_field = "regarding.namespace" if events_group else "involvedObject.namespace"
    reporting = "reportingController" if events_group else "reportingComponent"
    controller = obj.get("reportingController") or obj.get("reportingComponent") or ""
    if not obj.get("eventTime"):
        if events_group:
            out.append(required("eventTime"))
        elif not ref.get("namespace"):
            if ns not in ("", "default"):
                out.append(invalid(ref_field, ref.get("namespace") or "", "does not match event.namespace"))
        elif ns != ref.get("namespace"):
            out.append(invalid(ref_field, ref.get("namespace"), "does not match event.namespace"))
        return out
    if not ref.get("namespace") and ns not in ("default", "kube-system"):
        out.append(invalid(ref_field, ref.get("namespace") or "", "does not match event.namespace"))
    if not controller:
        out.append(required(reporting))
    out += _each(reporting, controller, is_qualified_name(controller))
    if not obj.get("reportingInstance"):
        out.append(required("reportingInstance"))
    if not obj.get("action"):
        out.append(required("action"))
    if not obj.get("reason"):
        out.append(required("reason"))
    return out


# ---------------------------------------------------------------------------------------------
# workloads


def validate_label_selector(sel: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    if sel is None:
        return out
    for i, expr in enumerate(sel.get("matchExpressions") or []):
        p = f"{path}.matchExpressions[{i}]"
        op, values = expr.get("operator"), expr.get("values") or []
        if op in ("In", "NotIn"):
            if not values:
                out.append(required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                out.append(forbidden(f"{p}.values", "may not be specified when `operator` is 'Exists' or "
                                     "'DoesNotExist'"))
        else:
            out.append(invalid(f"{p}.operator", op, "not a valid selector operator"))
        out += _each(f"{p}.key", expr.get("key") or "", is_qualified_name(expr.get("key") or ""))
    out += validate_labels(sel.get("matchLabels"), f"{path}.matchLabels")
    return out


def _template(spec: Obj, selector: LabelSelector | None, *, allowed_restart: tuple[str, ...]) -> list[Cause]:
    template = spec.get("template")
    if not template:
        return [required("spec.template")]
    out: list[Cause] = []
    labels = (template.get("metadata") or {}).get("labels") or {}
    if selector is not None and not selector.empty() and not selector.matches(labels):
        out.append(invalid("spec.template.metadata.labels", labels,
                           "`selector` does not match template `labels`"))
    out += validate_labels(labels, "spec.template.metadata.labels")
    out += validate_annotations((template.get("metadata") or {}).get("annotations"),
                                "spec.template.metadata.annotations")
    pod_spec = template.get("spec") or {}
    out += validate_pod_spec(pod_spec, "spec.template.spec")
    restart = pod_spec.get("restartPolicy") or "Always"
    if restart not in allowed_restart:
        if allowed_restart == ("Always",):
            out.append(not_supported("spec.template.spec.restartPolicy", restart, ["Always"]))
        else:
            out.append(required("spec.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
    if allowed_restart == ("Always",) and pod_spec.get("activeDeadlineSeconds") is not None:
        out.append(invalid("spec.template.spec.activeDeadlineSeconds", pod_spec["activeDeadlineSeconds"],
                           "activeDeadlineSeconds in ReplicaSet is not Supported"))
    return out


def _selector_for(spec: Obj, kind_word: str, out: list[Cause]) -> LabelSelector | None:
    sel = spec.get("selector")
    if sel is None:
        out.append(required("spec.selector"))
        return None
    out += validate_label_selector(sel, "spec.selector")
    if not (sel.get("matchLabels") or sel.get("matchExpressions")):
        out.append(invalid("spec.selector", _selector_text(sel),
                           f"empty selector is invalid for {kind_word}"))
    try:
        return label_selector_from_object(sel)
    except APIError:
        out.append(invalid("spec.selector", _selector_text(sel), "invalid label selector"))
        return None


def _selector_text(sel: Obj) -> Any:
    ml = sel.get("matchLabels") or {}
    inner = ",".join(f"{k}: {v}" for k, v in sorted(ml.items()))
    return _Raw("&LabelSelector{MatchLabels:map[string]string{" + (inner + "," if inner else "")
                + "},MatchExpressions:[]LabelSelectorRequirement{},}")


def _replicas(spec: Obj, path: str = "spec.replicas") -> list[Cause]:
    n = spec.get("replicas")
    if isinstance(n, int) and n < 0:
        return [invalid(path, n, IS_NEGATIVE)]
    return []


def _selector_immutable(obj: Obj, old: Obj | None) -> list[Cause]:
    if old is None:
        return []
    new_sel, old_sel = (obj.get("spec") or {}).get("selector"), (old.get("spec") or {}).get("selector")
    if _normalize(new_sel) != _normalize(old_sel):
        return [invalid("spec.selector", _selector_text(new_sel or {}), FIELD_IMMUTABLE)]
    return []


def _deployment(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    out = _replicas(spec)
    sel = _selector_for(spec, "deployment", out)
    out += _template(spec, sel, allowed_restart=("Always",))
    return out + _selector_immutable(obj, old)


def _replicaset(obj: Obj, old: Obj | None) -> list[Cause]:
    return _deployment(obj, old)


def _daemonset(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    sel = _selector_for(spec, "daemonset", out)
    out += _template(spec, sel, allowed_restart=("Always",))
    return out + _selector_immutable(obj, old)


def _job(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    for f in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"):
        v = spec.get(f)
        if isinstance(v, int) and v < 0:
            out.append(invalid(f"spec.{f}", v, IS_NEGATIVE))
    # without manualSelector the real server generates the selector and template labels before
    # validating; a caller that has not done so yet gets no selector error here
    sel: LabelSelector | None = None
    if spec.get("manualSelector") or spec.get("selector") is not None:
        sel = _selector_for(spec, "job", out)
    out += _template(spec, sel, allowed_restart=("OnFailure", "Never"))
    if old is not None:
        out += _selector_immutable(obj, old)
    return out


# ---------------------------------------------------------------------------------------------
# admission registration, rbac, scheduling

_NO_SIDE_EFFECTS = ["None", "NoneOnDryRun"]
_ALL_SIDE_EFFECTS = ("None", "NoneOnDryRun", "Some", "Unknown")
_REVIEW_VERSIONS = ["v1", "v1beta1"]
_URL_FORM = "; desired format: https://host[/path]"


def is_fully_qualified_name(path: str, name: str) -> list[Cause]:
    if not name:
        return [required(path)]
    errs = is_dns1123_subdomain(name)
    if errs:
        return [invalid(path, name, ",".join(errs))]
    if len(name.split(".")) < 3:
        return [invalid(path, name, "should be a domain with at least three segments separated by dots")]
    return []


def validate_webhook_url(path: str, url: str) -> list[Cause]:
    try:
        u = urlsplit(url)
    except ValueError as e:
        return [required(path, f"url must be a valid URL: {e}{_URL_FORM}")]
    out: list[Cause] = []
    if u.scheme != "https":
        out.append(invalid(path, u.scheme, "'https' is the only allowed URL scheme" + _URL_FORM))
    if not u.netloc:
        out.append(invalid(path, u.netloc, "host must be specified" + _URL_FORM))
    if u.username is not None:
        out.append(invalid(path, u.netloc.rsplit("@", 1)[0], "user information is not permitted in the URL"))
    if u.fragment:
        out.append(invalid(path, u.fragment, "fragments are not permitted in the URL"))
    if u.query:
        out.append(invalid(path, u.query, "query parameters are not permitted in the URL"))
    return out


def validate_webhook_service(path: str, svc: Obj) -> list[Cause]:
    out: list[Cause] = []
    if not svc.get("name"):
        out.append(required(f"{path}.name", "service name is required"))
    if not svc.get("namespace"):
        out.append(required(f"{path}.namespace", "service namespace is required"))
    port = svc.get("port", 443)
    if not _valid_port(port):
        out.append(invalid(f"{path}.port", port, "port is not valid: " + _PORT_RANGE))
    svc_path = svc.get("path")
    if svc_path not in (None, "", "/"):
        if not svc_path.startswith("/"):
            out.append(invalid(f"{path}.path", svc_path, "must start with a '/'"))
        elif svc_path == "//":
            out.append(invalid(f"{path}.path", svc_path, "segment[0] may not be empty"))
    return out


def _webhooks(obj: Obj, old: Obj | None, *, mutating: bool) -> list[Cause]:
    out: list[Cause] = []
    names: set[str] = set()
    # admissionregistration v1beta1 (served until 1.21) still allowed side effects and repeated names.
    beta = str(obj.get("apiVersion", "")).endswith("/v1beta1")
    side_effects = _ALL_SIDE_EFFECTS if beta else _NO_SIDE_EFFECTS
    for i, hook in enumerate(obj.get("webhooks") or []):
        p = f"webhooks[{i}]"
        name = hook.get("name") or ""
        out += is_fully_qualified_name(f"{p}.name", name)
        if name in names and not beta:
            out.append(duplicate(f"{p}.name", name))
        names.add(name)
        se = hook.get("sideEffects")
        if se is None:
            out.append(required(f"{p}.sideEffects", "must specify one of " + ", ".join(side_effects)))
        elif se not in side_effects:
            out.append(not_supported(f"{p}.sideEffects", se, side_effects))
        versions = hook.get("admissionReviewVersions") or []
        if not versions:
            out.append(required(f"{p}.admissionReviewVersions",
                                "must specify one of " + ", ".join(_REVIEW_VERSIONS)))
        elif not any(v in _REVIEW_VERSIONS for v in versions):
            out.append(invalid(f"{p}.admissionReviewVersions", versions,
                               "must include at least one of " + ", ".join(_REVIEW_VERSIONS)))
        fp = hook.get("failurePolicy")
        if fp is not None and fp not in ("Fail", "Ignore"):
            out.append(not_supported(f"{p}.failurePolicy", fp, ["Fail", "Ignore"]))
        mp = hook.get("matchPolicy")
        if mp is not None and mp not in ("Equivalent", "Exact"):
            out.append(not_supported(f"{p}.matchPolicy", mp, ["Equivalent", "Exact"]))
        ts = hook.get("timeoutSeconds")
        if ts is not None and not (isinstance(ts, int) and 1 <= ts <= 30):
            out.append(invalid(f"{p}.timeoutSeconds", ts,
                               "the timeout value must be between 1 and 30 seconds"))
        rp = hook.get("reinvocationPolicy")
        if mutating and rp is not None and rp not in ("IfNeeded", "Never"):
            out.append(not_supported(f"{p}.reinvocationPolicy", rp, ["IfNeeded", "Never"]))
        cc = hook.get("clientConfig") or {}
        url, svc = cc.get("url"), cc.get("service")
        if (url is None) == (svc is None):
            out.append(required(f"{p}.clientConfig", "exactly one of url or service is required"))
        elif url is not None:
            out += validate_webhook_url(f"{p}.clientConfig.url", url)
        else:
            out += validate_webhook_service(f"{p}.clientConfig.service", svc)
        for sel_name in ("namespaceSelector", "objectSelector"):
            out += validate_label_selector(hook.get(sel_name), f"{p}.{sel_name}")
    return out


def _policy_rules(rules: list[Any], path: str, *, namespaced: bool) -> list[Cause]:
    out: list[Cause] = []
    for i, rule in enumerate(rules):
        p = f"{path}[{i}]"
        if not rule.get("verbs"):
            out.append(required(f"{p}.verbs", "verbs must contain at least one value"))
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                out.append(invalid(f"{p}.nonResourceURLs", urls,
                                   "namespaced rules cannot apply to non-resource URLs"))
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                out.append(invalid(f"{p}.nonResourceURLs", urls,
                                   "rules cannot apply to both regular resources and non-resource URLs"))
            continue
        if not rule.get("apiGroups"):
            out.append(required(f"{p}.apiGroups", "resource rules must supply at least one api group"))
        if not rule.get("resources"):
            out.append(required(f"{p}.resources", "resource rules must supply at least one resource"))
    return out


def _role(obj: Obj, old: Obj | None) -> list[Cause]:
    return _policy_rules(obj.get("rules") or [], "rules", namespaced=True)


def _clusterrole(obj: Obj, old: Obj | None) -> list[Cause]:
    return _policy_rules(obj.get("rules") or [], "rules", namespaced=False)


def _binding(obj: Obj, old: Obj | None, *, cluster: bool) -> list[Cause]:
    out: list[Cause] = []
    ref = obj.get("roleRef") or {}
    if ref.get("apiGroup", "") != "rbac.authorization.k8s.io":
        out.append(not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), ["rbac.authorization.k8s.io"]))
    allowed = ["ClusterRole"] if cluster else ["Role", "ClusterRole"]
    if ref.get("kind") not in allowed:
        out.append(not_supported("roleRef.kind", ref.get("kind", ""), allowed))
    if not ref.get("name"):
        out.append(required("roleRef.name"))
    else:
        out += _each("roleRef.name", ref["name"], name_is_path_segment(ref["name"], False))
    for i, s in enumerate(obj.get("subjects") or []):
        p = f"subjects[{i}]"
        kind = s.get("kind", "")
        if not s.get("name"):
            out.append(required(f"{p}.name"))
        if kind == "ServiceAccount":
            if s.get("apiGroup"):
                out.append(not_supported(f"{p}.apiGroup", s["apiGroup"], [""]))
            if cluster and not s.get("namespace"):
                out.append(required(f"{p}.namespace"))
        elif kind in ("User", "Group"):
            if s.get("apiGroup") != "rbac.authorization.k8s.io":
                out.append(not_supported(f"{p}.apiGroup", s.get("apiGroup", ""),
                                         ["rbac.authorization.k8s.io"]))
        else:
            out.append(not_supported(f"{p}.kind", kind, ["ServiceAccount", "User", "Group"]))
    if old is not None and _normalize(old.get("roleRef")) != _normalize(ref):
        shown = _Raw("rbac.RoleRef{APIGroup:" + go_quote(ref.get("apiGroup", "")) + ", Kind:"
                     + go_quote(ref.get("kind", "")) + ", Name:" + go_quote(ref.get("name", "")) + "}")
        out.append(invalid("roleRef", shown, "cannot change roleRef"))
    return out


_SYSTEM_PRIORITY = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
HIGHEST_USER_PRIORITY = 1000000000


def _priorityclass(obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    name = _meta(obj).get("name") or ""
    value = obj.get("value", 0)
    if name.startswith("system-"):
        if name not in _SYSTEM_PRIORITY:
            why = f"{name} is not a known system priority class"
        elif value != _SYSTEM_PRIORITY[name]:
            why = f"value of {name} PriorityClass must be {_SYSTEM_PRIORITY[name]}"
        elif obj.get("globalDefault"):
            why = f"globalDefault of {name} PriorityClass must be false"
        else:
            why = ""
        if why:
            out.append(forbidden("metadata.name", "priority class names with 'system-' prefix are reserved "
                                 f"for system use only. error: {why}"))
    elif isinstance(value, int) and value > HIGHEST_USER_PRIORITY:
        out.append(forbidden("value",
                             f"maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"))
    pp = obj.get("preemptionPolicy")
    if pp is not None and pp not in ("Never", "PreemptLowerPriority"):
        out.append(not_supported("preemptionPolicy", pp, ["Never", "PreemptLowerPriority"]))
    if old is not None and obj.get("value") != old.get("value"):
        out.append(forbidden("value", "may not be changed in an update."))
    return out


# ---------------------------------------------------------------------------------------------
# entry point

Validator = Callable[[Obj, "Obj | None"], list[Cause]]

_VALIDATORS: dict[tuple[str, str], Validator] = {
    ("", "Pod"): _pod,
    ("", "Node"): _node,
    ("", "Namespace"): _namespace,
    ("", "ConfigMap"): _configmap,
    ("", "Secret"): _secret,
    ("", "Service"): _service,
    ("", "ServiceAccount"): _serviceaccount,
    ("", "ResourceQuota"): _resourcequota,
    ("", "Event"): lambda o, old: _event(o, old, events_group=False),
    ("events.k8s.io", "Event"): lambda o, old: _event(o, old, events_group=True),
    ("coordination.k8s.io", "Lease"): _lease,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): _replicaset,
    ("apps", "DaemonSet"): _daemonset,
    ("batch", "Job"): _job,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"):
        lambda o, old: _webhooks(o, old, mutating=True),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"):
        lambda o, old: _webhooks(o, old, mutating=False),
    ("rbac.authorization.k8s.io", "Role"): _role,
    ("rbac.authorization.k8s.io", "ClusterRole"): _clusterrole,
    ("rbac.authorization.k8s.io", "RoleBinding"): lambda o, old: _binding(o, old, cluster=False),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): lambda o, old: _binding(o, old, cluster=True),
    ("scheduling.k8s.io", "PriorityClass"): _priorityclass,
}


def validate_object(group: str, kind: str, obj: Obj, *, namespaced: bool,
                    old: Obj | None = None, name_fn: NameFn | None = None) -> list[Cause]:
    """All validation causes for a create (``old`` None) or an update, deduplicated, in order.
    ``name_fn`` replaces the kind's name rule (where it depends on the minor or the request version)."""
    if old is None:
        causes = validate_object_meta(obj, namespaced=namespaced, name_fn=name_fn or name_rule(group, kind))
    else:
        causes = validate_object_meta_update(obj, old)
    validator = _VALIDATORS.get((group, kind))
    if validator is not None:
        causes += validator(obj, old)
    seen: set[tuple[str, str]] = set()
    unique: list[Cause] = []
    for c in causes:
        if (c.field, c.message) not in seen:
            seen.add((c.field, c.message))
            unique.append(c)
    return unique
