"""Regressions found by driving the testbed with real kubectl and helm binaries (tests/clients).

kubectl 1.30+ and helm 4 send typed-client request bodies as ``application/vnd.kubernetes.protobuf``
and do not retry with JSON on 415; the server used to refuse them all. The bytes below are written
field by field as those clients write them. With the compiled Kubernetes API schema cached (``make
clients``), the server decodes every kind and answers protobuf to clients that list it first; the
hand-written fallback table is checked on its own (``decode_table``).
"""

from __future__ import annotations

import base64
import json

import pytest

from testbed.apiserver import protobuf
from testbed.apiserver.protobuf import MEDIA_TYPE, decode_table, encode_field, envelope

from .helpers import raw

needs_schema = pytest.mark.skipif(
    protobuf.schema(33) is None,
    reason="no compiled Kubernetes API schema for 1.33 in the cache: run `make clients` "
    "(python -m testbed.apiserver.k8sproto fetch 1.33)",
)

PB = MEDIA_TYPE
ACCEPT = {"Accept": "application/vnd.kubernetes.protobuf,application/json"}


def _meta(name: str, namespace: str = "", labels: dict[str, str] | None = None) -> bytes:
    out = encode_field(1, name) + encode_field(2, "")  # Go writes empty non-pointer strings too
    if namespace:
        out += encode_field(3, namespace)
    out += encode_field(7, 0)  # generation 0, always written
    for k, v in (labels or {}).items():
        out += encode_field(11, encode_field(1, k) + encode_field(2, v))
    return out


def _decode(headers: dict[str, str], data: bytes):  # type: ignore[no-untyped-def]
    if headers.get("Content-Type", "").startswith(PB):
        sch = protobuf.schema(33)
        assert sch is not None
        return sch.decode_object(data)
    return json.loads(data)


def _post(tb, path: str, body: bytes):  # type: ignore[no-untyped-def]
    code, headers, data = raw(tb, "POST", path, body, content_type=PB, headers=ACCEPT)
    return code, headers, _decode(headers, data)


@needs_schema
def test_namespace_created_from_protobuf_answers_protobuf(testbed) -> None:
    # Bytes as kubectl 1.33 `create namespace pb1` writes them: metadata, empty spec, empty status.
    body = envelope(
        "v1", "Namespace", encode_field(1, _meta("pb1")) + encode_field(2, b"") + encode_field(3, b"")
    )
    code, headers, obj = _post(testbed, "/api/v1/namespaces", body)
    assert code == 201, obj
    assert headers["Content-Type"] == PB  # protobuf is first in the client's Accept
    assert obj["kind"] == "Namespace" and obj["metadata"]["name"] == "pb1"
    assert obj["status"]["phase"] == "Active"
    code, _, data = raw(testbed, "GET", "/api/v1/namespaces/pb1")
    assert code == 200 and json.loads(data)["metadata"]["name"] == "pb1"


def test_literal_kubectl_bytes_decode() -> None:
    # k8s\0 + Unknown{typeMeta{"v1","Namespace"}, raw{metadata{name "lit"}}}, written out by hand.
    literal = b"k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x07\n\x05\n\x03lit"
    want = {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "lit"}}
    assert decode_table(literal) == want
    if protobuf.schema(33) is not None:
        assert protobuf.decode(literal, 33) == want


def test_self_subject_access_review_from_protobuf(testbed) -> None:
    attrs = encode_field(1, "default") + encode_field(2, "list") + encode_field(5, "pods")
    ssar = encode_field(1, _meta("")) + encode_field(2, encode_field(1, attrs)) + encode_field(3, b"")
    code, _, obj = _post(
        testbed,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", ssar),
    )
    assert code == 201, obj
    assert obj["spec"]["resourceAttributes"] == {"namespace": "default", "verb": "list", "resource": "pods"}
    assert obj["status"]["allowed"] is True


def test_token_request_from_protobuf(testbed, core, ns) -> None:
    core.create_namespaced_service_account(ns, {"metadata": {"name": "robot"}})
    spec = encode_field(4, 600)
    body = envelope(
        "authentication.k8s.io/v1", "TokenRequest", encode_field(1, _meta("")) + encode_field(2, spec)
    )
    code, _, obj = _post(testbed, f"/api/v1/namespaces/{ns}/serviceaccounts/robot/token", body)
    assert code == 201, obj
    assert obj["spec"]["expirationSeconds"] == 600 and obj["status"]["token"].count(".") == 2


