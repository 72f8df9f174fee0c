"""The compute limiter holds a container within +-10 points of CUDA_DEVICE_SM_LIMIT of the device's busy
time, for short and long kernels, alone and shared by several processes, from the first second.

Measured from the emulated device's own record of kernel executions (tests/enforcer/band.py). The
emulated kernels are timed waits, so a loaded machine delays launches but not the kernels' lengths;
each case runs a few seconds. The full sweep (200 us .. 2 s, 1 and 3 processes) is bench/enforcer.py.
"""

from __future__ import annotations

import pytest

from tests.enforcer.band import run_band

BAND = 10.0


@pytest.mark.parametrize(
    ("kernel_us", "secs", "procs", "limit"),
    [
        (200, 3.0, 1, 30),  # thousands of launches per second
        (10_000, 3.0, 1, 70),
        (300_000, 4.0, 1, 30),  # used to reach 37-40 %
        (1_000_000, 7.0, 1, 30),  # used to reach 73-77 %: one launch, then a 2.3 s wait
        (1_000, 3.0, 3, 30),  # three processes of one container share the limit
        (100_000, 4.0, 3, 30),
    ],
)
def test_band(node, shim, probe_bin, tmp_path, kernel_us: int, secs: float, procs: int, limit: int) -> None:  # type: ignore[no-untyped-def]
    b = run_band(node, shim, probe_bin, tmp_path / "c.cache", kernel_us, secs, limit=limit, procs=procs)
    assert abs(b.util - limit) <= BAND, b
    if b.first_second is not None:  # no initial burst
        assert abs(b.first_second - limit) <= BAND, b


def test_default_policy_limits_a_process_alone(node, shim, probe_bin, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # upstream's utilisation switch starts on; only a node monitor turns it off, and none runs here
    b = run_band(node, shim, probe_bin, tmp_path / "d.cache", 1_000, 3.0, limit=30, policy="")
    assert abs(b.util - 30) <= BAND, b


def test_disable_policy_and_no_limit_run_free(node, shim, probe_bin, tmp_path) -> None:  # type: ignore[no-untyped-def]
    b = run_band(node, shim, probe_bin, tmp_path / "e.cache", 5_000, 2.0, limit=30, policy="disable")
    assert b.util >= 80, b
    free = run_band(node, shim, probe_bin, tmp_path / "f.cache", 5_000, 2.0, limit=0, policy="force")
    assert free.util >= 80, free


def test_default_policy_follows_a_monitors_switch(node, shim, probe_bin, tmp_path, run_probe) -> None:  # type: ignore[no-untyped-def]
    """A node monitor that finds the GPU uncontended writes the switch off (2): default stops limiting,
    force does not."""
    import ctypes
    import mmap

    from hami_stack.monitor.region import Region

    cache = tmp_path / "region.cache"  # run_probe's region file: the probe below creates it
    assert run_probe("ready").rc == 0
    with open(cache, "r+b") as f, mmap.mmap(f.fileno(), ctypes.sizeof(Region)) as mm:
        at = Region.utilization_switch.offset
        mm[at : at + 4] = (2).to_bytes(4, "little")
    off = run_band(node, shim, probe_bin, cache, 5_000, 2.0, limit=30, policy="")
    assert off.util >= 80, off
    forced = run_band(node, shim, probe_bin, cache, 5_000, 3.0, limit=30, policy="force")
    assert abs(forced.util - 30) <= BAND, forced
