"""Build the Ascend hami-core limiter (libvnpu.so) on first use.

The build lands in ``$HAMI_VNPU_BUILD_DIR`` or ``<repo>/.cache/enforcer-ascend/<source hash>/``
(:mod:`nativebuild`); warnings are errors, as for the NVIDIA shim: the library is loaded into every
process of a hami-core container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nativebuild
from nativebuild import BuildError

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "vnpu.c"
LIBRARY = "libvnpu.so"
CFLAGS = ("-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror")


def inputs() -> list[Path]:
    return [SOURCE, Path(__file__)]


def compile_limiter(out: Path, cc: str | None = None) -> Path:
    cc = cc or os.environ.get("CC", "gcc")
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{LIBRARY}.tmp"
    args = [cc, *CFLAGS, "-fPIC", "-shared", "-fvisibility=hidden", f"-Wl,-soname,{LIBRARY}",
            "-o", str(tmp), str(SOURCE), "-ldl", "-lpthread"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or proc.stderr.strip():
        raise BuildError(f"{' '.join(args)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    tmp.replace(out / LIBRARY)
    return out / LIBRARY


def ensure_built() -> Path:
    """Path of libvnpu.so built from the current source."""
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        raise BuildError("building libvnpu.so needs gcc (or $CC)")
    out = nativebuild.cached_build("enforcer-ascend", inputs(), (LIBRARY,), compile_limiter,
                                   env_override="HAMI_VNPU_BUILD_DIR")
    return out / LIBRARY


if __name__ == "__main__":
    print(ensure_built())
