"""Build the emulated driver libraries on first use and hand out the environment that loads them.

The build lands in ``$HAMI_HW_BUILD_DIR`` or ``<repo>/.cache/hardware/<source hash>/``; a changed source
file gives a new hash and so a fresh build, and concurrent callers (pytest-xdist workers, node agents)
serialise on a lock file instead of racing the compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import nativebuild
from nativebuild import BuildError

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
REPO = HERE.parent.parent
# the device families' emulated management libraries: src/famlib_<name>.c (+ its .h) -> lib<name>.so
FAMILY_LIBRARIES = tuple(sorted(f"lib{p.stem.removeprefix('famlib_')}.so" for p in SRC.glob("famlib_*.c")))
LIBRARIES = (
    "libnvidia-ml.so.1", "libcuda.so.1", "libdcmi.so", "libruntime.so", "libascendcl.so", *FAMILY_LIBRARIES
)


def inputs() -> list[Path]:
    return [*SRC.glob("*.[ch]"), HERE / "Makefile"]


def source_hash() -> str:
    return nativebuild.source_hash(inputs())


def build_dir() -> Path:
    return nativebuild.build_dir("hardware", source_hash(), "HAMI_HW_BUILD_DIR")


def _make(out: Path) -> None:
    proc = subprocess.run(["make", "-s", "-B", "-C", str(HERE), f"OUT={out}"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise BuildError(f"make failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def ensure_built() -> Path:
    """Directory holding libnvidia-ml.so.1, libcuda.so.1 (plus unversioned links) and emu_layout."""
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "gcc")) is None:
        raise BuildError("building the emulated GPU libraries needs make and gcc")
    return nativebuild.cached_build("hardware", inputs(), LIBRARIES, _make, env_override="HAMI_HW_BUILD_DIR")


def _visible_value(visible: str | int | Sequence[str | int]) -> str:
    if isinstance(visible, str):
        return visible
    if isinstance(visible, int):
        return str(visible)
    return ",".join(str(v) for v in visible)


def library_env(
    state_dir: str | os.PathLike[str],
    visible: str | int | Sequence[str | int] | None = "all",
    *,
    base: Mapping[str, str] | None = None,
    host_view: bool = False,
) -> dict[str, str]:
    """Environment for a process that should see the node's emulated GPUs, the way the NVIDIA
    container toolkit prepares a container: the driver libraries on LD_LIBRARY_PATH, the state
    directory, and NVIDIA_VISIBLE_DEVICES (UUIDs, indexes, "all", "none").

    ``visible=None`` leaves NVIDIA_VISIBLE_DEVICES unset (a container without a device request sees
    no GPU; ``host_view=True`` marks a host process such as the node agent, which sees them all).
    ``visible="void"`` injects no driver libraries at all, as the toolkit does.
    Starts from ``base`` (default: os.environ) and returns a full environment."""
    env = dict(os.environ if base is None else base)
    for key in ("NVIDIA_VISIBLE_DEVICES", "HAMI_EMU_GPU_ALL", "CUDA_VISIBLE_DEVICES"):
        env.pop(key, None)
    value = None if visible is None else _visible_value(visible)
    if value == "void":
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
        return env
    lib_dir = str(ensure_built())
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != lib_dir]
    env["LD_LIBRARY_PATH"] = ":".join([lib_dir, *parts])
    env["HAMI_EMU_GPU_STATE_DIR"] = str(Path(state_dir).resolve())
    if value is not None:
        env["NVIDIA_VISIBLE_DEVICES"] = value
    if host_view:
        env["HAMI_EMU_GPU_ALL"] = "1"
    return env
