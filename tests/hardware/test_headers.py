"""Our CUDA declarations against the real cuda.h, where one is installed.

Signatures: a file includes the real header and then ours (types skipped), so any mismatching
prototype is a "conflicting types" error under -Werror. Values and sizes: the same list of enum
constants and struct sizes is printed by one program built on our header and one built on the real
header, and both outputs must agree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.hardware.build import SRC

# HAMI_CUDA_INCLUDE: another directory holding the real cuda.h (e.g. an unpacked nvidia-cuda-runtime wheel)
CUDA_INCLUDE = Path(os.environ.get("HAMI_CUDA_INCLUDE", "/usr/local/cuda/include"))
MAIN = "int main(void){return 0;}\n"
NVML_HEADERS = [CUDA_INCLUDE / "nvml.h", Path("/usr/include/nvml.h")]

needs_cuda_h = pytest.mark.skipif(
    not (CUDA_INCLUDE / "cuda.h").exists(), reason=f"no {CUDA_INCLUDE}/cuda.h"
)
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


def _compile(tmp: Path, name: str, source: str, *flags: str) -> subprocess.CompletedProcess[str]:
    src = tmp / f"{name}.c"
    src.write_text(source)
    return subprocess.run(
        [
            "gcc",
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            *flags,
            f"-I{SRC}",
            f"-I{CUDA_INCLUDE}",
            "-o",
            str(tmp / name),
            str(src),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@needs_cuda_h
@needs_gcc
def test_prototypes_match_real_cuda_h(tmp_path: Path) -> None:
    current = '#include <cuda.h>\n#define HAMI_EMU_USE_REAL_TYPES\n#include "cuda_emu.h"\n' + MAIN
    proc = _compile(tmp_path, "current", current)
    assert proc.returncode == 0, proc.stderr
    # the legacy (unversioned) entry points are declared by the real header only in its internal mode
    legacy = (
        "#define __CUDA_API_VERSION_INTERNAL 1\n#include <cuda.h>\n#define HAMI_EMU_USE_REAL_TYPES\n"
        '#define HAMI_EMU_LEGACY_API\n#include "cuda_emu.h"\nint main(void){return 0;}\n'
    )
    proc = _compile(tmp_path, "legacy", legacy)
    assert proc.returncode == 0, proc.stderr


def _constants_and_types() -> tuple[list[str], list[str]]:
    text = (SRC / "cuda_emu.h").read_text()
    names = re.findall(r"^\s+((?:CUDA_|CU_)[A-Z0-9_]+)\s*=", text, flags=re.M)
    types = [
        "CUuuid",
        "CUmemLocation",
        "CUmemAllocationProp",
        "CUmemAccessDesc",
        "CUctxCreateParams",
        "CUdeviceptr",
        "CUdevice",
        "CUmemGenericAllocationHandle",
        "cuuint64_t",
        "CUDA_ARRAY_DESCRIPTOR",
        "CUDA_ARRAY3D_DESCRIPTOR",
        "CUmemPoolProps",
    ]
    return names, types


@needs_cuda_h
@needs_gcc
def test_values_and_sizes_match_real_cuda_h(tmp_path: Path) -> None:
    names, types = _constants_and_types()
    assert len(names) > 60
    body = "".join(f'printf("{n}=%lld\\n", (long long){n});\n' for n in names)
    body += "".join(f'printf("sizeof({t})=%zu\\n", sizeof({t}));\n' for t in types)
    prog = "int main(void){\n" + body + "return 0;}\n"
    ours = _compile(tmp_path, "ours", '#include <stdio.h>\n#include "cuda_emu.h"\n' + prog)
    real = _compile(tmp_path, "real", "#include <stdio.h>\n#include <cuda.h>\n" + prog)
    assert ours.returncode == 0, ours.stderr
    assert real.returncode == 0, real.stderr
    out_ours = subprocess.run([str(tmp_path / "ours")], capture_output=True, text=True, check=True).stdout
    out_real = subprocess.run([str(tmp_path / "real")], capture_output=True, text=True, check=True).stdout
    assert out_ours == out_real


@pytest.mark.skipif(
    not any(p.exists() for p in NVML_HEADERS), reason="no nvml.h installed (not in the CUDA toolkit)"
)
@needs_gcc
def test_prototypes_match_real_nvml_h(tmp_path: Path) -> None:
    header = next(p for p in NVML_HEADERS if p.exists())
    src = (
        f'#include "{header}"\n#define HAMI_EMU_USE_REAL_TYPES\n#include "nvml_emu.h"\n'
        "int main(void){return 0;}\n"
    )
    proc = _compile(tmp_path, "nvml", src)
    assert proc.returncode == 0, proc.stderr
