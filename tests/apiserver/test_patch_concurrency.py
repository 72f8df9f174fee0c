"""Concurrent patches of one object all land, as on kube-apiserver.

kube-apiserver applies a patch inside etcd's GuaranteedUpdate, which re-reads the object and
re-applies the patch whenever another write won the race; a patch without a ``resourceVersion``
precondition therefore never answers 409 for somebody else's write. The testbed once gave up after
five attempts: with a webhook to await on every pod update, the writers of one pod (scheduler,
extender, device plugin) overlapped, and the device plugin's annotation patch got "the object has
been modified" — its Allocate failed and the pod with it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiohttp import web
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import pki

from .test_server_admission import _Webhook, _webhook_config

WRITERS, PATCHES = 4, 3


class _SlowWebhook(_Webhook):
    """Allows every request after a pause, so that concurrent updates overlap inside admission."""

    async def _serve(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.calls.append(review)
        await asyncio.sleep(0.02)
        return web.json_response(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
             "response": {"uid": review["request"]["uid"], "allowed": True}}
        )


@pytest.fixture()
def slow_update_hook(testbed, api, ns):  # type: ignore[no-untyped-def]
    ca = pki.make_ca("slow-hook-ca")
    hook = _SlowWebhook(testbed, ca, lambda review: review)
    hook.start(["127.0.0.1"])
    adm = client.AdmissionregistrationV1Api(api)
    cfg = _webhook_config(
        "MutatingWebhookConfiguration", f"slow-{ns}",
        {"url": f"https://127.0.0.1:{hook.port}/m", "caBundle": base64.b64encode(ca.cert_pem).decode()}, ns,
    )
    cfg["webhooks"][0]["rules"][0]["operations"] = ["UPDATE"]
    adm.create_mutating_webhook_configuration(cfg)
    try:
        yield hook
    finally:
        adm.delete_mutating_webhook_configuration(f"slow-{ns}")
        hook.stop()


def test_concurrent_merge_patches_without_precondition_all_land(testbed, core, ns, slow_update_hook):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "shared"}, "data": {}})

    def writer(w: int) -> list[str]:
        v1 = client.CoreV1Api(testbed.api_client())
        errors = []
        for p in range(PATCHES):
            try:
                v1.patch_namespaced_config_map("shared", ns, {"data": {f"w{w}-{p}": "x"}})
            except ApiException as e:
                errors.append(f"{e.status}: {json.loads(e.body).get('message')}")
        return errors

    with ThreadPoolExecutor(WRITERS) as pool:
        failures = [m for errs in pool.map(writer, range(WRITERS)) for m in errs]
    assert failures == []
    data = core.read_namespaced_config_map("shared", ns).data or {}
    assert sorted(data) == sorted(f"w{w}-{p}" for w in range(WRITERS) for p in range(PATCHES))
    # the webhook really was awaited on the updates (so the writers did overlap inside admission)
    assert len(slow_update_hook.calls) >= WRITERS * PATCHES


def test_a_patch_with_a_stale_resource_version_still_conflicts(core, ns):
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "pinned"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("pinned", ns, {"data": {"a": "2"}})
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map(
            "pinned", ns, {"metadata": {"resourceVersion": cm.metadata.resource_version}, "data": {"a": "3"}}
        )
    assert e.value.status == 409
    assert "the object has been modified" in json.loads(e.value.body)["message"]
    assert core.read_namespaced_config_map("pinned", ns).data == {"a": "2"}
