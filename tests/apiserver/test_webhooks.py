"""The admission-webhook dispatcher against real HTTPS webhooks served by the test on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from testbed.apiserver.auth import UserInfo
from testbed.apiserver.errors import APIError
from testbed.apiserver.reader import DictReader
from testbed.apiserver.webhooks import (
    MUTATING_CONFIGS,
    REQUEST_WARNINGS,
    VALIDATING_CONFIGS,
    AdmissionRequestInfo,
    WebhookDispatcher,
    rule_matches,
)

SVC_NAME = "hook.hami.svc"


# --- certificates ----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class PKI:
    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("test-ca", self.ca_key, "test-ca", self.ca_key, ca=True)
        self.ca_bundle = base64.b64encode(self.ca.public_bytes(serialization.Encoding.PEM)).decode()

    def server_context(self, dns: tuple[str, ...], ips: tuple[str, ...] = ()) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("webhook", key, "test-ca", self.ca_key, ca=False, dns=dns, ips=ips)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as d:
            cp, kp = Path(d, "c.pem"), Path(d, "k.pem")
            cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            kp.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            ctx.load_cert_chain(cp, kp)
        return ctx


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


# --- a programmable webhook server -------------------------------------------------------------

Behaviour = Callable[[dict[str, Any]], Awaitable[Any] | Any]


class Hooks:
    """Serves ``/<name>``: each path answers with its behaviour; requests are recorded."""

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.seen: list[tuple[str, str, str, dict[str, Any]]] = []  # (path, query, host, review)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        review = await request.json()
        self.seen.append((request.path, request.query_string, request.headers.get("Host", ""), review))
        out = self.behaviours[request.path](review)
        if asyncio.iscoroutine(out):
            out = await out
        if isinstance(out, web.StreamResponse):
            return out
        return web.json_response(out)

    async def start(self, ctx: ssl.SSLContext) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [r for p, _, _, r in self.seen if p == path]


def allow(patch: list[dict] | None = None, **extra: Any) -> Behaviour:
    def answer(review: dict[str, Any]) -> dict[str, Any]:
        resp: dict[str, Any] = {"uid": review["request"]["uid"], "allowed": True, **extra}
        if patch is not None:
            resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            resp["patchType"] = "JSONPatch"
        return {"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": resp}

    return answer


def raw(response: dict[str, Any], envelope: dict[str, Any] | None = None) -> Behaviour:
    """Answer with exactly this response (uid filled in unless given)."""

    def answer(review: dict[str, Any]) -> dict[str, Any]:
        resp = {"uid": review["request"]["uid"], **response}
        env = (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"} if envelope is None else envelope
        )
        return {**env, "response": resp}

    return answer


def webhook(
    name: str, url: str | None = None, *, ca: str = "", service: dict | None = None, **fields: Any
) -> dict[str, Any]:
    client: dict[str, Any] = {"caBundle": ca} if ca else {}
    if service is not None:
        client["service"] = service
    else:
        client["url"] = url
    hook = {
        "name": name,
        "clientConfig": client,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "rules": [
            {
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
            }
        ],
    }
    hook.update(fields)
    return hook


def config(
    name: str, *hooks: dict[str, Any], kind: str = "MutatingWebhookConfiguration", version: str = "v1"
) -> dict[str, Any]:
    return {
        "apiVersion": f"admissionregistration.k8s.io/{version}",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": list(hooks),
    }


def pod_request(
    op: str = "CREATE",
    *,
    labels: dict | None = None,
    ns: str = "default",
    dry_run: bool = False,
    ns_labels: dict | None = None,
    old: dict | None = None,
) -> AdmissionRequestInfo:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": ns, "labels": dict(labels or {})},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    return AdmissionRequestInfo(
        op,
        "",
        "v1",
        "Pod",
        "pods",
        "",
        "p",
        ns,
        UserInfo("alice", "u1", ("devs", "system:authenticated")),
        obj if op != "DELETE" else None,
        old,
        dry_run,
        None,
        ns_labels if ns_labels is not None else {},
    )


def run(coro_fn: Callable[[Hooks], Awaitable[None]], ctx: ssl.SSLContext) -> None:
    async def main() -> None:
        hooks = Hooks()
        await hooks.start(ctx)
        try:
            await coro_fn(hooks)
        finally:
            await hooks.stop()

    asyncio.run(main())


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- rule matching ---------------------------------------------------------------------------


def _req(op="CREATE", group="", version="v1", resource="pods", sub="", ns="default") -> AdmissionRequestInfo:
    return AdmissionRequestInfo(op, group, version, "X", resource, sub, "n", ns, UserInfo("u"), {}, None)


@pytest.mark.parametrize(
    ("rule", "req", "matched"),
    [
        ({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}, _req(), True),
        (
            {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]},
            _req(sub="status"),
            False,
        ),
        (
            {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]},
            _req(sub="status"),
            True,
        ),
        (
            {"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/*"]},
            _req(),
            True,
        ),
        (
            {"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/*"]},
            _req(sub="binding"),
            True,
        ),
        (
            {"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/status"]},
            _req(sub="status"),
            True,
        ),
        (
            {"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/status"]},
            _req(),
            False,
        ),
        (
            {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
            _req(),
            False,
        ),
        (
            {"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["pods"]},
            _req(),
            False,
        ),
        (
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1beta1"], "resources": ["pods"]},
            _req(),
            False,
        ),
        (
            {
                "operations": ["*"],
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "resources": ["*"],
                "scope": "Namespaced",
            },
            _req(),
            True,
        ),
        (
            {
                "operations": ["*"],
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "resources": ["*"],
                "scope": "Namespaced",
            },
            _req(resource="nodes", ns=""),
            False,
        ),
        (
            {
                "operations": ["*"],
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "resources": ["*"],
                "scope": "Namespaced",
            },
            _req(resource="namespaces", ns="x"),
            False,
        ),
        (
            {
                "operations": ["*"],
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "resources": ["*"],
                "scope": "Cluster",
            },
            _req(resource="namespaces", ns="x"),
            True,
        ),
        (
            {
                "operations": ["*"],
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "resources": ["*"],
                "scope": "Cluster",
            },
            _req(),
            False,
        ),
    ],
)
def test_rule_matching(rule, req, matched):
    assert rule_matches(rule, req) is matched


def test_match_policy_equivalent_ignores_the_version():
    rule = {
        "operations": ["CREATE"],
        "apiGroups": ["apps"],
        "apiVersions": ["v1beta1"],
        "resources": ["deployments"],
    }
    req = _req(group="apps", resource="deployments")
    assert not rule_matches(rule, req) and rule_matches(rule, req, any_version=True)
    r = DictReader(
        {
            MUTATING_CONFIGS: [
                config(
                    "c",
                    webhook("eq", "https://x", rules=[rule]),
                    webhook("ex", "https://x", rules=[rule], matchPolicy="Exact"),
                )
            ]
        }
    )
    d = WebhookDispatcher(r, ("v1", "v1beta1"))
    hooks = d.webhooks(MUTATING_CONFIGS)
    assert [d.should_call(h, req, req.obj) for h in hooks] == [True, False]


# --- calling -----------------------------------------------------------------------------------


def test_mutation_request_shape_and_patch(pki):
    async def body(h: Hooks) -> None:
        h.behaviours["/mutate"] = allow(
            [{"op": "add", "path": "/metadata/labels/injected", "value": "yes"}],
            warnings=["careful"],
            auditAnnotations={"k": "v"},
        )
        url = f"https://127.0.0.1:{h.port}/mutate"
        d = WebhookDispatcher(
            DictReader({MUTATING_CONFIGS: [config("m", webhook("m.example.com", url, ca=pki.ca_bundle))]}),
            ("v1", "v1beta1"),
        )
        req = pod_request(labels={"app": "a"})
        served: list[str] = []  # what the server answers as Warning headers
        token = REQUEST_WARNINGS.set(served)
        out = await d.mutate(req)
        REQUEST_WARNINGS.reset(token)
        await d.close()
        assert served == ["careful"]
        assert out is not None and out["metadata"]["labels"] == {"app": "a", "injected": "yes"}
        assert req.obj is not None and "injected" not in req.obj["metadata"]["labels"]  # input untouched
        assert req.warnings == ["careful"] and req.annotations == {"m.example.com/k": "v"}
        path, query, _host, review = h.seen[0]
        assert (path, query) == ("/mutate", "timeout=10s")
        assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
        rq = review["request"]
        assert rq["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
        assert rq["resource"] == {"group": "", "version": "v1", "resource": "pods"}
        assert rq["requestKind"] == rq["kind"] and rq["requestResource"] == rq["resource"]
        assert rq["operation"] == "CREATE" and rq["name"] == "p" and rq["namespace"] == "default"
        assert rq["userInfo"] == {
            "username": "alice",
            "uid": "u1",
            "groups": ["devs", "system:authenticated"],
        }
        assert rq["object"]["metadata"]["labels"] == {"app": "a"} and rq["oldObject"] is None
        assert rq["dryRun"] is False and "options" in rq and "subResource" not in rq

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_denials_carry_the_webhook_status(pki):
    async def body(h: Hooks) -> None:
        h.behaviours["/deny"] = raw(
            {"allowed": False, "status": {"code": 403, "message": "no GPUs for you", "reason": "Forbidden"}}
        )
        h.behaviours["/bare"] = raw({"allowed": False})
        h.behaviours["/low"] = raw({"allowed": False, "status": {"code": 200, "reason": "Because"}})
        base = f"https://127.0.0.1:{h.port}"
        for path, code, msg in [
            ("/deny", 403, 'admission webhook "w.x" denied the request: no GPUs for you'),
            ("/bare", 400, 'admission webhook "w.x" denied the request without explanation'),
            ("/low", 400, 'admission webhook "w.x" denied the request: Because'),
        ]:
            d = WebhookDispatcher(
                DictReader(
                    {
                        VALIDATING_CONFIGS: [
                            config(
                                "v",
                                webhook("w.x", base + path, ca=pki.ca_bundle),
                                kind="ValidatingWebhookConfiguration",
                            )
                        ]
                    }
                )
            )
            with pytest.raises(APIError) as e:
                await d.validate(pod_request())
            await d.close()
            assert (e.value.code, e.value.message) == (code, msg)

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_failure_policy_with_an_unreachable_webhook(pki):
    async def body(_h: Hooks) -> None:
        port = closed_port()
        url = f"https://127.0.0.1:{port}/m"
        for policy in ("Fail", "Ignore"):
            d = WebhookDispatcher(
                DictReader(
                    {
                        MUTATING_CONFIGS: [
                            config("c", webhook("down.x", url, ca=pki.ca_bundle, failurePolicy=policy))
                        ]
                    }
                )
            )
            req = pod_request()
            if policy == "Ignore":
                assert await d.mutate(req) is req.obj
            else:
                with pytest.raises(APIError) as e:
                    await d.mutate(req)
                assert e.value.code == 500 and e.value.reason == "InternalError"
                assert e.value.message == (
                    'Internal error occurred: failed calling webhook "down.x": failed to call webhook: '
                    f'Post "https://127.0.0.1:{port}/m?timeout=10s": dial tcp 127.0.0.1:{port}: connect: '
                    "connection refused"
                )
            await d.close()

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_timeout_is_enforced(pki):
    async def body(h: Hooks) -> None:
        async def slow(review: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(3)
            return allow()(review)

        h.behaviours["/slow"] = slow
        url = f"https://127.0.0.1:{h.port}/slow"
        d = WebhookDispatcher(
            DictReader(
                {
                    VALIDATING_CONFIGS: [
                        config(
                            "v",
                            webhook("slow.x", url, ca=pki.ca_bundle, timeoutSeconds=1),
                            webhook(
                                "slow-ignored.x",
                                url,
                                ca=pki.ca_bundle,
                                timeoutSeconds=1,
                                failurePolicy="Ignore",
                            ),
                            kind="ValidatingWebhookConfiguration",
                        )
                    ]
                }
            )
        )
        with pytest.raises(APIError) as e:
            await d.validate(pod_request())
        await d.close()
        assert e.value.message == (
            'Internal error occurred: failed calling webhook "slow.x": failed to call '
            f'webhook: Post "{url}?timeout=1s": context deadline exceeded'
        )
        assert [q for _, q, _, _ in h.seen] == ["timeout=1s", "timeout=1s"]

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_v1_responses_are_checked_strictly_and_v1beta1_leniently(pki):
    patch = base64.b64encode(json.dumps([{"op": "add", "path": "/metadata/labels/b", "value": "1"}]).encode())

    async def body(h: Hooks) -> None:
        h.behaviours["/uid"] = raw({"uid": "wrong", "allowed": True})
        h.behaviours["/kind"] = raw({"allowed": True}, envelope={})
        h.behaviours["/nopatchtype"] = raw({"allowed": True, "patch": patch.decode()})
        h.behaviours["/noresponse"] = lambda review: {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
        }
        h.behaviours["/beta"] = lambda review: {"response": {"allowed": True, "patch": patch.decode()}}
        h.behaviours["/missing"] = lambda review: web.Response(status=404, text="404 page not found")
        base = f"https://127.0.0.1:{h.port}"
        cases = {
            "/uid": 'received invalid webhook response: expected response.uid="{uid}", got "wrong"',
            "/kind": "received invalid webhook response: expected webhook response of admission.k8s.io/v1, "
            "Kind=AdmissionReview, got /, Kind=",
            "/nopatchtype": "received invalid webhook response: webhook returned response.patch but not "
            "response.patchType",
            "/noresponse": "received invalid webhook response: webhook response was absent",
            "/missing": "failed to call webhook: the server could not find the requested resource",
        }
        for path, why in cases.items():
            d = WebhookDispatcher(
                DictReader({MUTATING_CONFIGS: [config("c", webhook("s.x", base + path, ca=pki.ca_bundle))]})
            )
            with pytest.raises(APIError) as e:
                await d.mutate(pod_request())
            await d.close()
            uid = h.calls(path)[-1]["request"]["uid"]
            assert e.value.message == 'Internal error occurred: failed calling webhook "s.x": ' + why.replace(
                "{uid}", uid
            )
        cfg = config(
            "c",
            webhook("b.x", base + "/beta", ca=pki.ca_bundle, admissionReviewVersions=["v1beta1"]),
            version="v1beta1",
        )
        d = WebhookDispatcher(DictReader({MUTATING_CONFIGS: [cfg]}))
        out = await d.mutate(pod_request())
        await d.close()
        assert out is not None and out["metadata"]["labels"] == {"b": "1"}
        assert h.calls("/beta")[0]["apiVersion"] == "admission.k8s.io/v1beta1"
        assert [q for p, q, _, _ in h.seen if p == "/beta"] == ["timeout=30s"]  # the v1beta1 default

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_namespace_and_object_selectors(pki):
    async def body(h: Hooks) -> None:
        h.behaviours["/m"] = allow([{"op": "add", "path": "/metadata/labels/hit", "value": "1"}])
        url = f"https://127.0.0.1:{h.port}/m"
        ns_sel = {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["on"]}]}
        obj_sel = {"matchLabels": {"app": "a"}}
        reader = DictReader(
            {
                MUTATING_CONFIGS: [
                    config(
                        "c",
                        webhook("ns.x", url, ca=pki.ca_bundle, namespaceSelector=ns_sel),
                        webhook("obj.x", url, ca=pki.ca_bundle, objectSelector=obj_sel),
                    )
                ],
                "namespaces": [{"metadata": {"name": "lab", "labels": {"gpu": "on"}}}],
            }
        )
        d = WebhookDispatcher(reader)

        async def names(req: AdmissionRequestInfo) -> list[str]:
            before = len(h.seen)
            await d.mutate(req)
            return [r["request"]["uid"] for _, _, _, r in h.seen[before:]]

        assert len(await names(pod_request(ns_labels={"gpu": "on"}))) == 1
        assert len(await names(pod_request(ns_labels={"gpu": "off"}))) == 0
        assert len(await names(pod_request(labels={"app": "a"}))) == 1
        old = {"metadata": {"labels": {"app": "a"}}}
        assert len(await names(pod_request("UPDATE", old=old))) == 1  # oldObject labels count too
        req = pod_request(ns="lab")
        req.namespace_labels = None  # looked up from the Namespace object
        assert len(await names(req)) == 1
        req = pod_request(ns="ghost")
        req.namespace_labels = None
        with pytest.raises(APIError) as e:
            await d.mutate(req)
        assert (e.value.code, e.value.message) == (404, 'namespaces "ghost" not found')
        await d.close()
        # A Namespace object is matched by its own labels.
        d = WebhookDispatcher(
            DictReader(
                {
                    MUTATING_CONFIGS: [
                        config(
                            "c",
                            webhook(
                                "ns.x",
                                url,
                                ca=pki.ca_bundle,
                                namespaceSelector=ns_sel,
                                rules=[
                                    {
                                        "operations": ["CREATE"],
                                        "apiGroups": [""],
                                        "apiVersions": ["v1"],
                                        "resources": ["namespaces"],
                                    }
                                ],
                            ),
                        )
                    ]
                }
            )
        )
        ns_obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "new", "labels": {"gpu": "on"}},
        }
        req = AdmissionRequestInfo(
            "CREATE", "", "v1", "Namespace", "namespaces", "", "new", "", UserInfo("u"), ns_obj, None
        )
        out = await d.mutate(req)
        await d.close()
        assert out is not None and out["metadata"]["labels"]["hit"] == "1"

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_service_resolution_through_endpoints(pki):
    async def body(h: Hooks) -> None:
        h.behaviours["/inject"] = allow([{"op": "add", "path": "/metadata/labels/svc", "value": "ok"}])
        svc = {
            "metadata": {"name": "hook", "namespace": "hami"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 9443}]},
        }
        eps = {
            "metadata": {"name": "hook", "namespace": "hami"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": h.port}]}],
        }
        reader = DictReader(
            {
                MUTATING_CONFIGS: [
                    config(
                        "c",
                        webhook(
                            "svc.x",
                            ca=pki.ca_bundle,
                            service={"namespace": "hami", "name": "hook", "path": "/inject"},
                        ),
                    )
                ]
            }
        )
        d = WebhookDispatcher(reader)
        with pytest.raises(APIError) as e:
            await d.mutate(pod_request())
        assert e.value.message == (
            'Internal error occurred: failed calling webhook "svc.x": failed to call '
            f'webhook: Post "https://{SVC_NAME}:443/inject?timeout=10s": '
            'service "hook" not found'
        )
        reader.add("services", svc)
        reader.add("endpoints", eps)
        out = await d.mutate(pod_request())
        await d.close()
        assert out is not None and out["metadata"]["labels"]["svc"] == "ok"
        assert h.seen[-1][2] == f"{SVC_NAME}:443"  # Host header names the Service

    run(body, pki.server_context((SVC_NAME,)))


def test_tls_failures_follow_the_failure_policy(pki):
    other = PKI()

    async def body(h: Hooks) -> None:
        h.behaviours["/m"] = allow()
        url = f"https://127.0.0.1:{h.port}/m"
        d = WebhookDispatcher(
            DictReader({MUTATING_CONFIGS: [config("c", webhook("tls.x", url, ca=other.ca_bundle))]})
        )
        with pytest.raises(APIError) as e:
            await d.mutate(pod_request())
        await d.close()
        assert e.value.message.endswith(
            f'Post "{url}?timeout=10s": tls: failed to verify certificate: '
            "x509: certificate signed by unknown authority"
        )
        d = WebhookDispatcher(
            DictReader(
                {
                    MUTATING_CONFIGS: [
                        config("c", webhook("tls.x", url, ca=other.ca_bundle, failurePolicy="Ignore"))
                    ]
                }
            )
        )
        req = pod_request()
        assert await d.mutate(req) is req.obj
        await d.close()
        # Right CA, wrong name: the certificate is for the Service name only.
        d = WebhookDispatcher(
            DictReader({MUTATING_CONFIGS: [config("c", webhook("tls.x", url, ca=pki.ca_bundle))]})
        )
        with pytest.raises(APIError) as e:
            await d.mutate(pod_request())
        await d.close()
        assert e.value.message.endswith(
            "tls: failed to verify certificate: x509: cannot validate certificate "
            "for 127.0.0.1 because it doesn't contain any IP SANs"
        )
        assert h.seen == []

    run(body, pki.server_context((SVC_NAME,)))


def test_dry_run_side_effects_and_review_versions(pki):
    async def body(h: Hooks) -> None:
        h.behaviours["/m"] = allow()
        url = f"https://127.0.0.1:{h.port}/m"
        d = WebhookDispatcher(
            DictReader(
                {MUTATING_CONFIGS: [config("c", webhook("se.x", url, ca=pki.ca_bundle, sideEffects="Some"))]}
            )
        )
        with pytest.raises(APIError) as e:
            await d.mutate(pod_request(dry_run=True))
        assert (e.value.code, e.value.message) == (400, 'admission webhook "se.x" does not support dry run')
        await d.mutate(pod_request())  # not a dry run: called
        await d.close()
        d = WebhookDispatcher(
            DictReader(
                {
                    MUTATING_CONFIGS: [
                        config("c", webhook("ok.x", url, ca=pki.ca_bundle, sideEffects="NoneOnDryRun"))
                    ]
                }
            )
        )
        await d.mutate(pod_request(dry_run=True))
        assert h.calls("/m")[-1]["request"]["dryRun"] is True
        await d.close()
        d = WebhookDispatcher(
            DictReader(
                {
                    MUTATING_CONFIGS: [
                        config("c", webhook("v.x", url, ca=pki.ca_bundle, admissionReviewVersions=["v2"]))
                    ]
                }
            )
        )
        with pytest.raises(APIError) as e:
            await d.mutate(pod_request())
        await d.close()
        assert e.value.message == (
            'Internal error occurred: failed calling webhook "v.x": could not create '
            "admission objects: webhook does not accept known AdmissionReview versions "
            "(v1, v1beta1)"
        )
        assert len(h.seen) == 2

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_reinvocation_and_patch_failures(pki):
    async def body(h: Hooks) -> None:
        def first(review: dict[str, Any]) -> dict[str, Any]:
            labels = review["request"]["object"]["metadata"]["labels"]
            return allow([{"op": "add", "path": "/metadata/labels/first", "value": str(len(labels))}])(review)

        h.behaviours["/first"] = first
        h.behaviours["/second"] = allow([{"op": "add", "path": "/metadata/labels/second", "value": "x"}])
        h.behaviours["/broken"] = allow([{"op": "replace", "path": "/spec/nothing/here", "value": 1}])
        base = f"https://127.0.0.1:{h.port}"
        d = WebhookDispatcher(
            DictReader(
                {
                    MUTATING_CONFIGS: [
                        config(
                            "a",
                            webhook(
                                "first.x", base + "/first", ca=pki.ca_bundle, reinvocationPolicy="IfNeeded"
                            ),
                        ),
                        config("b", webhook("second.x", base + "/second", ca=pki.ca_bundle)),
                    ]
                }
            )
        )
        out = await d.mutate(pod_request())
        await d.close()
        assert len(h.calls("/first")) == 2 and len(h.calls("/second")) == 1
        assert out is not None and out["metadata"]["labels"] == {"first": "2", "second": "x"}
        for policy in ("Fail", "Ignore"):  # a patch that does not apply fails whatever the policy
            d = WebhookDispatcher(
                DictReader(
                    {
                        MUTATING_CONFIGS: [
                            config(
                                "c",
                                webhook("broken.x", base + "/broken", ca=pki.ca_bundle, failurePolicy=policy),
                            )
                        ]
                    }
                )
            )
            with pytest.raises(APIError) as e:
                await d.mutate(pod_request())
            await d.close()
            assert e.value.code == 500 and e.value.message.startswith("Internal error occurred: ")

    run(body, pki.server_context((), ("127.0.0.1",)))


def test_validating_webhooks_run_in_parallel_and_may_not_patch(pki):
    async def body(h: Hooks) -> None:
        started: list[str] = []
        gate = asyncio.Event()

        async def a(review: dict[str, Any]) -> dict[str, Any]:
            started.append("a")
            await asyncio.wait_for(gate.wait(), 5)  # only returns once b has started too
            return allow()(review)

        async def b(review: dict[str, Any]) -> dict[str, Any]:
            started.append("b")
            gate.set()
            return allow()(review)

        h.behaviours["/a"], h.behaviours["/b"] = a, b
        h.behaviours["/patch"] = allow([{"op": "add", "path": "/x", "value": 1}])
        base = f"https://127.0.0.1:{h.port}"
        kind = "ValidatingWebhookConfiguration"
        d = WebhookDispatcher(
            DictReader(
                {
                    VALIDATING_CONFIGS: [
                        config(
                            "v",
                            webhook("a.x", base + "/a", ca=pki.ca_bundle),
                            webhook("b.x", base + "/b", ca=pki.ca_bundle),
                            kind=kind,
                        )
                    ]
                }
            )
        )
        await d.validate(pod_request())
        await d.close()
        assert sorted(started) == ["a", "b"]
        d = WebhookDispatcher(
            DictReader(
                {
                    VALIDATING_CONFIGS: [
                        config("v", webhook("p.x", base + "/patch", ca=pki.ca_bundle), kind=kind)
                    ]
                }
            )
        )
        with pytest.raises(APIError) as e:
            await d.validate(pod_request())
        await d.close()
        assert e.value.message.endswith(
            "received invalid webhook response: validating webhook may not return response.patch"
        )
        # Webhook configurations themselves are never sent to webhooks.
        every = {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}
        d = WebhookDispatcher(
            DictReader(
                {
                    VALIDATING_CONFIGS: [
                        config(
                            "v", webhook("p.x", base + "/patch", ca=pki.ca_bundle, rules=[every]), kind=kind
                        )
                    ]
                }
            )
        )
        req = AdmissionRequestInfo(
            "CREATE",
            "admissionregistration.k8s.io",
            "v1",
            kind,
            "validatingwebhookconfigurations",
            "",
            "v",
            "",
            UserInfo("u"),
            {},
            None,
        )
        await d.validate(req)
        await d.close()
        assert len(h.calls("/patch")) == 1

    run(body, pki.server_context((), ("127.0.0.1",)))
