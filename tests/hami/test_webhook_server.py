"""The webhook served over TLS: direct AdmissionReview calls, and registered with the testbed apiserver."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hami_stack.webhook import WebhookConfig, WebhookServer
from testbed.embedded import EmbeddedTestbed
from testbed.pki import make_ca, make_serving_cert


class Served:
    """A WebhookServer on its own event-loop thread, with the CA that signed its certificate."""

    def __init__(self, tmp: Path) -> None:
        self.ca = make_ca("hami-webhook-ca")
        leaf = make_serving_cert(self.ca, "hami-scheduler", ["127.0.0.1", "localhost"])
        leaf.write(tmp / "tls.crt", tmp / "tls.key")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = WebhookServer(WebhookConfig(), "127.0.0.1", 0, tmp / "tls.crt", tmp / "tls.key")
        self.port = self.call(self.server.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(20)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("webhook-tls"))
    yield s
    s.close()


def _pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}},
                }
            ],
        },
    }


@pytest.mark.parametrize("version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_tls_review_both_versions(served: Served, version: str) -> None:
    ctx = ssl.create_default_context(cadata=served.ca.cert_pem.decode())
    review = {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {"uid": "u-1", "operation": "CREATE", "object": _pod("a")},
    }

    async def post() -> tuple[int, dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"https://127.0.0.1:{served.port}/webhook", json=review, ssl=ctx) as r,
        ):
            return r.status, await r.json()

    status, body = served.call(post())
    assert status == 200 and body["apiVersion"] == version and body["response"]["uid"] == "u-1"
    ops = json.loads(base64.b64decode(body["response"]["patch"]))
    assert {"op": "replace", "path": "/spec/schedulerName", "value": "hami-scheduler"} in ops


def test_tls_rejects_untrusted_client_view(served: Served) -> None:
    other = make_ca("someone-else")
    ctx = ssl.create_default_context(cadata=other.cert_pem.decode())

    async def post() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"https://127.0.0.1:{served.port}/webhook", json={}, ssl=ctx),
        ):
            pass

    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        served.call(post())


def test_registered_with_testbed_apiserver(served: Served) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    with EmbeddedTestbed(33) as tb:
        api = tb.api_client()
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "gpu"}})
        client.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "hami-webhook"},
                "webhooks": [
                    {
                        "name": "vgpu.hami.io",
                        "admissionReviewVersions": ["v1beta1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "matchPolicy": "Equivalent",
                        "timeoutSeconds": 10,
                        "reinvocationPolicy": "Never",
                        "clientConfig": {
                            "url": f"https://127.0.0.1:{served.port}/webhook",
                            "caBundle": base64.b64encode(served.ca.cert_pem).decode(),
                        },
                        "rules": [
                            {
                                "operations": ["CREATE", "UPDATE"],
                                "apiGroups": [""],
                                "apiVersions": ["v1"],
                                "resources": ["pods"],
                                "scope": "*",
                            }
                        ],
                    }
                ],
            }
        )
        created = core.create_namespaced_pod("gpu", _pod("gpu-pod"))
        assert created.spec.scheduler_name == "hami-scheduler"
        assert created.spec.containers[0].resources.limits == {
            "nvidia.com/gpu": "1",
            "nvidia.com/gpumem": "3000",
        }
        with pytest.raises(ApiException) as e:
            core.create_namespaced_pod(
                "gpu", _pod("forged", {"hami.io/vgpu-devices-to-allocate": "GPU-x,NVIDIA,3000,0:;"})
            )
        assert e.value.status == 403
        body = json.loads(e.value.body)
        assert body["message"].startswith(
            'admission webhook "vgpu.hami.io" denied the request: pod carries scheduler-owned annotations'
        )
        plain = core.create_namespaced_pod(
            "gpu", {"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        )
        assert plain.spec.scheduler_name == "default-scheduler"
        # issue 12 (3b): `kubectl annotate --overwrite hami.io/vgpu-devices-allocated=...` is an UPDATE
        with pytest.raises(ApiException) as e:
            core.patch_namespaced_pod(
                "gpu-pod",
                "gpu",
                {"metadata": {"annotations": {"hami.io/vgpu-devices-allocated": "GPU-x,NVIDIA,1,0:;"}}},
            )
        assert e.value.status == 403
        message = json.loads(e.value.body)["message"]
        assert "may not set, change or remove hami.io/vgpu-devices-allocated" in message
        relabelled = core.patch_namespaced_pod("gpu-pod", "gpu", {"metadata": {"labels": {"team": "a"}}})
        assert relabelled.metadata.labels == {"team": "a"}
        # a bare pod keeps HAMi annotations it was saved with (get -o yaml | create)
        restored = core.create_namespaced_pod(
            "gpu",
            {
                "metadata": {"name": "restored", "annotations": {"hami.io/bind-phase": "success"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        )
        assert restored.metadata.annotations == {"hami.io/bind-phase": "success"}
        # the opt-out label cannot carry a device request past the webhook (the chart no longer
        # excludes labelled pods by objectSelector, so the webhook sees them)
        opted_out = _pod("opted-out")
        opted_out["metadata"]["labels"] = {"hami.io/webhook": "ignore"}
        with pytest.raises(ApiException) as e:
            core.create_namespaced_pod("gpu", opted_out)
        assert e.value.status == 403
        assert (
            "pod is labelled hami.io/webhook=ignore but requests devices"
            in json.loads(e.value.body)["message"]
        )
        bare = {
            "metadata": {"name": "bare", "labels": {"hami.io/webhook": "ignore"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
        assert core.create_namespaced_pod("gpu", bare).metadata.labels == {"hami.io/webhook": "ignore"}