def test_secret_bytes_round_trip_and_update(testbed, core, ns) -> None:
    """Helm 4 stores releases in Secrets written by a typed client: create, then PUT."""
    blob = bytes(range(256))
    secret = (
        encode_field(1, _meta("rel", ns, {"owner": "helm"}))
        + encode_field(2, encode_field(1, "release") + encode_field(2, blob))
        + encode_field(3, "helm.sh/release.v1")
    )
    code, _, obj = _post(testbed, f"/api/v1/namespaces/{ns}/secrets", envelope("v1", "Secret", secret))
    assert code == 201, obj
    assert base64.b64decode(obj["data"]["release"]) == blob and obj["type"] == "helm.sh/release.v1"
    rv = obj["metadata"]["resourceVersion"]
    meta = _meta("rel", ns, {"owner": "helm", "status": "superseded"}) + encode_field(6, rv)
    updated = encode_field(1, meta) + encode_field(2, encode_field(1, "release") + encode_field(2, b"v2"))
    code, _, data = raw(
        testbed,
        "PUT",
        f"/api/v1/namespaces/{ns}/secrets/rel",
        envelope("v1", "Secret", updated + encode_field(3, "helm.sh/release.v1")),
        content_type=PB,
    )
    assert code == 200, data
    live = core.read_namespaced_secret("rel", ns)
    assert live.metadata.labels == {"owner": "helm", "status": "superseded"}
    assert base64.b64decode(live.data["release"]) == b"v2"


def test_deployment_pointer_zero_kept_and_plain_zeros_omitted(testbed, ns) -> None:
    container = encode_field(1, "web") + encode_field(2, "nginx") + encode_field(8, b"")
    template = encode_field(1, _meta("", labels={"app": "d"})) + encode_field(2, encode_field(2, container))
    selector = encode_field(1, encode_field(1, "app") + encode_field(2, "d"))
    spec = (
        encode_field(1, 0)  # replicas is *int32: an explicit 0 must stay 0, not be defaulted to 1
        + encode_field(2, selector)
        + encode_field(3, template)
        + encode_field(4, b"")
        + encode_field(5, 0)  # minReadySeconds: plain int32, omitted like JSON's omitempty
        + encode_field(7, 0)  # paused: plain bool
    )
    status = encode_field(1, 0) + encode_field(2, 0)  # an all-zero status the table does not describe
    body = envelope(
        "apps/v1", "Deployment", encode_field(1, _meta("d")) + encode_field(2, spec) + encode_field(3, status)
    )
    code, _, obj = _post(testbed, f"/apis/apps/v1/namespaces/{ns}/deployments", body)
    assert code == 201, obj
    assert obj["spec"]["replicas"] == 0
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert "generation" not in obj["spec"]["template"]["metadata"]
    assert "minReadySeconds" not in obj["spec"] and "paused" not in obj["spec"]


def test_fallback_table_refuses_unknown_kinds_and_fields() -> None:
    from testbed.apiserver.errors import APIError

    with pytest.raises(APIError) as e:
        decode_table(envelope("v1", "Pod", encode_field(1, _meta("p"))))
    assert e.value.code == 415 and "'Pod'" in e.value.message
    # A set field the table lacks (ConfigMap field 9) is refused, never silently dropped.
    with pytest.raises(APIError) as e:
        decode_table(envelope("v1", "ConfigMap", encode_field(1, _meta("c")) + encode_field(9, "surprise")))
    assert e.value.code == 415 and "field 9 of ConfigMap" in e.value.message


@needs_schema
def test_unknown_kind_is_415_and_garbage_is_400(testbed, ns) -> None:
    body = envelope("v1", "NoSuchKind", encode_field(1, _meta("p")))
    code, _, obj = _post(testbed, f"/api/v1/namespaces/{ns}/configmaps", body)
    assert code == 415 and obj["reason"] == "UnsupportedMediaType" and "NoSuchKind" in obj["message"]
    code, _, obj = _post(testbed, f"/api/v1/namespaces/{ns}/configmaps", b"k8s\x00\n\xff")
    assert code == 400 and obj["reason"] == "BadRequest"
    code, _, obj = _post(testbed, f"/api/v1/namespaces/{ns}/configmaps", b'{"not": "protobuf"}')
    assert code == 400


@pytest.mark.parametrize("minor,code", [(18, 200), (22, 422), (27, 422)])
def test_watch_with_resource_version_match_is_validated_per_minor(minor: int, code: int) -> None:
    """client-go 1.3x (helm 4) tries a watch-list first and falls back to list-then-watch only
    when the server rejects resourceVersionMatch on a plain watch; 1.18 has no such field."""
    from testbed.embedded import EmbeddedTestbed

    with EmbeddedTestbed(minor) as tb:
        got, _, body = raw(tb, "GET", "/api/v1/namespaces/default/configmaps?watch=1"
                           "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
        assert got == code
        if code == 422:
            assert b"resourceVersionMatch is forbidden for watch" in body
