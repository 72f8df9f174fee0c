"""Request and object size limits as kube-apiserver (with kind's etcd defaults) answers them.

* A body over MaxRequestBodyBytes (3 MiB) is refused before decoding: 413 RequestEntityTooLarge
  "Request entity too large: limit is 3145728" (k8s.io/apiserver endpoints/handlers/rest.go).
* An object that passes validation but whose stored form exceeds etcd's --max-request-bytes
  (1.5 MiB) fails in storage; the apiserver relays etcd's error as a 500 without a reason,
  "etcdserver: request is too large" (after retrying without managedFields).
* Annotations over 256 KiB are a validation error (422) first.
"""

from __future__ import annotations

import json
import socket
import ssl

from .helpers import raw


def _pod(name: str, arg_bytes: int) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "args": ["x" * arg_bytes]}]},
    }
    return json.dumps(pod).encode()


def test_object_over_etcds_limit_is_etcds_500(testbed, ns) -> None:
    code, _, data = raw(testbed, "POST", f"/api/v1/namespaces/{ns}/pods", _pod("big", 1_600_000))
    assert code == 500, data[:300]
    status = json.loads(data)
    assert status["message"] == "etcdserver: request is too large" and "reason" not in status
    code, _, _ = raw(testbed, "GET", f"/api/v1/namespaces/{ns}/pods/big")
    assert code == 404
    code, _, data = raw(testbed, "POST", f"/api/v1/namespaces/{ns}/pods", _pod("fits", 1_000_000))
    assert code == 201, data[:300]


def test_body_over_three_mib_is_413(testbed, ns) -> None:
    code, _, data = raw(testbed, "POST", f"/api/v1/namespaces/{ns}/pods", _pod("huge", 3_200_000))
    assert code == 413
    status = json.loads(data)
    assert status["reason"] == "RequestEntityTooLarge"
    assert status["message"] == "Request entity too large: limit is 3145728"


def test_fifty_megabytes_is_413_not_500(testbed, ns) -> None:
    """The client may still be sending when the answer comes: read it from a raw socket."""
    host, port = testbed.url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(testbed.ca_path))
    size = 50 * 1024 * 1024
    with (
        socket.create_connection((host, int(port)), timeout=10) as s,
        ctx.wrap_socket(s, server_hostname=host) as t,
    ):
        t.sendall(
            f"POST /api/v1/namespaces/{ns}/configmaps HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {testbed.admin_token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        chunk = b"x" * (1024 * 1024)
        try:
            for _ in range(50):
                t.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server answered and closed before the rest: that is what a real one does too
        answer = t.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_annotations_over_256k_are_invalid(testbed, ns) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "annotated", "annotations": {"a": "x" * 300_000}},
    }
    code, _, data = raw(testbed, "POST", f"/api/v1/namespaces/{ns}/configmaps", json.dumps(cm).encode())
    assert code == 422 and b"Too long: must have at most 262144 bytes" in data
