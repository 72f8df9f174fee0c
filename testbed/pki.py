"""Certificates for the testbed: a CA, serving certificates signed by it, PEM helpers.

EC P-256 keys keep start-up fast (well under a second) and are accepted by Go and Python TLS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert_pem)
        _write_private(key_path, self.key_pem)
        private_dir(key_path.parent)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(common_name: str = "testbed-ca", days: int = 3650) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_serving_cert(
    ca: KeyPair, common_name: str, hosts: list[str], days: int = 825, client: bool = False
) -> KeyPair:
    """A leaf certificate for ``hosts`` (DNS names or IP addresses) signed by ``ca``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = _now()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


class PKIError(Exception):
    """Key material in the data directory that cannot be used (the message names the file)."""


def _write_private(path: Path, data: bytes) -> None:
    # created 0600 from the start: never readable by others, not even for an instant
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (0700): the data dir and its key directory."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_uid == os.geteuid():
        path.chmod(0o700)
    return path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PKIError(f"{path}: cannot read the {what}: {e.strerror or e}") from e


def load_or_create_ca(directory: Path, common_name: str = "testbed-ca") -> KeyPair:
    """The CA kept in ``directory`` (``ca.crt`` + ``ca.key``), created there on first use.

    A certificate without its key (or the reverse), unparsable PEM, or a key that does not belong to
    the certificate is an error naming the file: regenerating would silently invalidate every
    kubeconfig and client that trusts the old CA."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if not cert_path.exists() and not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        ca = make_ca(common_name)
        _write_private(key_path, ca.key_pem)
        cert_path.write_bytes(ca.cert_pem)
        return ca
    if not key_path.exists():
        raise PKIError(f"{key_path}: missing, but the CA certificate {cert_path} exists (a data dir from "
                       "another testbed version, or a removed key); the CA cannot be reused without its key. "
                       "Start with `testbed up --fresh` to make a new cluster")
    if not cert_path.exists():
        raise PKIError(f"{cert_path}: missing, but the CA key {key_path} exists; "
                       "start with `testbed up --fresh` to make a new cluster")
    cert_pem, key_pem = _read(cert_path, "CA certificate"), _read(key_path, "CA key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise PKIError(f"{cert_path}: not a PEM certificate ({e})") from e
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise PKIError(f"{key_path}: not an unencrypted PEM private key ({e})") from e
    der = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, der)
            != cert.public_key().public_bytes(serialization.Encoding.DER, der)):
        raise PKIError(f"{key_path}: does not belong to the CA certificate {cert_path}")
    return KeyPair(cert_pem, key_pem)


def load_or_create_key(path: Path, make: Callable[[], bytes], what: str) -> bytes:
    """A private key kept at ``path`` (PEM), made by ``make`` on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = make()
        _write_private(path, pem)
        return pem
    pem = _read(path, what)
    try:
        serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise PKIError(f"{path}: the {what} is not an unencrypted PEM private key ({e})") from e
    return pem


def load_or_create_secret(path: Path, make: Callable[[], str], what: str) -> str:
    """A one-line secret (a bearer token) kept at ``path``, made by ``make`` on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        value = make()
        _write_private(path, value.encode() + b"\n")
        return value
    value = _read(path, what).decode(errors="replace").strip()
    if not value or any(c.isspace() for c in value):
        raise PKIError(f"{path}: the {what} must be one non-empty line")
    return value


KUBELET_CLIENT = "kube-apiserver-kubelet-client"


def make_client_cert(ca: KeyPair, user: str, groups: tuple[str, ...] = (), days: int = 365) -> KeyPair:
    """A client certificate for ``user`` (CN) in ``groups`` (O), as Kubernetes reads x509 identities."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def kubelet_client_context(ca: KeyPair, directory: Path) -> ssl.SSLContext:
    """The TLS context the apiserver dials kubelets with: it presents its kubelet-client certificate
    (``apiserver-kubelet-client.crt``, CN kube-apiserver-kubelet-client) and, like kube-apiserver
    without ``--kubelet-certificate-authority``, does not verify the kubelet's serving certificate."""
    pair = make_client_cert(ca, KUBELET_CLIENT)
    crt, key = directory / "apiserver-kubelet-client.crt", directory / "apiserver-kubelet-client.key"
    pair.write(crt, key)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(crt, key)
    return ctx
