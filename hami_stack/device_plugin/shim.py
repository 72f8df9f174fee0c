"""Install the enforcement shim into the host's hook directory (the DaemonSet's postStart step).

``python -m hami_stack.device_plugin.shim /usr/local/vgpu/`` copies ``libvgpu.so`` there and writes
``ld.so.preload`` naming ``<dest>/libvgpu.so``; Allocate mounts both into GPU containers (section 6.1).
The shim comes from ``$HAMI_SHIM_SOURCE`` (the stack image sets it to the library it ships) or, when
unset, from the project's own build (:func:`hami_stack.enforcer.build.ensure_built`).
Files are replaced by rename, so containers that already mapped the old library keep a whole one.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

LIBRARY = "libvgpu.so"
PRELOAD = "ld.so.preload"


def shim_source() -> Path:
    from .. import faults

    chosen = faults.shim_faults()  # set only by the chart (faultInjection.faults): a fault build
    if chosen:
        from ..enforcer.build import ensure_built
        from ..faults.catalogue import shim_defines

        return Path(ensure_built(shim_defines(chosen)))
    env = os.environ.get("HAMI_SHIM_SOURCE")
    if env:
        return Path(env)
    from ..enforcer.build import ensure_built

    return Path(ensure_built())


def _replace(dest: Path, write: object) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    write(tmp)  # type: ignore[operator]
    os.replace(tmp, dest)


def _clear_runtime_directory(path: Path) -> None:
    """Remove an empty directory where a file belongs.

    A container runtime creates a missing mount source as an empty directory (containerd's CRI plugin
    does), so a GPU container admitted before any shim was installed leaves one here; a rename cannot
    replace it, and the node could never install its shim again. Anything else in the way is the
    operator's to look at."""
    if not path.is_dir() or path.is_symlink():
        return
    try:
        path.rmdir()
    except OSError as e:
        raise OSError(f"{path} is a directory that is not empty, not the file to replace: {e}") from e


def install(dest_dir: str | Path, source: Path | None = None) -> Path:
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "containers").mkdir(exist_ok=True)
    src = source or shim_source()
    lib = dest / LIBRARY
    for path in (lib, dest / PRELOAD):
        _clear_runtime_directory(path)
    _replace(lib, lambda tmp: shutil.copyfile(src, tmp))
    lib.chmod(0o755)
    _replace(dest / PRELOAD, lambda tmp: tmp.write_text(f"{lib}\n"))
    return lib


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hami_stack.device_plugin.shim DEST_DIR", file=sys.stderr)
        return 2
    try:
        lib = install(args[0])
    except Exception as e:  # report any build or copy failure as the hook's message
        print(f"installing the shim failed: {e}", file=sys.stderr)
        return 1
    print(f"installed {lib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
