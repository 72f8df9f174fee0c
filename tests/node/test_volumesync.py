"""Issue 14 item 6: ConfigMap, Secret, downwardAPI and projected volume updates reach running pods
through the kubelet's atomic ``..data`` symlink swap."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, parse_inventory, podspec

from .helpers import create_bound_pod, get_pod, wait_for


def test_atomic_writer_swaps_data_and_drops_gone_keys(tmp_path: Path) -> None:
    owner = podspec.Owner(None, None)
    dest = tmp_path / "vol"
    assert podspec.write_atomic(dest, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)}, owner, 0o755)
    first = os.readlink(dest / "..data")
    assert (dest / "a").read_text() == "1" and os.readlink(dest / "a") == "..data/a"
    assert (dest / "sub" / "b").read_text() == "2" and (dest / "sub" / "b").stat().st_mode & 0o777 == 0o600
    assert not podspec.write_atomic(dest, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)}, owner, 0o755)
    assert podspec.write_atomic(dest, {"a": (b"changed", 0o644)}, owner, 0o755)
    assert os.readlink(dest / "..data") != first and not (dest / first).exists()
    assert (dest / "a").read_text() == "changed" and not (dest / "sub").exists()
    assert podspec.current_files(dest) == {"a": b"changed"}


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    os.environ["TESTBED_VOLUME_SYNC_SECONDS"] = "0.3"
    inv = parse_inventory({"nodes": [{"name": "node-v", "capacity": {"cpu": "16"}}]})
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    try:
        with NodeAgents(kube, inv, tmp_path_factory.mktemp("volsync"), options=opts) as ag:
            yield ag
    finally:
        os.environ.pop("TESTBED_VOLUME_SYNC_SECONDS", None)


def _obj(kind: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    if kind == "Secret":
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": data}


def test_updates_reach_the_running_container(kube: Kube, agents: NodeAgents) -> None:
    ns = "default"
    kube.create(f"/api/v1/namespaces/{ns}/configmaps", _obj("ConfigMap", "cfg", {"mode": "one"}))
    kube.create(f"/api/v1/namespaces/{ns}/secrets", _obj("Secret", "sec", {"pw": "s1"}))
    script = ("while true; do echo \"$(cat /c/mode) $(cat /s/pw) $(cat /p/mode) $(cat /d/labels)\" > /c.out; "
              "cp /c.out /out/now; sleep 0.1; done")
    spec = {
        "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script], "volumeMounts": [
            {"name": "c", "mountPath": "/c"}, {"name": "s", "mountPath": "/s"},
            {"name": "p", "mountPath": "/p"}, {"name": "d", "mountPath": "/d"},
            {"name": "out", "mountPath": "/out"}]}],
        "volumes": [
            {"name": "c", "configMap": {"name": "cfg"}},
            {"name": "s", "secret": {"secretName": "sec"}},
            {"name": "p", "projected": {"sources": [{"configMap": {"name": "cfg"}}]}},
            {"name": "d", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "out", "emptyDir": {}},
        ],
    }
    create_bound_pod(kube, ns, "node-v", "watcher", spec)
    pod = wait_for(lambda: (p := get_pod(kube, ns, "watcher"))["status"].get("phase") == "Running" and p, 30)
    w = agents.agent("node-v").runtime.workers[pod["metadata"]["uid"]]
    out = w.pod_dir / "volumes" / "out" / "now"

    def seen() -> str:
        try:
            return out.read_text().strip()
        except OSError:
            return ""

    wait_for(lambda: seen() == "one s1 one", timeout=20)
    kube.patch(f"/api/v1/namespaces/{ns}/configmaps/cfg", {"data": {"mode": "two"}}, "merge")
    s2 = base64.b64encode(b"s2").decode()
    kube.patch(f"/api/v1/namespaces/{ns}/secrets/sec", {"data": {"pw": s2}}, "merge")
    kube.patch(f"/api/v1/namespaces/{ns}/pods/watcher", {"metadata": {"labels": {"tier": "x"}}}, "merge")
    wait_for(lambda: seen() == 'two s2 two tier="x"', timeout=20)
