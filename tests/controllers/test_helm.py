"""``helm install --wait`` of a chart with a Deployment, a DaemonSet and a Job, with real helm binaries."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed import clients
from testbed.embedded import EmbeddedTestbed

from .conftest import FakeNodes

CHART = Path(__file__).parent / "charts" / "workloads"


def _helm(
    path: Path | None, testbed: EmbeddedTestbed, tmp: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    assert path is not None
    env = {
        **os.environ,
        "KUBECONFIG": str(testbed.kubeconfig_path),
        "HELM_CACHE_HOME": str(tmp / "cache"),
        "HELM_CONFIG_HOME": str(tmp / "config"),
        "HELM_DATA_HOME": str(tmp / "data"),
    }
    return subprocess.run([str(path), *args], env=env, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("major", [3, 4])
def test_helm_install_wait(
    major: int, kube: Kube, nodes: FakeNodes, manager: Any, testbed: EmbeddedTestbed, tmp_path: Path
) -> None:
    helm = clients.helm_path(major=major)
    if helm is None:
        pytest.skip(clients.helm_skip_reason(major))
    for name in ("helm-a", "helm-b"):
        if name not in nodes.nodes:
            nodes.add_node(name)
    ns, release = f"helm{major}", f"w{major}"
    wait = ["--wait", "--wait-for-jobs"] if major == 3 else ["--wait=watcher", "--wait-for-jobs"]
    r = _helm(
        helm,
        testbed,
        tmp_path,
        "install",
        release,
        str(CHART),
        "--namespace",
        ns,
        "--create-namespace",
        *wait,
        "--timeout",
        "60s",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "STATUS: deployed" in r.stdout
    d = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{release}-web")
    assert d["status"]["availableReplicas"] == 2
    ds = kube.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/{release}-agent")
    assert ds["status"]["numberReady"] == ds["status"]["desiredNumberScheduled"] >= 2
    job = kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{release}-init")
    assert job["status"]["succeeded"] == 2
    ep = kube.get(f"/api/v1/namespaces/{ns}/endpoints/{release}-web")
    assert len(ep["subsets"][0]["addresses"]) == 2


def test_kubectl_rollout_status(kube: Kube, nodes: FakeNodes, manager: Any, testbed: EmbeddedTestbed) -> None:
    kubectl = clients.kubectl_path(33)
    if kubectl is None:
        pytest.skip(clients.skip_reason(33))
    if "helm-a" not in nodes.nodes:
        nodes.add_node("helm-a")
    ns = "rollout"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    env = {**os.environ, "KUBECONFIG": str(testbed.kubeconfig_path)}
    manifest = CHART / "templates"
    rendered = "\n---\n".join(
        (manifest / f)
        .read_text()
        .replace("{{ .Release.Name }}", "r")
        .replace("{{ .Values.replicas }}", "3")
        .replace("{{ .Values.image }}", "app:v1")
        for f in ("deployment.yaml", "daemonset.yaml")
    )
    r = subprocess.run(
        [str(kubectl), "apply", "-n", ns, "-f", "-"],
        input=rendered,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    for what, done in (
        ("deployment/r-web", 'deployment "r-web" successfully rolled out'),
        ("ds/r-agent", 'daemon set "r-agent" successfully rolled out'),
    ):
        r = subprocess.run(
            [str(kubectl), "rollout", "status", "-n", ns, what, "--timeout=60s"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert r.returncode == 0, r.stderr + r.stdout
        assert done in r.stdout
