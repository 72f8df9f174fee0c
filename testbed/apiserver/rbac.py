"""Authorization as kube-apiserver does it with ``--authorization-mode=Node,RBAC``.

The chain: members of ``system:masters`` are always allowed; a kubelet identity
(``system:node:<name>`` in ``system:nodes``) is allowed what the ``system:node`` role grants
(the real Node authorizer also narrows secrets/configmaps/PVs to pods bound to that node - not
emulated); then RBAC walks ClusterRoleBindings and, for namespaced requests, the RoleBindings of
the request namespace, in store order, and allows on the first rule that matches. Reason texts
and the review answers follow the real authorizer.

Bindings are indexed by subject once per ``revision`` (a number the caller bumps whenever an RBAC
object changes), so a request costs a few dict look-ups plus the rules of the roles bound to the user.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .auth import UserInfo, split_service_account_username
from .errors import APIError, invalid, invalid_value, not_found
from .reader import Reader, SelectorError, selector_matches

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES = f"roles.{RBAC_GROUP}"
ROLE_BINDINGS = f"rolebindings.{RBAC_GROUP}"
CLUSTER_ROLES = f"clusterroles.{RBAC_GROUP}"
CLUSTER_ROLE_BINDINGS = f"clusterrolebindings.{RBAC_GROUP}"
SUPERUSER_GROUP = "system:masters"
NODES_GROUP = "system:nodes"
NODE_USER_PREFIX = "system:node:"


@dataclass(frozen=True)
class Attributes:
    user: UserInfo
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # set for non-resource requests (/healthz, /apis, ...)
    version: str = ""

    @property
    def resource_request(self) -> bool:
        return not self.path


# --- rules -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rule:
    """A PolicyRule, pre-split into sets so matching is a few membership tests."""

    raw: dict[str, Any]
    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    wildcard_subresources: frozenset[str]  # "scale" for a "*/scale" entry
    names: frozenset[str]
    urls: frozenset[str]
    url_prefixes: tuple[str, ...]

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Rule:
        resources = frozenset(raw.get("resources") or ())
        urls = [u for u in raw.get("nonResourceURLs") or ()]
        return cls(
            raw=raw,
            verbs=frozenset(raw.get("verbs") or ()),
            groups=frozenset(raw.get("apiGroups") or ()),
            resources=resources,
            wildcard_subresources=frozenset(r[2:] for r in resources if r.startswith("*/") and len(r) > 2),
            names=frozenset(raw.get("resourceNames") or ()),
            urls=frozenset(urls),
            url_prefixes=tuple(u.rstrip("*") for u in urls if u.endswith("*")),
        )

    def allows(self, a: Attributes) -> bool:
        if "*" not in self.verbs and a.verb not in self.verbs:
            return False
        if not a.resource_request:
            if "*" in self.urls or a.path in self.urls:
                return True
            return any(a.path.startswith(p) for p in self.url_prefixes)
        if "*" not in self.groups and a.group not in self.groups:
            return False
        combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        # Only "*" and "*/<sub>" are wildcards; "pods/*" is a literal that matches nothing.
        if not ("*" in self.resources or combined in self.resources
                or (a.subresource and a.subresource in self.wildcard_subresources)):
            return False
        return not self.names or a.name in self.names


def rule_allows(a: Attributes, rules: Iterable[Rule]) -> bool:
    return any(r.allows(a) for r in rules)


def _aggregate(messages: Sequence[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message bare, several deduplicated in brackets."""
    if len(messages) == 1:
        return messages[0]
    seen: list[str] = []
    for m in messages:
        if m not in seen:
            seen.append(m)
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


# --- bootstrap policy ----------------------------------------------------------------------

READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")
READ_WRITE = READ + WRITE
READ_UPDATE = ("get", "list", "watch", "update", "patch")
_BOOT_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_BOOT_ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
_AGG = "rbac.authorization.k8s.io/aggregate-to-"


def _rule(verbs: Sequence[str], groups: Sequence[str], resources: Sequence[str],
          names: Sequence[str] = ()) -> dict[str, Any]:
    r: dict[str, Any] = {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}
    if names:
        r["resourceNames"] = list(names)
    return r


def _urls(verbs: Sequence[str], urls: Sequence[str]) -> dict[str, Any]:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _events() -> dict[str, Any]:
    return _rule(("create", "update", "patch"), ("", "events.k8s.io"), ("events",))


def _meta(name: str, labels: dict[str, str] | None = None, namespace: str = "") -> dict[str, Any]:
    m: dict[str, Any] = {"name": name}
    if namespace:
        m["namespace"] = namespace
    m["labels"] = {**_BOOT_LABELS, **(labels or {})}
    m["annotations"] = dict(_BOOT_ANNOTATIONS)
    return m


def _cluster_role(name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None,
                  aggregate_from: str | None = None) -> dict[str, Any]:
    role: dict[str, Any] = {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                            "metadata": _meta(name, labels)}
    if aggregate_from:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {_AGG + aggregate_from: "true"}}]}
    role["rules"] = rules
    return role


