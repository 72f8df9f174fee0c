"""The shim's own CUDA/NVML declarations agree with the emulated driver's (and the real cuda.h where
installed), and the shim builds warning-free."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hami_stack.enforcer.build import INCLUDE, compile_shim

REPO = Path(__file__).resolve().parents[2]
EMU = REPO / "testbed" / "hardware" / "src"
# types the emulated header does not declare; everything else must come from the other header
EXTRA_TYPES = """
typedef struct CUmemPoolHandle_st *CUmemoryPool;
typedef struct CUgraphExec_st *CUgraphExec;
typedef struct CUlaunchAttribute_st CUlaunchAttribute;
typedef struct CUlaunchConfig_st { unsigned int gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ,
    sharedMemBytes; CUstream hStream; CUlaunchAttribute *attrs; unsigned int numAttrs; } CUlaunchConfig;
"""


def _compile(tmp_path: Path, src: str, *flags: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "check.c"
    f.write_text(src)
    return subprocess.run(
        [
            "gcc",
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            *flags,
            f"-I{INCLUDE}",
            f"-I{EMU}",
            str(f),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_prototypes_match_the_emulated_driver(tmp_path: Path) -> None:
    src = (
        '#define HAMI_EMU_LEGACY_API\n#include "cuda_emu.h"\n#include "nvml_emu.h"\n'
        + EXTRA_TYPES
        + '#define VGPU_USE_REAL_TYPES\n#define VGPU_LEGACY_API\n'
        + '#include "vgpu_cuda.h"\n#include "vgpu_nvml.h"\n'
    )
    res = _compile(tmp_path, src)
    assert res.returncode == 0, res.stderr


def test_a_drifted_prototype_is_caught(tmp_path: Path) -> None:
    src = '#include "cuda_emu.h"\nCUresult cuMemAlloc_v2(CUdeviceptr *dptr, unsigned int bytesize);\n'
    assert _compile(tmp_path, src).returncode != 0


def test_values_and_layouts_match_the_emulated_driver(tmp_path: Path) -> None:
    probe = """
#include <stdio.h>
#include <stddef.h>
int main(void) {
    printf("%d %d %d %d %zu %zu %zu %zu %zu\\n", CUDA_ERROR_OUT_OF_MEMORY, CUDA_ERROR_INVALID_VALUE,
        CU_MEM_LOCATION_TYPE_DEVICE, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
        sizeof(CUmemAllocationProp),
        offsetof(CUmemAllocationProp, location), sizeof(nvmlMemory_v2_t), sizeof(nvmlProcessInfo_t),
        sizeof(nvmlProcessUtilizationSample_t));
    return 0;
}
"""
    outs = []
    for header in (
        '#include "vgpu_cuda.h"\n#include "vgpu_nvml.h"\n',
        '#include "cuda_emu.h"\n#include "nvml_emu.h"\n',
    ):
        c = tmp_path / "v.c"
        c.write_text(header + probe)
        exe = tmp_path / "v"
        subprocess.run(["gcc", "-std=gnu11", f"-I{INCLUDE}", f"-I{EMU}", "-o", str(exe), str(c)], check=True)
        outs.append(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    assert outs[0] == outs[1]


@pytest.mark.parametrize(
    "cuda_h",
    [p for p in (Path("/usr/local/cuda/include/cuda.h"), Path("/usr/include/cuda.h")) if p.exists()]
    or [None],
)
def test_prototypes_match_the_real_cuda_header_when_installed(tmp_path: Path, cuda_h: Path | None) -> None:
    if cuda_h is None:
        # no toolkit on this machine: the emulated-header check above is the one that runs
        assert not Path("/usr/local/cuda/include/cuda.h").exists()
        return
    # the real header maps legacy names onto _v2 with macros, so only the current ABI is redeclared
    src = f'#include "{cuda_h}"\n#define VGPU_USE_REAL_TYPES\n#include "vgpu_cuda.h"\n'
    res = _compile(tmp_path, src)
    assert res.returncode == 0, res.stderr


def test_shim_builds_warning_free(tmp_path: Path) -> None:
    lib = compile_shim(tmp_path / "out")  # raises on any compiler diagnostic
    syms = subprocess.run(
        ["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True
    ).stdout.split()
    for name in (
        "dlsym",
        "cuGetProcAddress_v2",
        "cuMemAlloc_v2",
        "cuLaunchKernel",
        "nvmlDeviceGetMemoryInfo_v2",
    ):
        assert name in syms
    assert not any(s.startswith("vgpu_") for s in syms)  # internals stay hidden
