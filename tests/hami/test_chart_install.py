"""``helm install`` of the chart with an upstream-style values file (every HAMi v2.10 key at its upstream
default) onto a testbed 1.33 with two nodes of four emulated A100s, then ``helm upgrade``.

Checked: upstream's kube-scheduler image (any registry's kube-scheduler runs as the testbed's), the
per-node config given as upstream's JSON string reaches the plugin (gpu-node-2 registers 3
GPUs x 5 splits after filtering one out), a GPU pod goes through the webhook, kube-scheduler (mutual TLS
with the client certificate from the chart's Secret) and the extender, and an upgrade keeps the CA, both
certificates and the webhook's caBundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hami_stack.images.testbed_catalog import write_catalog
from hami_stack.protocol import annotations as ann
from kubeclient.client import ApiError, Kube
from testbed.clients import helm_path, helm_skip_reason
from tests.stack.test_helm_install import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "hami_stack" / "chart"
DATA = Path(__file__).resolve().parent / "data"
INVENTORY = REPO / "inventories" / "emulated" / "two-nodes-a100.yaml"
NS = "hami-system"
HELM = helm_path(major=3)

pytestmark = [
    pytest.mark.helm,
    pytest.mark.hardware,
    pytest.mark.skipif(HELM is None, reason=helm_skip_reason(3)),
]

NODE_CONFIG = {
    "nodeconfig": [
        {
            "name": "gpu-node-2",
            "operatingmode": "hami-core",
            "devicesplitcount": 5,
            "filterdevices": {"uuid": [], "index": [3]},
        },
    ]
}


def _values(tmp: Path) -> list[str]:
    """Upstream's file, then the per-node settings in upstream's JSON string form."""
    site = tmp / "site.yaml"
    site.write_text(
        yaml.safe_dump({"devicePlugin": {"nodeConfiguration": {"config": json.dumps(NODE_CONFIG, indent=2)}}})
    )
    return ["-f", str(DATA / "upstream_style_values.yaml"), "-f", str(site)]


def _catalog(path: Path) -> Path:
    """The stack image entries, plus any registry's kube-scheduler (upstream's Aliyun mirror, the user
    file's private mirror) run as the testbed scheduler, as the built-in registry.k8s.io entry does."""
    write_catalog(path)
    doc = yaml.safe_load(path.read_text())
    doc["images"].append(
        {
            "match": "*/kube-scheduler:*",
            "entrypoint": [sys.executable, "-m", "testbed.scheduler"],
            "cmd": [],
            "env": {
                "PATH": f"{REPO / 'testbed' / 'node' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
                "TESTBED_PYTHON": sys.executable,
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
            },
        }
    )
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _helm(kubeconfig: Path, *args: str) -> None:
    cmd = [str(HELM), *args, "hami", str(CHART), "--namespace", NS, "--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, Path, list[str]]]:
    data = tmp_path_factory.mktemp("ci")  # unix socket paths under it must stay short
    catalog = _catalog(data / "catalog.yaml")
    up = [
        sys.executable,
        "-m",
        "testbed",
        "up",
        "--k8s",
        "1.33",
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
    started = subprocess.run(up, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    kubeconfig = data / "tb" / "kubeconfig"
    values = _values(data)
    try:
        _helm(kubeconfig, "install", "--create-namespace", *values)
        yield Kube.from_config(str(kubeconfig)), kubeconfig, values
    finally:
        subprocess.run(
            [sys.executable, "-m", "testbed", "down", "--data-dir", str(data / "tb")],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )


def _plugins_rolled_out(kube: Kube) -> bool:
    """The device-plugin DaemonSet has replaced every pod an upgrade changed and they are available:
    while a plugin restarts, its node's kubelet has no devices and refuses GPU pods (as a real one does)."""
    ds = kube.get(f"/apis/apps/v1/namespaces/{NS}/daemonsets/hami-device-plugin")
    st = ds.get("status") or {}
    want = st.get("desiredNumberScheduled", -1)
    sel = "app.kubernetes.io/component=hami-device-plugin"
    pods = kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=sel).get("items") or []
    return (
        st.get("observedGeneration") == ds["metadata"].get("generation")
        and st.get("updatedNumberScheduled") == want
        and st.get("numberAvailable") == want
        # the DaemonSet counts a replaced pod as gone while it still terminates on its node
        and len(pods) == want
        and not any(p["metadata"].get("deletionTimestamp") for p in pods)
    )


def _rollout_state(kube: Kube) -> str:
    """What the rollout wait saw last: the plugin pods' containers, the namespace's warnings and an
    unready plugin's previous log (how a CI-only failure here was traced to a failing postStart hook)."""
    ds = kube.get(f"/apis/apps/v1/namespaces/{NS}/daemonsets/hami-device-plugin")
    sel = "app.kubernetes.io/component=hami-device-plugin"
    pods = kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=sel).get("items") or []
    shown = [(p["metadata"]["name"], p["spec"].get("nodeName"),
              (p["metadata"].get("labels") or {}).get("controller-revision-hash"),
              bool(p["metadata"].get("deletionTimestamp")), (p.get("status") or {}).get("phase"),
              [c.get("status") for c in (p.get("status") or {}).get("conditions") or []
               if c.get("type") == "Ready"],
              [(c.get("name"), c.get("ready"), c.get("restartCount"), c.get("state"), c.get("lastState"))
               for c in (p.get("status") or {}).get("containerStatuses") or []]) for p in pods]
    meta = ds["metadata"]
    events = kube.get(f"/api/v1/namespaces/{NS}/events").get("items") or []
    failed = [e.get("message") for e in events if e.get("type") == "Warning"][-4:]
    for p in pods:
        if (p.get("status") or {}).get("containerStatuses") and not all(
            c.get("ready") for c in p["status"]["containerStatuses"]
        ):
            path = f"/api/v1/namespaces/{NS}/pods/{p['metadata']['name']}/log"
            try:
                failed.append(kube.text(path, container="device-plugin", previous="true")[-1500:])
            except ApiError as e:  # a diagnostic: say why there is no log
                failed.append(f"no previous log: {e}")
    return (f"generation {meta.get('generation')}, annotations {meta.get('annotations')}, "
            f"status {ds.get('status')}, pods {shown}, warnings {failed}")


def _wait_plugins_rolled_out(kube: Kube) -> None:
    try:
        wait_for(lambda: _plugins_rolled_out(kube), timeout=120, what="device-plugin DaemonSet rolled out")
    except AssertionError as e:
        raise AssertionError(f"{e}: {_rollout_state(kube)}") from None


def _scheduler_rolled_out(kube: Kube) -> bool:
    """The scheduler Deployment has replaced its pods, the old ones are gone, and the webhook's Service
    has a ready endpoint: until then a webhook call may reach a pod that is about to stop."""
    d = kube.get(f"/apis/apps/v1/namespaces/{NS}/deployments/hami-scheduler")
    st, want = d.get("status") or {}, d["spec"].get("replicas", 1)
    sel = "app.kubernetes.io/component=hami-scheduler"
    pods = kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=sel).get("items") or []
    subsets = kube.get(f"/api/v1/namespaces/{NS}/endpoints/hami-scheduler").get("subsets") or []
    return (
        st.get("observedGeneration") == d["metadata"].get("generation")
        and st.get("updatedReplicas") == st.get("availableReplicas") == st.get("replicas") == want
        and len(pods) == want
        and not any(p["metadata"].get("deletionTimestamp") for p in pods)
        and any(s.get("addresses") for s in subsets)
    )