def _subject(kind: str, name: str, namespace: str = "") -> dict[str, Any]:
    if kind == "ServiceAccount":
        return {"kind": kind, "name": name, "namespace": namespace}
    return {"apiGroup": RBAC_GROUP, "kind": kind, "name": name}


def _binding(name: str, subjects: list[dict[str, Any]], role: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
                         "metadata": _meta(name),
                         "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role or name}}
    if subjects:
        b["subjects"] = subjects
    return b


NODE_RULES: list[dict[str, Any]] = [
    _rule(("create",), ("authentication.k8s.io",), ("tokenreviews",)),
    _rule(("create",), ("authorization.k8s.io",), ("subjectaccessreviews", "localsubjectaccessreviews")),
    _rule(READ, ("",), ("services",)),
    _rule(("create", "get", "list", "watch"), ("",), ("nodes",)),
    _rule(("update", "patch"), ("",), ("nodes/status",)),
    _rule(("update", "patch"), ("",), ("nodes",)),
    _rule(("create", "update", "patch"), ("",), ("events",)),
    _rule(READ, ("",), ("pods",)),
    _rule(("create", "delete"), ("",), ("pods",)),
    _rule(("update", "patch"), ("",), ("pods/status",)),
    _rule(("create",), ("",), ("pods/eviction",)),
    _rule(READ, ("",), ("secrets", "configmaps")),
    _rule(("get",), ("",), ("persistentvolumeclaims", "persistentvolumes")),
    _rule(("get",), ("",), ("endpoints",)),
    _rule(("create", "get", "list", "watch"), ("certificates.k8s.io",), ("certificatesigningrequests",)),
    _rule(("get", "create", "update", "patch", "delete"), ("coordination.k8s.io",), ("leases",)),
    _rule(("get",), ("storage.k8s.io",), ("volumeattachments",)),
    _rule(("get", "update", "patch"), ("",), ("persistentvolumeclaims/status",)),
    _rule(("create",), ("",), ("serviceaccounts/token",)),
    _rule(("get", "watch", "list"), ("storage.k8s.io",), ("csidrivers",)),
    _rule(("get", "create", "update", "patch", "delete"), ("storage.k8s.io",), ("csinodes",)),
    _rule(READ, ("node.k8s.io",), ("runtimeclasses",)),
]

_AGGREGATE_TO_ADMIN = [
    _rule(("create",), ("authorization.k8s.io",), ("localsubjectaccessreviews",)),
    _rule(READ_WRITE, (RBAC_GROUP,), ("roles", "rolebindings")),
]

_AGGREGATE_TO_EDIT = [
    _rule(READ, ("",), ("pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets",
                        "services/proxy")),
    _rule(("impersonate",), ("",), ("serviceaccounts",)),
    _rule(WRITE, ("",), ("pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward")),
    _rule(("create",), ("",), ("pods/eviction",)),
    # endpoints write was dropped from edit in 1.22 (CVE-2021-25740)
    _rule(WRITE, ("",), ("replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
                         "services", "services/proxy", "persistentvolumeclaims", "configmaps", "secrets")),
    _rule(WRITE, ("apps",), ("statefulsets", "statefulsets/scale", "daemonsets", "deployments",
                             "deployments/scale", "deployments/rollback", "replicasets",
                             "replicasets/scale")),
    _rule(WRITE, ("autoscaling",), ("horizontalpodautoscalers",)),
    _rule(WRITE, ("batch",), ("jobs", "cronjobs")),
    _rule(WRITE, ("extensions",), ("daemonsets", "deployments", "deployments/scale", "deployments/rollback",
                                   "ingresses", "replicasets", "replicasets/scale",
                                   "replicationcontrollers/scale", "networkpolicies")),
    _rule(WRITE, ("policy",), ("poddisruptionbudgets",)),
    _rule(WRITE, ("networking.k8s.io",), ("networkpolicies", "ingresses")),
]

_AGGREGATE_TO_VIEW = [
    _rule(READ, ("",), ("pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
                        "services", "services/status", "endpoints", "persistentvolumeclaims",
                        "persistentvolumeclaims/status", "configmaps")),
    _rule(READ, ("",), ("limitranges", "resourcequotas", "bindings", "events", "pods/status",
                        "resourcequotas/status", "namespaces/status", "replicationcontrollers/status",
                        "pods/log")),
    _rule(READ, ("",), ("namespaces",)),
    _rule(READ, ("discovery.k8s.io",), ("endpointslices",)),
    _rule(READ, ("apps",), ("controllerrevisions", "statefulsets", "statefulsets/status",
                            "statefulsets/scale", "daemonsets", "daemonsets/status", "deployments",
                            "deployments/status",
                            "deployments/scale", "replicasets", "replicasets/status", "replicasets/scale")),
    _rule(READ, ("autoscaling",), ("horizontalpodautoscalers", "horizontalpodautoscalers/status")),
    _rule(READ, ("batch",), ("cronjobs", "cronjobs/status", "jobs", "jobs/status")),
    _rule(READ, ("extensions",), ("daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                                  "deployments/status", "ingresses", "ingresses/status", "replicasets",
                                  "replicasets/scale", "replicasets/status", "replicationcontrollers/scale",
                                  "networkpolicies")),
    _rule(READ, ("policy",), ("poddisruptionbudgets", "poddisruptionbudgets/status")),
    _rule(READ, ("networking.k8s.io",), ("networkpolicies", "ingresses", "ingresses/status")),
]

_DISCOVERY_URLS = ("/livez", "/readyz", "/healthz", "/version", "/version/", "/openapi", "/openapi/*",
                   "/api", "/api/*", "/apis", "/apis/*")
_PUBLIC_URLS = ("/livez", "/readyz", "/healthz", "/version", "/version/")


def _union(*rule_lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rules in rule_lists:
        for r in rules:
            if r not in out:
                out.append(r)
    return out


def _bootstrap() -> list[dict[str, Any]]:
    view = _union(_AGGREGATE_TO_VIEW)
    edit = _union(_AGGREGATE_TO_EDIT, view)
    admin = _union(_AGGREGATE_TO_ADMIN, edit)
    roles = [
        _cluster_role("cluster-admin", [_rule(("*",), ("*",), ("*",)), _urls(("*",), ("*",))]),
        _cluster_role("system:discovery", [_urls(("get",), _DISCOVERY_URLS)]),
        _cluster_role("system:monitoring", [_urls(("get",), (
            "/metrics", "/metrics/slis", "/livez", "/readyz", "/healthz",
            "/livez/*", "/readyz/*", "/healthz/*"))]),
        _cluster_role("system:basic-user", [
            _rule(("create",), ("authorization.k8s.io",),
                  ("selfsubjectaccessreviews", "selfsubjectrulesreviews")),
            _rule(("create",), ("authentication.k8s.io",), ("selfsubjectreviews",)),
        ]),
        _cluster_role("system:public-info-viewer", [_urls(("get",), _PUBLIC_URLS)]),
        # The aggregated roles carry the rules the aggregation controller would have written; the
        # authorizer recomputes them from their selectors anyway.
        _cluster_role("admin", admin, aggregate_from="admin"),
        _cluster_role("edit", edit, {_AGG + "admin": "true"}, aggregate_from="edit"),
        _cluster_role("view", view, {_AGG + "edit": "true"}, aggregate_from="view"),
        _cluster_role("system:aggregate-to-admin", _AGGREGATE_TO_ADMIN, {_AGG + "admin": "true"}),
        _cluster_role("system:aggregate-to-edit", _AGGREGATE_TO_EDIT, {_AGG + "edit": "true"}),
        _cluster_role("system:aggregate-to-view", _AGGREGATE_TO_VIEW, {_AGG + "view": "true"}),
        _cluster_role("system:node", NODE_RULES),
        _cluster_role("system:node-proxier", [
            _rule(("list", "watch"), ("",), ("services", "endpoints")),
            _rule(READ, ("",), ("nodes",)),
            _events(),
            _rule(("list", "watch"), ("discovery.k8s.io",), ("endpointslices",)),
        ]),
        _cluster_role("system:node-bootstrapper", [
            _rule(("create", "get", "list", "watch"), ("certificates.k8s.io",),
                  ("certificatesigningrequests",)),
        ]),
        _cluster_role("system:kubelet-api-admin", [
            _rule(READ, ("",), ("nodes",)),
            _rule(("proxy",), ("",), ("nodes",)),
            _rule(("*",), ("",), ("nodes/proxy", "nodes/metrics", "nodes/spec", "nodes/stats", "nodes/log")),
        ]),
        _cluster_role("system:auth-delegator", [
            _rule(("create",), ("authentication.k8s.io",), ("tokenreviews",)),
            _rule(("create",), ("authorization.k8s.io",), ("subjectaccessreviews",)),
        ]),
        _cluster_role("system:kube-controller-manager", [
            _events(),
            _rule(("create",), ("coordination.k8s.io",), ("leases",)),
            _rule(("get", "update"), ("coordination.k8s.io",), ("leases",), ("kube-controller-manager",)),
            _rule(("create",), ("",), ("secrets", "serviceaccounts")),
            _rule(("delete",), ("",), ("secrets",)),
            _rule(("get",), ("",), ("namespaces", "secrets", "serviceaccounts", "configmaps")),
            _rule(("update",), ("",), ("secrets", "serviceaccounts")),
            _rule(("create",), ("authentication.k8s.io",), ("tokenreviews",)),
            _rule(("create",), ("authorization.k8s.io",), ("subjectaccessreviews",)),
            _rule(("list", "watch"), ("*",), ("*",)),
            _rule(("create",), ("",), ("serviceaccounts/token",)),
        ]),
        _cluster_role("system:kube-dns", [_rule(("list", "watch"), ("",), ("endpoints", "services"))]),
        _cluster_role("system:kube-scheduler", [
            _events(),
            _rule(("create",), ("coordination.k8s.io",), ("leases",)),
            _rule(("get", "update"), ("coordination.k8s.io",), ("leases",), ("kube-scheduler",)),
            _rule(READ, ("",), ("nodes",)),
            _rule(("get", "list", "watch", "delete"), ("",), ("pods",)),
            _rule(("create",), ("",), ("pods/binding", "bindings")),
            _rule(("patch", "update"), ("",), ("pods/status",)),
            _rule(READ, ("",), ("services", "replicationcontrollers")),
            _rule(READ, ("apps", "extensions"), ("replicasets",)),
            _rule(READ, ("apps",), ("statefulsets",)),
            _rule(READ, ("policy",), ("poddisruptionbudgets",)),
            _rule(READ, ("",), ("persistentvolumeclaims", "persistentvolumes")),
            _rule(("create",), ("authentication.k8s.io",), ("tokenreviews",)),
            _rule(("create",), ("authorization.k8s.io",), ("subjectaccessreviews",)),
            _rule(READ, ("storage.k8s.io",), ("csinodes",)),
            _rule(READ, ("",), ("namespaces",)),
            _rule(READ, ("storage.k8s.io",), ("csidrivers",)),
            _rule(READ, ("storage.k8s.io",), ("csistoragecapacities",)),
        ]),
        _cluster_role("system:volume-scheduler", [
            _rule(READ_UPDATE, ("",), ("persistentvolumes",)),
            _rule(READ, ("storage.k8s.io",), ("storageclasses",)),
            _rule(READ_UPDATE, ("",), ("persistentvolumeclaims",)),
        ]),
        _cluster_role("system:service-account-issuer-discovery", [
            _urls(("get",), ("/.well-known/openid-configuration", "/.well-known/openid-configuration/",
                             "/openid/v1/jwks", "/openid/v1/jwks/")),
        ]),
    ]
    authenticated = _subject("Group", "system:authenticated")
    bindings = [
        _binding("cluster-admin", [_subject("Group", SUPERUSER_GROUP)]),
        _binding("system:monitoring", [_subject("Group", "system:monitoring")]),
        _binding("system:discovery", [authenticated]),
        _binding("system:basic-user", [authenticated]),
        _binding("system:public-info-viewer", [authenticated, _subject("Group", "system:unauthenticated")]),
        _binding("system:node-proxier", [_subject("User", "system:kube-proxy")]),
        _binding("system:kube-controller-manager", [_subject("User", "system:kube-controller-manager")]),
        _binding("system:kube-dns", [_subject("ServiceAccount", "kube-dns", "kube-system")]),
        _binding("system:kube-scheduler", [_subject("User", "system:kube-scheduler")]),
        _binding("system:volume-scheduler", [_subject("User", "system:kube-scheduler")]),
        # Kept without subjects since 1.8: the Node authorizer serves kubelets instead.
        _binding("system:node", []),
        _binding("system:service-account-issuer-discovery", [_subject("Group", "system:serviceaccounts")]),
        # what kubeadm grants the apiserver's kubelet-client certificate, so `kubectl logs` passes the
        # kubelets' webhook authorisation (testbed/node/kubelet_server.py)
        _binding("kube-apiserver-kubelet-client", [_subject("User", "kube-apiserver-kubelet-client")],
                 "system:kubelet-api-admin"),
    ]
    reader_role = {
        "apiVersion": f"{RBAC_GROUP}/v1", "kind": "Role",
        "metadata": _meta("extension-apiserver-authentication-reader", namespace="kube-system"),
        "rules": [_rule(READ, ("",), ("configmaps",), ("extension-apiserver-authentication",))],
    }
    reader_binding = {
        "apiVersion": f"{RBAC_GROUP}/v1", "kind": "RoleBinding",
        "metadata": _meta("system::extension-apiserver-authentication-reader", namespace="kube-system"),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role",
                    "name": "extension-apiserver-authentication-reader"},
        "subjects": [_subject("User", "system:kube-controller-manager"),
                     _subject("User", "system:kube-scheduler")],
    }
    return [*roles, *bindings, reader_role, reader_binding]


# ClusterRoles first, then ClusterRoleBindings, then the kube-system Role and RoleBinding (the
# namespace kube-system must exist before those two are stored).
BOOTSTRAP_OBJECTS: list[dict[str, Any]] = _bootstrap()


def bootstrap_objects(minor: int) -> list[dict[str, Any]]:
    """The bootstrap policy of one minor.

    SelfSubjectReview (GA in 1.28) is granted only where it is served. Up to 1.27 the scheduler's
    role also covers the Endpoints leader lock (create; get and update of ``kube-scheduler`` only),
    which 1.18/1.19 kube-scheduler uses by default ("endpointsleases")."""
    if minor >= 28:
        return BOOTSTRAP_OBJECTS
    out = []
    for obj in BOOTSTRAP_OBJECTS:
        if obj["kind"] == "ClusterRole" and obj["metadata"]["name"] == "system:basic-user":
            rules = [r for r in obj["rules"] if "selfsubjectreviews" not in r.get("resources", ())]
            obj = {**obj, "rules": rules}
        if obj["kind"] == "ClusterRole" and obj["metadata"]["name"] == "system:kube-scheduler":
            rules = list(obj["rules"])
            at = next(i for i, r in enumerate(rules) if "leases" in r.get("resources", ())) + 2
            rules[at:at] = [_rule(("create",), ("",), ("endpoints",)),
                            _rule(("get", "update"), ("",), ("endpoints",), ("kube-scheduler",))]
            obj = {**obj, "rules": rules}
        out.append(obj)
    return out

STORE_KEYS = {"ClusterRole": CLUSTER_ROLES, "ClusterRoleBinding": CLUSTER_ROLE_BINDINGS,
              "Role": ROLES, "RoleBinding": ROLE_BINDINGS}


# --- index ---------------------------------------------------------------------------------

@dataclass
class _BindingIndex:
    by_user: dict[str, list[int]] = field(default_factory=dict)
    by_group: dict[str, list[int]] = field(default_factory=dict)
    by_sa: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    bindings: list[dict[str, Any]] = field(default_factory=list)

    def add(self, binding: dict[str, Any], default_ns: str) -> None:
        pos = len(self.bindings)
        self.bindings.append(binding)
        for s in binding.get("subjects") or ():
            kind, name = s.get("kind"), s.get("name", "")
            if kind == "User":
                self.by_user.setdefault(name, []).append(pos)
            elif kind == "Group":
                self.by_group.setdefault(name, []).append(pos)
            elif kind == "ServiceAccount":
                ns = s.get("namespace") or default_ns
                if ns:
                    self.by_sa.setdefault((ns, name), []).append(pos)

    def for_user(self, user: UserInfo) -> list[dict[str, Any]]:
        hits: set[int] = set(self.by_user.get(user.name, ()))
        for g in user.groups:
            hits.update(self.by_group.get(g, ()))
        sa = split_service_account_username(user.name)
        if sa is not None:
            hits.update(self.by_sa.get(sa, ()))
        return [self.bindings[i] for i in sorted(hits)]


def _name(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _applies(user: UserInfo, subject: dict[str, Any], namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return user.name == subject.get("name")
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or namespace
        return bool(ns) and user.name == f"system:serviceaccount:{ns}:{subject.get('name', '')}"
    return False


class _Index:
    def __init__(self, reader: Reader) -> None:
        self.cluster = _BindingIndex()
        for b in reader.list(CLUSTER_ROLE_BINDINGS):
            self.cluster.add(b, "")
        self.namespaced: dict[str, _BindingIndex] = {}
        for b in reader.list(ROLE_BINDINGS):
            ns = (b.get("metadata") or {}).get("namespace", "")
            self.namespaced.setdefault(ns, _BindingIndex()).add(b, ns)
        self.cluster_roles = {_name(r)[1]: r for r in reader.list(CLUSTER_ROLES)}
        self.roles = {_name(r): r for r in reader.list(ROLES)}
        self._compiled: dict[tuple[str, str], list[Rule]] = {}

    def cluster_role_rules(self, name: str, visiting: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        role = self.cluster_roles[name]
        agg = role.get("aggregationRule")
        if agg is None:
            return list(role.get("rules") or ())
        # What the aggregation controller writes: the union of the rules of every other ClusterRole
        # matched by any selector, in name order, without duplicates.
        selectors = agg.get("clusterRoleSelectors") or []
        out: list[dict[str, Any]] = []
        for other in sorted(self.cluster_roles):
            if other == name or other in visiting:
                continue
            labels = (self.cluster_roles[other].get("metadata") or {}).get("labels") or {}
            try:
                if not any(sel is not None and selector_matches(sel, labels) for sel in selectors):
                    continue
            except SelectorError:
                continue
            for r in self.cluster_role_rules(other, visiting | {name}):
                if r not in out:
                    out.append(r)
        return out

    def role_ref_rules(self, ref: dict[str, Any], namespace: str) -> tuple[list[Rule], str]:
        kind, name = ref.get("kind", ""), ref.get("name", "")
        key = (namespace if kind == "Role" else "", f"{kind}/{name}")
        cached = self._compiled.get(key)
        if cached is not None:
            return cached, ""
        if kind == "Role":
            role = self.roles.get((namespace, name))
            if role is None:
                return [], f'role.{RBAC_GROUP} "{name}" not found'
            raw = list(role.get("rules") or ())
        elif kind == "ClusterRole":
            if name not in self.cluster_roles:
                return [], f'clusterrole.{RBAC_GROUP} "{name}" not found'
            raw = self.cluster_role_rules(name)
        else:
            return [], f'unsupported role reference kind: "{kind}"'
        rules = [Rule.of(r) for r in raw]
        self._compiled[key] = rules
        return rules, ""

    def visit(self, user: UserInfo, namespace: str) -> Iterable[tuple[str, list[Rule], str]]:
        """(description of the binding, its rules, resolution error) for each binding of the user."""
        for b in self.cluster.for_user(user):
            subject = next((s for s in b.get("subjects") or () if _applies(user, s, "")), None)
            if subject is None:
                continue
            rules, err = self.role_ref_rules(b.get("roleRef") or {}, "")
            yield _describe("ClusterRoleBinding", b, subject, ""), rules, err
        if not namespace:
            return
        idx = self.namespaced.get(namespace)
        if idx is None:
            return
        for b in idx.for_user(user):
            subject = next((s for s in b.get("subjects") or () if _applies(user, s, namespace)), None)
            if subject is None:
                continue
            rules, err = self.role_ref_rules(b.get("roleRef") or {}, namespace)
            yield _describe("RoleBinding", b, subject, namespace), rules, err


def _describe(kind: str, binding: dict[str, Any], subject: dict[str, Any], namespace: str) -> str:
    name = (binding.get("metadata") or {}).get("name", "")
    if kind == "RoleBinding":
        name = f"{name}/{namespace}"
    ref = binding.get("roleRef") or {}
    s_name = subject.get("name", "")
    if subject.get("kind") == "ServiceAccount":
        s_name = f"{s_name}/{subject.get('namespace') or namespace}"
    role = f'{ref.get("kind", "")} "{ref.get("name", "")}"'
    return f'{kind} "{name}" of {role} to {subject.get("kind")} "{s_name}"'


_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, _Index]] = weakref.WeakKeyDictionary()
_CACHE_BY_ID: dict[int, tuple[Any, int, _Index]] = {}


def _index(reader: Reader, revision: int | None) -> _Index:
    if revision is None:
        return _Index(reader)
    try:
        hit = _CACHE.get(reader)
    except TypeError:  # a reader that cannot be weakly referenced
        held = _CACHE_BY_ID.get(id(reader))
        hit = (held[1], held[2]) if held is not None and held[0] is reader else None
        if hit is None or hit[0] != revision:
            idx = _Index(reader)
            _CACHE_BY_ID[id(reader)] = (reader, revision, idx)
            return idx
        return hit[1]
    if hit is not None and hit[0] == revision:
        return hit[1]
    idx = _Index(reader)
    _CACHE[reader] = (revision, idx)
    return idx


# --- node identity -------------------------------------------------------------------------

_NODE_RULES = [Rule.of(r) for r in NODE_RULES]


def node_name(user: UserInfo) -> str | None:
    """The node a kubelet credential speaks for (``system:node:<name>`` in ``system:nodes``)."""
    if NODES_GROUP not in user.groups or not user.name.startswith(NODE_USER_PREFIX):
        return None
    return user.name[len(NODE_USER_PREFIX):] or None


# --- public API ----------------------------------------------------------------------------

def authorize(reader: Reader, a: Attributes, revision: int | None = None) -> tuple[bool, str]:
    """(allowed, reason). The reason is what kube-apiserver appends to a 403 message, often empty."""
    if SUPERUSER_GROUP in a.user.groups:
        return True, ""
    if node_name(a.user) is not None and rule_allows(a, _NODE_RULES):
        return True, ""
    errors: list[str] = []
    for source, rules, err in _index(reader, revision).visit(a.user, a.namespace):
        if err:
            errors.append(err)
            continue
        for r in rules:
            if r.allows(a):
                return True, f"RBAC: allowed by {source}"
    return False, f"RBAC: {_aggregate(errors)}" if errors else ""


def rules_review(reader: Reader, user: UserInfo, namespace: str,
                 revision: int | None = None) -> dict[str, Any]:
    """The ``status`` of a SelfSubjectRulesReview for ``user`` in ``namespace``."""
    resource_rules: list[dict[str, Any]] = []
    non_resource_rules: list[dict[str, Any]] = []
    errors: list[str] = []
    incomplete = False
    if node_name(user) is not None:
        incomplete = True
        errors.append("node authorizer does not support user rule resolution")
    for _source, rules, err in _index(reader, revision).visit(user, namespace):
        if err:
            errors.append(err)
        for r in rules:
            raw = r.raw
            if raw.get("resources"):
                rr: dict[str, Any] = {"verbs": list(raw.get("verbs") or [])}
                for k in ("apiGroups", "resources", "resourceNames"):
                    if raw.get(k):
                        rr[k] = list(raw[k])
                resource_rules.append(rr)
            if raw.get("nonResourceURLs"):
                non_resource_rules.append({"verbs": list(raw.get("verbs") or []),
                                           "nonResourceURLs": list(raw["nonResourceURLs"])})
    status: dict[str, Any] = {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
                              "incomplete": incomplete}
    if errors:
        status["evaluationError"] = _aggregate(errors)
    return status


def access_review(reader: Reader, spec: dict[str, Any], user: UserInfo | None, *,
                  kind: str | None = None, revision: int | None = None) -> dict[str, Any]:
    """The ``status`` of a (Local)SubjectAccessReview (``user`` None: the user comes from the spec) or a
    SelfSubjectAccessReview (``user`` is the requester). Raises 422 for the specs the real server rejects."""
    kind = kind or ("SubjectAccessReview" if user is None else "SelfSubjectAccessReview")
    ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    causes = []
    if ra is not None and nra is not None:
        causes.append(invalid_value("spec.nonResourceAttributes", "", "cannot be specified in combination "
                                    "with resourceAttributes"))
    if ra is None and nra is None:
        causes.append(invalid_value("spec.resourceAttributes", "null", "exactly one of nonResourceAttributes "
                                    "or resourceAttributes must be specified"))
    if user is None:
        if not spec.get("user") and not spec.get("groups"):
            causes.append(invalid_value("spec.user", "", "at least one of user or group must be specified"))
        user = UserInfo(spec.get("user") or "", spec.get("uid") or "", tuple(spec.get("groups") or ()),
                        dict(spec.get("extra") or {}))
    if causes:
        raise invalid("authorization.k8s.io", kind, "", causes)
    if ra is not None:
        a = Attributes(user, ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
                       ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", ""),
                       version=ra.get("version", ""))
    else:
        a = Attributes(user, nra.get("verb", ""), path=nra.get("path", "") or "/")
    allowed, reason = authorize(reader, a, revision)
    status: dict[str, Any] = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return status


def forbidden_error(a: Attributes, reason: str = "") -> APIError:
    """The 403 kube-apiserver answers for a denied request (responsewriters.Forbidden)."""
    user = a.user.name
    if not a.resource_request:
        msg = f'User "{user}" cannot {a.verb} path "{a.path}"'
    else:
        res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        msg = f'User "{user}" cannot {a.verb} resource "{res}" in API group "{a.group}" {where}'
    msg = msg.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if reason:
        msg = f"{msg}: {reason}"
    details: dict[str, Any] = {}
    if a.resource_request and a.resource:
        gr = f"{a.resource}.{a.group}" if a.group else a.resource
        prefix = f'{gr} "{a.name}" is forbidden' if a.name else f"{gr} is forbidden"
        # StatusDetails in Go's field order: name, group, kind
        if a.name:
            details["name"] = a.name
        if a.group:
            details["group"] = a.group
        details["kind"] = a.resource
    else:
        prefix = "forbidden"
    return APIError(403, "Forbidden", f"{prefix}: {msg}", details=details)


# --- escalation prevention -------------------------------------------------------------------
# What the rbac storage of kube-apiserver does before admission: a Role/ClusterRole may only grant
# what its writer already holds (or the writer has ``escalate`` on it); a binding may only reference
# a role whose every permission the writer holds (or the writer has ``bind`` on that role).

def _breakdown(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One rule per (group, resource, verb, name) and per (url, verb), in the real order."""
    out: list[dict[str, Any]] = []
    verbs = list(raw.get("verbs") or ())
    names = list(raw.get("resourceNames") or ())
    for group in raw.get("apiGroups") or ():
        for res in raw.get("resources") or ():
            for verb in verbs:
                if names:
                    out.extend({"apiGroups": [group], "resources": [res], "verbs": [verb],
                                "resourceNames": [n]} for n in names)
                else:
                    out.append({"apiGroups": [group], "resources": [res], "verbs": [verb]})
    for url in raw.get("nonResourceURLs") or ():
        out.extend({"nonResourceURLs": [url], "verbs": [v]} for v in verbs)
    return out


def _resources_cover(owned: list[str], wanted: list[str]) -> bool:
    if "*" in owned:
        return True
    for path in wanted:
        if path in owned:
            continue
        if "/" not in path or "*/" + path.split("/", 1)[1] not in owned:
            return False
    return True


def _urls_cover(owned: list[str], wanted: list[str]) -> bool:
    for url in wanted:
        if not any(o == "*" or o == url or (o.endswith("*") and url.startswith(o.rstrip("*")))
                   for o in owned):
            return False
    return True


def _covers(owner: dict[str, Any], sub: dict[str, Any]) -> bool:
    ov, og = owner.get("verbs") or [], owner.get("apiGroups") or []
    on = owner.get("resourceNames") or []
    if not ("*" in ov or all(v in ov for v in sub.get("verbs") or ())):
        return False
    if not ("*" in og or all(g in og for g in sub.get("apiGroups") or ())):
        return False
    if not _resources_cover(owner.get("resources") or [], sub.get("resources") or []):
        return False
    if not _urls_cover(owner.get("nonResourceURLs") or [], sub.get("nonResourceURLs") or []):
        return False
    sn = sub.get("resourceNames") or []
    return not on or (bool(sn) and all(n in on for n in sn))


def _compact(missing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules that differ only in their verb are merged (CompactRules)."""
    merged: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for r in missing:
        if r.get("nonResourceURLs"):
            out.append(r)
            continue
        names = r.get("resourceNames") or []
        key = (r["apiGroups"][0], r["resources"][0], names[0] if names else None)
        held = merged.get(key)
        if held is None:
            held = merged[key] = {**r, "verbs": list(r["verbs"])}
            out.append(held)
        else:
            held["verbs"].extend(v for v in r["verbs"] if v not in held["verbs"])
    return out


def _go_quoted(values: Iterable[str]) -> str:
    """Go's %q of a []string: ["a" "b"]."""
    import json

    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def compact_string(r: dict[str, Any]) -> str:
    parts = []
    for field_name, key in (("APIGroups", "apiGroups"), ("Resources", "resources"),
                            ("NonResourceURLs", "nonResourceURLs"), ("ResourceNames", "resourceNames"),
                            ("Verbs", "verbs")):
        if r.get(key):
            parts.append(f"{field_name}:{_go_quoted(r[key])}")
    return "{" + ", ".join(parts) + "}"


def escalation_error(reader: Reader, user: UserInfo, namespace: str, rules: Iterable[dict[str, Any]],
                     revision: int | None = None) -> str:
    """'' when ``user`` holds every permission in ``rules`` (in ``namespace``); the real message otherwise."""
    owned: list[dict[str, Any]] = []
    errors: list[str] = []
    for _source, compiled, err in _index(reader, revision).visit(user, namespace):
        if err:
            errors.append(err)
        owned.extend(r.raw for r in compiled)
    missing = [sub for raw in rules for sub in _breakdown(raw) if not any(_covers(o, sub) for o in owned)]
    if not missing:
        return ""
    descriptions = sorted({compact_string(r) for r in _compact(missing)})
    msg = (f"user {_go_quoted([user.name])[1:-1]} (groups={_go_quoted(user.groups)}) is attempting to grant "
           "RBAC permissions not currently held:\n" + "\n".join(descriptions))
    if errors:
        msg += f"; resolution errors: [{', '.join(errors)}]"
    return msg


_FULL_AUTHORITY = [_rule(("*",), ("*",), ("*",)), _urls(("*",), ("*",))]
_PLURAL = {"Role": "roles", "ClusterRole": "clusterroles", "RoleBinding": "rolebindings",
           "ClusterRoleBinding": "clusterrolebindings"}


def _forbidden(kind: str, name: str, message: str) -> APIError:
    plural = _PLURAL[kind]
    return APIError(403, "Forbidden", f'{plural}.{RBAC_GROUP} "{name}" is forbidden: {message}',
                    details={"name": name, "group": RBAC_GROUP, "kind": plural})


def _escalation_relevant(obj: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """False for an update that leaves everything but the garbage collector's fields alone."""
    if old is None:
        return True

    def essence(o: dict[str, Any]) -> tuple[Any, ...]:
        m = o.get("metadata") or {}
        return (o.get("rules"), o.get("aggregationRule"), o.get("roleRef"), o.get("subjects"),
                m.get("labels"), m.get("annotations"))

    return essence(obj) != essence(old)


def check_escalation(reader: Reader, user: UserInfo, kind: str, obj: dict[str, Any],
                     old: dict[str, Any] | None = None, revision: int | None = None) -> None:
    """Raise the real 403 when writing ``obj`` (a Role, ClusterRole or one of their bindings) would grant
    ``user`` more than it holds. Members of system:masters may always."""
    if kind not in _PLURAL or SUPERUSER_GROUP in user.groups or not _escalation_relevant(obj, old):
        return
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name", ""), meta.get("namespace", "") if kind.startswith("Role") else ""
    if kind in ("Role", "ClusterRole"):
        attrs = Attributes(user, "escalate", RBAC_GROUP, _PLURAL[kind], namespace=namespace, name=name)
        if authorize(reader, attrs, revision)[0]:
            return
        msg = escalation_error(reader, user, namespace, obj.get("rules") or (), revision)
        if msg:
            raise _forbidden(kind, name, msg)
        if (kind == "ClusterRole" and obj.get("aggregationRule") is not None
                and escalation_error(reader, user, namespace, _FULL_AUTHORITY, revision)):
            raise _forbidden(kind, name, "must have cluster-admin privileges to use the aggregationRule")
        return
    ref = obj.get("roleRef") or {}
    ref_kind, ref_name = ref.get("kind", ""), ref.get("name", "")
    if ref_kind in ("Role", "ClusterRole"):
        attrs = Attributes(user, "bind", ref.get("apiGroup", RBAC_GROUP), _PLURAL[ref_kind],
                           namespace=namespace, name=ref_name)
        if authorize(reader, attrs, revision)[0]:
            return
    idx = _index(reader, revision)
    compiled, err = idx.role_ref_rules(ref, namespace)
    if err:
        # The real storage returns the role lookup's own error (404 for a missing role).
        if ref_kind in _PLURAL:
            raise not_found(RBAC_GROUP, _PLURAL[ref_kind], ref_name)
        raise _forbidden(kind, name, err)
    msg = escalation_error(reader, user, namespace, [r.raw for r in compiled], revision)
    if msg:
        raise _forbidden(kind, name, msg)
