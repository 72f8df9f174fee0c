"""A stand-in shim installed the way the DaemonSet's postStart hook installs the real one: Allocate
answers only once the files it mounts are in the hook directory."""

from __future__ import annotations

from pathlib import Path

from hami_stack.device_plugin import shim


def install_stand_in_shim(hook_path: Path) -> Path:
    """``<hook_path>/vgpu/libvgpu.so`` (not a loadable library) and its ``ld.so.preload``."""
    source = hook_path / "stand-in-libvgpu.so"
    hook_path.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"\x7fELF-stand-in")
    return shim.install(hook_path / "vgpu", source)
