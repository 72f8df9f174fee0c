"""The extender process over HTTPS against a live testbed apiserver, as an attacker would try it.

Issue 12: finding 1 (a stray /bind for a running pod, then an identical pod), finding 2 (who may
call /filter and /bind: mutual TLS, fail closed), finding 6 (malformed bodies answered 4xx naming
the field, bounded nesting, stuck connections dropped).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.scheduler.cli import build_parser, parse_args, service_config
from hami_stack.scheduler.server import ServiceConfig
from kubeclient.client import Kube
from testbed import pki
from testbed.embedded import EmbeddedTestbed

from .extender_helpers import CLIENT_CN, RunningService, api_node, api_pod, gpu_limits, wait_for

A100 = 81920


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Iterator[Kube]:
    k = Kube.from_config(str(testbed.kubeconfig_path))
    yield k
    k.close()


@pytest.fixture(scope="module")
def svc(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    api_node(kube, "s1", n=1, mem=A100)
    s = RunningService(kube, tmp_path_factory.mktemp("tls"))
    wait_for(lambda: "s1" in s.service.cache.nodes)
    yield s
    s.stop()


def _bind_body(pod: dict[str, Any], node: str) -> dict[str, Any]:
    meta = pod["metadata"]
    return {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"], "Node": node}


def _pod(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/default/pods/{name}")


# --- finding 1 ---------------------------------------------------------------------------------


def test_finding1_stray_bind_then_identical_pod_over_https(svc: RunningService, kube: Kube) -> None:
    first = api_pod(kube, "sixty-1", gpu_limits(1, mem=60000))
    status, res = svc.post("/filter", {"Pod": first, "NodeNames": ["s1"]})
    assert status == 200 and res["NodeNames"] == ["s1"]
    assert svc.post("/bind", _bind_body(first, "s1")) == (200, {"Error": ""})
    kube.patch("/api/v1/nodes/s1", {"metadata": {"annotations": {ann.NODE_LOCK: None}}}, "merge")
    # one stray /bind for the running pod
    status, res = svc.post("/bind", _bind_body(first, "s1"))
    assert status == 200 and res["Error"] == "pod default/sixty-1 is already bound to node s1"
    assert sum(d.usedmem for d in svc.service.cache.nodes["s1"].all_devices()) == 60000
    # an identical pod is not placed on the same GPU (was 120,000 / 81,920 MiB)
    twin = api_pod(kube, "sixty-2", gpu_limits(1, mem=60000))
    status, res = svc.post("/filter", {"Pod": twin, "NodeNames": ["s1"]})
    assert status == 200 and res["NodeNames"] is None and "s1" in res["FailedNodes"]
    status, res = svc.post("/bind", _bind_body(twin, "s1"))
    assert "it has no filter decision" in res["Error"]
    assert not _pod(kube, "sixty-2")["spec"].get("nodeName")


# --- finding 2: who may call --------------------------------------------------------------------


def _context(svc: RunningService, cert: pki.KeyPair | None, tmp: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=svc.ca.cert_pem.decode())
    if cert is not None:
        cert.write(tmp / "c.crt", tmp / "c.key")
        ctx.load_cert_chain(str(tmp / "c.crt"), str(tmp / "c.key"))
    return ctx


def test_filter_and_bind_need_the_scheduler_client_certificate(
    svc: RunningService, kube: Kube, tmp_path: Any
) -> None:
    pod = api_pod(kube, "auth-1", gpu_limits(1, mem=100))
    anonymous = svc.ssl_anonymous
    status, res = svc.post("/filter", {"Pod": pod, "NodeNames": ["s1"]}, context=anonymous)
    assert status == 403
    assert res["Error"] == (
        "/filter refused: the caller presented no client certificate verified by the --client-ca-file CA "
        "(mutual TLS is required)"
    )
    status, res = svc.post("/bind", _bind_body(pod, "s1"), context=anonymous)
    assert status == 403
    assert res["Error"].startswith("/bind refused: the caller presented no client certificate")
    # a certificate from the right CA but for another identity
    intruder = pki.make_serving_cert(svc.ca, "intruder", [], client=True)
    ctx = _context(svc, intruder, tmp_path)
    status, res = svc.post("/filter", {"Pod": pod, "NodeNames": ["s1"]}, context=ctx)
    assert status == 403
    assert res["Error"] == (
        f"/filter refused: client certificate CN 'intruder' is not '{CLIENT_CN}' (--client-cn)"
    )
    # a certificate with the right name from another CA does not even complete the handshake
    other_ca = pki.make_ca("someone-else")
    forged = pki.make_serving_cert(other_ca, CLIENT_CN, [], client=True)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        svc.post("/filter", {"Pod": pod, "NodeNames": ["s1"]}, context=_context(svc, forged, tmp_path))
    # nothing was written to the pod by any of them
    assert ann.VGPU_NODE not in (_pod(kube, "auth-1")["metadata"].get("annotations") or {})
    # the apiserver's webhook calls and probes carry no client certificate and still work
    assert svc.get("/healthz") == (200, b"ok")
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u1", "operation": "CREATE", "object": {"kind": "Pod", "metadata": {"name": "w"},
                                                                   "spec": {"containers": [{"name": "c"}]}}},
    }
    status, body = svc.post("/webhook", review, context=anonymous)
    assert status == 200 and body["response"]["uid"] == "u1"
    # and the scheduler's own certificate is accepted
    status, res = svc.post("/filter", {"Pod": pod, "NodeNames": ["s1"]})
    assert status == 200 and res["NodeNames"] == ["s1"]


def test_fail_closed_without_a_client_ca(kube: Kube, tmp_path: Any) -> None:
    (tmp_path / "closed").mkdir()
    closed = RunningService(kube, tmp_path / "closed", mtls=False)
    try:
        status, res = closed.post("/filter", {"Pod": {"metadata": {"name": "x"}}, "NodeNames": []})
        assert status == 403
        assert "runs without --client-ca-file" in res["Error"]
        assert "--allow-unauthenticated-extender for local development" in res["Error"]
        status, res = closed.post("/bind", {"PodName": "x", "PodNamespace": "default", "Node": "s1"})
        assert status == 403 and res["Error"].startswith("/bind refused")
    finally:
        closed.stop()
    (tmp_path / "open").mkdir()
    open_ = RunningService(kube, tmp_path / "open", mtls=False, allow_unauthenticated=True)
    try:
        status, res = open_.post("/bind", {"PodName": "nope", "PodNamespace": "default", "Node": "s1"},
                                 context=open_.ssl_anonymous)
        assert status == 200 and res == {"Error": "pod default/nope not found"}
    finally:
        open_.stop()


def test_cli_flags_for_mutual_tls() -> None:
    ns = parse_args(["--cert_file=/tls/tls.crt", "--key_file=/tls/tls.key", "--client-ca-file=/tls/ca.crt",
                     f"--client-cn={CLIENT_CN}"])
    cfg = service_config(ns)
    assert (cfg.client_ca_file, cfg.client_cn, cfg.allow_unauthenticated) == ("/tls/ca.crt", CLIENT_CN, False)
    assert cfg.client_auth().require_cert and cfg.client_auth().common_name == CLIENT_CN
    assert service_config(parse_args(["--allow-unauthenticated-extender"])).allow_unauthenticated
    assert not service_config(parse_args([])).client_auth().allow_all  # fail closed by default
    help_text = " ".join(build_parser().format_help().split())
    assert "For local development only" in help_text
    with pytest.raises(ValueError, match="--client-ca-file needs --cert_file and --key_file"):
        ServiceConfig(client_ca_file="/tls/ca.crt").check()
    with pytest.raises(ValueError, match="--client-cn needs --client-ca-file"):
        ServiceConfig(client_cn="x").check()


# --- finding 6: malformed input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/filter", {"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": 5}}, 400,
         "decode ExtenderArgs: Nodes.items: expected a list, got int"),
        ("/filter", {"Pod": {"metadata": {"name": "p"}, "spec": {"containers": {"a": 1}}}}, 400,
         "decode ExtenderArgs: Pod.spec.containers: expected a list, got object"),
        ("/filter", {"Pod": {"metadata": "p"}, "NodeNames": ["s1"]}, 400,
         "decode ExtenderArgs: Pod.metadata: expected an object, got string"),
        ("/filter", {"Pod": {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": [1]}}}]}}},
         400, "decode ExtenderArgs: Pod.spec.containers[0].resources.limits['nvidia.com/gpu']: "
         "expected a quantity string, got list"),
        ("/filter", {"Pod": {"metadata": {"annotations": {"a": 1}}}}, 400,
         "decode ExtenderArgs: Pod.metadata.annotations['a']: expected a string, got int"),
        ("/filter", {"NodeNames": ["s1"]}, 400, "decode ExtenderArgs: Pod: required"),
        ("/filter", {"Pod": {}, "NodeNames": "s1"}, 400,
         "decode ExtenderArgs: NodeNames: expected a list, got string"),
        ("/filter", [1, 2], 400, "decode ExtenderArgs: ExtenderArgs: expected an object, got list"),
        ("/bind", {"PodName": 5, "Node": "s1"}, 400,
         "decode ExtenderBindingArgs: ExtenderBindingArgs.PodName: expected a string, got int"),
        ("/bind", {"PodName": "p"}, 400, "decode ExtenderBindingArgs: ExtenderBindingArgs.Node: required"),
    ],
)
def test_malformed_bodies_name_the_field(
    svc: RunningService, path: str, body: Any, status: int, message: str
) -> None:
    got_status, res = svc.post(path, body)
    assert (got_status, res["Error"]) == (status, message)


def test_deep_nesting_and_size_limits(svc: RunningService) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/filter", "/bind"):
        status, res = svc.post(path, None, raw=deep)
        assert status == 400
        assert res["Error"].endswith("JSON nesting depth 100000 exceeds the limit of 64 levels")
    ok_depth = b'{"Pod":' + b'{"a":' * 60 + b"{}" + b"}" * 60 + b"}"
    status, res = svc.post("/filter", None, raw=ok_depth)
    assert status == 200 and res["Error"] == ""  # depth 62 is parsed (a pod asking for no device)
    status, _ = svc.post("/webhook", None, raw=deep)  # the webhook route shares the limits
    assert status in (200, 400)
    status, _ = svc.post("/filter", None, raw=b"[" * ((1 << 20) + 1))
    assert status == 413
    status, res = svc.post("/filter", None, raw=b"\xff\xfe")
    assert status == 400 and res["Error"].startswith("decode ExtenderArgs:")


def test_stuck_connections_are_dropped(svc: RunningService) -> None:
    """50 TLS connections holding half-sent headers, 10 that never handshake, one that never sends
    its body: all closed by the server within 15 s (the limits are 10 s)."""
    closed_after: list[float] = []
    replies: list[bytes] = []
    lock = threading.Lock()
    start = time.monotonic()

    def hold(kind: str) -> None:
        raw = socket.create_connection(("127.0.0.1", svc.port), timeout=25)
        try:
            sock: socket.socket = raw
            if kind != "no-handshake":
                sock = svc.ssl.wrap_socket(raw, server_hostname="127.0.0.1")
            if kind == "half-header":
                sock.sendall(b"POST /filter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            elif kind == "no-body":
                sock.sendall(b"POST /filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"Pod\":")
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except (OSError, ssl.SSLError):
                pass
            with lock:
                closed_after.append(time.monotonic() - start)
                if kind == "no-body":
                    replies.append(data)
        finally:
            raw.close()

    kinds = ["half-header"] * 50 + ["no-handshake"] * 10 + ["no-body"]
    threads = [threading.Thread(target=hold, args=(k,)) for k in kinds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(closed_after) == len(kinds)
    assert max(closed_after) < 15, sorted(closed_after)[-5:]
    assert min(closed_after) > 5  # held open until the limit, not refused outright
    assert replies[0].startswith(b"HTTP/1.1 408")
    assert b"request body not received within 10 s" in replies[0]
    # the server still serves afterwards
    assert svc.get("/healthz") == (200, b"ok")


def test_bodies_are_json_even_when_refused(svc: RunningService) -> None:
    status, res = svc.post("/filter", None, raw=orjson.dumps({"Pod": {"metadata": []}}))
    assert status == 400 and res == {
        "Nodes": None,
        "NodeNames": None,
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "decode ExtenderArgs: Pod.metadata: expected an object, got list",
    }


def test_a_rotated_client_ca_is_trusted_without_a_restart(kube: Kube, tmp_path: Any) -> None:
    s = RunningService(kube, tmp_path, cert_reload_interval=0.2)
    try:
        new_ca = pki.make_ca("rotated")
        client = pki.make_serving_cert(new_ca, CLIENT_CN, [], client=True)
        ctx = _context(s, client, tmp_path)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            s.post("/bind", {"PodName": "nope", "PodNamespace": "default", "Node": "s1"}, context=ctx)
        time.sleep(0.05)  # a new mtime
        (tmp_path / "ca.crt").write_bytes(new_ca.cert_pem)
        wait_for(lambda: _accepted(s, ctx), timeout=10)
        body = {"PodName": "nope", "PodNamespace": "default", "Node": "s1"}
        status, res = s.post("/bind", body, context=ctx)
        assert (status, res) == (200, {"Error": "pod default/nope not found"})
    finally:
        s.stop()


def _accepted(s: RunningService, ctx: ssl.SSLContext) -> bool:
    try:
        s.post("/bind", {"PodName": "nope", "PodNamespace": "default", "Node": "s1"}, context=ctx)
        return True
    except (ssl.SSLError, ConnectionError):
        return False


def test_the_metrics_port_drops_half_sent_requests_too(svc: RunningService) -> None:
    sock = socket.create_connection(("127.0.0.1", svc.service.metrics_port), timeout=25)
    start = time.monotonic()
    try:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHo")
        assert sock.recv(100) == b""
        assert 5 < time.monotonic() - start < 15
    finally:
        sock.close()
