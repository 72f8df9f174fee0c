"""RBAC authorization: rule forms, bindings, aggregation, bootstrap policy, reviews, 403 text."""

from __future__ import annotations

import copy

import pytest

from testbed.apiserver import rbac
from testbed.apiserver.auth import ANONYMOUS, UserInfo, service_account_user
from testbed.apiserver.errors import APIError
from testbed.apiserver.rbac import Attributes, Rule, access_review, authorize, forbidden_error, rules_review
from testbed.apiserver.reader import DictReader

G = "rbac.authorization.k8s.io"
ALICE = UserInfo("alice", groups=("devs", "system:authenticated"))


def _reader(*objs: dict) -> DictReader:
    r = DictReader()
    for o in objs:
        r.add(rbac.STORE_KEYS[o["kind"]], copy.deepcopy(o))
    return r


def _role(
    name: str, rules: list[dict], ns: str = "", labels: dict | None = None, agg: list | None = None
) -> dict:
    kind = "Role" if ns else "ClusterRole"
    meta: dict = {"name": name, **({"namespace": ns} if ns else {}), **({"labels": labels} if labels else {})}
    o = {"kind": kind, "metadata": meta, "rules": rules}
    if agg is not None:
        o["aggregationRule"] = {"clusterRoleSelectors": agg}
    return o


def _bind(name: str, role: str, subjects: list[dict], ns: str = "", role_kind: str | None = None) -> dict:
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    return {
        "kind": kind,
        "metadata": {"name": name, **({"namespace": ns} if ns else {})},
        "roleRef": {"apiGroup": G, "kind": role_kind or ("Role" if ns else "ClusterRole"), "name": role},
        "subjects": subjects,
    }


def _user(name: str) -> dict:
    return {"kind": "User", "name": name, "apiGroup": G}


def _a(user: UserInfo = ALICE, verb: str = "get", resource: str = "pods", **kw) -> Attributes:
    return Attributes(user=user, verb=verb, resource=resource, **kw)


