"""Admission decisions and messages (pure), and the AdmissionReview envelope for v1 and v1beta1."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest

from hami_stack.devices import NvidiaConfig, NvidiaFamily
from hami_stack.webhook import WebhookConfig, admit, handle_review

CFG = WebhookConfig()


def pod(
    *containers: dict,
    init: tuple[dict, ...] = (),
    scheduler: str | None = "default-scheduler",
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict:
    s: dict[str, Any] = {"containers": list(containers), **spec}
    if scheduler is not None:
        s["schedulerName"] = scheduler
    if init:
        s["initContainers"] = list(init)
    meta: dict[str, Any] = {"name": "p", "namespace": "ns"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": s}


def ctr(limits: dict[str, Any] | None = None, name: str = "c", **extra: Any) -> dict:
    return {
        "name": name,
        "image": "x",
        "resources": {"limits": limits} if limits is not None else {},
        **extra,
    }


def run(p: dict, config: WebhookConfig = CFG) -> tuple[Any, dict]:
    resp = admit({"uid": "u", "operation": "CREATE", "object": p}, config)
    patched = jsonpatch.JsonPatch(resp.patch).apply(p) if resp.allowed else p
    return resp, patched


def test_gpu_pod_gets_scheduler_and_exclusive_cores() -> None:
    resp, out = run(pod(ctr({"nvidia.com/gpu": "1"})))
    assert resp.allowed and resp.code == 200
    assert out["spec"]["schedulerName"] == "hami-scheduler"
    assert out["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpucores": "100",
    }


@pytest.mark.parametrize(
    "limits, cores",
    [
        (
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"},
            None,
        ),  # memory asked: shared, no exclusive default
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50"}, None),
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "100"}, "100"),
        ({"nvidia.com/gpu": "1", "nvidia.com/gpucores": "30"}, "30"),
    ],
)
def test_exclusive_default(limits: dict[str, str], cores: str | None) -> None:
    _, out = run(pod(ctr(limits)))
    assert out["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpucores") == cores


def test_default_gpu_num_added_when_only_memory_or_cores() -> None:
    _, out = run(pod(ctr({"nvidia.com/gpumem": "2000"})))
    assert out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert out["spec"]["schedulerName"] == "hami-scheduler"
    none = WebhookConfig(families=[NvidiaFamily(NvidiaConfig(default_gpu_num=0))])
    resp, out = run(pod(ctr({"nvidia.com/gpumem": "2000"})), none)
    assert "nvidia.com/gpu" not in out["spec"]["containers"][0]["resources"]["limits"]
    assert out["spec"]["schedulerName"] == "default-scheduler" and resp.patch == []


def test_plain_pod_untouched() -> None:
    resp, out = run(pod(ctr({"cpu": "1"})))
    assert resp.allowed and resp.patch == [] and out["spec"]["schedulerName"] == "default-scheduler"


def test_priority_core_policy_runtime_class_and_overwrite_env() -> None:
    fam = NvidiaFamily(NvidiaConfig(gpu_core_policy="force", runtime_class_name="nvidia", overwrite_env=True))
    cfg = WebhookConfig(families=[fam])
    _, out = run(pod(ctr({"nvidia.com/gpu": "1", "nvidia.com/priority": "1"}), ctr({}, name="side")), cfg)
    gpu_c, side = out["spec"]["containers"]
    assert gpu_c["env"] == [
        {"name": "CUDA_TASK_PRIORITY", "value": "1"},
        {"name": "GPU_CORE_UTILIZATION_POLICY", "value": "force"},
    ]
    assert side["env"] == [
        {"name": "GPU_CORE_UTILIZATION_POLICY", "value": "force"},
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "none"},
    ]
    assert out["spec"]["runtimeClassName"] == "nvidia"
    _, kept = run(pod(ctr({"nvidia.com/gpu": "1"}), runtimeClassName="kata"), cfg)
    assert kept["spec"]["runtimeClassName"] == "kata"


def test_init_container_claims_too() -> None:
    _, out = run(pod(ctr({}), init=(ctr({"nvidia.com/gpu": "1"}, name="init"),)))
    assert out["spec"]["initContainers"][0]["resources"]["limits"]["nvidia.com/gpucores"] == "100"
    assert out["spec"]["schedulerName"] == "hami-scheduler"


@pytest.mark.parametrize(
    "p, message",
    [
        (pod(), "pod has no containers"),
        (
            pod(ctr({"nvidia.com/gpu": "1"}, securityContext={"privileged": True}, name="priv")),
            "container priv is privileged",
        ),
        (pod(ctr({"nvidia.com/gpu": "1"}), nodeName="n1"), "pod has node assigned"),
    ],
)
def test_denials(p: dict, message: str) -> None:
    resp, _ = run(p)
    assert not resp.allowed and resp.message == message and resp.code == 403 and resp.reason == "Forbidden"


def test_privileged_without_device_is_allowed() -> None:
    resp, _ = run(pod(ctr({"cpu": "1"}, securityContext={"privileged": True}), nodeName="n1"))
    assert resp.allowed


def test_percentage_out_of_range_is_an_error() -> None:
    # HAMi answers 500 with "between 0 and 100"; a user's value is a 400, and 0 is refused too
    resp, _ = run(pod(ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "120"}, name="main")))
    assert not resp.allowed and resp.code == 400
    assert resp.message == (
        "invalid nvidia.com/gpumem-percentage value 120 in container main: "
        "must be an integer between 1 and 100"
    )


def test_other_scheduler_skipped_and_scheduler_rules() -> None:
    resp, _ = run(pod(ctr({"nvidia.com/gpu": "1"}), scheduler="volcano"))
    assert (
        resp.allowed and resp.patch == [] and resp.message == "pod already has different scheduler assigned"
    )
    resp, out = run(pod(ctr({"nvidia.com/gpu": "1"}), scheduler="hami-scheduler"))
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler" and resp.patch  # cores added
    no_force = WebhookConfig(force_overwrite_default_scheduler=False)
    resp, _ = run(pod(ctr({"nvidia.com/gpu": "1"})), no_force)
    assert resp.message == "pod already has different scheduler assigned"
    unnamed = WebhookConfig(scheduler_name="")
    resp, out = run(pod(ctr({"nvidia.com/gpu": "1"}), scheduler=None), unnamed)
    assert "schedulerName" not in out["spec"] and resp.allowed


def test_quota_precheck() -> None:
    seen: list[dict] = []

    def quota(p: dict) -> bool:
        seen.append(p)
        return False

    resp, _ = run(
        pod(ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"})), WebhookConfig(quota_fits=quota)
    )
    assert not resp.allowed and resp.message == "exceeding resource quota"
    assert seen[0]["spec"]["schedulerName"] == "hami-scheduler"  # checked on the mutated pod
    resp, _ = run(pod(ctr({"cpu": "1"})), WebhookConfig(quota_fits=quota))
    assert resp.allowed and len(seen) == 1  # no device, no quota check


@pytest.mark.parametrize(
    "key",
    [
        "hami.io/vgpu-devices-to-allocate",
        "hami.io/vgpu-devices-allocated",
        "hami.io/vgpu-node",
        "hami.io/bind-phase",
        "hami.io/Ascend910B3-devices-allocated",
    ],
)
def test_forged_allocation_denied(key: str) -> None:
    p = pod(ctr({"nvidia.com/gpu": "1"}), annotations={key: "GPU-x,NVIDIA,1000,0:;", "other": "ok"})
    resp, _ = run(p)
    assert not resp.allowed and resp.code == 403
    assert resp.message.startswith(f"pod carries scheduler-owned annotations ({key})")
    policy_only = pod(ctr({"nvidia.com/gpu": "1"}), annotations={"hami.io/gpu-scheduler-policy": "binpack"})
    assert run(policy_only)[0].allowed


def test_non_create_and_undecodable() -> None:
    assert admit({"operation": "UPDATE", "object": pod(ctr({})), "oldObject": pod(ctr({}))}, CFG).allowed
    assert admit({"operation": "DELETE", "object": None, "oldObject": pod(ctr({}))}, CFG).allowed
    bad = admit({"operation": "CREATE", "object": {"kind": "Service", "spec": {}}}, CFG)
    assert not bad.allowed and bad.code == 400
    assert bad.message == "request.object.kind: expected Pod, got Service"


@pytest.mark.parametrize("version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
def test_review_envelope_same_version(version: str) -> None:
    review = {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {"uid": "abc", "operation": "CREATE", "object": pod(ctr({"nvidia.com/gpu": "1"}))},
    }
    out = handle_review(json.dumps(review).encode(), CFG)
    assert out["apiVersion"] == version and out["kind"] == "AdmissionReview"
    r = out["response"]
    assert r["uid"] == "abc" and r["allowed"] is True and r["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(r["patch"]))
    assert {"op": "replace", "path": "/spec/schedulerName", "value": "hami-scheduler"} in ops
    denied = handle_review(json.dumps({**review, "request": {"uid": "d", "object": pod()}}).encode(), CFG)
    assert denied["response"]["status"] == {
        "metadata": {},
        "code": 403,
        "message": "pod has no containers",
        "reason": "Forbidden",
    }
    assert "patch" not in denied["response"]


def test_review_envelope_errors() -> None:
    out = handle_review(b"{not json", CFG)
    assert out["response"]["allowed"] is False and out["response"]["status"]["code"] == 400
    out = handle_review(
        json.dumps(
            {"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": {"uid": "x"}}
        ).encode(),
        CFG,
    )
    assert (
        out["response"]["uid"] == "x"
        and "unsupported AdmissionReview" in out["response"]["status"]["message"]
    )


def test_fault_injection_leaves_scheduler_name_alone():
    """hami_stack/faults.py: the harness's broken-stack check relies on this switch working."""
    from hami_stack.webhook.admit import WebhookConfig, admit

    limits = {"nvidia.com/gpu": "1"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": limits}}]}}
    req = {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
           "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
           "namespace": "default", "object": pod}
    ok = admit(req, WebhookConfig())
    broken = admit(req, WebhookConfig(fault_skip_scheduler_name=True))
    assert any(op.get("path") == "/spec/schedulerName" or "schedulerName" in str(op.get("value", ""))
               for op in ok.patch)
    assert not any("schedulerName" in str(op) for op in broken.patch)
