"""Server-side apply against fields other writers set: every write records its manager, and an
apply that changes another manager's field is refused with the real 409 unless it forces.

The wire checks use raw HTTPS (the manager of a write without ``fieldManager`` is the User-Agent's
product name); the kubectl checks run the real binaries of the oldest and newest minors that
matter here (1.22: server-side apply GA; 1.35: the newest).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import clients
from testbed.embedded import EmbeddedTestbed
from tests.clients.harness import Client

from .helpers import raw

CM = "/api/v1/namespaces/{ns}/configmaps"


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["metadata"].get("managedFields") or []


def _entry(obj: dict[str, Any], manager: str, operation: str = "Update") -> dict[str, Any]:
    hits = [e for e in _entries(obj) if e["manager"] == manager and e["operation"] == operation]
    assert len(hits) == 1, f"{manager}/{operation} entries: {_entries(obj)}"
    return hits[0]


def _write(tb: EmbeddedTestbed, method: str, path: str, body: Any, ctype: str = "application/json",
           agent: str = "") -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"User-Agent": agent} if agent else None
    code, _, out = raw(tb, method, path, data, content_type=ctype, headers=headers)
    return code, json.loads(out)


def _apply(tb: EmbeddedTestbed, ns: str, name: str, data: dict[str, str], manager: str,
           force: bool = False) -> tuple[int, dict[str, Any]]:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    query = f"?fieldManager={manager}" + ("&force=true" if force else "")
    return _write(tb, "PATCH", CM.format(ns=ns) + f"/{name}{query}", doc, "application/apply-patch+yaml")


def test_every_write_records_its_manager(testbed: EmbeddedTestbed, ns: str) -> None:
    cm = {"metadata": {"name": "w"}, "data": {"a": "1", "b": "1"}}
    code, obj = _write(testbed, "POST", CM.format(ns=ns), cm, agent="python-tool/1.0 (linux)")
    assert code == 201
    created = _entry(obj, "python-tool")
    assert created["apiVersion"] == "v1" and created["fieldsType"] == "FieldsV1"
    assert created["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
    # A merge patch by another manager takes the field it changed, and only that one.
    code, obj = _write(testbed, "PATCH", CM.format(ns=ns) + "/w?fieldManager=kubectl-patch",
                       {"data": {"b": "2"}}, "application/merge-patch+json")
    assert code == 200
    assert _entry(obj, "kubectl-patch")["fieldsV1"] == {"f:data": {"f:b": {}}}
    assert _entry(obj, "python-tool")["fieldsV1"] == {"f:data": {"f:a": {}}}
    # A field removed leaves every set; a write that changes nothing adds no entry.
    code, obj = _write(testbed, "PATCH", CM.format(ns=ns) + "/w?fieldManager=remover",
                       {"data": {"a": None}}, "application/merge-patch+json")
    assert code == 200 and "a" not in obj["data"]
    assert [e["manager"] for e in _entries(obj)] == ["kubectl-patch"]


def test_update_keeps_or_resets_managed_fields_as_sent(testbed: EmbeddedTestbed, ns: str) -> None:
    code, obj = _write(testbed, "POST", CM.format(ns=ns) + "?fieldManager=creator",
                       {"metadata": {"name": "u"}, "data": {"a": "1"}})
    assert code == 201
    body = {"metadata": {"name": "u"}, "data": {"a": "1", "c": "3"}}
    code, obj = _write(testbed, "PUT", CM.format(ns=ns) + "/u?fieldManager=editor", body)
    assert code == 200
    # managedFields omitted from the body: the stored ones stay, the editor owns what it added
    assert _entry(obj, "creator")["fieldsV1"] == {"f:data": {"f:a": {}}}
    assert _entry(obj, "editor")["fieldsV1"] == {"f:data": {"f:c": {}}}
    body["metadata"]["managedFields"] = [{}]
    code, obj = _write(testbed, "PUT", CM.format(ns=ns) + "/u", body, agent="")
    assert code == 200 and "managedFields" not in obj["metadata"]


def test_apply_conflicts_with_an_update_manager_unless_forced(testbed: EmbeddedTestbed, ns: str) -> None:
    code, _ = _write(testbed, "POST", CM.format(ns=ns) + "?fieldManager=kubectl-create",
                     {"metadata": {"name": "c"}, "data": {"a": "1", "b": "1"}})
    assert code == 201
    code, _ = _write(testbed, "PATCH", CM.format(ns=ns) + "/c?fieldManager=kubectl-patch",
                     {"data": {"b": "2"}}, "application/merge-patch+json")
    assert code == 200
    code, status = _apply(testbed, ns, "c", {"a": "9", "b": "9"}, "deployer")
    assert code == 409 and status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 2 conflicts: conflicts with "kubectl-create" using v1:\n- .data.a\n'
        'conflicts with "kubectl-patch" using v1:\n- .data.b')
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": f'conflict with "{m}" using v1', "field": f".data.{f}"}
        for m, f in (("kubectl-create", "a"), ("kubectl-patch", "b"))
    ]
    # The same value as the owner's is shared ownership, not a conflict.
    code, obj = _apply(testbed, ns, "c", {"b": "2"}, "deployer")
    assert code == 200
    assert _entry(obj, "deployer", "Apply")["fieldsV1"] == {"f:data": {"f:b": {}}}
    assert _entry(obj, "kubectl-patch")["fieldsV1"] == {"f:data": {"f:b": {}}}
    code, obj = _apply(testbed, ns, "c", {"a": "9", "b": "2"}, "deployer", force=True)
    assert code == 200 and obj["data"] == {"a": "9", "b": "2"}
    assert [e["manager"] for e in _entries(obj)] == ["deployer", "kubectl-patch"]  # Apply sorts first
    # The forced field is gone from its old owner, whose entry had nothing else and went away.
    code, obj = _write(testbed, "PATCH", CM.format(ns=ns) + "/c?fieldManager=kubectl-patch",
                       {"data": {"a": "10"}}, "application/merge-patch+json")
    assert code == 200  # updates never conflict: they take the field
    code, status = _apply(testbed, ns, "c", {"a": "11", "b": "2"}, "deployer")
    assert code == 409
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.a')


def test_status_and_scale_writers_are_their_own_managers(testbed: EmbeddedTestbed, ns: str) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                    "template": {"metadata": {"labels": {"app": "d"}},
                                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    base = f"/apis/apps/v1/namespaces/{ns}/deployments"
    code, obj = _write(testbed, "POST", base + "?fieldManager=kubectl-create", dep)
    assert code == 201
    owned = _entry(obj, "kubectl-create")["fieldsV1"]
    # defaulted fields belong to the creator, status never does
    assert "f:progressDeadlineSeconds" in owned["f:spec"] and "f:status" not in owned
    containers = owned["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(containers['k:{"name":"c"}']) >= {".", "f:image", "f:name", "f:imagePullPolicy"}
    code, obj = _write(testbed, "PATCH", base + "/d/scale?fieldManager=kubectl", {"spec": {"replicas": 3}},
                       "application/merge-patch+json")
    assert code == 200
    code, obj = _write(testbed, "PUT", base + "/d/status?fieldManager=kube-controller-manager",
                       {**obj, "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "d"}, "status": {"replicas": 3}})
    assert code == 200
    code, _, data = raw(testbed, "GET", base + "/d")
    obj = json.loads(data)
    scale = _entry(obj, "kubectl")
    assert scale["subresource"] == "scale" and scale["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    status = _entry(obj, "kube-controller-manager")
    assert status["subresource"] == "status" and status["fieldsV1"] == {"f:status": {"f:replicas": {}}}
    assert "f:replicas" not in _entry(obj, "kubectl-create")["fieldsV1"]["f:spec"]
    applied = {k: v for k, v in dep.items() if k != "spec"} | {"spec": {**dep["spec"], "replicas": 5}}
    code, status_body = _write(testbed, "PATCH", base + "/d?fieldManager=gitops", applied,
                               "application/apply-patch+yaml")
    assert code == 409
    assert status_body["message"].startswith("Apply failed with ")
    assert '"kubectl" with subresource "scale" using apps/v1:' in status_body["message"]


def test_before_1_22_entries_have_no_subresource() -> None:
    with EmbeddedTestbed(18) as tb:
        code, _ = _write(tb, "POST", "/api/v1/namespaces", {"metadata": {"name": "n"}})
        assert code == 201
        code, obj = _write(tb, "POST", "/api/v1/namespaces/n/pods?fieldManager=me", {
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        assert code == 201
        code, obj = _write(tb, "PUT", "/api/v1/namespaces/n/pods/p/status?fieldManager=me",
                           {**obj, "status": {"phase": "Running"}})
        assert code == 200
        # one manager for both writes: 1.18 does not tell main resource and status apart
        entry = _entry(obj, "me")
        assert "subresource" not in entry
        assert "f:status" in entry["fieldsV1"] and "f:spec" in entry["fieldsV1"]


# ----------------------------------------------------------------------------------------------
# Real kubectl


@pytest.fixture(scope="module", params=(22, 35), ids=lambda m: f"1.{m}")
def kubectl(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    minor: int = request.param
    # CI's `make clients` has no 1.22: fetch it once into the shared cache (27 MB, seconds)
    binary = clients.kubectl_path(minor) or clients.fetch([minor], progress=lambda _m: None)[minor]
    with EmbeddedTestbed(minor, bookmark_interval=0.5, history=200) as tb:
        yield Client(binary, tb, tmp_path_factory.mktemp(f"kubectl-1.{minor}-home"))


def _cm_yaml(path: Path, **data: str) -> Path:
    lines = [f'  {k}: "{v}"' for k, v in data.items()]
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: default\ndata:\n"
                    + "\n".join(lines) + "\n")
    return path


def test_kubectl_server_side_apply_conflicts(kubectl: Client, tmp_path: Path) -> None:
    kubectl.run("apply", "-f", str(_cm_yaml(tmp_path / "v1.yaml", a="1", b="1")))
    kubectl.run("patch", "configmap", "ssa", "-p", '{"data":{"b":"2"}}')
    changed = _cm_yaml(tmp_path / "v2.yaml", a="1", b="3")
    proc = kubectl.run("apply", "--server-side", "-f", str(changed), check=False)
    assert proc.returncode == 1
    assert ('Apply failed with 1 conflict: conflict with "kubectl-patch" using v1: .data.b'
            in proc.stderr), proc.stderr
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(changed))
    out = json.loads(kubectl.run("get", "configmap", "ssa", "-o", "json", "--show-managed-fields").stdout)
    assert out["data"] == {"a": "1", "b": "3"}
    apply_entry = _entry(out, "kubectl", "Apply")
    assert apply_entry["fieldsV1"]["f:data"] == {"f:a": {}, "f:b": {}}
    assert not [e for e in _entries(out) if e["manager"] == "kubectl-patch"]
    # kubectl 1.26+ then moves what its client-side apply owned to its apply manager (a JSON patch of
    # managedFields guarded by a test of resourceVersion); before that the Update entry stays
    csa = [e for e in _entries(out) if e["manager"] == "kubectl-client-side-apply"]
    assert bool(csa) == (kubectl.binary.parent.name == "kubectl-1.22"), _entries(out)
