"""Authentication: bearer tokens, service-account JWTs and the TokenReview answer.

Service-account tokens are real JWTs, signed RS256 (or ES256 for an EC key) and carrying the same
claims a kube-apiserver puts in them, so that in-cluster clients, ``kubectl create token`` users
and anything that decodes the token (HAMi's webhook does not, but OIDC-aware tools do) see the
familiar shape. The JWT code is small and local: base64url + JSON + a ``cryptography`` signature.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from .errors import bad_request
from .reader import Reader

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LEGACY_ISSUER = "kubernetes/serviceaccount"
SA_PREFIX = "system:serviceaccount:"
ALL_AUTHENTICATED = "system:authenticated"
ALL_UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS_USER = "system:anonymous"
# go-jose's default clock skew allowance, applied by the real validator to exp/nbf/iat.
LEEWAY_SECONDS = 60
VERIFIED_TOKENS_KEPT = 512  # tokens whose verified signature a TokenAuthority remembers

_LEGACY_NS = "kubernetes.io/serviceaccount/namespace"
_LEGACY_SECRET = "kubernetes.io/serviceaccount/secret.name"
_LEGACY_SA_NAME = "kubernetes.io/serviceaccount/service-account.name"
_LEGACY_SA_UID = "kubernetes.io/serviceaccount/service-account.uid"

# Answers of the bearer-token authenticator when a token is recognised but rejected.
INVALID_TOKEN = "invalid bearer token"
BAD_SIGNATURE = "square/go-jose: error in cryptographic primitive"


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    # user.Info extra: key -> list of values. Not part of hashing so UserInfo can key caches.
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """``authentication.k8s.io/v1`` UserInfo (empty fields omitted, as Go's omitempty does)."""
        d: dict[str, Any] = {}
        if self.name:
            d["username"] = self.name
        if self.uid:
            d["uid"] = self.uid
        if self.groups:
            d["groups"] = list(self.groups)
        if self.extra:
            d["extra"] = {k: list(v) for k, v in self.extra.items()}
        return d


ANONYMOUS = UserInfo(ANONYMOUS_USER, groups=(ALL_UNAUTHENTICATED,))


def with_authenticated(user: UserInfo) -> UserInfo:
    """Add ``system:authenticated`` as the apiserver's group adder does for every authenticated user."""
    if ALL_AUTHENTICATED in user.groups or user.name == ANONYMOUS_USER:
        return user
    return UserInfo(user.name, user.uid, (*user.groups, ALL_AUTHENTICATED), dict(user.extra))


def service_account_username(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def split_service_account_username(username: str) -> tuple[str, str] | None:
    if not username.startswith(SA_PREFIX):
        return None
    parts = username[len(SA_PREFIX):].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def service_account_user(namespace: str, name: str, uid: str,
                         extra: dict[str, list[str]] | None = None) -> UserInfo:
    return UserInfo(
        service_account_username(namespace, name), uid,
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", ALL_AUTHENTICATED),
        extra or {},
    )


# --- JWT ---------------------------------------------------------------------------------

def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(obj: Any) -> bytes:
    # go-jose merges claim sets into a map, so keys come out sorted and compact.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class JWTError(Exception):
    pass


def _unverified_claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(_b64d(parts[1]))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


@dataclass
class TokenResult:
    """The outcome of authenticating one token: a user, or the reason it was refused."""

    user: UserInfo | None
    audiences: list[str] = field(default_factory=list)
    error: str = ""  # empty when the token was simply not recognised


class TokenAuthority:
    """Signs and verifies service-account tokens with one key pair."""

    def __init__(self, key_pem: bytes | None = None, issuer: str = DEFAULT_ISSUER,
                 api_audiences: Sequence[str] | None = None) -> None:
        if key_pem is None:
            self._key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(65537, 2048)
        else:
            key = serialization.load_pem_private_key(key_pem, password=None)
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise ValueError("service-account signing key must be RSA or EC")
            if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("only P-256 EC keys are supported (ES256)")
            self._key = key
        self.issuer = issuer
        # --api-audiences defaults to the issuer.
        self.api_audiences: list[str] = list(api_audiences) if api_audiences else [issuer]
        self.alg = "RS256" if isinstance(self._key, rsa.RSAPrivateKey) else "ES256"
        self._public = self._key.public_key()
        der = self._public.public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
        # The real key id: base64url(sha256(DER SubjectPublicKeyInfo)).
        self.kid = _b64e(hashlib.sha256(der).digest())
        # token -> its claims, for tokens whose signature this key verified: every request of an
        # in-cluster client carries the same token, and checking the signature (RSA/ECDSA) each
        # time was the largest part of authentication. Only the signature is remembered: expiry and
        # the bound objects are checked on every request.
        self._verified: dict[str, dict[str, Any]] = {}

    # keys -------------------------------------------------------------------------------

    def public_key_pem(self) -> bytes:
        return self._public.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)

    def private_key_pem(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def jwks(self) -> dict[str, Any]:
        """The ``/openid/v1/jwks`` document."""
        key: dict[str, Any] = {"use": "sig", "kid": self.kid, "alg": self.alg}
        if isinstance(self._public, rsa.RSAPublicKey):
            nums = self._public.public_numbers()
            key.update(kty="RSA", n=_b64e(nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")),
                       e=_b64e(nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")))
        else:
            pn = self._public.public_numbers()
            key.update(kty="EC", crv="P-256", x=_b64e(pn.x.to_bytes(32, "big")),
                       y=_b64e(pn.y.to_bytes(32, "big")))
        return {"keys": [key]}

    def openid_configuration(self, jwks_uri: str | None = None) -> dict[str, Any]:
        """The ``/.well-known/openid-configuration`` document."""
        return {
            "issuer": self.issuer,
            "jwks_uri": jwks_uri or f"{self.issuer.rstrip('/')}/openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.alg],
        }

    # signing ----------------------------------------------------------------------------

    def _sign(self, data: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS wants raw r||s

    def _verify_sig(self, data: bytes, sig: bytes) -> None:
        try:
            if isinstance(self._public, rsa.RSAPublicKey):
                self._public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                if len(sig) != 64:
                    raise JWTError(BAD_SIGNATURE)
                der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
                self._public.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as e:
            raise JWTError(BAD_SIGNATURE) from e

    def encode(self, claims: Mapping[str, Any]) -> str:
        header = _b64e(json.dumps({"alg": self.alg, "kid": self.kid}, separators=(",", ":")).encode())
        signing_input = f"{header}.{_b64e(_json(dict(claims)))}"
        return f"{signing_input}.{_b64e(self._sign(signing_input.encode()))}"

    def decode(self, token: str) -> dict[str, Any]:
        """Verified claims of a token signed by this key, or JWTError."""
        known = self._verified.get(token)
        if known is not None:
            return copy.deepcopy(known)
        claims = self._decode(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.pop(next(iter(self._verified)))  # the oldest first
        self._verified[token] = copy.deepcopy(claims)
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise JWTError("square/go-jose: compact JWS format must have three parts")
        try:
            header = json.loads(_b64d(parts[0]))
            claims = json.loads(_b64d(parts[1]))
            sig = _b64d(parts[2])
        except (ValueError, binascii.Error) as e:
            raise JWTError(f"square/go-jose: {e}") from e
        if not isinstance(header, dict) or header.get("alg") != self.alg:
            raise JWTError(BAD_SIGNATURE)
        self._verify_sig(f"{parts[0]}.{parts[1]}".encode(), sig)
        if not isinstance(claims, dict):
            raise JWTError("square/go-jose: invalid claims")
        return claims

    def issue_service_account_token(
        self, namespace: str, sa_name: str, sa_uid: str, *, audiences: list[str],
        expiration_seconds: int, bound_pod: dict | None = None, legacy: bool = False,
        secret_name: str = "", bound_secret: dict | None = None, bound_node: dict | None = None,
        warn_after: int | None = None, now: float | None = None,
    ) -> tuple[str, int]:
        """Return (JWT, exp). Legacy (Secret-based) tokens never expire: exp is 0 for them."""
        sub = service_account_username(namespace, sa_name)
        if legacy:
            claims = {
                "iss": LEGACY_ISSUER, _LEGACY_NS: namespace, _LEGACY_SECRET: secret_name,
                _LEGACY_SA_NAME: sa_name, _LEGACY_SA_UID: sa_uid, "sub": sub,
            }
            return self.encode(claims), 0
        iat = int(now if now is not None else time.time())
        exp = iat + int(expiration_seconds)
        k8s: dict[str, Any] = {"namespace": namespace, "serviceaccount": {"name": sa_name, "uid": sa_uid}}
        for key, ref in (("pod", bound_pod), ("secret", bound_secret), ("node", bound_node)):
            if ref is not None:
                meta = ref.get("metadata") or {}
                k8s[key] = {"name": meta.get("name", ""), "uid": meta.get("uid", "")}
        if warn_after is not None:
            k8s["warnafter"] = int(warn_after)
        claims = {
            "aud": list(audiences) or list(self.api_audiences), "exp": exp, "iat": iat, "nbf": iat,
            "iss": self.issuer, "jti": str(uuid.uuid4()), "sub": sub, "kubernetes.io": k8s,
        }
        return self.encode(claims), exp

    # verification -----------------------------------------------------------------------

    def verify(self, token: str, reader: Reader) -> UserInfo | None:
        return self.authenticate_token(token, reader).user

    def authenticate_token(self, token: str, reader: Reader, audiences: Sequence[str] | None = None,
                           now: float | None = None) -> TokenResult:
        """Validate as the service-account JWT authenticator does: issuer, signature, audiences, then
        exp/nbf and that the service account (and bound pod/secret/node) still exist with the same uid."""
        unverified = _unverified_claims(token)
        if unverified is None or unverified.get("iss") not in (self.issuer, LEGACY_ISSUER):
            return TokenResult(None)  # not ours: other authenticators may claim it
        try:
            claims = self.decode(token)
        except JWTError as e:
            return TokenResult(None, error=str(e))
        requested = list(audiences) if audiences else list(self.api_audiences)
        aud = claims.get("aud")
        token_auds = [aud] if isinstance(aud, str) else list(aud or [])
        if not token_auds:
            token_auds = list(self.api_audiences)  # legacy tokens are good for the apiserver only
        common = [a for a in token_auds if a in requested]
        if not common:
            return TokenResult(None, error=f"token audiences {_go_q(token_auds)} is invalid for the target "
                                           f"audiences {_go_q(requested)}")
        try:
            if claims.get("iss") == LEGACY_ISSUER:
                user = self._validate_legacy(token, claims, reader)
            else:
                user = self._validate_bound(claims, reader, time.time() if now is None else now)
        except JWTError as e:
            return TokenResult(None, error=str(e))
        return TokenResult(user, common)

    def _validate_bound(self, claims: dict[str, Any], reader: Reader, now: float) -> UserInfo:
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if isinstance(nbf, int | float) and now + LEEWAY_SECONDS < nbf:
            raise JWTError("service account token is not valid yet")
        if isinstance(exp, int | float) and now - LEEWAY_SECONDS >= exp:
            raise JWTError("service account token has expired")
        if isinstance(iat, int | float) and now + LEEWAY_SECONDS < iat:
            raise JWTError("service account token is issued in the future")
        k8s = claims.get("kubernetes.io") or {}
        ns = k8s.get("namespace", "")
        sa_ref = k8s.get("serviceaccount") or {}
        sa = reader.get("serviceaccounts", ns, sa_ref.get("name", ""))
        if sa is None:
            raise JWTError(f'serviceaccount "{sa_ref.get("name", "")}" not found')
        sa_uid = (sa.get("metadata") or {}).get("uid", "")
        if sa_uid != sa_ref.get("uid"):
            raise JWTError(f"service account UID ({sa_uid}) does not match claim ({sa_ref.get('uid')})")
        extra: dict[str, list[str]] = {}
        for key, store, label in (("secret", "secrets", "secret"), ("pod", "pods", "pod"),
                                  ("node", "nodes", "node")):
            ref = k8s.get(key)
            if not ref:
                continue
            obj = reader.get(store, "" if key == "node" else ns, ref.get("name", ""))
            if obj is None:
                raise JWTError("service account token has been invalidated")
            uid = (obj.get("metadata") or {}).get("uid", "")
            if uid != ref.get("uid"):
                raise JWTError(f"{label} UID ({uid}) does not match service account {label} ref claim "
                               f"({ref.get('uid')})")
            if key in ("pod", "node"):
                extra[f"authentication.kubernetes.io/{key}-name"] = [ref.get("name", "")]
                extra[f"authentication.kubernetes.io/{key}-uid"] = [ref.get("uid", "")]
        if claims.get("jti"):
            extra["authentication.kubernetes.io/credential-id"] = [f"JTI={claims['jti']}"]
        return service_account_user(ns, sa_ref.get("name", ""), sa_uid, extra)

    def _validate_legacy(self, token: str, claims: dict[str, Any], reader: Reader) -> UserInfo:
        ns = claims.get(_LEGACY_NS, "")
        name = claims.get(_LEGACY_SA_NAME, "")
        uid = claims.get(_LEGACY_SA_UID, "")
        secret = reader.get("secrets", ns, claims.get(_LEGACY_SECRET, ""))
        if secret is None or (secret.get("metadata") or {}).get("deletionTimestamp"):
            raise JWTError("Token has been invalidated")
        stored = (secret.get("data") or {}).get("token", "")
        try:
            stored_token = base64.b64decode(stored).decode()
        except (ValueError, binascii.Error):
            stored_token = ""
        if stored_token != token:
            raise JWTError("Token does not match server's copy")
        sa = reader.get("serviceaccounts", ns, name)
        if sa is None:
            raise JWTError(f'serviceaccount "{name}" not found')
        if (sa.get("metadata") or {}).get("deletionTimestamp"):
            raise JWTError(f"ServiceAccount {ns}/{name} has been deleted")
        sa_uid = (sa.get("metadata") or {}).get("uid", "")
        if sa_uid != uid:
            raise JWTError(f"ServiceAccount UID ({sa_uid}) does not match claim ({uid})")
        return service_account_user(ns, name, sa_uid)


def _go_q(items: Sequence[str]) -> str:
    """Go's %q of a []string: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(i) for i in items) + "]"


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    parts = header.strip().split(" ", 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    token = parts[1].strip()
    return token or None


def authenticate_detailed(token: str, static_tokens: Mapping[str, UserInfo], authority: TokenAuthority,
                          reader: Reader, audiences: Sequence[str] | None = None) -> TokenResult:
    """Run the token authenticators (static tokens, then service-account JWTs) on one token."""
    static = static_tokens.get(token)
    if static is not None:
        # Static tokens are audience-agnostic: good for the apiserver's own audiences only.
        requested = list(audiences) if audiences else list(authority.api_audiences)
        common = [a for a in authority.api_audiences if a in requested]
        if common:
            return TokenResult(with_authenticated(static), common)
        return TokenResult(None)
    res = authority.authenticate_token(token, reader, audiences)
    if res.user is None:
        res.error = f"[{INVALID_TOKEN}, {res.error}]" if res.error else INVALID_TOKEN
    return res


def authenticate(header: str | None, static_tokens: Mapping[str, UserInfo], authority: TokenAuthority,
                 reader: Reader, *, anonymous: bool = True) -> UserInfo | None:
    """The user of a request from its Authorization header.

    No bearer token: ``system:anonymous`` (anonymous auth is on by default in kube-apiserver), or
    None when ``anonymous`` is False. A token that no authenticator accepts: None (answer 401).
    """
    token = bearer_token(header)
    if token is None:
        if header and header.strip():
            return None  # some other scheme (Basic, ...) that nothing here accepts
        return ANONYMOUS if anonymous else None
    return authenticate_detailed(token, static_tokens, authority, reader).user


def token_review(body: dict[str, Any], static_tokens: Mapping[str, UserInfo], authority: TokenAuthority,
                 reader: Reader) -> dict[str, Any]:
    """Answer a TokenReview create (``authentication.k8s.io`` v1 or v1beta1) with the full object."""
    spec = dict(body.get("spec") or {})
    token = spec.get("token") or ""
    if not token:
        raise bad_request("token is required for TokenReview in authentication")
    requested = list(spec.get("audiences") or [])
    res = authenticate_detailed(token, static_tokens, authority, reader, requested or None)
    status: dict[str, Any] = {"user": {}}
    if res.user is not None:
        status["authenticated"] = True
        status["user"] = res.user.to_dict()
        status["audiences"] = res.audiences
    elif res.error:
        status["error"] = res.error
    meta = dict(body.get("metadata") or {})
    meta.setdefault("creationTimestamp", None)
    return {
        "kind": "TokenReview",
        "apiVersion": body.get("apiVersion") or "authentication.k8s.io/v1",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }
