"""Upstream HAMi's vGPU monitor, unmodified, on a testbed node's emulated NVML.

It runs as a host process with the node's emulated ``libnvidia-ml.so.1`` (``LD_LIBRARY_PATH``),
``HOOK_PATH`` pointing at an empty containers directory and the testbed's kubeconfig; its
``/metrics`` must carry a host GPU series for every emulated GPU, named by the state's UUIDs, and
its build info must be the release built. Needs upstream's build and
``HAMI_UPSTREAM_TESTS=1`` (``needs_build.py``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from .needs_build import BUILT, TAG, requires_build

REPO = Path(__file__).resolve().parents[2]
pytestmark = requires_build

INVENTORY = {
    "defaults": {
        "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"},
        "mode": "executed",
        "hardware": {"nvidia": {"model": "A100-SXM4-80GB", "count": 3, "memory_mib": 81920}},
    },
    "nodes": [{"name": "gpu-node-1"}],
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_upstream_monitor_reports_emulated_gpus(tmp_path: Path) -> None:
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
    monitor = None
    try:
        gpus = data / "nodes" / "gpu-node-1" / "hardware" / "nvidia"
        (tmp_path / "vgpu" / "containers").mkdir(parents=True)
        port = _port()
        env = {
            **library_env(str(gpus), None, host_view=True),
            "NODE_NAME": "gpu-node-1",
            "KUBECONFIG": str(data / "kubeconfig"),
            "NVIDIA_VISIBLE_DEVICES": "all",
            "HOOK_PATH": str(tmp_path / "vgpu"),
        }
        log = tmp_path / "monitor.log"
        with open(log, "wb") as fh:
            monitor = subprocess.Popen(
                [str(BUILT.binary("vGPUmonitor")), f"--metrics-bind-address=127.0.0.1:{port}"],
                env=env, stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        with DeviceState(gpus) as state:
            uuids = [g.uuid for g in state.gpus]
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            assert monitor.poll() is None, f"monitor exited {monitor.returncode}:\n{log.read_text()[-3000:]}"
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                text = ""
            if all(f'device_uuid="{u}"' in text for u in uuids):
                break
            time.sleep(1)
        else:
            raise AssertionError(
                f"no host GPU series for {uuids} within 60 s:\n{text[-3000:]}\n{log.read_text()[-2000:]}"
            )
        used = [ln for ln in text.splitlines() if ln.startswith("hami_host_gpu_memory_used_bytes{")]
        assert len(used) == 3 and all('node="gpu-node-1"' in ln for ln in used)
        assert all('device_type="NVIDIA-NVIDIA A100-SXM4-80GB"' in ln for ln in used)
        assert f'version="{TAG}"' in next(ln for ln in text.splitlines() if ln.startswith("hami_build_info{"))
    finally:
        if monitor is not None:
            monitor.terminate()
            try:
                monitor.wait(15)
            except subprocess.TimeoutExpired:
                monitor.kill()
        subprocess.run(
            [sys.executable, "-m", "testbed", "down", "--data-dir", str(data)], cwd=REPO, timeout=120
        )
