"""Defaulting runs again after a mutating webhook's patch, as kube-apiserver does it.

HAMi's webhook adds ``limits.nvidia.com/gpucores: "100"`` to a plain ``nvidia.com/gpu: 1`` pod; the
apiserver defaults the matching request right after the patch. Without that, the stored pod lacks
the request, the next update (an annotation-only patch by the scheduler) defaults it, the spec
changes, and the pod-update validation rejects the patch.
"""

from __future__ import annotations

import base64
import json

from kubernetes import client

from testbed import pki

from .test_server_admission import _Webhook, _webhook_config


def _add_cores_limit(review: dict) -> dict:
    pod = review["request"]["object"]
    assert "nvidia.com/gpucores" not in pod["spec"]["containers"][0]["resources"]["limits"]
    patch = [
        {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpucores", "value": "100"}
    ]
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


def test_request_defaulted_after_webhook_limit_and_later_annotation_patch(testbed, api, core, ns):
    ca = pki.make_ca("hook-ca")
    hook = _Webhook(testbed, ca, _add_cores_limit)
    hook.start(["127.0.0.1"])
    adm = client.AdmissionregistrationV1Api(api)
    cfg = _webhook_config(
        "MutatingWebhookConfiguration",
        f"limits-{ns}",
        {"url": f"https://127.0.0.1:{hook.port}/mutate", "caBundle": base64.b64encode(ca.cert_pem).decode()},
        ns,
    )
    cfg["webhooks"][0]["rules"][0]["resources"] = ["pods"]
    try:
        adm.create_mutating_webhook_configuration(cfg)
        core.create_namespaced_pod(
            ns,
            {
                "metadata": {"name": "gpu"},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                    ]
                },
            },
        )
        assert hook.calls, "the webhook was not called"
        stored = core.read_namespaced_pod("gpu", ns).spec.containers[0].resources
        assert stored.limits == {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}
        # the request of the limit the webhook added was defaulted right after its patch
        assert stored.requests == {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}
        # an annotation-only patch (what a scheduler extender does) changes nothing in the spec
        patched = core.patch_namespaced_pod("gpu", ns, {"metadata": {"annotations": {"a": "b"}}})
        assert patched.metadata.annotations["a"] == "b"
        assert patched.spec.containers[0].resources.requests == stored.requests
    finally:
        adm.delete_mutating_webhook_configuration(f"limits-{ns}")
        hook.stop()
