"""What the emulated apiserver still does differently from kube-apiserver (testbed/DIFFERENCES.md,
"Emulated control plane"): each test pins the current behaviour, so a change is noticed and the
table updated."""

from __future__ import annotations

import json

from .helpers import raw


def test_server_side_apply_does_not_conflict_with_an_earlier_update_manager(testbed, ns) -> None:
    """kube-apiserver answers 409 Conflict (field .data.a owned by "kubectl-patch"); the testbed applies."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"a": "1"}}
    assert raw(testbed, "POST", f"/api/v1/namespaces/{ns}/configmaps", json.dumps(cm).encode())[0] == 201
    code, _, _ = raw(
        testbed,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/owned?fieldManager=kubectl-patch",
        b'{"data":{"a":"2"}}',
        content_type="application/merge-patch+json",
    )
    assert code == 200
    applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned"}, "data": {"a": "3"}}
    code, _, data = raw(
        testbed,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/owned?fieldManager=other",
        json.dumps(applied).encode(),
        content_type="application/apply-patch+yaml",
    )
    assert code == 200 and json.loads(data)["data"]["a"] == "3"


def test_openapi_v2_has_no_definitions_for_built_in_kinds(testbed) -> None:
    """kubectl explain needs the kinds' schemas; the testbed's document has paths but no definitions."""
    code, _, data = raw(testbed, "GET", "/openapi/v2")
    assert code == 200
    assert "io.k8s.api.core.v1.Pod" not in (json.loads(data).get("definitions") or {})
