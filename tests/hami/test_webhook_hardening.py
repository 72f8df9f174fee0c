"""Issue 12, webhook side: UPDATE is checked, the opt-out label cannot hide a device request, pods
without devices keep their annotations, and malformed requests get a 400 naming the field."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.webhook import WebhookConfig, admit, handle_review
from hami_stack.webhook.trust import ENV_TRUSTED_USERS, is_trusted, trusted_users_from_env

SCHED_SA = "system:serviceaccount:hami-system:hami-scheduler"
PLUGIN_SA = "system:serviceaccount:hami-system:hami-device-plugin"
CFG = WebhookConfig(trusted_users=(SCHED_SA, PLUGIN_SA))
ALLOCATED = "GPU-0,NVIDIA,60000,0:;"


def pod(
    limits: dict[str, Any] | None = None,
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    init_limits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "ns"}
    if annotations is not None:
        meta["annotations"] = annotations
    if labels is not None:
        meta["labels"] = labels
    spec: dict[str, Any] = {
        "schedulerName": "default-scheduler",
        "containers": [{"name": "c", "image": "x", "resources": {"limits": limits or {}}}],
    }
    if init_limits is not None:
        spec["initContainers"] = [{"name": "i", "image": "x", "resources": {"limits": init_limits}}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


GPU = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "60000"}


def update(old: dict, new: dict, user: str | None = "jane", config: WebhookConfig = CFG) -> Any:
    request: dict[str, Any] = {"uid": "u", "operation": "UPDATE", "object": new, "oldObject": old}
    if user is not None:
        request["userInfo"] = {"username": user, "groups": ["system:authenticated"]}
    return admit(request, config)


def create(p: dict, config: WebhookConfig = CFG) -> Any:
    return admit({"uid": "u", "operation": "CREATE", "object": p}, config)


# --- (3b) UPDATE -------------------------------------------------------------------------------

OWNED_KEYS = [
    *sorted(ann.SCHEDULER_OWNED_POD_KEYS),
    "hami.io/Ascend910B3-devices-to-allocate",
    "hami.io/MR-V100-devices-allocated",
]


@pytest.mark.parametrize("key", OWNED_KEYS)
def test_update_adding_allocation_annotation_denied(key: str) -> None:
    victim = pod(GPU, annotations={"hami.io/vgpu-node": "n1"})
    forged = pod(GPU, annotations={"hami.io/vgpu-node": "n1", key: ALLOCATED})
    if key == "hami.io/vgpu-node":
        forged["metadata"]["annotations"][key] = "n2"
    resp = update(victim, forged)
    assert not resp.allowed and resp.code == 403 and resp.reason == "Forbidden"
    assert resp.message.startswith(f"jane may not set, change or remove {key}")


def test_update_overwrite_of_allocated_is_the_finding() -> None:
    """`kubectl annotate pod victim --overwrite hami.io/vgpu-devices-allocated=...` by a tenant."""
    old = pod(GPU, annotations={"hami.io/vgpu-devices-allocated": "GPU-0,NVIDIA,60000,0:;"})
    new = pod(GPU, annotations={"hami.io/vgpu-devices-allocated": "GPU-1,NVIDIA,60000,0:;"})
    resp = update(old, new, user="system:serviceaccount:tenant:default")
    assert not resp.allowed
    assert "hami.io/vgpu-devices-allocated" in resp.message and "tenant:default" in resp.message


def test_update_removal_and_label_denied_for_tenants() -> None:
    old = pod(GPU, annotations={"hami.io/bind-phase": "success"}, labels={"hami.io/vgpu-node": "n1"})
    assert not update(old, pod(GPU, annotations={}, labels={"hami.io/vgpu-node": "n1"})).allowed
    resp = update(
        old, pod(GPU, annotations={"hami.io/bind-phase": "success"}, labels={"hami.io/vgpu-node": "n2"})
    )
    assert not resp.allowed and "label:hami.io/vgpu-node" in resp.message


def test_update_anonymous_is_untrusted() -> None:
    resp = update(pod(GPU), pod(GPU, annotations={"hami.io/bind-phase": "allocating"}), user=None)
    assert not resp.allowed and resp.message.startswith("an anonymous user may not")


@pytest.mark.parametrize("user", [SCHED_SA, PLUGIN_SA])
def test_update_by_hami_service_accounts_allowed(user: str) -> None:
    new = pod(
        GPU, annotations={"hami.io/vgpu-devices-to-allocate": ALLOCATED, "hami.io/bind-phase": "allocating"}
    )
    resp = update(pod(GPU), new, user=user)
    assert resp.allowed and resp.patch == [] and resp.code == 200


def test_update_leaving_allocation_alone_is_allowed() -> None:
    """A tenant relabelling a placed pod, or `kubectl apply` of the same manifest."""
    placed = {"hami.io/vgpu-devices-allocated": ALLOCATED, "hami.io/vgpu-node": "n1"}
    old = pod(GPU, annotations=dict(placed), labels={"app": "a"})
    new = pod(GPU, annotations={**placed, "note": "x"}, labels={"app": "b"})
    resp = update(old, new)
    assert resp.allowed and resp.patch == []


def test_trusted_users_prefix_and_env() -> None:
    assert is_trusted("system:serviceaccount:hami:x", ("system:serviceaccount:hami:*",))
    assert not is_trusted("system:serviceaccount:hamix:x", ("system:serviceaccount:hami:*",))
    assert not is_trusted("", ("*",))
    assert trusted_users_from_env({ENV_TRUSTED_USERS: f" {SCHED_SA}, {PLUGIN_SA} ,"}) == (SCHED_SA, PLUGIN_SA)
    assert trusted_users_from_env({"POD_NAMESPACE": "hami-system"}) == (
        "system:serviceaccount:hami-system:*",
    )
    assert trusted_users_from_env({}) == ()
    # with nothing configured, nobody may write allocation annotations
    resp = update(
        pod(GPU), pod(GPU, annotations={"hami.io/bind-phase": "x"}), SCHED_SA, WebhookConfig(trusted_users=())
    )
    assert not resp.allowed


# --- (3a) the opt-out label --------------------------------------------------------------------

OPT_OUT = {"hami.io/webhook": "ignore"}


@pytest.mark.parametrize(
    "p",
    [
        pod({"nvidia.com/gpu": "1"}, labels=OPT_OUT),
        pod({"nvidia.com/gpumem": "1000"}, labels=OPT_OUT),  # defaultGPUNum claims it
        pod({}, labels=OPT_OUT, init_limits={"nvidia.com/gpu": "1"}),
        pod({"nvidia.com/gpu": "1Gi"}, labels=OPT_OUT),  # refused values still count as a request
    ],
)
def test_opt_out_label_with_device_denied(p: dict) -> None:
    p["spec"]["nodeName"] = "n1"
    p["metadata"]["annotations"] = {"hami.io/vgpu-devices-to-allocate": "GPU-0,NVIDIA,81920,0:;"}
    resp = create(p)
    assert not resp.allowed and resp.code == 403
    assert resp.message.startswith(
        "pod is labelled hami.io/webhook=ignore but requests devices (nvidia.com/gpu"
    )
    assert "remove it" in resp.message


def test_opt_out_label_with_device_denied_even_for_another_scheduler() -> None:
    p = pod({"nvidia.com/gpu": "1"}, labels=OPT_OUT)
    p["spec"]["schedulerName"] = "volcano"
    assert not create(p).allowed


def test_opt_out_label_without_device_admitted_unchanged() -> None:
    p = pod({"cpu": "1"}, labels=OPT_OUT)
    resp = create(p)
    assert resp.allowed and resp.patch == [] and resp.message == ""


def test_opt_out_label_added_by_update() -> None:
    resp = update(pod(GPU), pod(GPU, labels=OPT_OUT))
    assert not resp.allowed and "hami.io/webhook=ignore" in resp.message
    assert update(pod({"cpu": "1"}), pod({"cpu": "1"}, labels=OPT_OUT)).allowed
    # a pod labelled before this rule existed can still be updated
    assert update(pod(GPU, labels=OPT_OUT), pod(GPU, labels={**OPT_OUT, "x": "y"})).allowed


# --- pods without devices keep their annotations ----------------------------------------------


@pytest.mark.parametrize(
    "annotations, labels",
    [
        ({"hami.io/bind-phase": "success"}, None),
        ({"hami.io/vgpu-node": "n1", "hami.io/vgpu-time": "1700000000"}, {"hami.io/vgpu-node": "n1"}),
        ({"hami.io/vgpu-devices-to-allocate": ";", "hami.io/vgpu-devices-allocated": ALLOCATED}, None),
    ],
)
def test_no_device_pod_with_hami_annotations_admitted_unchanged(
    annotations: dict[str, str], labels: dict[str, str] | None
) -> None:
    """`kubectl get pod -o yaml | kubectl create -f -` of a bare pod, as HAMi admits it."""
    p = pod({"cpu": "100m"}, annotations=annotations, labels=labels)
    resp = create(p)
    assert resp.allowed and resp.patch == [] and resp.code == 200
    zero = pod({"nvidia.com/gpu": "0"}, annotations=annotations, labels=labels)
    assert create(zero).allowed and create(zero).patch == []


def test_device_pod_with_forged_annotations_still_denied() -> None:
    p = pod(GPU, annotations={"hami.io/bind-phase": "success"})
    resp = create(p)
    assert not resp.allowed and resp.message.startswith(
        "pod carries scheduler-owned annotations (hami.io/bind-phase)"
    )
    p = pod(GPU, labels={"hami.io/vgpu-node": "n1"})
    assert not create(p).allowed


# --- (6) malformed requests ----------------------------------------------------------------------


def _review(request: Any) -> bytes:
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def _good() -> dict[str, Any]:
    return {"uid": "u1", "operation": "CREATE", "object": pod({"nvidia.com/gpu": "1"})}


def _with(path: list[Any], value: Any, request: dict[str, Any] | None = None) -> dict[str, Any]:
    request = request or _good()
    target: Any = request
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return request


MALFORMED = [
    (_with(["object", "metadata"], "p"), "request.object.metadata: expected an object, got string"),
    (_with(["object"], "pod"), "request.object: expected an object, got string"),
    (_with(["object"], None), "request.object: missing"),
    (_with(["object", "spec"], None), "request.object.spec: missing"),
    (_with(["object", "spec"], [1]), "request.object.spec: expected an object, got array"),
    (
        _with(["object", "spec", "containers"], {"items": 5}),
        "request.object.spec.containers: expected an array, got object",
    ),
    (
        _with(["object", "spec", "containers", 0], "c"),
        "request.object.spec.containers[0]: expected an object, got string",
    ),
    (
        _with(["object", "spec", "initContainers"], 5),
        "request.object.spec.initContainers: expected an array, got number",
    ),
    (
        _with(["object", "spec", "containers", 0, "resources"], "big"),
        "request.object.spec.containers[0].resources: expected an object, got string",
    ),
    (
        _with(["object", "spec", "containers", 0, "resources", "limits"], ["nvidia.com/gpu"]),
        "request.object.spec.containers[0].resources.limits: expected an object, got array",
    ),
    (
        _with(["object", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"], [1]),
        'request.object.spec.containers[0].resources.limits["nvidia.com/gpu"]: expected a quantity '
        "(string or number), got array",
    ),
    (
        _with(["object", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"], True),
        'request.object.spec.containers[0].resources.limits["nvidia.com/gpu"]: expected a quantity '
        "(string or number), got boolean",
    ),
    (
        _with(["object", "spec", "containers", 0, "env"], {"A": "b"}),
        "request.object.spec.containers[0].env: expected an array, got object",
    ),
    (
        _with(["object", "spec", "containers", 0, "securityContext"], {"privileged": "yes"}),
        "request.object.spec.containers[0].securityContext.privileged: expected a boolean, got string",
    ),
    (
        _with(["object", "spec", "schedulerName"], 7),
        "request.object.spec.schedulerName: expected a string, got number",
    ),
    (
        _with(["object", "spec", "nodeName"], {}),
        "request.object.spec.nodeName: expected a string, got object",
    ),
    (
        _with(["object", "metadata", "annotations"], ["a"]),
        "request.object.metadata.annotations: expected an object, got array",
    ),
    (
        _with(["object", "metadata", "annotations"], {"hami.io/bind-phase": 1}),
        'request.object.metadata.annotations["hami.io/bind-phase"]: expected a string, got number',
    ),
    (
        _with(["object", "metadata", "labels"], "x=y"),
        "request.object.metadata.labels: expected an object, got string",
    ),
    (_with(["object", "kind"], 3), "request.object.kind: expected a string, got number"),
    (_with(["operation"], 1), "request.operation: expected a string, got number"),
    (_with(["userInfo"], "root"), "request.userInfo: expected an object, got string"),
    (_with(["userInfo"], {"username": ["a"]}), "request.userInfo.username: expected a string, got array"),
    (_with(["uid"], {"a": 1}), "request.uid: expected a string, got object"),
    ({**_good(), "operation": "UPDATE"}, "request.oldObject: missing"),
    (
        {**_good(), "operation": "UPDATE", "oldObject": {"metadata": 5}},
        "request.oldObject.metadata: expected an object, got number",
    ),
]


@pytest.mark.parametrize("request_, message", MALFORMED)
def test_malformed_request_is_400_naming_the_field(request_: dict, message: str) -> None:
    out = handle_review(_review(request_), CFG)
    r = out["response"]
    assert r["allowed"] is False and r["status"]["code"] == 400, r
    assert r["status"]["message"] == message


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "couldn't decode AdmissionReview"),
        (b"[1, 2]", "AdmissionReview: expected an object, got array"),
        (b'"review"', "AdmissionReview: expected an object, got string"),
        (b"", "couldn't decode AdmissionReview"),
        (
            json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
            "request: missing",
        ),
        (_review("req"), "request: expected an object, got string"),
        (_review([1]), "request: expected an object, got array"),
    ],
)
def test_body_that_is_not_a_review_is_400(body: bytes, message: str) -> None:
    r = handle_review(body, CFG)["response"]
    assert r["allowed"] is False and r["status"]["code"] == 400
    assert r["status"]["message"].startswith(message)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_nesting_rejected_quickly(opener: bytes) -> None:
    body = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":' + opener * 100_000
    t0 = time.perf_counter()
    r = handle_review(body, CFG)["response"]
    elapsed = time.perf_counter() - t0
    assert r["status"]["code"] == 400 and "nesting depth" in r["status"]["message"]
    assert "exceeds the limit of 64" in r["status"]["message"]
    assert elapsed < 1.0, elapsed


def test_nesting_within_limit_is_read() -> None:
    p = pod({"nvidia.com/gpu": "1"})
    p["metadata"]["annotations"] = {"deep": "x"}
    p["spec"]["affinity"] = json.loads("[" * 40 + "]" * 40)  # 40 more levels: under 64 in all
    r = handle_review(_review({"uid": "d", "operation": "CREATE", "object": p}), CFG)["response"]
    assert r["allowed"] is True


def test_oversized_body_rejected() -> None:
    p = pod({"nvidia.com/gpu": "1"}, annotations={"big": "x" * (1 << 20)})
    r = handle_review(_review({"uid": "b", "operation": "CREATE", "object": p}), CFG)["response"]
    assert r["status"]["code"] == 400 and "exceeds the limit" in r["status"]["message"]


def test_bug_in_a_family_is_answered_not_raised() -> None:
    class Broken:
        count_resource = "x.com/dev"

        def admission_problem(self, container: dict) -> None:
            raise KeyError("boom")

    r = handle_review(_review(_good()), WebhookConfig(families=[Broken()]))["response"]  # type: ignore[list-item]
    assert r["allowed"] is False and r["status"]["code"] == 500 and "KeyError" in r["status"]["message"]
