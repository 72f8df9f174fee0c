"""Upstream HAMi's NVIDIA device plugin, unmodified, on a testbed node with the emulated NVML.

The plugin binary runs as a host process in a private mount namespace where the node's
``var/lib/kubelet/device-plugins`` is at the real path (the plugin serves its socket there, as the
chart's hostPath gives it) and the chart's node config is at ``/config/config.json``; the emulated
``libnvidia-ml.so.1`` is found through ``LD_LIBRARY_PATH`` as the container toolkit would inject it.
Checked: it discovers the node's GPUs through go-nvml, registers ``nvidia.com/gpu`` with the node
agent's kubelet, and its ``hami.io/node-nvidia-register`` annotation decodes with our codec to the
emulated inventory.

Needs upstream's build, ``HAMI_UPSTREAM_TESTS=1`` (``needs_build.py``) and root (mount namespace).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hami_stack.protocol.register import decode_register

from .needs_build import BUILT, requires_build

REPO = Path(__file__).resolve().parents[2]
pytestmark = [
    requires_build,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="needs root and unshare (mount namespace)",
    ),
]

INVENTORY = {
    "defaults": {
        "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"},
        "mode": "executed",
        "hardware": {
            "nvidia": {"model": "A100-SXM4-80GB", "count": 4, "memory_mib": 81920, "numa": [0, 0, 1, 1]}
        },
    },
    "nodes": [{"name": "gpu-node-1"}],
}

# inside the namespace: the node's plugin directory and the chart's node config at their real paths
WRAP = r"""
set -e
mount -t tmpfs none /var/lib
mkdir -p /var/lib/kubelet/device-plugins /config
mount --bind "$NODE_PLUGINS" /var/lib/kubelet/device-plugins
mount -t tmpfs none /config
cp "$NODE_CONFIG" /config/config.json
exec "$@"
"""


def _chart_config(chart: Path, name: str, key: str, out: Path) -> Path:
    from testbed.clients import helm_path

    helm = helm_path()
    if helm is None:
        pytest.skip("helm is not cached (python -m testbed.clients fetch 1.33)")
    rendered = subprocess.run(
        [str(helm), "template", "hami", str(chart), "-n", "kube-system"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for doc in yaml.safe_load_all(rendered):
        if doc and doc.get("kind") == "ConfigMap" and key in (doc.get("data") or {}):
            out.write_text(doc["data"][key])
            return out
    raise AssertionError(f"{chart}: no ConfigMap with {key}")


def test_upstream_plugin_registers_emulated_gpus(tmp_path: Path) -> None:
    from kubeclient.client import Kube
    from testbed.hardware import library_env
    from testbed.hardware.state import DeviceState

    assert BUILT is not None
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump(INVENTORY))
    data = tmp_path / "tb"
    up = subprocess.run(
        [sys.executable, "-m", "testbed", "up", "--k8s", "1.33", "--port", "0", "--nodes", str(inv),
         "--no-scheduler", "--detach", "--data-dir", str(data)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    plugin = None
    try:
        node_root = data / "nodes" / "gpu-node-1"
        gpus = node_root / "hardware" / "nvidia"
        env = {
            **library_env(str(gpus), None, host_view=True),
            "NODE_NAME": "gpu-node-1",
            "KUBECONFIG": str(data / "kubeconfig"),
            "NODE_PLUGINS": str(node_root / "var/lib/kubelet/device-plugins"),
            "NODE_CONFIG": str(
                _chart_config(BUILT.chart, "hami-device-plugin", "config.json", tmp_path / "c.json")
            ),
        }
        device_config = _chart_config(
            BUILT.chart, "hami-scheduler-device", "device-config.yaml", tmp_path / "d.yaml"
        )
        log = tmp_path / "plugin.log"
        with open(log, "wb") as fh:
            plugin = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", WRAP, "wrap",
                 str(BUILT.binary("nvidia-device-plugin")), f"--config-file={device_config}",
                 "--mig-strategy=none"],
                env=env, stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        kube = Kube.from_config(str(data / "kubeconfig"))
        deadline = time.monotonic() + 90
        node: dict = {}
        while time.monotonic() < deadline:
            assert plugin.poll() is None, f"plugin exited {plugin.returncode}:\n{log.read_text()[-3000:]}"
            node = kube.get("/api/v1/nodes/gpu-node-1")
            registered = (node["metadata"].get("annotations") or {}).get("hami.io/node-nvidia-register")
            if registered and node["status"].get("allocatable", {}).get("nvidia.com/gpu") == "40":
                break
            time.sleep(1)
        else:
            raise AssertionError(
                f"no registration within 90 s; node: {json.dumps(node)[:2000]}\n{log.read_text()[-3000:]}"
            )
        devices = decode_register(node["metadata"]["annotations"]["hami.io/node-nvidia-register"])
        with DeviceState(gpus) as state:
            assert [d.id for d in devices] == [g.uuid for g in state.gpus]
        assert {(d.count, d.devmem, d.devcore, d.type) for d in devices} == {
            (10, 81920, 100, "NVIDIA A100-SXM4-80GB")
        }
        assert [d.index for d in devices] == [0, 1, 2, 3] and all(d.health for d in devices)
    finally:
        if plugin is not None:
            plugin.terminate()
            try:
                plugin.wait(15)
            except subprocess.TimeoutExpired:
                plugin.kill()
        subprocess.run(
            [sys.executable, "-m", "testbed", "down", "--data-dir", str(data)], cwd=REPO, timeout=120
        )
