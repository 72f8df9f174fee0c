"""Service-account JWTs, bearer authentication and TokenReview."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from testbed.apiserver.auth import (
    ANONYMOUS,
    TokenAuthority,
    UserInfo,
    authenticate,
    authenticate_detailed,
    token_review,
)
from testbed.apiserver.errors import APIError
from testbed.apiserver.reader import DictReader

NOW = 1_700_000_000


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _obj(name: str, uid: str, ns: str = "ns") -> dict:
    return {"metadata": {"name": name, "namespace": ns, "uid": uid}}


@pytest.fixture(scope="module")
def authority() -> TokenAuthority:
    return TokenAuthority()


@pytest.fixture
def reader() -> DictReader:
    return DictReader({"serviceaccounts": [_obj("sa", "sa-uid")], "pods": [_obj("p", "pod-uid")]})


def test_bound_token_has_the_real_claims_and_verifies(authority, reader):
    pod = _obj("p", "pod-uid")
    token, exp = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=["api"], expiration_seconds=3607, bound_pod=pod, now=NOW
    )
    header_b64, payload_b64, _ = token.split(".")
    header = json.loads(_b64d(header_b64))
    claims = json.loads(_b64d(payload_b64))
    assert header == {"alg": "RS256", "kid": authority.kid}
    assert exp == NOW + 3607 == claims["exp"]
    assert claims["iat"] == claims["nbf"] == NOW
    assert claims["aud"] == ["api"] and claims["iss"] == authority.issuer
    assert claims["sub"] == "system:serviceaccount:ns:sa"
    assert claims["kubernetes.io"] == {
        "namespace": "ns",
        "pod": {"name": "p", "uid": "pod-uid"},
        "serviceaccount": {"name": "sa", "uid": "sa-uid"},
    }
    # The signature checks out with the published public key alone.
    pub = serialization.load_pem_public_key(authority.public_key_pem())
    pub.verify(
        _b64d(token.split(".")[2]),
        f"{header_b64}.{payload_b64}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    res = authority.authenticate_token(token, reader, ["api"], now=NOW + 10)
    assert res.user is not None and res.audiences == ["api"]
    assert res.user.name == "system:serviceaccount:ns:sa" and res.user.uid == "sa-uid"
    assert res.user.groups == ("system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated")
    assert res.user.extra["authentication.kubernetes.io/pod-name"] == ["p"]
    assert res.user.extra["authentication.kubernetes.io/credential-id"] == [f"JTI={claims['jti']}"]


def test_expired_token_is_refused_after_the_leeway(authority, reader):
    token, exp = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=[], expiration_seconds=600, now=NOW
    )
    assert authority.authenticate_token(token, reader, now=exp + 30).user is not None  # within leeway
    res = authority.authenticate_token(token, reader, now=exp + 61)
    assert res.user is None and res.error == "service account token has expired"


def test_deleted_or_recreated_service_account_or_pod_invalidates(authority, reader):
    token, _ = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=[], expiration_seconds=600, bound_pod=_obj("p", "pod-uid")
    )
    assert authority.verify(token, reader) is not None
    reader.delete("pods", "ns", "p")
    assert authority.authenticate_token(token, reader).error == "service account token has been invalidated"
    reader.add("pods", _obj("p", "pod-uid"))
    reader.add("serviceaccounts", _obj("sa", "other-uid"))
    assert (
        authority.authenticate_token(token, reader).error
        == "service account UID (other-uid) does not match claim (sa-uid)"
    )
    reader.delete("serviceaccounts", "ns", "sa")
    assert authority.verify(token, reader) is None
    assert authority.authenticate_token(token, reader).error == 'serviceaccount "sa" not found'


def test_audience_and_signature_checks(authority, reader):
    token, _ = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=["vault"], expiration_seconds=600
    )
    res = authority.authenticate_token(token, reader)
    assert res.user is None
    assert (
        res.error == f'token audiences ["vault"] is invalid for the target audiences ["{authority.issuer}"]'
    )
    other = TokenAuthority(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    forged, _ = other.issue_service_account_token("ns", "sa", "sa-uid", audiences=[], expiration_seconds=600)
    detail = authenticate_detailed(forged, {}, authority, reader)
    assert detail.user is None
    assert detail.error == "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
    # The EC authority signs ES256 and accepts its own tokens.
    assert other.alg == "ES256" and other.verify(forged, reader) is not None
    assert other.jwks()["keys"][0]["kty"] == "EC"


def test_legacy_secret_token(authority, reader):
    token, exp = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=[], expiration_seconds=0, legacy=True, secret_name="sa-token-abcde"
    )
    claims = json.loads(_b64d(token.split(".")[1]))
    assert exp == 0 and claims["iss"] == "kubernetes/serviceaccount" and "exp" not in claims
    assert claims["kubernetes.io/serviceaccount/secret.name"] == "sa-token-abcde"
    assert authority.authenticate_token(token, reader).error == "Token has been invalidated"
    secret = _obj("sa-token-abcde", "s-uid")
    secret["data"] = {"token": base64.b64encode(b"something else").decode()}
    reader.add("secrets", secret)
    assert authority.authenticate_token(token, reader).error == "Token does not match server's copy"
    secret["data"]["token"] = base64.b64encode(token.encode()).decode()
    user = authority.verify(token, reader)
    assert user is not None and user.name == "system:serviceaccount:ns:sa"


def test_authenticate_header_forms(authority, reader):
    admin = UserInfo("testbed-admin", groups=("system:masters",))
    static = {"s3cret": admin}
    user = authenticate("Bearer s3cret", static, authority, reader)
    assert user is not None and user.groups == ("system:masters", "system:authenticated")
    assert authenticate("bearer   s3cret ", static, authority, reader) == user
    assert authenticate(None, static, authority, reader) == ANONYMOUS
    assert authenticate(None, static, authority, reader, anonymous=False) is None
    assert authenticate("Bearer nope", static, authority, reader) is None
    assert authenticate("Basic dXNlcjpwdw==", static, authority, reader) is None
    token, _ = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=[], expiration_seconds=600
    )
    sa_user = authenticate(f"Bearer {token}", static, authority, reader)
    assert sa_user is not None and sa_user.name == "system:serviceaccount:ns:sa"


def test_token_review_answers(authority, reader):
    token, _ = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=["a", "b"], expiration_seconds=600
    )
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["b"]},
    }
    out = token_review(body, {}, authority, reader)
    assert out["kind"] == "TokenReview" and out["spec"]["token"] == token
    st = out["status"]
    assert st["authenticated"] is True and st["audiences"] == ["b"]
    assert st["user"]["username"] == "system:serviceaccount:ns:sa" and st["user"]["uid"] == "sa-uid"
    bad = token_review({"spec": {"token": "garbage"}}, {}, authority, reader)["status"]
    assert bad == {"user": {}, "error": "invalid bearer token"}
    with pytest.raises(APIError) as e:
        token_review({"spec": {}}, {}, authority, reader)
    assert e.value.code == 400 and e.value.message == "token is required for TokenReview in authentication"


def test_jwks_and_discovery_documents(authority):
    jwks = authority.jwks()
    key = jwks["keys"][0]
    assert key["kid"] == authority.kid and key["kty"] == "RSA" and key["e"] == "AQAB"
    conf = authority.openid_configuration()
    assert conf["issuer"] == authority.issuer
    assert conf["jwks_uri"].endswith("/openid/v1/jwks")
    assert conf["id_token_signing_alg_values_supported"] == ["RS256"]
