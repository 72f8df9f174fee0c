"""Build the enforcement shim (libvgpu.so) on first use.

The build lands in ``$HAMI_ENFORCER_BUILD_DIR`` or ``<repo>/.cache/enforcer/<source hash>/``; a changed
source gives a new hash and so a fresh build, and concurrent callers (pytest-xdist workers, node agents)
serialise on a lock file instead of racing the compiler. Warnings are errors: the shim is loaded into
every process of a container, so the build must stay clean.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import nativebuild
from nativebuild import BuildError

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
INCLUDE = HERE / "include"
LIBRARY = "libvgpu.so"
LAYOUT = "vgpu_layout"
CFLAGS = ("-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror")


def sources() -> list[Path]:
    return sorted(p for p in SRC.glob("*.c") if p.name != "layout.c")


def inputs() -> list[Path]:
    return [*SRC.glob("*.[ch]"), *INCLUDE.glob("*.h"), Path(__file__)]


def source_hash() -> str:
    return nativebuild.source_hash(inputs())


def _compile(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or proc.stderr.strip():
        # any diagnostic at all fails the build: the shim must compile warning-free
        raise BuildError(f"{' '.join(args)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")


def compile_shim(out: Path, cc: str | None = None, defines: Sequence[str] = ()) -> Path:
    """Compile libvgpu.so and the layout dumper into ``out`` unconditionally.

    ``defines`` (``VGPU_FAULT_*``) make a deliberate fault build; the default build has none, so its
    library contains no fault code at all.
    """
    cc = cc or os.environ.get("CC", "gcc")
    out.mkdir(parents=True, exist_ok=True)
    lib_tmp = out / f"{LIBRARY}.tmp"
    _compile([
        cc, *CFLAGS, *(f"-D{d}" for d in defines), "-fPIC", "-shared", "-fvisibility=hidden", f"-I{INCLUDE}",
        "-Wl,-soname,libvgpu.so", "-o", str(lib_tmp), *map(str, sources()), "-ldl", "-lpthread",
    ])
    lib_tmp.replace(out / LIBRARY)
    _compile([cc, *CFLAGS, f"-I{INCLUDE}", "-o", str(out / LAYOUT), str(SRC / "layout.c")])
    return out / LIBRARY


def ensure_built(fault_defines: Sequence[str] = ()) -> Path:
    """Path of libvgpu.so, built from the current sources (the layout dumper sits next to it).

    With ``fault_defines`` (``VGPU_FAULT_*``, from :func:`hami_stack.faults.catalogue.shim_defines`):
    a separate fault build in its own directory, never the default one.
    """
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        raise BuildError("building libvgpu.so needs gcc (or $CC)")
    if fault_defines:
        defines = sorted(set(fault_defines))
        bad = [d for d in defines if not d.startswith("VGPU_FAULT_") or not d.replace("_", "").isalnum()]
        if bad:
            raise BuildError(f"not a shim fault define: {', '.join(bad)}")
        name = "enforcer-fault-" + "-".join(d.removeprefix("VGPU_FAULT_").lower() for d in defines)
        out = nativebuild.cached_build(name, inputs(), (LIBRARY, LAYOUT),
                                       functools.partial(compile_shim, defines=defines),
                                       env_override="HAMI_ENFORCER_FAULT_BUILD_DIR")
        return out / LIBRARY
    out = nativebuild.cached_build("enforcer", inputs(), (LIBRARY, LAYOUT), compile_shim,
                                   env_override="HAMI_ENFORCER_BUILD_DIR")
    return out / LIBRARY


def layout_program() -> Path:
    return ensure_built().parent / LAYOUT


if __name__ == "__main__":
    print(ensure_built())
