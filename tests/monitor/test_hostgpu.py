"""The monitor's host GPU series (``hami_host_gpu_*``), read from the emulated NVML of a node.

The monitor runs as its own process (the emulated ``libnvidia-ml.so.1`` is found through
``LD_LIBRARY_PATH``, which a running interpreter no longer reads), exactly as the chart starts it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testbed.hardware import create_state, library_env
from testbed.hardware.state import DeviceState

REPO = Path(__file__).resolve().parents[2]
NODE = "gpu-node-9"
HELD = 6 << 20

HOLDER = r"""
import ctypes, sys
cu = ctypes.CDLL("libcuda.so.1")
assert cu.cuInit(0) == 0
ctx = ctypes.c_void_p(); assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
assert cu.cuCtxSetCurrent(ctx) == 0
p = ctypes.c_uint64(); assert cu.cuMemAlloc_v2(ctypes.byref(p), int(sys.argv[1])) == 0
print("ready", flush=True)
sys.stdin.read()
"""

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DeviceState]:
    """Two A100s; GPU 1 holds HELD bytes for a live process (GPU 0 is idle)."""
    st = create_state(tmp_path / "gpus", {"model": "A100-SXM4-80GB", "count": 2}, node_name=NODE)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(HELD)],
        env=library_env(st.path, [st.gpus[1].uuid]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield st
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        st.close()


@contextlib.contextmanager
def _monitor(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[[str], Samples]]:
    """Run ``python -m hami_stack.monitor`` with ``env``; yields scrape(want): the samples of the first
    answer that names ``want``."""
    port = _free_port()
    (tmp_path / "containers").mkdir(exist_ok=True)
    env = {k: v for k, v in env.items() if k not in ("KUBECONFIG", "NODE_NAME")}
    cmd = [
        sys.executable, "-m", "hami_stack.monitor", "--containers-dir", str(tmp_path / "containers"),
        "--port", str(port), "--node-name", NODE, "--pods-file", str(tmp_path / "pods.json"),
    ]  # fmt: skip
    log = tmp_path / "monitor.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)

    def scrape(want: str) -> Samples:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"monitor exited {proc.returncode}: {log.read_text()[-2000:]}"
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                if want in body:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"monitor never answered: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        out: Samples = {}
        for fam in text_string_to_metric_families(body):
            for s in fam.samples:
                out.setdefault(s.name, []).append((dict(s.labels), s.value))
        return out

    try:
        yield scrape
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _scrape(tmp_path: Path, env: dict[str, str], want: str = "hami_vgpu_memory_limit_bytes") -> Samples:
    with _monitor(tmp_path, env) as scrape:
        return scrape(want)


def _by_uuid(samples: Samples, name: str) -> dict[str, tuple[dict[str, str], float]]:
    return {lb["device_uuid"]: (lb, v) for lb, v in samples.get(name, [])}


def test_host_series_per_gpu_match_nvml(node: DeviceState, tmp_path: Path) -> None:
    """Each GPU's series as NVML reports it; then a GPU whose NVML calls fail is left out and the
    others are still reported."""
    name = "hami_host_gpu_memory_used_bytes"
    with _monitor(tmp_path, library_env(node.path, None, host_view=True)) as scrape:
        got = scrape(name)
        node.fail_next(0, 1000)
        failing = scrape(name)
    assert set(_by_uuid(failing, name)) == {node.gpus[1].uuid}
    used = _by_uuid(got, "hami_host_gpu_memory_used_bytes")
    assert set(used) == {g.uuid for g in node.gpus}
    for i, g in enumerate(node.gpus):
        labels, value = used[g.uuid]
        assert labels == {
            "node": NODE, "device_index": str(i), "device_uuid": g.uuid, "device_type": f"NVIDIA-{g.name}",
            "zone": "vGPU",
        }  # fmt: skip
        # NVML v1 counts the driver's reservation as used
        assert value == min(node.usage(i).used_bytes + g.reserved_bytes, g.memory_bytes)
    assert used[node.gpus[1].uuid][1] >= HELD + used[node.gpus[0].uuid][1]
    assert used[node.gpus[1].uuid][1] < node.gpus[1].memory_bytes
    util = _by_uuid(got, "hami_host_gpu_utilization_ratio")
    memctl = _by_uuid(got, "hami_host_gpu_memory_controller_utilization_ratio")
    assert set(util) == set(memctl) == set(used)
    assert all(0 <= v <= 100 for _, v in [*util.values(), *memctl.values()])
    assert all("node" not in lb for lb, _ in memctl.values())  # as upstream: no node label
    power = _by_uuid(got, "hami_host_gpu_power_usage_watts")
    assert set(power) == set(used) and all(v > 0 for _, v in power.values())
    assert set(_by_uuid(got, "hami_host_gpu_temperature_celsius")) == set(used)


def test_fault_reports_total_as_used(node: DeviceState, tmp_path: Path) -> None:
    env = library_env(node.path, None, host_view=True) | {"HAMI_FAULTS": "monitor-host-memory-is-total"}
    name = "hami_host_gpu_memory_used_bytes"
    used = _by_uuid(_scrape(tmp_path, env, name), name)
    assert {u: v for u, (_, v) in used.items()} == {g.uuid: g.memory_bytes for g in node.gpus}


def test_without_nvml_the_container_series_are_still_served(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "HAMI_EMU_GPU_STATE_DIR")}
    got = _scrape(tmp_path, env)
    assert not any(name.startswith("hami_host_gpu_") for name in got)


def test_devices_recreated_since_the_last_scrape_are_read_afresh(tmp_path: Path) -> None:
    """NVML is opened per scrape, as upstream's monitor does: a node whose devices were re-created
    (another inventory, a reloaded driver) is reported as it is now, not as it was at start."""
    state = tmp_path / "gpus"
    create_state(state, {"model": "A100-SXM4-80GB", "count": 2}, node_name=NODE).close()
    name = "hami_host_gpu_memory_used_bytes"
    with _monitor(tmp_path, library_env(state, None, host_view=True)) as scrape:
        assert len(scrape(name)[name]) == 2
        with create_state(state, {"model": "H100-SXM5-80GB", "count": 3}, node_name=NODE) as now:
            want = {g.uuid for g in now.gpus}
        got = _by_uuid(scrape(name), name)
    assert set(got) == want and all(lb["device_type"].startswith("NVIDIA-") for lb, _ in got.values())