@pytest.mark.parametrize(
    ("rule", "attrs", "allowed"),
    [
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, _a(), True),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, _a(verb="list"), False),
        ({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}, _a(verb="deletecollection"), True),
        ({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"]}, _a(), False),
        (
            {"verbs": ["get"], "apiGroups": ["*"], "resources": ["deployments"]},
            _a(resource="deployments", group="apps"),
            True,
        ),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}, _a(resource="secrets"), True),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}, _a(subresource="log"), True),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, _a(subresource="log"), False),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, _a(subresource="log"), True),
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}, _a(), False),
        (
            {"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/scale"]},
            _a(verb="update", resource="deployments", group="apps", subresource="scale"),
            True,
        ),
        (
            {"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/scale"]},
            _a(verb="update", resource="deployments", group="apps"),
            False,
        ),
        # "pods/*" is not a wildcard for RBAC (only "*" and "*/sub" are).
        ({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/*"]}, _a(subresource="log"), False),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
            _a(name="a"),
            True,
        ),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
            _a(name="b"),
            False,
        ),
        (
            {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]},
            _a(verb="list"),
            False,
        ),
        ({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, _a(resource="", path="/healthz"), True),
        ({"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, _a(resource="", path="/healthz/etcd"), False),
        ({"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}, _a(resource="", path="/healthz/etcd"), True),
        ({"verbs": ["get"], "nonResourceURLs": ["/api*"]}, _a(resource="", path="/apis/apps"), True),
        ({"verbs": ["get"], "nonResourceURLs": ["*"]}, _a(resource="", path="/anything"), True),
        ({"verbs": ["get"], "nonResourceURLs": ["*"]}, _a(), False),  # URL rules never grant resources
        ({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]}, _a(resource="", path="/metrics"), False),
    ],
)
def test_rule_forms(rule, attrs, allowed):
    assert Rule.of(rule).allows(attrs) is allowed


def test_bindings_subjects_and_reasons():
    pod_reader = _role("pod-reader", [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}], ns="ns1")
    cr = _role("secret-reader", [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}])
    r = _reader(
        pod_reader,
        cr,
        _bind("rb", "pod-reader", [_user("alice")], ns="ns1"),
        _bind(
            "rb-cr",
            "secret-reader",
            [{"kind": "Group", "name": "devs", "apiGroup": G}],
            ns="ns1",
            role_kind="ClusterRole",
        ),
        _bind("rb-sa", "pod-reader", [{"kind": "ServiceAccount", "name": "bot"}], ns="ns1"),
        _bind("crb-sa-no-ns", "secret-reader", [{"kind": "ServiceAccount", "name": "bot"}]),
    )
    ok, reason = authorize(r, _a(namespace="ns1"))
    assert ok and reason == 'RBAC: allowed by RoleBinding "rb/ns1" of Role "pod-reader" to User "alice"'
    assert authorize(r, _a(namespace="ns2")) == (False, "")
    ok, reason = authorize(r, _a(resource="secrets", namespace="ns1"))
    assert ok and reason.endswith('of ClusterRole "secret-reader" to Group "devs"')
    # A RoleBinding to a ClusterRole grants only inside its namespace.
    assert not authorize(r, _a(resource="secrets", namespace="ns2"))[0]
    assert not authorize(r, _a(resource="secrets"))[0]
    bot = service_account_user("ns1", "bot", "u")
    ok, reason = authorize(r, _a(user=bot, namespace="ns1"))
    assert ok and reason.endswith('to ServiceAccount "bot/ns1"')
    # A ServiceAccount subject of a ClusterRoleBinding without namespace matches nobody.
    assert not authorize(r, _a(user=bot, resource="secrets", namespace="other"))[0]


def test_missing_roles_give_the_real_reason():
    r = _reader(
        _bind("crb", "gone", [_user("alice")]),
        _bind("crb2", "gone", [_user("alice")]),
        _bind("rb", "nope", [_user("alice")], ns="ns1"),
    )
    ok, reason = authorize(r, _a())
    assert not ok and reason == f'RBAC: clusterrole.{G} "gone" not found'
    ok, reason = authorize(r, _a(namespace="ns1"))
    assert reason == f'RBAC: [clusterrole.{G} "gone" not found, role.{G} "nope" not found]'
    assert authorize(r, _a(user=UserInfo("bob"))) == (False, "")


def test_superuser_group_and_cluster_role_binding():
    assert authorize(DictReader(), _a(user=UserInfo("root", groups=("system:masters",)), verb="delete")) == (
        True,
        "",
    )
    r = _reader(*[o for o in rbac.BOOTSTRAP_OBJECTS if o["kind"].startswith("Cluster")])
    ok, _ = authorize(r, _a(user=UserInfo("x", groups=("system:masters",))))
    assert ok


def test_aggregation_is_computed_at_evaluation_time():
    r = _reader(
        _role(
            "agg",
            [],
            agg=[
                {"matchLabels": {"team": "a"}},
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]},
            ],
        ),
        _role("part1", [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}], labels={"team": "a"}),
        _binding := _bind("b", "agg", [_user("alice")]),
    )
    assert authorize(r, _a())[0]
    assert not authorize(r, _a(resource="gpus", group="example.com"))[0]
    r.add(
        rbac.CLUSTER_ROLES,
        _role(
            "part2",
            [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["gpus"]}],
            labels={"tier": "x"},
        ),
    )
    assert authorize(r, _a(resource="gpus", group="example.com"))[0]
    assert _binding["metadata"]["name"] == "b"


def test_bootstrap_policy_grants():
    r = _reader(*rbac.BOOTSTRAP_OBJECTS)
    authn = UserInfo("u", groups=("system:authenticated",))
    assert authorize(r, Attributes(authn, "get", path="/apis/apps/v1"))[0]
    assert authorize(r, Attributes(authn, "create", "authorization.k8s.io", "selfsubjectaccessreviews"))[0]
    assert not authorize(r, Attributes(authn, "list", resource="pods", namespace="default"))[0]
    assert authorize(r, Attributes(ANONYMOUS, "get", path="/version"))[0]
    assert not authorize(r, Attributes(ANONYMOUS, "get", path="/api"))[0]
    sched = UserInfo("system:kube-scheduler", groups=("system:authenticated",))
    assert authorize(r, Attributes(sched, "create", resource="pods", subresource="binding", namespace="n"))[0]
    assert authorize(
        r,
        Attributes(
            sched, "update", "coordination.k8s.io", "leases", namespace="kube-system", name="kube-scheduler"
        ),
    )[0]
    assert not authorize(
        r, Attributes(sched, "update", "coordination.k8s.io", "leases", namespace="kube-system", name="other")
    )[0]
    assert authorize(r, Attributes(sched, "update", resource="persistentvolumeclaims", namespace="n"))[0]
    node = UserInfo("system:node:n1", groups=("system:nodes", "system:authenticated"))
    assert authorize(r, Attributes(node, "patch", resource="nodes", subresource="status", name="n1"))[0]
    assert authorize(r, Attributes(node, "get", resource="secrets", namespace="n", name="s"))[0]
    assert not authorize(r, Attributes(node, "delete", resource="secrets", namespace="n", name="s"))[0]
    # The system:node binding exists but has no subjects: a node name without the group gets nothing.
    assert not authorize(r, Attributes(UserInfo("system:node:n1"), "get", resource="nodes"))[0]
    sa = service_account_user("team", "ci", "uid")
    r.add(
        rbac.ROLE_BINDINGS,
        _bind(
            "ci-edit", "edit", [{"kind": "ServiceAccount", "name": "ci"}], ns="team", role_kind="ClusterRole"
        ),
    )
    assert authorize(r, Attributes(sa, "create", "apps", "deployments", namespace="team"))[0]
    assert authorize(r, Attributes(sa, "get", "", "secrets", namespace="team"))[0]
    assert not authorize(r, Attributes(sa, "create", G, "rolebindings", namespace="team"))[0]
    assert not authorize(r, Attributes(sa, "create", "", "endpoints", namespace="team"))[0]
    r.add(
        rbac.ROLE_BINDINGS,
        _bind(
            "ci-admin",
            "admin",
            [{"kind": "ServiceAccount", "name": "ci"}],
            ns="team",
            role_kind="ClusterRole",
        ),
    )
    assert authorize(r, Attributes(sa, "create", G, "rolebindings", namespace="team"))[0]
    viewer = UserInfo("v")
    r.add(rbac.ROLE_BINDINGS, _bind("v", "view", [_user("v")], ns="team", role_kind="ClusterRole"))
    assert authorize(r, Attributes(viewer, "list", "apps", "deployments", namespace="team"))[0]
    assert not authorize(r, Attributes(viewer, "get", "", "secrets", namespace="team"))[0]


def test_bootstrap_objects_are_marked_like_the_real_ones():
    names = {(o["kind"], o["metadata"]["name"]) for o in rbac.BOOTSTRAP_OBJECTS}
    for n in (
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:node",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:auth-delegator",
        "system:volume-scheduler",
    ):
        assert ("ClusterRole", n) in names
    for o in rbac.BOOTSTRAP_OBJECTS:
        assert o["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
        assert o["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] == "true"
    by_name = {o["metadata"]["name"]: o for o in rbac.BOOTSTRAP_OBJECTS if o["kind"] == "ClusterRoleBinding"}
    assert by_name["cluster-admin"]["subjects"] == [
        {"apiGroup": G, "kind": "Group", "name": "system:masters"}
    ]
    assert "subjects" not in by_name["system:node"]
    assert [s["name"] for s in by_name["system:public-info-viewer"]["subjects"]] == [
        "system:authenticated",
        "system:unauthenticated",
    ]
    view = next(o for o in rbac.BOOTSTRAP_OBJECTS if o["metadata"]["name"] == "view")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["aggregationRule"]["clusterRoleSelectors"] == [
        {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}
    ]


def test_rules_review():
    r = _reader(*rbac.BOOTSTRAP_OBJECTS, _bind("b", "missing", [_user("alice")]))
    st = rules_review(r, ALICE, "default")
    assert st["incomplete"] is False
    assert st["evaluationError"] == f'clusterrole.{G} "missing" not found'
    assert {
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    } in st["resourceRules"]
    assert {
        "verbs": ["get"],
        "nonResourceURLs": ["/livez", "/readyz", "/healthz", "/version", "/version/"],
    } in st["nonResourceRules"]
    admin = rules_review(r, UserInfo("root", groups=("system:masters",)), "")
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} in admin["resourceRules"]
    node = rules_review(r, UserInfo("system:node:n", groups=("system:nodes",)), "")
    assert node["incomplete"] is True
    assert node["evaluationError"] == "node authorizer does not support user rule resolution"


def test_access_reviews():
    r = _reader(*rbac.BOOTSTRAP_OBJECTS)
    st = access_review(
        r,
        {
            "user": "x",
            "groups": ["system:masters"],
            "resourceAttributes": {"verb": "delete", "resource": "nodes"},
        },
        None,
    )
    assert st == {"allowed": True}
    st = access_review(
        r,
        {
            "user": "system:kube-scheduler",
            "resourceAttributes": {
                "verb": "create",
                "resource": "pods",
                "subresource": "binding",
                "namespace": "n",
            },
        },
        None,
    )
    assert st["allowed"] and st["reason"].startswith(
        'RBAC: allowed by ClusterRoleBinding "system:kube-scheduler"'
    )
    st = access_review(
        r,
        {"nonResourceAttributes": {"verb": "get", "path": "/apis"}},
        UserInfo("me", groups=("system:authenticated",)),
    )
    assert st["allowed"] is True
    assert access_review(r, {"resourceAttributes": {"verb": "get", "resource": "pods"}}, UserInfo("me")) == {
        "allowed": False
    }
    with pytest.raises(APIError) as e:
        access_review(r, {"resourceAttributes": {"verb": "get"}}, None)
    assert e.value.code == 422
    assert e.value.message == (
        'SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user: Invalid value: '
        '"": at least one of user or group must be specified'
    )
    with pytest.raises(APIError) as e:
        access_review(r, {}, UserInfo("me"))
    assert "exactly one of nonResourceAttributes or resourceAttributes must be specified" in e.value.message
    assert e.value.message.startswith('SelfSubjectAccessReview.authorization.k8s.io "" is invalid')


def test_forbidden_messages():
    sa = "system:serviceaccount:ns:sa"
    e = forbidden_error(Attributes(UserInfo(sa), "list", resource="pods", namespace="ns"))
    assert e.code == 403 and e.reason == "Forbidden"
    assert e.message == (
        f'pods is forbidden: User "{sa}" cannot list resource "pods" in API group "" in the namespace "ns"'
    )
    e = forbidden_error(
        Attributes(UserInfo("u"), "update", "apps", "deployments", "scale", "ns", "web"), "why"
    )
    assert e.message == (
        'deployments.apps "web" is forbidden: User "u" cannot update resource '
        '"deployments/scale" in API group "apps" in the namespace "ns": why'
    )
    assert e.details == {"kind": "deployments", "name": "web", "group": "apps"}
    e = forbidden_error(Attributes(UserInfo("u"), "get", resource="nodes"))
    assert e.message.endswith('cannot get resource "nodes" in API group "" at the cluster scope')
    e = forbidden_error(Attributes(ANONYMOUS, "get", path="/metrics"))
    assert e.message == 'forbidden: User "system:anonymous" cannot get path "/metrics"'


def test_revision_cache_recomputes_only_on_change():
    r = _reader(_role("pr", [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]))
    assert not authorize(r, _a(), revision=1)[0]
    r.add(rbac.CLUSTER_ROLE_BINDINGS, _bind("b", "pr", [_user("alice")]))
    assert not authorize(r, _a(), revision=1)[0]  # same revision: the cached index is used
    assert authorize(r, _a(), revision=2)[0]
    assert authorize(r, _a())[0]  # no revision: always fresh


def test_bootstrap_policy_grants_self_subject_review_only_where_served():
    from testbed.apiserver.rbac import bootstrap_objects

    def basic_user(minor: int) -> list[str]:
        role = next(o for o in bootstrap_objects(minor) if o["metadata"]["name"] == "system:basic-user")
        return [res for r in role["rules"] for res in r.get("resources", ())]
    assert "selfsubjectreviews" not in basic_user(27)
    assert "selfsubjectreviews" in basic_user(28)
    assert "selfsubjectaccessreviews" in basic_user(20)
