"""Admission through the live server: ResourceQuota, webhooks (url and Service), RBAC, tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
from pathlib import Path

import pytest
from aiohttp import web
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import pki

from .helpers import raw_json, wait_for


def _pod(name: str, cpu: str = "", gpu: str = "") -> dict:
    res: dict = {}
    if cpu:
        res = {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}
    if gpu:
        res.setdefault("limits", {})["nvidia.com/gpu"] = gpu
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": res}]},
    }


def test_resource_quota_rejects_over_quota_pod_and_tracks_usage(core, ns):
    core.create_namespaced_resource_quota(
        ns,
        {
            "metadata": {"name": "q"},
            "spec": {"hard": {"requests.cpu": "1", "pods": "5", "requests.nvidia.com/gpu": "2"}},
        },
    )
    wait_for(lambda: (core.read_namespaced_resource_quota("q", ns).status.used or {}).get("pods") == "0")
    core.create_namespaced_pod(ns, _pod("a", cpu="600m", gpu="1"))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, _pod("b", cpu="500m"))
    assert e.value.status == 403
    msg = json.loads(e.value.body)["message"]
    assert "exceeded quota: q" in msg and "requested: requests.cpu=500m" in msg
    used = core.read_namespaced_resource_quota("q", ns).status.used
    assert used["pods"] == "1" and used["requests.cpu"] == "600m" and used["requests.nvidia.com/gpu"] == "1"
    core.delete_namespaced_pod("a", ns)
    wait_for(lambda: core.read_namespaced_resource_quota("q", ns).status.used["pods"] == "0")
    core.create_namespaced_pod(ns, _pod("b", cpu="500m"))


class _Webhook:
    """A real HTTPS admission webhook served on 127.0.0.1 by the test."""

    def __init__(self, testbed, ca: pki.KeyPair, handler) -> None:  # type: ignore[no-untyped-def]
        self.tb = testbed
        self.ca = ca
        self.handler = handler
        self.port = 0
        self.calls: list[dict] = []
        self._runner: web.AppRunner | None = None

    async def _serve(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.calls.append(review)
        return web.json_response(self.handler(review))

    def start(self, hosts: list[str]) -> None:
        leaf = pki.make_serving_cert(self.ca, hosts[0], hosts)
        d = Path(tempfile.mkdtemp())
        leaf.write(d / "tls.crt", d / "tls.key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(d / "tls.crt", d / "tls.key")

        async def start() -> int:
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._serve)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
            await site.start()
            return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.port = self.tb.call(start())

    def stop(self) -> None:
        if self._runner is not None:
            self.tb.call(self._runner.cleanup())


def _allow_with_label(review: dict) -> dict:
    patch = [{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": review["request"]["uid"],
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
        },
    }


def _deny(review: dict) -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": review["request"]["uid"],
            "allowed": False,
            "status": {"message": "no thanks", "code": 403},
        },
    }


def _webhook_config(kind: str, name: str, client_config: dict, ns: str, failure: str = "Fail") -> dict:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"{name}.example.com",
                "clientConfig": client_config,
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": failure,
                "timeoutSeconds": 2,
            }
        ],
    }


def test_mutating_webhook_by_url_patches_object(testbed, api, core, ns):
    ca = pki.make_ca("hook-ca")
    hook = _Webhook(testbed, ca, _allow_with_label)
    hook.start(["127.0.0.1"])
    adm = client.AdmissionregistrationV1Api(api)
    try:
        adm.create_mutating_webhook_configuration(
            _webhook_config(
                "MutatingWebhookConfiguration",
                f"mut-{ns}",
                {
                    "url": f"https://127.0.0.1:{hook.port}/mutate",
                    "caBundle": base64.b64encode(ca.cert_pem).decode(),
                },
                ns,
            )
        )
        cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "m"}})
        assert cm.metadata.labels == {"mutated": "yes"}
        req = hook.calls[-1]["request"]
        assert req["operation"] == "CREATE" and req["kind"]["kind"] == "ConfigMap"
        assert req["namespace"] == ns and req["userInfo"]["username"] == "testbed-admin"
    finally:
        adm.delete_mutating_webhook_configuration(f"mut-{ns}")
        hook.stop()


def test_validating_webhook_through_service_denies(testbed, api, core, ns):
    ca = pki.make_ca("hook-ca")
    hook = _Webhook(testbed, ca, _deny)
    hook.start([f"hook.{ns}.svc"])
    adm = client.AdmissionregistrationV1Api(api)
    core.create_namespaced_service(
        ns, {"metadata": {"name": "hook"}, "spec": {"ports": [{"port": 443, "targetPort": hook.port}]}}
    )
    core.create_namespaced_endpoints(
        ns,
        {
            "metadata": {"name": "hook"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": hook.port}]}],
        },
    )
    try:
        adm.create_validating_webhook_configuration(
            _webhook_config(
                "ValidatingWebhookConfiguration",
                f"val-{ns}",
                {
                    "service": {"name": "hook", "namespace": ns, "port": 443, "path": "/validate"},
                    "caBundle": base64.b64encode(ca.cert_pem).decode(),
                },
                ns,
            )
        )
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "v"}})
        assert e.value.status == 403
        assert "denied the request: no thanks" in json.loads(e.value.body)["message"]
        with pytest.raises(ApiException):
            core.read_namespaced_config_map("v", ns)
    finally:
        adm.delete_validating_webhook_configuration(f"val-{ns}")
        hook.stop()


def test_unreachable_webhook_fail_vs_ignore(testbed, api, core, ns):
    adm = client.AdmissionregistrationV1Api(api)
    ca = pki.make_ca("nobody")
    closed = {"url": "https://127.0.0.1:1/hook", "caBundle": base64.b64encode(ca.cert_pem).decode()}
    adm.create_validating_webhook_configuration(
        _webhook_config("ValidatingWebhookConfiguration", f"fail-{ns}", closed, ns, failure="Fail")
    )
    try:
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
        assert e.value.status == 500
        assert "failed calling webhook" in json.loads(e.value.body)["message"]
    finally:
        adm.delete_validating_webhook_configuration(f"fail-{ns}")
    adm.create_validating_webhook_configuration(
        _webhook_config("ValidatingWebhookConfiguration", f"ign-{ns}", closed, ns, failure="Ignore")
    )
    try:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    finally:
        adm.delete_validating_webhook_configuration(f"ign-{ns}")


def test_service_account_token_is_subject_to_rbac(testbed, api, core, ns):
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "reader"}})
    tok = core.create_namespaced_service_account_token(
        "reader",
        ns,
        {"spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 3600}},
    ).status.token
    sa_core = client.CoreV1Api(testbed.api_client(token=tok))
    with pytest.raises(ApiException) as e:
        sa_core.list_namespaced_pod(ns)
    assert e.value.status == 403
    msg = json.loads(e.value.body)["message"]
    assert msg.startswith(
        f'pods is forbidden: User "system:serviceaccount:{ns}:reader" cannot list resource "pods"'
    )
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "rb"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )
    assert sa_core.list_namespaced_pod(ns).items == []
    with pytest.raises(ApiException) as e:
        sa_core.create_namespaced_config_map(ns, {"metadata": {"name": "no"}})
    assert e.value.status == 403
    # The self-review answers what RBAC decided.
    authz = client.AuthorizationV1Api(testbed.api_client(token=tok))
    r = authz.create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"namespace": ns, "verb": "list", "resource": "pods"}}}
    )
    assert r.status.allowed is True
    r = authz.create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"namespace": ns, "verb": "delete", "resource": "pods"}}}
    )
    assert r.status.allowed is False


def test_deleted_service_account_token_stops_working(testbed, core, ns):
    core.create_namespaced_service_account(ns, {"metadata": {"name": "gone"}})
    tok = core.create_namespaced_service_account_token("gone", ns, {"spec": {}}).status.token
    core.delete_namespaced_service_account("gone", ns)
    code, _ = raw_json(testbed, "GET", "/api/v1/namespaces", token=tok)
    assert code == 401


def test_default_service_account_and_root_ca_appear_in_new_namespaces(core, ns):
    assert core.read_namespaced_service_account("default", ns).metadata.name == "default"
    assert "BEGIN CERTIFICATE" in core.read_namespaced_config_map("kube-root-ca.crt", ns).data["ca.crt"]


def test_pod_with_missing_service_account_is_forbidden(core, ns):
    body = {
        "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "nobody", "containers": [{"name": "c", "image": "i"}]},
    }
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, body)
    assert e.value.status == 403
    assert 'serviceaccount "nobody" not found' in json.loads(e.value.body)["message"]


def test_events_share_storage_between_core_and_events_k8s_io(api, core, ns):
    ev = client.EventsV1Api(api)
    ev.create_namespaced_event(
        ns,
        {
            "metadata": {"name": "e1"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "test/ctl",
            "reportingInstance": "i1",
            "action": "Testing",
            "reason": "Tested",
            "note": "hello",
            "type": "Normal",
            "regarding": {"kind": "Pod", "name": "p", "namespace": ns},
        },
    )
    core_ev = core.read_namespaced_event("e1", ns)
    assert core_ev.message == "hello" and core_ev.involved_object.name == "p"
    listed = core.list_namespaced_event(ns, field_selector="involvedObject.name=p").items
    assert [e.metadata.name for e in listed] == ["e1"]
    assert ev.read_namespaced_event("e1", ns).note == "hello"


async def _noop() -> None:
    await asyncio.sleep(0)
