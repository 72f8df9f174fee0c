"""Build the enforcement shim (libvgpu.so) on first use.

The build lands in ``$HAMI_ENFORCER_BUILD_DIR`` or ``<repo>/.cache/enforcer/<source hash>/``; a changed
source gives a new hash and so a fresh build, and concurrent callers (pytest-xdist workers, node agents)
serialise on a lock file instead of racing the compiler. Warnings are errors: the shim is loaded into
every process of a container, so the build must stay clean.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
INCLUDE = HERE / "include"
REPO = HERE.parent.parent
LIBRARY = "libvgpu.so"
LAYOUT = "vgpu_layout"
CFLAGS = ("-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror")
_BUILT: dict[str, Path] = {}


class BuildError(RuntimeError):
    pass


def sources() -> list[Path]:
    return sorted(p for p in SRC.glob("*.c") if p.name != "layout.c")


def source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([*SRC.glob("*.[ch]"), *INCLUDE.glob("*.h"), Path(__file__)]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    override = os.environ.get("HAMI_ENFORCER_BUILD_DIR")
    if override:
        return Path(override)
    root = REPO / ".cache" if os.access(REPO, os.W_OK) else Path.home() / ".cache" / "hami-conformance"
    return root / "enforcer" / source_hash()


def _complete(out: Path, digest: str) -> bool:
    stamp = out / ".source-hash"
    built = (out / LIBRARY).exists() and (out / LAYOUT).exists()
    return built and stamp.exists() and stamp.read_text() == digest


def _compile(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or proc.stderr.strip():
        # any diagnostic at all fails the build: the shim must compile warning-free
        raise BuildError(f"{' '.join(args)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")


def compile_shim(out: Path, cc: str | None = None) -> Path:
    """Compile libvgpu.so and the layout dumper into ``out`` unconditionally."""
    cc = cc or os.environ.get("CC", "gcc")
    out.mkdir(parents=True, exist_ok=True)
    lib_tmp = out / f"{LIBRARY}.tmp"
    _compile([
        cc, *CFLAGS, "-fPIC", "-shared", "-fvisibility=hidden", f"-I{INCLUDE}",
        "-Wl,-soname,libvgpu.so", "-o", str(lib_tmp), *map(str, sources()), "-ldl", "-lpthread",
    ])
    lib_tmp.replace(out / LIBRARY)
    _compile([cc, *CFLAGS, f"-I{INCLUDE}", "-o", str(out / LAYOUT), str(SRC / "layout.c")])
    return out / LIBRARY


def ensure_built() -> Path:
    """Path of libvgpu.so, built from the current sources (the layout dumper sits next to it)."""
    digest = source_hash()
    cached = _BUILT.get(digest)
    if cached is not None:
        return cached
    out = build_dir()
    if not _complete(out, digest):
        if shutil.which(os.environ.get("CC", "gcc")) is None:
            raise BuildError("building libvgpu.so needs gcc (or $CC)")
        out.mkdir(parents=True, exist_ok=True)
        with open(out / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not _complete(out, digest):
                compile_shim(out)
                (out / ".source-hash").write_text(digest)
    lib = out / LIBRARY
    _BUILT[digest] = lib
    return lib


def layout_program() -> Path:
    return ensure_built().parent / LAYOUT


if __name__ == "__main__":
    print(ensure_built())
