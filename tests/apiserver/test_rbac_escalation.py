"""RBAC escalation prevention: roles grant only what the writer holds; bindings need the role or bind."""

from __future__ import annotations

from typing import Any

import pytest

from testbed.embedded import EmbeddedTestbed

from .helpers import raw_json

RBAC = "/apis/rbac.authorization.k8s.io/v1"
NS = "team"


@pytest.fixture(scope="module")
def tb():
    with EmbeddedTestbed(33) as t:
        yield t


def _sa_token(tb: EmbeddedTestbed, ns: str, name: str) -> str:
    code, _ = raw_json(tb, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                       {"metadata": {"name": name}})
    assert code in (201, 409)
    code, body = raw_json(tb, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    assert code == 201, body
    return body["status"]["token"]


def _binding(name: str, role_kind: str, role: str, user: str, ns: str = NS,
             kind: str = "RoleBinding") -> dict[str, Any]:
    b: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": ns}],
    }
    return b


@pytest.fixture(scope="module")
def admin_token(tb) -> str:
    """A namespace admin: the ``admin`` ClusterRole bound in its namespace, a GPU quota on it."""
    assert raw_json(tb, "POST", "/api/v1/namespaces", {"metadata": {"name": NS}})[0] == 201
    quota = {"metadata": {"name": "gpu"}, "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}}
    assert raw_json(tb, "POST", f"/api/v1/namespaces/{NS}/resourcequotas", quota)[0] == 201
    token = _sa_token(tb, NS, "alice")
    code, body = raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/rolebindings",
                          _binding("alice-admin", "ClusterRole", "admin", "alice"))
    assert code == 201, body
    return token


def test_namespace_admin_cannot_bind_cluster_admin_nor_lift_quota(tb, admin_token):
    code, body = raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/rolebindings",
                          _binding("grab", "ClusterRole", "cluster-admin", "alice"), token=admin_token)
    assert code == 403, body
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'rolebindings.rbac.authorization.k8s.io "grab" is forbidden: user "system:serviceaccount:team:alice" '
        '(groups=["system:serviceaccounts" "system:serviceaccounts:team" "system:authenticated"]) '
        "is attempting to grant RBAC permissions not currently held:\n"
        '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}\n{NonResourceURLs:["*"], Verbs:["*"]}'
    )
    assert body["details"] == {"name": "grab", "group": "rbac.authorization.k8s.io", "kind": "rolebindings"}
    patch = b'{"spec":{"hard":{"requests.nvidia.com/gpu":"100"}}}'
    code, _ = raw_json(tb, "PATCH", f"/api/v1/namespaces/{NS}/resourcequotas/gpu", patch,
                       token=admin_token, content_type="application/merge-patch+json")
    assert code == 403
    assert raw_json(tb, "GET", f"{RBAC}/namespaces/{NS}/rolebindings/grab")[0] == 404


def test_namespace_admin_may_bind_what_it_holds(tb, admin_token):
    _sa_token(tb, NS, "bob")
    code, body = raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/rolebindings",
                          _binding("bob-edit", "ClusterRole", "edit", "bob"), token=admin_token)
    assert code == 201, body


def test_role_rules_must_be_held(tb, admin_token):
    ok = {"metadata": {"name": "pod-reader"},
          "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}
    assert raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/roles", ok, token=admin_token)[0] == 201
    bad = {"metadata": {"name": "quota-writer"},
           "rules": [{"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["update", "patch"]},
                     {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    code, body = raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/roles", bad, token=admin_token)
    assert code == 403
    assert body["message"].endswith(
        "is attempting to grant RBAC permissions not currently held:\n"
        '{APIGroups:[""], Resources:["resourcequotas"], Verbs:["update" "patch"]}')
    # Updating a held role into one that escalates is refused just the same.
    code, cur = raw_json(tb, "GET", f"{RBAC}/namespaces/{NS}/roles/pod-reader")
    cur["rules"] = bad["rules"]
    assert raw_json(tb, "PUT", f"{RBAC}/namespaces/{NS}/roles/pod-reader", cur, token=admin_token)[0] == 403
    # A cluster-scoped role is judged against cluster-wide rights only: the namespace admin has none.
    code, body = raw_json(tb, "POST", f"{RBAC}/clusterroles", ok, token=admin_token)
    assert code == 403  # no create on clusterroles at all: the authorizer refuses first
    assert "cannot create resource" in body["message"]


def test_escalate_and_bind_verbs_with_resource_names(tb):
    token = _sa_token(tb, NS, "carol")
    grants = {"metadata": {"name": "carol-rbac"},
              "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"],
                         "verbs": ["create", "get"]},
                        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                         "verbs": ["bind"], "resourceNames": ["view"]},
                        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"],
                         "verbs": ["escalate"], "resourceNames": ["secret-admin"]}]}
    assert raw_json(tb, "POST", f"{RBAC}/clusterroles", grants)[0] == 201
    assert raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/rolebindings",
                    _binding("carol-rbac", "ClusterRole", "carol-rbac", "carol"))[0] == 201
    # bind on "view" only: view may be bound, edit may not.
    assert raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/rolebindings",
                    _binding("v", "ClusterRole", "view", "carol"), token=token)[0] == 201
    assert raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/rolebindings",
                    _binding("e", "ClusterRole", "edit", "carol"), token=token)[0] == 403
    # escalate on the role named secret-admin only.
    role = {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]}
    assert raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/roles",
                    {**role, "metadata": {"name": "secret-admin"}}, token=token)[0] == 201
    assert raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/roles",
                    {**role, "metadata": {"name": "other"}}, token=token)[0] == 403
    # A binding to a missing role: the role lookup's 404.
    code, body = raw_json(tb, "POST", f"{RBAC}/namespaces/{NS}/rolebindings",
                          _binding("m", "Role", "missing", "carol"), token=token)
    assert code == 404, body


