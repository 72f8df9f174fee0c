"""Compute-limiter band measurement on the emulated GPU, shared by the band tests and bench/enforcer.py.

The truth is the emulated device's own record of kernel executions (the busy-interval ring in the
node's shared state), not the probe's counters or NVML's rounded percentages: the busy time of the
container's processes, as a union, between the first kernel's start and the start of the last kernel
(whole launch cycles, so a 2 s kernel followed by its 4.7 s wait counts as one cycle, not half of one).
"""

from __future__ import annotations

import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.hardware.state import DeviceState
from tests.enforcer.conftest import probe_env


@dataclass(frozen=True)
class Band:
    kernel_us: int
    procs: int
    limit: int
    util: float  # percent of the device over whole launch cycles, all processes of the container
    first_second: float | None  # percent in the first second (None when a cycle is longer than 1 s)
    span_s: float  # length of the measured span
    kernels: int


def intervals(node: DeviceState, gpu: int, pids: set[int]) -> list[tuple[int, int]]:
    """The emulated device's recorded kernel intervals of these pids, sorted by start."""
    raw = bytes(node.region.gpus[gpu].busy)
    return sorted((s, e) for s, e, pid, _ in struct.iter_unpack("<qqiI", raw) if e > s and pid in pids)


def busy_ns(spans: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Length of the union of the spans clipped to [lo, hi)."""
    covered, cs, ce = 0, lo, lo
    for s, e in spans:
        s, e = max(s, lo), min(e, hi)
        if e <= s:
            continue
        if s > ce:
            covered += ce - cs
            cs, ce = s, e
        else:
            ce = max(ce, e)
    return covered + ce - cs


def run_band(
    node: DeviceState,
    shim: Path,
    probe_bin: Path,
    cache: Path,
    kernel_us: int,
    secs: float,
    limit: int = 30,
    procs: int = 1,
    policy: str = "force",
    extra_env: dict[str, str] | None = None,
) -> Band:
    """Run `procs` probe processes of one container (one region file), each launching kernel_us
    kernels and waiting for each, for secs seconds; return the container's share of the device."""
    env = {
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache),
        "CUDA_DEVICE_SM_LIMIT": str(limit),
        **({"GPU_CORE_UTILIZATION_POLICY": policy} if policy else {}),
        **(extra_env or {}),
    }
    started = [
        subprocess.Popen(
            [str(probe_bin), "dlsym", "loop", str(kernel_us), str(secs)],
            env=probe_env(node, shim, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    deadline = time.monotonic() + secs + 60
    for p in started:
        out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        if p.returncode != 0 or "loop rc=0" not in out:
            raise AssertionError(f"probe failed ({p.returncode}): {out} {err}")
    spans = intervals(node, 0, {p.pid for p in started})
    if len(spans) < 2:
        raise AssertionError(f"{len(spans)} kernels recorded: too few to measure a cycle")
    t0, t1 = spans[0][0], spans[-1][0]
    util = 100.0 * busy_ns(spans, t0, t1) / (t1 - t0)
    first = None
    if t1 - t0 >= 1_000_000_000 and kernel_us * 100 // max(limit, 1) <= 200_000:
        first = 100.0 * busy_ns(spans, t0, t0 + 1_000_000_000) / 1e9
    return Band(
        kernel_us,
        procs,
        limit,
        round(util, 1),
        None if first is None else round(first, 1),
        round((t1 - t0) / 1e9, 2),
        len(spans),
    )
