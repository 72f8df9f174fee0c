"""``helm install`` of hami_stack/chart onto a testbed with node agents and emulated A100s.

The testbed runs as processes (``python -m testbed up --nodes ...``); the node agents map the chart's
images through ``hami_stack.images.testbed_catalog`` (``testbed up --image-catalog``). Checked: the
device-plugin
DaemonSet pods run, register with each node's kubelet (capacity ``nvidia.com/gpu`` = 4 GPUs x 10 splits)
and publish ``hami.io/node-nvidia-register``; then the end-to-end GPU pod: webhook, hami-scheduler,
Allocate, and a container that sees its memory limit through the preloaded shim.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hami_stack.images.testbed_catalog import write_catalog
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.register import decode_register_json
from kubeclient.client import ApiError, Kube
from testbed.clients import helm_path, helm_skip_reason

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "emulated" / "two-nodes-a100.yaml"
NODES = ("gpu-node-1", "gpu-node-2")
NS = "hami-system"
HELM = helm_path(major=3)

pytestmark = [
    pytest.mark.helm,
    pytest.mark.hardware,
    pytest.mark.skipif(HELM is None, reason=helm_skip_reason(3)),
]


def wait_for(fn: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = fn()
        except ApiError as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture(
    scope="module",
    params=[
        33,
        pytest.param(26, marks=pytest.mark.slow),
        pytest.param(22, marks=pytest.mark.slow),
        pytest.param(18, marks=pytest.mark.slow),
    ],
)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    minor = request.param
    data = tmp_path_factory.mktemp(f"stack-{minor}")
    catalog = write_catalog(data / "catalog.yaml")
    env = dict(os.environ)
    up = [
        sys.executable,
        "-m",
        "testbed",
        "up",
        "--k8s",
        f"1.{minor}",
        "--port",
        "0",
        "--detach",
        "--data-dir",
        str(data / "tb"),
        "--nodes",
        str(INVENTORY),
        "--image-catalog",
        str(catalog),
    ]
    subprocess.run(up, cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    kubeconfig = data / "tb" / "kubeconfig"
    try:
        install = [
            str(HELM),
            "install",
            "hami",
            str(REPO / "hami_stack" / "chart"),
            "--namespace",
            NS,
            "--create-namespace",
            "--kubeconfig",
            str(kubeconfig),
        ]
        proc = subprocess.run(install, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield Kube.from_config(str(kubeconfig))
    finally:
        subprocess.run(
            [sys.executable, "-m", "testbed", "down", "--data-dir", str(data / "tb")],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=60,
        )


def _plugin_pods(kube: Kube) -> list[dict[str, Any]]:
    sel = "app.kubernetes.io/component=hami-device-plugin"
    return kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=sel).get("items") or []


def test_device_plugin_pods_run_on_every_gpu_node(stack: Kube) -> None:
    def running() -> dict[str, bool]:
        out = {}
        for p in _plugin_pods(stack):
            statuses = {c["name"]: c for c in (p.get("status") or {}).get("containerStatuses") or []}
            dp = statuses.get("device-plugin") or {}
            out[p["spec"].get("nodeName", "")] = "running" in (dp.get("state") or {})
        return out if set(out) == set(NODES) and all(out.values()) else {}

    assert set(wait_for(running, what="device-plugin containers running")) == set(NODES)


def test_nodes_get_capacity_and_register_annotation(stack: Kube) -> None:
    for name in NODES:
        node = wait_for(
            lambda n=name: (
                (obj := stack.get(f"/api/v1/nodes/{n}"))["status"].get("capacity", {}).get("nvidia.com/gpu")
                == "40"
                and ann.NVIDIA_KEYS.register in (obj["metadata"].get("annotations") or {})
                and obj
            ),
            what=f"nvidia.com/gpu capacity and register annotation on {name}",
        )
        devices = decode_register_json(node["metadata"]["annotations"][ann.NVIDIA_KEYS.register])
        assert [(d.index, d.count, d.devmem, d.numa) for d in devices] == [
            (0, 10, 81920, 0),
            (1, 10, 81920, 0),
            (2, 10, 81920, 1),
            (3, 10, 81920, 1),
        ]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "40"


def _webhook_mutates(kube: Kube, pod: dict[str, Any]) -> bool:
    """A dry-run create goes through the admission chain without storing anything: True once the
    HAMi webhook answers (the chart's failurePolicy lets pods through unmutated before that)."""
    out = kube.create("/api/v1/namespaces/default/pods", pod, dryRun="All")
    return bool(out["spec"].get("schedulerName") == "hami-scheduler")


def test_gpu_pod_is_scheduled_by_hami_and_sees_its_memory_limit(stack: Kube) -> None:
    test_nodes_get_capacity_and_register_annotation(stack)
    # the probe prints one JSON document of what the container sees (env, /etc/ld.so.preload, CUDA)
    probe = f"{sys.executable} -m conformance.probe --alloc-mib 0 --kernel-seconds 0 --compact"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu-pod", "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", f"env | grep -E '^(CUDA|NVIDIA)_' | sort; {probe}"],
                    "env": [{"name": "PYTHONPATH", "value": str(REPO)}],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}},
                }
            ],
        },
    }
    wait_for(lambda: _webhook_mutates(stack, pod), what="the HAMi webhook to serve")
    created = stack.create("/api/v1/namespaces/default/pods", pod)
    assert created["spec"]["schedulerName"] == "hami-scheduler"
    done = wait_for(
        lambda: (
            (p := stack.get("/api/v1/namespaces/default/pods/gpu-pod"))["status"].get("phase")
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=90,
        what="gpu-pod to finish",
    )
    log = stack.text("/api/v1/namespaces/default/pods/gpu-pod/log")
    states = [c["state"] for c in done["status"].get("containerStatuses") or []]
    assert done["status"]["phase"] == "Succeeded", (states, log)
    assert done["metadata"]["annotations"][ann.BIND_PHASE] == "success"
    lines = log.splitlines()
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=3000m" in lines
    doc = json.loads(next(line for line in lines if line.startswith("{")))
    assert doc["env"]["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    # the shim reached the process through the /etc/ld.so.preload mount of Allocate
    assert doc["preload"] and doc["preload"][0].endswith("/libvgpu.so"), doc["preload"]
    assert len(doc["cuda"]["devices"]) == 1, doc["cuda"]
    assert doc["cuda"]["mem_before"]["total"] == 3000 * 1024 * 1024, log


def _forged_pod(name: str, node: str, uuid: str, *, opt_out: bool) -> dict[str, Any]:
    forged = f"{uuid},NVIDIA,81920,100:;"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"hami.io/webhook": "ignore"} if opt_out else {},
            "annotations": {
                ann.BIND_PHASE: "allocating",
                ann.BIND_TIME: str(int(time.time())),
                ann.VGPU_NODE: node,
                ann.NVIDIA_KEYS.to_allocate: forged,
                ann.NVIDIA_KEYS.allocated: forged,
            },
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", "env | grep CUDA_DEVICE_MEMORY_LIMIT || true"],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "81920"}},
                }
            ],
        },
    }


