"""in-toto Statement v1 with the test-result predicate, and its DSSE envelope signed with Ed25519.

The statement's subjects are the bundle's artifacts by SHA-256; the predicate says what the run
concluded. DSSE signs PAE(payloadType, payload), never the bare JSON, so a signature cannot be
replayed under another payload type.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from reports.model import Run
from reports.summary import outcome_lists, verdict

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://in-toto.io/attestation/test-result/v0.1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


class KeyFileError(ValueError):
    """A key file that cannot be used (missing, not PEM, not Ed25519)."""


def statement(
    run: Run,
    subjects: dict[str, str],
    *,
    environment_digest: str,
    sensitivity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``subjects`` maps bundle-relative path to sha256 hex."""
    passed, warned, failed = outcome_lists(run)
    meta = run.metadata
    sut = meta.system_under_test or {}
    configuration: list[dict[str, Any]] = [
        {
            "name": "hami-conformance",
            "digest": {"gitCommit": meta.project_commit},
            "annotations": {
                "toolVersion": meta.tool_version,
                # a modified checkout is not the commit: say so, and pin what was different
                "dirty": str(bool(sut.get("dirty"))).lower() if sut else "unknown",
                **({"diffSha256": str(sut["diffSha256"])} if sut.get("diffSha256") else {}),
            },
        },
        {
            "name": "environment.json",
            "digest": {"sha256": environment_digest},
            "annotations": {"backend": meta.backend, "hamiNamespace": meta.hami_namespace},
        },
        {
            "name": "chart-values",
            "digest": {
                "sha256": str(
                    sut.get("chartValuesSha256")
                    or hashlib.sha256(canonical_json(meta.chart_values)).hexdigest()
                )
            },
        },
    ]
    for image, digest in sorted((sut.get("imageDigests") or {}).items()):
        configuration.append({"name": f"image/{image}", "digest": {"sha256": str(digest)}})
    if sut.get("shimSha256"):
        configuration.append({"name": "libvgpu.so", "digest": {"sha256": str(sut["shimSha256"])}})
    for image, image_id in sorted((sut.get("runningImages") or {}).items()):
        _, found, digest = str(image_id).rpartition("sha256:")
        if found and digest:
            configuration.append({"name": f"running-image/{image}", "digest": {"sha256": digest}})
    if meta.profile:
        configuration.append(
            {
                "name": f"profile/{meta.profile}",
                "uri": f"urn:hami-conformance:profile:{meta.profile}:{meta.profile_version or 'unversioned'}",
                "annotations": {"version": meta.profile_version},
            }
        )
    predicate: dict[str, Any] = {
        "result": verdict(run),
        "configuration": configuration,
        "passedTests": passed,
        "warnedTests": warned,
        "failedTests": failed,
    }
    if meta.url:
        predicate["url"] = meta.url
    if sensitivity is not None:
        # the score of the suites at this commit; sensitivity.json itself is a subject
        predicate["configuration"].append(
            {
                "name": "sensitivity.json",
                "annotations": {k: str(v) for k, v in sensitivity.items() if k != "file"},
            }
        )
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": digest}} for name, digest in sorted(subjects.items())
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: lengths are byte counts in ASCII decimal."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def keyid(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read the signing key: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read the public key: {e.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return key


def sign_envelope(payload: bytes, key: Ed25519PrivateKey) -> dict[str, Any]:
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": keyid(key.public_key()), "sig": base64.b64encode(sig).decode()}],
    }


def envelope_payload(envelope: Any) -> tuple[str, bytes]:
    """(payloadType, decoded payload); ValueError with a reason if the envelope is malformed."""
    if not isinstance(envelope, dict):
        raise ValueError("not a JSON object")
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str):
        raise ValueError("payloadType missing")
    try:
        payload = base64.b64decode(envelope.get("payload", ""), validate=True)
    except (ValueError, TypeError):
        raise ValueError("payload is not base64") from None
    return payload_type, payload


def verify_envelope(envelope: dict[str, Any], public_key: Ed25519PublicKey) -> bool:
    """True when any signature verifies over PAE(payloadType, payload) with ``public_key``."""
    payload_type, payload = envelope_payload(envelope)
    message = pae(payload_type, payload)
    for entry in envelope.get("signatures") or []:
        if not isinstance(entry, dict):
            continue
        try:
            sig = base64.b64decode(entry.get("sig", ""), validate=True)
            public_key.verify(sig, message)
            return True
        except (InvalidSignature, ValueError, TypeError):
            continue
    return False


def keygen(private_path: Path) -> tuple[Path, Path]:
    """Write an Ed25519 key pair: ``private_path`` (0600) and ``<stem>.pub.pem`` beside it."""
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")
    for p in (private_path, public_path):
        if p.exists():
            raise FileExistsError(f"{p} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return private_path, public_path
