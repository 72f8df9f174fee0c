"""The C layout and the ctypes mirror agree; the build is warning-free and exports only API names."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.hardware import build
from testbed.hardware.state import ctypes_layout


def test_c_layout_matches_ctypes_mirror(lib_dir: Path) -> None:
    out = subprocess.run([str(lib_dir / "emu_layout")], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ctypes_layout()


def test_ensure_built_is_cached_and_complete(lib_dir: Path) -> None:
    assert build.ensure_built() == lib_dir
    for name in ("libnvidia-ml.so.1", "libcuda.so.1", "libnvidia-ml.so", "libcuda.so", "emu_layout"):
        assert (lib_dir / name).exists(), name
    assert (lib_dir / ".source-hash").read_text() == build.source_hash()


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) not installed")
def test_sonames(lib_dir: Path) -> None:
    for name in ("libnvidia-ml.so.1", "libcuda.so.1"):
        dyn = subprocess.run(
            ["readelf", "-d", str(lib_dir / name)], capture_output=True, text=True, check=True
        )
        assert f"Library soname: [{name}]" in dyn.stdout


def test_build_has_no_warnings(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["make", "-s", "-B", "-C", str(build.HERE), f"OUT={tmp_path}", "CFLAGS=-O2 -Werror"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr


def test_internal_helpers_are_not_exported(lib_dir: Path) -> None:
    for name in ("libnvidia-ml.so.1", "libcuda.so.1"):
        lib = ctypes.CDLL(str(lib_dir / name))
        assert not hasattr(lib, "hami_emu_load")
        assert not hasattr(lib, "hami_emu_lock")
    nvml = ctypes.CDLL(str(lib_dir / "libnvidia-ml.so.1"))
    for sym in (
        "nvmlInit_v2",
        "nvmlInitWithFlags",
        "nvmlDeviceGetCount_v2",
        "nvmlDeviceGetHandleByIndex_v2",
        "nvmlDeviceGetPciInfo_v3",
        "nvmlDeviceGetMemoryInfo_v2",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlEventSetWait_v2",
        "nvmlSystemGetCudaDriverVersion_v2",
        "nvmlDeviceGetHandleByPciBusId_v2",
    ):
        assert hasattr(nvml, sym), sym
    cuda = ctypes.CDLL(str(lib_dir / "libcuda.so.1"))
    for sym in (
        "cuInit",
        "cuMemAlloc_v2",
        "cuMemFree_v2",
        "cuMemGetInfo_v2",
        "cuCtxCreate_v2",
        "cuCtxCreate_v4",
        "cuGetProcAddress",
        "cuGetProcAddress_v2",
        "cuDeviceTotalMem_v2",
        "cuMemAllocPitch_v2",
        "cuDeviceGetUuid_v2",
        "cuLaunchKernel",
        "cuMemCreate",
        "cuMemMap",
    ):
        assert hasattr(cuda, sym), sym


def test_library_env_shapes(tmp_path: Path, lib_dir: Path) -> None:
    env = build.library_env(
        tmp_path, ["GPU-a", 1], base={"LD_LIBRARY_PATH": "/opt/x", "CUDA_VISIBLE_DEVICES": "0"}
    )
    assert env["LD_LIBRARY_PATH"] == f"{lib_dir}:/opt/x"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-a,1"
    assert env["HAMI_EMU_GPU_STATE_DIR"] == str(tmp_path.resolve())
    assert "CUDA_VISIBLE_DEVICES" not in env
    unset = build.library_env(tmp_path, None, base={"NVIDIA_VISIBLE_DEVICES": "all"}, host_view=True)
    assert "NVIDIA_VISIBLE_DEVICES" not in unset and unset["HAMI_EMU_GPU_ALL"] == "1"
    void = build.library_env(tmp_path, "void", base={})
    # like the container toolkit: no driver libraries are injected at all
    assert void == {"NVIDIA_VISIBLE_DEVICES": "void"}