def _assert_refused_on_the_node(kube: Kube, name: str) -> None:
    done = wait_for(
        lambda: (
            (p := kube.get(f"/api/v1/namespaces/default/pods/{name}"))["status"].get("phase")
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=60,
        what=f"pod {name} to be rejected",
    )
    status = done["status"]
    assert (status["phase"], status.get("reason")) == ("Failed", "UnexpectedAdmissionError"), status
    assert ann.NODE_LOCK in status.get("message", ""), status
    assert not any("terminated" in (c.get("state") or {}) for c in status.get("containerStatuses") or [])


def test_forged_allocation_never_runs(stack: Kube) -> None:
    # Issue 12, finding 3a: nodeName set directly and a forged to-allocate for a whole GPU, with the
    # webhook's opt-out label. With the webhook up, admission may deny it; with the webhook gone (an
    # outage under failurePolicy Ignore, or a removed configuration) the device plugin refuses
    # Allocate, since no node lock names the pod. It never runs.
    test_nodes_get_capacity_and_register_annotation(stack)
    node = stack.get(f"/api/v1/nodes/{NODES[1]}")
    uuid = decode_register_json(node["metadata"]["annotations"][ann.NVIDIA_KEYS.register])[0].id
    plain = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe-webhook", "namespace": "default"},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ]
        },
    }
    wait_for(lambda: _webhook_mutates(stack, plain), what="the HAMi webhook to serve")
    try:
        stack.create("/api/v1/namespaces/default/pods", _forged_pod("forged", NODES[1], uuid, opt_out=True))
    except ApiError as e:
        assert 400 <= e.status < 500, e  # denied at admission (not a webhook outage): nothing ran
    else:
        _assert_refused_on_the_node(stack, "forged")
    hooks = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    ours = [
        c
        for c in stack.get(hooks).get("items") or []
        if any(w.get("name") == "vgpu.hami.io" for w in c.get("webhooks") or [])
    ]
    assert ours, "the chart's MutatingWebhookConfiguration"
    for c in ours:
        stack.delete(f"{hooks}/{c['metadata']['name']}")
    try:
        for opt_out in (True, False):
            name = f"forged-nowebhook-{int(opt_out)}"
            stack.create(
                "/api/v1/namespaces/default/pods", _forged_pod(name, NODES[1], uuid, opt_out=opt_out)
            )
            _assert_refused_on_the_node(stack, name)
    finally:
        for c in ours:
            meta = {k: v for k, v in c["metadata"].items() if k in ("name", "labels", "annotations")}
            stack.create(hooks, {**c, "metadata": meta})
