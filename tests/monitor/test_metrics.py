"""The monitor serves hami_* families from real regions written by the shim."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from hami_stack.enforcer import ensure_built
from hami_stack.monitor import RegionError, VGPUCollector, pods_file_resolver, read_region, serve
from testbed.hardware import create_state, library_env

PROBE = r"""
import ctypes, sys, time
cu = ctypes.CDLL("libcuda.so.1")
assert cu.cuInit(0) == 0
ctx = ctypes.c_void_p(); assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
assert cu.cuCtxSetCurrent(ctx) == 0
p = ctypes.c_uint64(); assert cu.cuMemAlloc_v2(ctypes.byref(p), 3 << 20) == 0
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def container(tmp_path: Path):  # type: ignore[no-untyped-def]
    node = create_state(tmp_path / "gpus", {"model": "A100-SXM4-80GB", "count": 1})
    cdir = tmp_path / "containers" / "uid-1234_main"
    cdir.mkdir(parents=True)
    env = library_env(node.path, "all")
    env.update(
        {
            "LD_PRELOAD": str(ensure_built()),
            "CUDA_DEVICE_MEMORY_LIMIT_0": "4m",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cdir / "abc.cache"),
        }
    )
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield tmp_path / "containers", node
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_are_labelled_by_pod_and_container(container, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    containers_dir, node = container
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"uid-1234": {"namespace": "team-a", "name": "trainer"}}))
    port = _free_port()
    server, _thread, _ = serve(containers_dir, port, resolver=pods_file_resolver(pods))
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    uuid = node.gpus[0].uuid
    labels = (
        f'container="main",device_uuid="{uuid}",namespace="team-a",pod="trainer",vdevice_index="0",zone="vGPU"'
    )
    assert f"hami_vgpu_memory_used_bytes{{{labels}}} 3.145728e+06" in body
    assert f"hami_vgpu_memory_limit_bytes{{{labels}}} 4.194304e+06" in body
    assert f"hami_vgpu_memory_buffer_bytes{{{labels}}} 3.145728e+06" in body
    assert "hami_container_device_utilization_ratio{" in body


def test_unresolved_pod_uses_the_uid_and_bad_files_are_skipped(container) -> None:  # type: ignore[no-untyped-def]
    containers_dir, _ = container
    bad = containers_dir / "uid-9_other"
    bad.mkdir()
    (bad / "x.cache").write_bytes(b"garbage" * 10)
    fams = {f.name: f for f in VGPUCollector(containers_dir).collect()}
    samples = fams["hami_vgpu_memory_used_bytes"].samples
    assert [(s.labels["pod"], s.labels["namespace"], s.value) for s in samples] == [("uid-1234", "", 3 << 20)]
    with pytest.raises(RegionError):
        read_region(bad / "x.cache")
