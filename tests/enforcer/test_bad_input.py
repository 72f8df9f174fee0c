"""Bad input: a clear log line and the documented fallback, never a crash or an unlimited container
by accident."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hami_stack.monitor.region import MAGIC
from tests.enforcer.conftest import Runner

MIB = 1 << 20
OOM = 2


@pytest.mark.parametrize(
    "bad", ["1Gi", "1GB", "1.5g", "0x10m", "-1m", " 4m", "4m ", "m", "99999999999999999999g"]
)
def test_unparseable_indexed_limit_denies_even_with_a_valid_global_one(run_probe: Runner, bad: str) -> None:
    r = run_probe(
        "alloc",
        "1",
        "info",
        env={"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_MEMORY_LIMIT_0": bad},
    )
    assert r.rc == 0
    assert r.codes("alloc") == [OOM]  # no guess, no fallback: the device is refused (fail closed)
    assert r.line("info") == {"rc": "0", "free": "0", "total": "0"}
    assert f"CUDA_DEVICE_MEMORY_LIMIT_0='{bad}' is not a size" in r.stderr


@pytest.mark.parametrize("env", [
    {"CUDA_DEVICE_MEMORY_LIMIT": "4 GiB"},
    {"CUDA_DEVICE_MEMORY_LIMIT_0": "lots"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "junk", "CUDA_DEVICE_MEMORY_LIMIT_0": "junk"},
])
def test_garbage_with_no_valid_fallback_fails_closed(run_probe: Runner, env: dict[str, str]) -> None:
    r = run_probe("alloc", "1", env=env)
    assert r.rc == 0  # the program keeps running
    assert r.codes("alloc") == [OOM]  # refused, not unlimited
    assert "is not a size" in r.stderr and "fail closed" in r.stderr


def test_garbage_global_with_a_valid_indexed_limit_uses_the_indexed_one(run_probe: Runner) -> None:
    r = run_probe("alloc", str(4 * MIB), "alloc", "1",
                  env={"CUDA_DEVICE_MEMORY_LIMIT": "junk", "CUDA_DEVICE_MEMORY_LIMIT_0": "4m"})
    assert r.codes("alloc") == [0, OOM]


def test_suffixes_are_case_insensitive_powers_of_1024(run_probe: Runner) -> None:
    for value, size in (("4096K", 4 * MIB), ("4M", 4 * MIB), ("1G", 1 << 30), ("4194304", 4 * MIB)):
        r = run_probe("info", env={"CUDA_DEVICE_MEMORY_LIMIT": value})
        assert r.line("info")["total"] == str(size)


def test_zero_means_no_limit_and_says_so(run_probe: Runner) -> None:
    r = run_probe("info", env={"CUDA_DEVICE_MEMORY_LIMIT": "0m", "LIBCUDA_LOG_LEVEL": "2"})
    assert int(r.line("info")["total"]) == 80 * (1 << 30)
    r = run_probe("info", env={"CUDA_DEVICE_MEMORY_LIMIT": "0", "LIBCUDA_LOG_LEVEL": "3"})
    assert int(r.line("info")["total"]) == 80 * (1 << 30)
    assert "CUDA_DEVICE_MEMORY_LIMIT=0: no memory limit" in r.stderr


def test_garbage_knobs_are_logged_and_ignored(run_probe: Runner) -> None:
    r = run_probe(
        "alloc",
        str(4 * MIB),
        "alloc",
        "1",
        env={
            "CUDA_DEVICE_MEMORY_LIMIT": "4m",
            "GPU_CORE_UTILIZATION_POLICY": "sometimes",
            "CUDA_TASK_PRIORITY": "high",
            "LIBCUDA_LOG_LEVEL": "verbose",
        },
    )
    assert r.codes("alloc") == [0, OOM]
    for msg in (
        "GPU_CORE_UTILIZATION_POLICY='sometimes'",
        "CUDA_TASK_PRIORITY='high'",
        "LIBCUDA_LOG_LEVEL='verbose'",
    ):
        assert msg in r.stderr


def test_a_garbage_sm_limit_fails_closed(run_probe: Runner) -> None:
    r = run_probe("alloc", "1", env={"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_SM_LIMIT": "50m"})
    assert r.codes("alloc") == [OOM]  # an SM limit that does not parse is not "no limit"
    assert "CUDA_DEVICE_SM_LIMIT='50m' is not a percentage" in r.stderr


def test_null_arguments_get_the_drivers_error(run_probe: Runner) -> None:
    r = run_probe("infonull", "allocnull", "info", env={"CUDA_DEVICE_MEMORY_LIMIT": "4m"})
    assert r.rc == 0
    assert r.codes("infonull") == [1] and r.codes("allocnull") == [1]


def _still_enforced(r) -> None:  # type: ignore[no-untyped-def]
    assert r.rc == 0
    assert r.codes("alloc") == [0, OOM]
    assert "limits are enforced per process only" in r.stderr


def test_missing_cache_directory_enforces_per_process(run_probe: Runner, tmp_path: Path) -> None:
    r = run_probe(
        "alloc",
        str(4 * MIB),
        "alloc",
        "1",
        env={
            "CUDA_DEVICE_MEMORY_LIMIT": "4m",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "missing" / "x.cache"),
        },
    )
    _still_enforced(r)


def test_unwritable_cache_path_enforces_per_process(run_probe: Runner, tmp_path: Path) -> None:
    target = tmp_path / "adir"
    target.mkdir()  # a directory cannot be opened read-write, even by root
    r = run_probe(
        "alloc",
        str(4 * MIB),
        "alloc",
        "1",
        env={"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(target)},
    )
    _still_enforced(r)


def test_incompatible_region_version_is_refused(run_probe: Runner, tmp_path: Path) -> None:
    cache = tmp_path / "old.cache"
    cache.write_bytes(struct.pack("<QII", MAGIC, 99, 0) + bytes(4 << 20))
    r = run_probe(
        "alloc",
        str(4 * MIB),
        "alloc",
        "1",
        env={"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)},
    )
    _still_enforced(r)
    assert "incompatible layout version" in r.stderr
    assert struct.unpack("<QI", cache.read_bytes()[:12])[1] == 99  # someone else's file is left alone


def test_foreign_file_is_refused(run_probe: Runner, tmp_path: Path) -> None:
    cache = tmp_path / "foreign.cache"
    cache.write_bytes(b"not a region" * 100)
    r = run_probe(
        "alloc",
        str(4 * MIB),
        "alloc",
        "1",
        env={"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache)},
    )
    _still_enforced(r)


def test_limit_mismatch_between_processes_enforces_the_stricter(
    run_probe: Runner,
    node,
    shim,
    probe_bin,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    import subprocess

    from tests.enforcer.conftest import probe_env

    env = probe_env(
        node,
        shim,
        {"CUDA_DEVICE_MEMORY_LIMIT": "4m", "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "region.cache")},
    )
    holder = subprocess.Popen(
        [str(probe_bin), "dlsym", "ready", "hold"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().startswith("init")
        assert holder.stdout.readline().strip() == "ready"
        r = run_probe("alloc", str(4 * MIB), "alloc", "1", env={"CUDA_DEVICE_MEMORY_LIMIT": "1g"})
        assert r.codes("alloc") == [0, OOM]
        assert "differs from" in r.stderr
    finally:
        holder.kill()
        holder.wait()
