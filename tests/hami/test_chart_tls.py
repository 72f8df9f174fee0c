"""Mutual TLS between kube-scheduler and the extender, as the chart renders it for every scheduler config
format (legacy Policy < 1.22, v1beta2 1.22-1.25, v1 >= 1.26): the testbed's kube-scheduler parses the
tlsConfig, and the TLS client it builds from it completes a handshake with a server holding the chart's
serving certificate that demands a client certificate from the chart's CA (real helm 3)."""

from __future__ import annotations

import base64
import dataclasses
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from testbed.scheduler.config import ExtenderConfig, config_from_policy, decode_config, decode_policy
from testbed.scheduler.extender import HTTPExtender

from .test_chart_values import HELM, NS, cont, render

pytestmark = [pytest.mark.helm, pytest.mark.skipif(HELM is None, reason="no helm 3 cached")]

MINORS = [18, 21, 22, 25, 26, 33]
CLIENT_CN = "hami-scheduler-extender-client"
SERVER_NAME = f"rel-hami-scheduler.{NS}.svc"


def _extender_config(docs: Any, minor: int) -> ExtenderConfig:
    data = docs[("ConfigMap", "rel-hami-scheduler")]["data"]
    if minor < 22:
        cfg = config_from_policy(decode_policy(data["config.json"], minor), "hami-scheduler")
    else:
        cfg = decode_config(data["config.yaml"], minor)
    (ext,) = cfg.extenders
    return ext


def _secret_files(docs: Any, dest: Path) -> dict[str, Path]:
    data = docs[("Secret", "rel-hami-scheduler-tls")]["data"]
    out = {}
    for key, value in data.items():
        out[key] = dest / key
        out[key].write_bytes(base64.b64decode(value))
    return out


@pytest.mark.parametrize("minor", MINORS)
def test_scheduler_config_uses_the_client_certificate(minor: int) -> None:
    docs = render(minor=minor)
    ext = _extender_config(docs, minor)
    assert ext.enable_https and ext.url_prefix == "https://127.0.0.1:443"
    assert ext.tls is not None and not ext.tls.insecure
    assert (ext.tls.server_name, ext.tls.cert_file, ext.tls.key_file, ext.tls.ca_file) == (
        SERVER_NAME,
        "/tls/client.crt",
        "/tls/client.key",
        "/tls/ca.crt",
    )
    ks = cont(docs, "kube-scheduler")
    mounts = {m["mountPath"]: m for m in ks["volumeMounts"]}
    assert mounts["/tls"]["name"] == "tls" and mounts["/tls"]["readOnly"] is True
    extender = cont(docs, "vgpu-scheduler-extender")["args"]
    assert "--client-ca-file=/tls/ca.crt" in extender and f"--client-cn={CLIENT_CN}" in extender


def test_certificates_chain_to_the_chart_ca(tmp_path: Path) -> None:
    files = _secret_files(render(), tmp_path)
    ca = x509.load_pem_x509_certificate(files["ca.crt"].read_bytes())
    client = x509.load_pem_x509_certificate(files["client.crt"].read_bytes())
    serving = x509.load_pem_x509_certificate(files["tls.crt"].read_bytes())
    assert client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == CLIENT_CN
    for cert in (client, serving):
        cert.verify_directly_issued_by(ca)
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in usages
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVER_NAME in sans.get_values_for_type(x509.DNSName)


def _serve_once(ctx: ssl.SSLContext, sock: socket.socket, seen: dict[str, Any]) -> None:
    conn, _ = sock.accept()
    try:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            seen["peer"] = tls.getpeercert()
            tls.sendall(b"ok")
    except (ssl.SSLError, OSError) as e:
        seen["error"] = e


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, server_name: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        t = threading.Thread(target=_serve_once, args=(server_ctx, srv, seen), daemon=True)
        t.start()
        try:
            with (
                socket.create_connection(srv.getsockname(), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
            ):
                seen["reply"] = tls.recv(2)
        except (ssl.SSLError, OSError) as e:
            seen["client_error"] = e
        t.join(5)
    return seen


def _server_ctx(files: dict[str, Path]) -> ssl.SSLContext:
    """What the extender does with --client-ca-file: demand a certificate signed by that CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files["tls.crt"], files["tls.key"])
    ctx.load_verify_locations(cafile=files["ca.crt"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.mark.parametrize("minor", MINORS)
def test_testbed_scheduler_completes_mutual_tls(minor: int, tmp_path: Path) -> None:
    docs = render(minor=minor)
    files = _secret_files(docs, tmp_path)
    ext = _extender_config(docs, minor)
    assert ext.tls is not None
    # the container paths (/tls/...) point at this test's copies of the Secret's keys
    local = dataclasses.replace(
        ext,
        tls=dataclasses.replace(
            ext.tls,
            cert_file=str(files["client.crt"]),
            key_file=str(files["client.key"]),
            ca_file=str(files["ca.crt"]),
        ),
    )
    client_ctx = HTTPExtender(local, minor)._ssl()
    seen = _handshake(client_ctx, _server_ctx(files), ext.tls.server_name)
    assert seen.get("reply") == b"ok", seen
    subject = dict(x[0] for x in seen["peer"]["subject"])
    assert subject["commonName"] == CLIENT_CN


def test_caller_without_client_certificate_is_refused(tmp_path: Path) -> None:
    """The other half: a TLS client that trusts the CA but has no client certificate gets nowhere."""
    files = _secret_files(render(), tmp_path)
    anonymous = ssl.create_default_context(cafile=str(files["ca.crt"]))
    seen = _handshake(anonymous, _server_ctx(files), SERVER_NAME)
    assert seen.get("reply") != b"ok" and "peer" not in seen and "error" in seen, seen


def test_one_certificate_set_per_render() -> None:
    """The Secret, the webhook's caBundle and the Deployment's checksum come from one generation."""
    import hashlib
    import json

    docs = render()
    data = docs[("Secret", "rel-hami-scheduler-tls")]["data"]
    hook = docs[("MutatingWebhookConfiguration", "rel-hami-webhook")]["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == data["ca.crt"]
    annotations = docs[("Deployment", "rel-hami-scheduler")]["spec"]["template"]["metadata"]["annotations"]
    digest = hashlib.sha256(json.dumps(data, separators=(",", ":"), sort_keys=True).encode()).hexdigest()
    assert annotations["checksum/tls"] == digest
