"""A TokenAuthority checks a token's signature once and remembers it; everything else about the token
(expiry, the bound objects) is still checked on every request."""

from __future__ import annotations

import pytest

from testbed.apiserver.auth import VERIFIED_TOKENS_KEPT, TokenAuthority
from testbed.apiserver.reader import DictReader


def _obj(name: str, uid: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid}}


def test_signature_checked_once_and_the_rest_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    authority = TokenAuthority()
    reader = DictReader({"serviceaccounts": [_obj("sa", "sa-uid")]})
    checks: list[bytes] = []
    real = authority._verify_sig
    monkeypatch.setattr(authority, "_verify_sig", lambda data, sig: (checks.append(sig), real(data, sig)))
    token, exp = authority.issue_service_account_token(
        "ns", "sa", "sa-uid", audiences=[], expiration_seconds=600
    )
    for _ in range(5):
        assert authority.verify(token, reader) is not None
    assert len(checks) == 1
    # the remembered claims are a copy: a caller changing them changes nothing for the next request
    authority.decode(token)["kubernetes.io"]["serviceaccount"]["uid"] = "forged"
    assert authority.verify(token, reader) is not None
    # expiry and the service account are checked again although the signature is remembered
    expired = authority.authenticate_token(token, reader, now=exp + 61)
    assert expired.error == "service account token has expired"
    reader.delete("serviceaccounts", "ns", "sa")
    assert authority.verify(token, reader) is None
    # another signature on the same claims is another token: checked, and refused
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[:-4]}AAAA"
    reader.add("serviceaccounts", _obj("sa", "sa-uid"))
    res = authority.authenticate_token(forged, reader)
    assert res.user is None and "cryptographic primitive" in (res.error or "")


def test_memory_is_bounded() -> None:
    authority = TokenAuthority()
    for i in range(VERIFIED_TOKENS_KEPT + 10):
        token, _ = authority.issue_service_account_token(
            "ns", f"sa{i}", "u", audiences=[], expiration_seconds=600
        )
        authority.decode(token)
    assert len(authority._verified) == VERIFIED_TOKENS_KEPT
