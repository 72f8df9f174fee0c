"""SM limiter on the emulated device. Utilisation is measured the way an operator would, through
NVML per-process utilisation (1 s window), sampled in a separate process without the shim.

Band: each container's mean utilisation over 3 s (after 1.5 s of settling) is within +-10 points of
its limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testbed.hardware import library_env
from tests.enforcer.conftest import probe_env

BAND = 10
MEASURE = r"""
import ctypes, json, sys, time
nv = ctypes.CDLL("libnvidia-ml.so.1")
class S(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("ts", ctypes.c_ulonglong), ("sm", ctypes.c_uint),
                ("mem", ctypes.c_uint),
                ("enc", ctypes.c_uint), ("dec", ctypes.c_uint)]
assert nv.nvmlInit_v2() == 0
pids = [int(p) for p in sys.argv[2:]]
h = ctypes.c_void_p(); assert nv.nvmlDeviceGetHandleByIndex_v2(int(sys.argv[1]), ctypes.byref(h)) == 0
time.sleep(1.5)
acc = {p: [] for p in pids}
for _ in range(12):
    buf = (S * 64)(); n = ctypes.c_uint(64)
    rc = nv.nvmlDeviceGetProcessUtilization(h, buf, ctypes.byref(n), ctypes.c_ulonglong(0))
    seen = {buf[i].pid: buf[i].sm for i in range(n.value)} if rc == 0 else {}
    for p in pids:
        acc[p].append(seen.get(p, 0))
    time.sleep(0.25)
print(json.dumps({str(p): sum(v) / len(v) for p, v in acc.items()}))
"""


def _start(
    node,
    shim: Path,
    probe_bin: Path,
    cache: Path,
    env: dict[str, str],
    visible: str = "all",  # type: ignore[no-untyped-def]
    device: int = 0,
) -> subprocess.Popen[str]:
    e = probe_env(
        node,
        shim,
        {"CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache), "PROBE_DEVICE": str(device), **env},
        visible,
    )
    return subprocess.Popen(
        [str(probe_bin), "dlsym", "loop", "10000", "5"],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _measure_start(node, device: int, pids: list[int]) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    env = library_env(node.path, "all")
    return subprocess.Popen(
        [sys.executable, "-c", MEASURE, str(device), *map(str, pids)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _measure_result(proc: subprocess.Popen[str]) -> dict[int, float]:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return {int(k): v for k, v in json.loads(out).items()}


def _measure(node, device: int, pids: list[int]) -> dict[int, float]:  # type: ignore[no-untyped-def]
    return _measure_result(_measure_start(node, device, pids))


def _finish(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0 and "loop rc=0" in out, err


def test_force_holds_30_percent_and_default_alone_is_limited_too(node, shim, probe_bin, tmp_path) -> None:  # type: ignore[no-untyped-def]
    forced = _start(
        node,
        shim,
        probe_bin,
        tmp_path / "a.cache",
        {"CUDA_DEVICE_SM_LIMIT": "30", "GPU_CORE_UTILIZATION_POLICY": "force"},
    )
    # a second container alone on GPU 1 with the default policy: upstream's utilisation switch starts on
    # and only a node monitor turns it off, so with no monitor it is limited like force
    alone = _start(node, shim, probe_bin, tmp_path / "b.cache", {"CUDA_DEVICE_SM_LIMIT": "30"}, device=1)
    try:
        m0, m1 = _measure_start(node, 0, [forced.pid]), _measure_start(node, 1, [alone.pid])
        util, default_util = _measure_result(m0), _measure_result(m1)
    finally:
        _finish([forced, alone])
    assert abs(util[forced.pid] - 30) <= BAND, util
    assert abs(default_util[alone.pid] - 30) <= BAND, default_util


def test_two_containers_share_in_ratio_of_their_limits(node, shim, probe_bin, tmp_path) -> None:  # type: ignore[no-untyped-def]
    low = _start(
        node,
        shim,
        probe_bin,
        tmp_path / "low.cache",
        {"CUDA_DEVICE_SM_LIMIT": "30", "GPU_CORE_UTILIZATION_POLICY": "force"},
    )
    high = _start(
        node,
        shim,
        probe_bin,
        tmp_path / "high.cache",
        {"CUDA_DEVICE_SM_LIMIT": "60", "GPU_CORE_UTILIZATION_POLICY": "force"},
    )
    try:
        util = _measure(node, 0, [low.pid, high.pid])
    finally:
        _finish([low, high])
    assert abs(util[low.pid] - 30) <= BAND, util
    assert abs(util[high.pid] - 60) <= BAND, util
    assert 1.5 <= util[high.pid] / util[low.pid] <= 2.5, util


def test_disable_policy_never_throttles(node, shim, probe_bin, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = _start(
        node,
        shim,
        probe_bin,
        tmp_path / "d.cache",
        {"CUDA_DEVICE_SM_LIMIT": "30", "GPU_CORE_UTILIZATION_POLICY": "disable"},
    )
    try:
        util = _measure(node, 0, [p.pid])
    finally:
        _finish([p])
    assert util[p.pid] >= 80, util
