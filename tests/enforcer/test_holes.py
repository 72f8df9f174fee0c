"""Regression tests for the enforcement holes of issue 13, one C program each (tests/enforcer/progs/
hole_*.c), run on the emulated driver with the shim preloaded. Each program checks its own
expectations and exits 0 only if all held; the failed ones are printed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from hami_stack.enforcer.build import compile_shim
from testbed.hardware import ensure_built as ensure_emulator
from testbed.hardware.state import DeviceState
from tests.enforcer.conftest import probe_env

PROGS = Path(__file__).resolve().parent / "progs"
MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture(scope="session")
def holes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("holes")
    emu = Path(ensure_emulator())
    script = out / "fake.map"
    script.write_text("CUDA_TEST { global: cuMemAlloc_v2; cuMemFree_v2; cuMemGetInfo_v2; local: *; };\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-Wl,--version-script={script}", "-o",
                    str(out / "libfakecuda.so"), str(PROGS / "fake_versioned_cuda.c")], check=True)
    for src in sorted(PROGS.glob("hole_*.c")):
        exe = out / src.stem
        link = [f"-L{emu}", "-l:libcuda.so.1"] if src.stem == "hole_resolve" else []
        subprocess.run(
            ["gcc", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src), *link,
             "-ldl"],
            check=True,
        )
    return out


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_hole(holes: Path, node: DeviceState, shim: Path, tmp_path: Path) -> Run:
    def run(name: str, env: Mapping[str, str], lib: Path | None = None, cache: str | None = None,
            args: tuple[str, ...] = (), preload: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        extra = {"CUDA_DEVICE_MEMORY_SHARED_CACHE": cache or str(tmp_path / "region.cache"), **env}
        full = probe_env(node, lib or shim, extra)
        if not preload:
            del full["LD_PRELOAD"]
        return subprocess.run([str(holes / name), *args], env=full, capture_output=True, text=True,
                              timeout=timeout, check=False)

    return run


def _passed(r: subprocess.CompletedProcess[str], name: str) -> None:
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"PASSED {name}" in r.stdout


def test_vmm_memory_stays_charged_until_released_and_unmapped(run_hole: Run) -> None:
    _passed(run_hole("hole_vmm", {"CUDA_DEVICE_MEMORY_LIMIT": "64m"}), "vmm")


def test_async_and_pool_allocations_are_charged_to_the_stream_and_pool_device(run_hole: Run) -> None:
    limits = {"CUDA_DEVICE_MEMORY_LIMIT_0": "64m", "CUDA_DEVICE_MEMORY_LIMIT_1": "8m"}
    r = run_hole("hole_async_device", limits)
    _passed(r, "async_device")


def test_a_pool_is_charged_its_reserve(run_hole: Run) -> None:
    _passed(run_hole("hole_pool_reserve", {"CUDA_DEVICE_MEMORY_LIMIT": "16m"}), "pool_reserve")


def test_every_resolution_path_yields_the_wrapper(run_hole: Run, holes: Path) -> None:
    fake = str(holes / "libfakecuda.so")
    r = run_hole("hole_resolve", {"CUDA_DEVICE_MEMORY_LIMIT": "4m"}, args=(fake,))
    _passed(r, "resolve")
    rows = {ln.split()[1]: ln.split()[2] for ln in r.stdout.splitlines() if ln.startswith("row ")}
    for name in ("direct", "dlsym(next)", "dlsym(deepbind)", "dlsym(default)", "dlsym(local)",
                 "dlvsym(versioned,CUDA_TEST)", "dlsym(versioned)", "gpa0(3020,0)", "gpa_v2_2(13000,2)"):
        assert rows.get(name) == "ok", name
    assert len(rows) == int(r.stdout.split("rows ")[1].split()[0]) >= 100
    # the same table without the shim: the rows reach unlimited functions, so the test can fail
    bare = run_hole("hole_resolve", {"CUDA_DEVICE_MEMORY_LIMIT": "4m"}, args=(fake,), preload=False)
    assert bare.returncode != 0 and "direct: 8 MiB under a 4 MiB limit returned 0" in bare.stdout
    assert "dlvsym(versioned,CUDA_TEST): 8 MiB under a 4 MiB limit returned 0" in bare.stdout


def test_tiny_allocations_are_charged_by_the_granule(run_hole: Run) -> None:
    r = run_hole("hole_granularity", {"CUDA_DEVICE_MEMORY_LIMIT": "16m"})
    _passed(r, "granularity")
    assert "allocated 32768" in r.stdout


def test_context_teardown_returns_its_charges(run_hole: Run) -> None:
    _passed(run_hole("hole_ctx_teardown", {"CUDA_DEVICE_MEMORY_LIMIT": "16m"}), "ctx_teardown")


def test_arrays_count_against_the_limit(run_hole: Run) -> None:
    _passed(run_hole("hole_arrays", {"CUDA_DEVICE_MEMORY_LIMIT": "16m"}), "arrays")


# ---- hole 7: the limit grammar, fail closed ----

def _limits(run_hole: Run, env: Mapping[str, str], **kw: object) -> dict[str, int]:
    r = run_hole("hole_limits", env, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("limits "))
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


DENIED = {"total": 0, "free": 0, "totalmem": 0, "alloc": 2, "nvml_total": 0, "nvml_free": 0}


def _denied(seen: dict[str, int]) -> bool:
    return all(seen[k] == v for k, v in DENIED.items())


@pytest.mark.parametrize("env", [
    {"CUDA_DEVICE_MEMORY_LIMIT": "junk"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "1Gi"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "1.5g"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "1024mb"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "-1"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "99999999999999999999g"},
    {"CUDA_DEVICE_MEMORY_LIMIT_0": "lots"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "1024m", "CUDA_DEVICE_MEMORY_LIMIT_0": "garbage"},
    {"CUDA_DEVICE_SM_LIMIT": "abc"},
    {"CUDA_DEVICE_SM_LIMIT": "150"},
    {"CUDA_DEVICE_SM_LIMIT": "50m"},
    {"CUDA_DEVICE_MEMORY_LIMIT": "1024m", "CUDA_DEVICE_SM_LIMIT_0": "-5"},
])
def test_a_bad_value_denies_and_reports_nothing_available(run_hole: Run, env: dict[str, str]) -> None:
    seen = _limits(run_hole, env)
    assert _denied(seen), seen


def test_an_indexed_zero_does_not_lift_the_global_limit(run_hole: Run) -> None:
    seen = _limits(run_hole, {"CUDA_DEVICE_MEMORY_LIMIT": "1024m", "CUDA_DEVICE_MEMORY_LIMIT_0": "0"})
    assert seen["total"] == seen["totalmem"] == seen["nvml_total"] == GIB and seen["alloc"] == 0


@pytest.mark.parametrize("value,total", [("1073741824", GIB), ("1024m", GIB), ("1G", GIB), ("1048576k", GIB),
                                         ("0", 80 * GIB), ("0m", 80 * GIB)])
def test_documented_grammar(run_hole: Run, value: str, total: int) -> None:
    seen = _limits(run_hole, {"CUDA_DEVICE_MEMORY_LIMIT": value})
    assert seen["total"] == seen["totalmem"] == total and seen["alloc"] == 0


@pytest.mark.parametrize("sm", ["0", "100", "30"])
def test_valid_sm_limits_leave_memory_alone(run_hole: Run, sm: str) -> None:
    seen = _limits(run_hole, {"CUDA_DEVICE_MEMORY_LIMIT": "1g", "CUDA_DEVICE_SM_LIMIT": sm})
    assert seen["total"] == GIB and seen["alloc"] == 0


# ---- hole 9: a region of one's own is not a fresh budget ----

@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, Path]:
    """The shim installed the way the device plugin does: a directory holding libvgpu.so, listed in
    a (test-local) ld.so.preload that this build reads instead of /etc/ld.so.preload."""
    plugin = tmp_path / "vgpu"
    plugin.mkdir()
    preload = tmp_path / "ld.so.preload"
    build = tmp_path / "build"
    compile_shim(build, defines=[f'VGPU_PRELOAD_LIST="{preload}"'])
    shutil.copy(build / "libvgpu.so", plugin / "libvgpu.so")
    preload.write_text(f"{plugin / 'libvgpu.so'}\n")
    return plugin, preload


def test_a_cache_outside_the_plugin_directory_is_refused(run_hole: Run, installed: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    plugin, _ = installed
    lib = plugin / "libvgpu.so"
    env = {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}
    own = tmp_path / "mine"
    own.mkdir()
    for cache in (own / "fresh.cache", plugin / "sub" / "x.cache", Path("/tmp/cudevshr.cache"),
                  plugin / ".." / "escape.cache"):
        seen = _limits(run_hole, env, lib=lib, cache=str(cache))
        assert _denied(seen), (cache, seen)
    assert not (own / "fresh.cache").exists()  # the named file is never created
    seen = _limits(run_hole, env, lib=lib, cache=str(plugin / "pod.cache"))
    assert seen["total"] == GIB and seen["alloc"] == 0
    assert (plugin / "pod.cache").exists()


def test_without_the_system_wide_install_the_variable_is_honoured(run_hole: Run, installed: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    plugin, preload = installed
    preload.write_text("/nonexistent/libvgpu.so\n")
    seen = _limits(run_hole, {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}, lib=plugin / "libvgpu.so",
                   cache=str(tmp_path / "any.cache"))
    assert seen["total"] == GIB and seen["alloc"] == 0


def test_a_second_region_beside_a_live_one_is_refused(run_hole: Run, installed: tuple[Path, Path],
                                                     probe_bin: Path, node: DeviceState) -> None:
    plugin, _ = installed
    lib = plugin / "libvgpu.so"
    env = probe_env(node, lib, {"CUDA_DEVICE_MEMORY_LIMIT": "1g",
                                "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(plugin / "pod.cache")})
    holder = subprocess.Popen([str(probe_bin), "dlsym", "ready", "hold"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().startswith("init")
        assert holder.stdout.readline().strip() == "ready"
        # the container's region has a live process: a second file in the same directory is refused
        limit = {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}
        seen = _limits(run_hole, limit, lib=lib, cache=str(plugin / "mine.cache"))
        assert _denied(seen), seen
        assert not (plugin / "mine.cache").exists()
        # the container's own region is joined as usual
        seen = _limits(run_hole, {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}, lib=lib, cache=str(plugin / "pod.cache"))
        assert seen["total"] == GIB and seen["alloc"] == 0
    finally:
        holder.kill()
        holder.wait()
    # nobody lives in the old region any more: a new one holds no budget of anyone else's
    seen = _limits(run_hole, {"CUDA_DEVICE_MEMORY_LIMIT": "1g"}, lib=lib, cache=str(plugin / "next.cache"))
    assert seen["total"] == GIB and seen["alloc"] == 0
