"""Several processes of one container share one region: concurrent allocation, SIGKILL, fork."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from hami_stack.monitor.region import read_region
from tests.enforcer.conftest import Runner, probe_env

MIB = 1 << 20
CHUNK = 64 * 1024


def test_concurrent_fill_never_exceeds_the_limit(node, shim: Path, probe_bin: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = probe_env(
        node,
        shim,
        {
            "CUDA_DEVICE_MEMORY_LIMIT": "4m",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "c.cache"),
            "LIBCUDA_LOG_LEVEL": "0",
        },
    )
    procs = [
        subprocess.Popen(
            [str(probe_bin), "dlsym", "fill", str(CHUNK), "sleep", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [(p.communicate(timeout=60), p.returncode) for p in procs]
    ok = []
    for (out, err), rc in results:
        assert rc == 0, f"probe exited {rc}: {err[-2000:]}"
        fill = next(ln for ln in out.splitlines() if ln.startswith("fill "))
        fields = dict(kv.split("=") for kv in fill.split()[1:])
        assert fields["rc"] == "2"  # each process ends on OOM, never on another error
        ok.append(int(fields["ok"]))
    # every chunk fits exactly: the container got all of its limit and not one chunk more
    assert sum(ok) * CHUNK == 4 * MIB


def test_sigkilled_process_memory_is_reclaimed(
    run_probe: Runner,
    node,
    shim: Path,
    probe_bin: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    cache = tmp_path / "region.cache"
    env = probe_env(
        node, shim, {"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)}
    )
    holder = subprocess.Popen(
        [str(probe_bin), "dlsym", "alloc", str(3 * MIB), "ready", "hold"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert holder.stdout is not None
    while (line := holder.stdout.readline()) and line.strip() != "ready":
        pass
    blocked = run_probe("alloc", str(3 * MIB), env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"})
    assert blocked.codes("alloc") == [2]
    snap = read_region(cache, check_host_pids=False)
    assert [p.pid for p in snap.processes] == [holder.pid] and snap.devices[0].used == 3 * MIB
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    after = run_probe("alloc", str(3 * MIB), "info", env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"})
    assert after.codes("alloc") == [0]
    assert after.line("info")["free"] == str(1 * MIB)


def test_sequential_processes_start_clean(run_probe: Runner) -> None:
    first = run_probe("alloc", str(3 * MIB), env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"})  # exits holding 3 MiB
    second = run_probe("info", env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"})
    assert first.codes("alloc") == [0]
    assert second.line("info")["free"] == str(4 * MIB)


def test_fork_child_gets_its_own_slot(node, shim: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "fork.cache"
    snippet = r"""
import ctypes, os, sys
cu = ctypes.CDLL("libcuda.so.1")
assert cu.cuInit(0) == 0
ctx = ctypes.c_void_p(); assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
assert cu.cuCtxSetCurrent(ctx) == 0
p = ctypes.c_uint64(); assert cu.cuMemAlloc_v2(ctypes.byref(p), 1 << 20) == 0
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    ctx2 = ctypes.c_void_p(); cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx2), 0)
    os.write(w, b"x"); os.read(r, 1) if False else None
    import time; time.sleep(1.0); os._exit(0)
os.read(r, 1)
sys.path.insert(0, sys.argv[1])
from hami_stack.monitor.region import read_region
snap = read_region(sys.argv[2], check_host_pids=False)
print(sorted((pr.pid, pr.used[0]) for pr in snap.processes), os.getpid(), pid)
os.waitpid(pid, 0)
"""
    env = probe_env(
        node, shim, {"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)}
    )
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", snippet, repo, str(cache)], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    listing, parent, child = out.stdout.rsplit(" ", 2)
    assert eval(listing) == sorted([(int(parent), 1 << 20), (int(child), 0)])  # our own output