def _allocatable(kube: Kube, node: str) -> str | None:
    return (kube.get(f"/api/v1/nodes/{node}")["status"].get("allocatable") or {}).get("nvidia.com/gpu")


def _capacity(kube: Kube, node: str) -> str | None:
    obj = kube.get(f"/api/v1/nodes/{node}")
    if ann.NVIDIA_KEYS.register not in (obj["metadata"].get("annotations") or {}):
        return None
    return (obj["status"].get("capacity") or {}).get("nvidia.com/gpu")


def test_upstream_values_install_and_node_config_reaches_the_plugin(
    installed: tuple[Kube, Path, list[str]],
) -> None:
    kube, _, _ = installed
    wait_for(lambda: _capacity(kube, "gpu-node-1") == "40", what="gpu-node-1: 4 GPUs x 10 splits")
    wait_for(
        lambda: _capacity(kube, "gpu-node-2") == "15", what="gpu-node-2: 3 GPUs x 5 splits (node config)"
    )


def _gpu_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", "env | grep CUDA_DEVICE_MEMORY_LIMIT_0"],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2000"}},
                }
            ],
        },
    }


def _scheduled_by_hami(kube: Kube, pod: dict[str, Any]) -> dict[str, Any]:
    wait_for(
        lambda: (
            kube.create("/api/v1/namespaces/default/pods", pod, dryRun="All")["spec"].get("schedulerName")
            == "hami-scheduler"
        ),
        what="the HAMi webhook to serve",
    )
    kube.create("/api/v1/namespaces/default/pods", pod)
    name = pod["metadata"]["name"]
    return wait_for(
        lambda: (
            (p := kube.get(f"/api/v1/namespaces/default/pods/{name}"))["status"].get("phase")
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=90,
        what=f"{name} to finish",
    )


def test_gpu_pod_is_bound_through_mutual_tls(installed: tuple[Kube, Path, list[str]]) -> None:
    kube, _, _ = installed
    test_upstream_values_install_and_node_config_reaches_the_plugin(installed)
    done = _scheduled_by_hami(kube, _gpu_pod("tls-pod", "gpu-node-2"))
    log = kube.text("/api/v1/namespaces/default/pods/tls-pod/log")
    assert done["status"]["phase"] == "Succeeded", (done["status"], log)
    assert done["metadata"]["annotations"][ann.BIND_PHASE] == "success"
    assert done["spec"]["nodeName"] == "gpu-node-2"
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=2000m" in log


def test_upgrade_keeps_the_certificates(installed: tuple[Kube, Path, list[str]]) -> None:
    kube, kubeconfig, values = installed
    secret_path = f"/api/v1/namespaces/{NS}/secrets/hami-scheduler-tls"
    hook_path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/hami-webhook"
    before = kube.get(secret_path)["data"]
    assert sorted(before) == ["ca.crt", "client.crt", "client.key", "tls.crt", "tls.key"]
    assert kube.get(hook_path)["webhooks"][0]["clientConfig"]["caBundle"] == before["ca.crt"]
    _helm(kubeconfig, "upgrade", *values, "--set", "devicePlugin.podAnnotations.rollout=two")
    assert kube.get(secret_path)["data"] == before
    assert kube.get(hook_path)["webhooks"][0]["clientConfig"]["caBundle"] == before["ca.crt"]


def test_upgrade_from_a_secret_without_the_client_pair(installed: tuple[Kube, Path, list[str]]) -> None:
    """A Secret from a chart without mutual TLS (ca.crt, tls.crt, tls.key only) is replaced by a complete
    new set on upgrade, the webhook trusts the new CA, the scheduler pod restarts onto it, and GPU pods
    are bound again."""
    kube, kubeconfig, values = installed
    secret_path = f"/api/v1/namespaces/{NS}/secrets/hami-scheduler-tls"
    old = kube.get(secret_path)
    kube.update(
        secret_path,
        {**old, "data": {k: v for k, v in old["data"].items() if k in ("ca.crt", "tls.crt", "tls.key")}},
    )
    deploy_path = f"/apis/apps/v1/namespaces/{NS}/deployments/hami-scheduler"
    checksum = kube.get(deploy_path)["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]
    _helm(kubeconfig, "upgrade", *values)
    new = kube.get(secret_path)["data"]
    assert sorted(new) == ["ca.crt", "client.crt", "client.key", "tls.crt", "tls.key"]
    assert new["ca.crt"] != old["data"]["ca.crt"]
    hook_path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/hami-webhook"
    assert kube.get(hook_path)["webhooks"][0]["clientConfig"]["caBundle"] == new["ca.crt"]
    assert kube.get(deploy_path)["spec"]["template"]["metadata"]["annotations"]["checksum/tls"] != checksum
    # this upgrade drops the previous test's plugin pod annotation, so the plugins restart
    _wait_plugins_rolled_out(kube)
    # the kubelet keeps the capacity of a restarting plugin's devices but none is allocatable
    wait_for(lambda: _allocatable(kube, "gpu-node-1") == "40", timeout=60, what="gpu-node-1: its GPUs again")
    done = _scheduled_by_hami(kube, _gpu_pod("after-rotation", "gpu-node-1"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["metadata"]["annotations"][ann.BIND_PHASE] == "success"


def test_upgrade_to_the_user_override_file(installed: tuple[Kube, Path, list[str]]) -> None:
    """The user's production-style file (private registry, control-plane scheduler, 4 splits, webhook
    scoped to labelled namespaces) installs too; the testbed plays its control-plane node and namespace."""
    kube, kubeconfig, _ = installed
    kube.patch(
        "/api/v1/nodes/gpu-node-1", {"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}
    )
    kube.create(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "ml", "labels": {"gpu-workloads": "enabled"}},
        },
    )
    # One scheduler replica on the testbed: its pods share the host's hostname, and the extender finds
    # its leadership by the lease holder's hostname prefix, so two replicas both claim it (and label
    # each other follower). On a cluster each pod has its own hostname.
    _helm(
        kubeconfig, "upgrade", "-f", str(DATA / "user_override_values.yaml"), "--set", "scheduler.replicas=1"
    )
    for node in ("gpu-node-1", "gpu-node-2"):
        wait_for(lambda n=node: _capacity(kube, n) == "16", timeout=90, what=f"{node}: 4 GPUs x 4 splits")
    pod = _gpu_pod("user-file", "gpu-node-2")
    pod["metadata"]["namespace"] = "ml"
    # the upgrade replaces the scheduler pod (a CI run once reached the old one with the dry run below,
    # and then no endpoint at all with the create)
    wait_for(lambda: _scheduler_rolled_out(kube), timeout=150, what="the scheduler Deployment rolled out")
    wait_for(
        lambda: (
            kube.create("/api/v1/namespaces/ml/pods", pod, dryRun="All")["spec"].get("schedulerName")
            == "hami-scheduler"
        ),
        # the upgrade replaces the scheduler pod; under CI's full load that once took over 60 s
        timeout=150,
        what="the webhook in the labelled namespace",
    )
    kube.create("/api/v1/namespaces/ml/pods", pod)
    done = wait_for(
        lambda: (
            (p := kube.get("/api/v1/namespaces/ml/pods/user-file"))["status"].get("phase")
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=90,
        what="user-file to finish",
    )
    assert done["status"]["phase"] == "Succeeded", done["status"]
    scheduler = kube.get(
        f"/api/v1/namespaces/{NS}/pods", labelSelector="app.kubernetes.io/component=hami-scheduler"
    )
    images = {c["image"] for p in scheduler["items"] for c in p["spec"]["containers"]}
    assert "registry.example.internal/mirrors/kube-scheduler:v1.33.1" in images
    # the unlabelled default namespace is outside the webhook's reach now
    plain = _gpu_pod("outside", "gpu-node-2")
    assert kube.create("/api/v1/namespaces/default/pods", plain, dryRun="All")["spec"].get(
        "schedulerName"
    ) != ("hami-scheduler")


def test_installed_extender_refuses_callers_without_the_client_certificate(
    installed: tuple[Kube, Path, list[str]], tmp_path: Path
) -> None:
    """The chart's flags reach the running extender: /filter answers 403 to a TLS caller without the
    chart's client certificate, and serves one presenting it."""
    import base64
    import ssl
    import urllib.error
    import urllib.request

    kube, _, _ = installed

    def leader_ip() -> str | None:
        # listed afresh each time: the previous case's upgrade (one replica) may still be taking a
        # labelled pod down (CI once reached a terminating leader: the TLS handshake met its exit)
        pods = kube.get(f"/api/v1/namespaces/{NS}/pods", labelSelector="hami.io/scheduler-role=leader")
        for p in pods["items"]:
            st = p.get("status") or {}
            conditions = st.get("conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            if st.get("podIP") and ready and not p["metadata"].get("deletionTimestamp"):
                return str(st["podIP"])
        return None

    ip = wait_for(leader_ip, timeout=120, what="a ready, running leader pod's IP")
    data = kube.get(f"/api/v1/namespaces/{NS}/secrets/hami-scheduler-tls")["data"]
    for key, value in data.items():
        (tmp_path / key).write_bytes(base64.b64decode(value))
    body = json.dumps({"Pod": {"metadata": {"name": "x", "namespace": "default"}}, "NodeNames": []}).encode()

    def post(ctx: ssl.SSLContext) -> int:
        req = urllib.request.Request(
            f"https://{leader}:443/filter", body, {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return e.code

    anonymous = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    anonymous.check_hostname = False  # the pod IP is not in the serving certificate
    trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    trusted.check_hostname = False
    trusted.load_cert_chain(str(tmp_path / "client.crt"), str(tmp_path / "client.key"))
    leader = ip
    for attempt in range(3):  # a connection the pod's own exit cut: ask the leader of the moment again
        try:
            codes = (post(anonymous), post(trusted))
            break
        except urllib.error.URLError:
            if attempt == 2:
                raise
            time.sleep(5)
            leader = wait_for(leader_ip, timeout=60, what="a ready, running leader pod's IP")
    assert codes[0] == 403
    assert codes[1] != 403
