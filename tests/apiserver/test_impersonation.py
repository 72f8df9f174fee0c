"""Impersonation (kubectl ``--as``/``--as-group``): the ``impersonate`` verb is checked on users,
service accounts and groups, and the request then runs as the impersonated user, so
``auth can-i --as=<service account>`` answers what that account's own token would get."""

from __future__ import annotations

import json
import subprocess

import pytest

from testbed.clients import kubectl_path

from .helpers import raw


def _token(testbed, ns: str, sa: str) -> str:  # type: ignore[no-untyped-def]
    raw(
        testbed,
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts",
        json.dumps({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}).encode(),
    )
    code, _, data = raw(
        testbed,
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
        json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}).encode(),
    )
    assert code == 201, data
    return json.loads(data)["status"]["token"]


def _whoami(testbed, token: str | None, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
    code, _, data = raw(
        testbed,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body,
        token=token,
        headers=headers,
    )
    return code, json.loads(data)


def test_admin_impersonates_a_service_account_and_groups(testbed, ns) -> None:
    code, review = _whoami(testbed, None, {"Impersonate-User": f"system:serviceaccount:{ns}:robot"})
    assert code == 201
    info = review["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{ns}:robot"
    assert info["groups"] == [
        "system:serviceaccounts",
        f"system:serviceaccounts:{ns}",
        "system:authenticated",
    ]
    # what that account may do is what the request is now allowed
    code, _, data = raw(
        testbed,
        "GET",
        f"/api/v1/namespaces/{ns}/secrets",
        headers={"Impersonate-User": f"system:serviceaccount:{ns}:robot"},
    )
    assert code == 403
    assert f'User \\"system:serviceaccount:{ns}:robot\\" cannot list resource \\"secrets\\"'.encode() in data
    code, review = _whoami(testbed, None, {"Impersonate-User": "bob", "Impersonate-Group": "devs"})
    assert review["status"]["userInfo"]["groups"] == ["devs", "system:authenticated"]


def test_impersonate_verb_is_required(testbed, ns) -> None:
    token = _token(testbed, ns, "imp")
    me = f"system:serviceaccount:{ns}:imp"
    code, body = _whoami(testbed, token, {"Impersonate-User": "bob"})
    assert code == 403
    assert body["message"] == (
        f'users "bob" is forbidden: User "{me}" cannot impersonate resource "users" '
        'in API group "" at the cluster scope'
    )
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"imp-{ns}"},
        "rules": [
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["bob"]}
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"imp-{ns}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"imp-{ns}"},
        "subjects": [{"kind": "ServiceAccount", "name": "imp", "namespace": ns}],
    }
    assert (
        raw(testbed, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", json.dumps(role).encode())[0]
        == 201
    )
    assert (
        raw(
            testbed,
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json.dumps(binding).encode(),
        )[0]
        == 201
    )
    code, body = _whoami(testbed, token, {"Impersonate-User": "bob"})
    assert code == 201 and body["status"]["userInfo"]["username"] == "bob"
    code, body = _whoami(testbed, token, {"Impersonate-User": "carol"})
    assert code == 403
    # a group needs its own grant
    code, body = _whoami(testbed, token, {"Impersonate-User": "bob", "Impersonate-Group": "system:masters"})
    assert code == 403 and 'cannot impersonate resource "groups"' in body["message"]


def test_kubectl_auth_can_i_as_service_account(testbed, ns, tmp_path) -> None:
    kubectl = kubectl_path(33)
    if kubectl is None:
        pytest.skip("kubectl 1.33 is not cached: run `make clients`")
    base = [str(kubectl), "--kubeconfig", str(testbed.kubeconfig_path), "-n", ns]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = lambda *a: subprocess.run([*base, *a], capture_output=True, text=True, env=env, timeout=60)  # noqa: E731
    assert run("auth", "can-i", "list", "secrets").stdout.strip() == "yes"
    out = run("auth", "can-i", "list", "secrets", f"--as=system:serviceaccount:{ns}:robot")
    assert out.stdout.strip() == "no" and out.returncode == 1
    out = run("get", "secrets", "--as=alice", "--as-group=devs")
    assert out.returncode == 1 and 'User "alice" cannot list resource "secrets"' in out.stderr
