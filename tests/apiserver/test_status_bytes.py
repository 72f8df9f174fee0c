"""Status error bodies byte for byte as kube-apiserver writes them: Go's ``metav1.Status`` field order
(kind, apiVersion, metadata, status, message, reason, details{name, group, kind, causes}, code) and
the newline Go's JSON encoder ends each document with. Clients and suites compare the text."""

from __future__ import annotations

import json

from .helpers import raw


def test_not_found_body_is_byte_identical(testbed) -> None:
    code, headers, data = raw(testbed, "GET", "/api/v1/namespaces/default/pods/x")
    assert code == 404 and headers["Content-Type"].startswith("application/json")
    assert data == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"pods \\"x\\" not found","reason":"NotFound",'
        b'"details":{"name":"x","kind":"pods"},"code":404}\n'
    )


def test_group_and_causes_keep_go_field_order(testbed) -> None:
    code, _, data = raw(testbed, "GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert code == 404
    assert b'"details":{"name":"nope","group":"apps","kind":"deployments"},"code":404}\n' in data
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}
    code, _, data = raw(testbed, "POST", "/api/v1/namespaces/default/configmaps", json.dumps(bad).encode())
    assert code == 422
    assert list(json.loads(data)) == ["kind", "apiVersion", "metadata", "status", "message", "reason",
                                      "details", "code"]
    assert list(json.loads(data)["details"]) == ["name", "kind", "causes"]
    assert list(json.loads(data)["details"]["causes"][0]) == ["reason", "message", "field"]
    assert data.endswith(b"}\n")