def test_cluster_admin_and_masters_bypass(tb):
    # The admin kubeconfig (system:masters) binds cluster-admin and writes aggregated roles freely.
    root = _binding("root", "ClusterRole", "cluster-admin", "root", kind="ClusterRoleBinding")
    assert raw_json(tb, "POST", f"{RBAC}/clusterrolebindings", root)[0] == 201
    agg = {"metadata": {"name": "agg"},
           "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}}
    assert raw_json(tb, "POST", f"{RBAC}/clusterroles", agg)[0] == 201
    # A cluster-admin outside system:masters holds everything, so it may grant anything.
    token = _sa_token(tb, NS, "root")
    assert raw_json(tb, "POST", f"{RBAC}/clusterrolebindings",
                    _binding("root2", "ClusterRole", "cluster-admin", "root", kind="ClusterRoleBinding"),
                    token=token)[0] == 201
    agg2 = {**agg, "metadata": {"name": "agg2"}}
    assert raw_json(tb, "POST", f"{RBAC}/clusterroles", agg2, token=token)[0] == 201


def test_aggregation_rule_needs_full_authority(tb, admin_token):
    token = _sa_token(tb, NS, "dave")
    role = {"metadata": {"name": "dave-cr"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                       "verbs": ["create"]}]}
    assert raw_json(tb, "POST", f"{RBAC}/clusterroles", role)[0] == 201
    crb = _binding("dave-cr", "ClusterRole", "dave-cr", "dave", kind="ClusterRoleBinding")
    assert raw_json(tb, "POST", f"{RBAC}/clusterrolebindings", crb)[0] == 201
    agg = {"metadata": {"name": "dave-agg"},
           "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}}
    code, body = raw_json(tb, "POST", f"{RBAC}/clusterroles", agg, token=token)
    assert code == 403
    assert body["message"].endswith("must have cluster-admin privileges to use the aggregationRule")


def _held(rules: list[dict[str, Any]]):
    """A store where user u holds ``rules`` through one ClusterRoleBinding."""
    from testbed.apiserver import rbac
    from testbed.apiserver.store import Store

    s = Store()
    role = {"kind": "ClusterRole", "metadata": {"name": "r"}, "rules": rules}
    s.put(rbac.CLUSTER_ROLES, role, event="ADDED")
    s.put(rbac.CLUSTER_ROLE_BINDINGS, {"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                                       "roleRef": {"kind": "ClusterRole", "name": "r"},
                                       "subjects": [{"kind": "User", "name": "u"}]}, event="ADDED")
    return s


@pytest.mark.parametrize("owned, wanted, missing", [
    ([{"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]}],
     [{"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]}], None),
    ([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
     [{"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]}],
     '{APIGroups:[""], Resources:["pods/status"], Verbs:["get"]}'),
    ([{"nonResourceURLs": ["/metrics*"], "verbs": ["get"]}],
     [{"nonResourceURLs": ["/metrics/cadvisor"], "verbs": ["get"]}], None),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]}],
     [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
     '{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}'),
    ([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a", "b"]}],
     [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"], "resourceNames": ["b", "c"]}],
     '{APIGroups:[""], Resources:["secrets"], ResourceNames:["b"], Verbs:["list"]}\n'
     '{APIGroups:[""], Resources:["secrets"], ResourceNames:["c"], Verbs:["get" "list"]}'),
])
def test_coverage_rules(owned, wanted, missing):
    from testbed.apiserver import rbac
    from testbed.apiserver.auth import UserInfo

    msg = rbac.escalation_error(_held(owned), UserInfo("u", "", ("g",)), "", wanted)
    if missing is None:
        assert msg == ""
    else:
        assert msg == ('user "u" (groups=["g"]) is attempting to grant RBAC permissions not currently held:\n'
                       + missing)
