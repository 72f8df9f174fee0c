"""The `python -m testbed` command line: up/status/down and its errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testbed", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_up_detach_status_down(tmp_path: Path):
    data = tmp_path / "tb"
    port = _free_port()
    r = _run("up", "--k8s", "1.25", "--detach", "--port", str(port), "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    assert f"kubeconfig: {data / 'kubeconfig'}" in r.stdout
    try:
        cfg = yaml.safe_load((data / "kubeconfig").read_text())
        assert cfg["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{port}"
        s = _run("status", "--data-dir", str(data))
        assert s.returncode == 0 and "v1.25." in s.stdout
        again = _run("up", "--k8s", "1.25", "--detach", "--port", str(port), "--data-dir", str(data))
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        d = _run("down", "--data-dir", str(data))
    assert d.returncode == 0 and "stopped" in d.stdout
    s = _run("status", "--data-dir", str(data))
    assert s.returncode == 3


def test_unknown_minor_is_a_usage_error(tmp_path: Path):
    r = _run("up", "--k8s", "1.17", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert "1.17" in r.stderr and "1.18" in r.stderr and "1.35" in r.stderr


def test_port_in_use(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _run("up", "--port", str(port), "--data-dir", str(tmp_path))
    assert r.returncode == 1 and f"port {port} on 127.0.0.1 is already in use" in r.stderr


def test_bad_data_dir(tmp_path: Path):
    f = tmp_path / "file"
    f.write_text("x")
    r = _run("up", "--data-dir", str(f))
    assert r.returncode == 1 and "is not a directory" in r.stderr


def test_up_with_nodes_runs_a_deployment(tmp_path: Path):
    """`up --nodes` starts controllers, the scheduler and node agents: a Deployment rolls out."""
    from kubernetes import client, config

    inv = tmp_path / "nodes.yaml"
    inv.write_text("nodes:\n  - name: n1\n    capacity: {cpu: '4', memory: 8Gi}\n"
                   "  - name: n2\n    capacity: {cpu: '4', memory: 8Gi}\n")
    data = tmp_path / "tb"
    r = _run("up", "--k8s", "1.28", "--detach", "--port", "0", "--data-dir", str(data), "--nodes", str(inv))
    assert r.returncode == 0, r.stderr + r.stdout
    try:
        log = (data / "testbed.log").read_text()
        assert "nodes ready: 2/2" in log
        api = config.new_client_from_config(str(data / "kubeconfig"))
        apps = client.AppsV1Api(api)
        apps.create_namespaced_deployment("default", {
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox",
                                                           "command": ["sleep", "300"]}]}}}})
        import time
        deadline = time.monotonic() + 60
        available = None
        while time.monotonic() < deadline:
            st = apps.read_namespaced_deployment_status("web", "default").status
            available = st.available_replicas if st is not None else None
            if available == 2:
                break
            time.sleep(0.2)
        assert available == 2
        pods = client.CoreV1Api(api).list_namespaced_pod("default", label_selector="app=web").items
        assert {p.status.phase for p in pods} == {"Running"}
        assert {p.spec.node_name for p in pods} <= {"n1", "n2"}
    finally:
        _run("down", "--data-dir", str(data))


def test_bad_inventory_is_a_usage_error(tmp_path: Path):
    inv = tmp_path / "bad.yaml"
    inv.write_text("nodes:\n  - name: n1\n    colour: blue\n")
    r = _run("up", "--data-dir", str(tmp_path / "tb"), "--nodes", str(inv))
    assert r.returncode == 2 and "colour" in r.stderr and str(inv) in r.stderr
