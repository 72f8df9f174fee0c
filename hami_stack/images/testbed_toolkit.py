"""Testbed only: what the NVIDIA container toolkit does for a GPU container, before exec'ing Python.

Run as ``python testbed_toolkit.py -m <module> [args]`` (the catalog's ``HAMI_PYTHON``). When the
container asks for GPUs (``NVIDIA_VISIBLE_DEVICES`` other than ``void``/``none``) and nothing injected
the driver yet, it finds this node's emulated GPU state (``<node root>/hardware/nvidia``) and re-execs the
interpreter with :func:`testbed.hardware.library_env`, so ``pynvml`` loads the emulated
``libnvidia-ml.so.1`` exactly as it would load the real one. Otherwise it just execs.

The node root is found from the container's hostPath mounts: a hostPath ``/x/y`` mounted at ``/x/y`` is
``<node root>/x/y`` on the host (``TESTBED_MOUNT_<i>`` without mount namespaces; ``/proc/self/mountinfo``
with them). This belongs in the node agent; it lives here until the agent injects driver libraries itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

STATE = Path("hardware") / "nvidia"


def _unescape(text: str) -> str:
    return text.encode().decode("unicode_escape") if "\\" in text else text


def _mounts() -> list[tuple[str, str]]:
    """(container path, host path) of this container's bind mounts."""
    out = []
    for key, value in os.environ.items():
        if key.startswith("TESTBED_MOUNT_") and "=" in value:
            cpath, host = value.split("=", 1)
            out.append((cpath, host))
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    fs_roots: dict[str, list[tuple[str, str]]] = {}
    binds = []
    for line in lines:
        f = line.split()
        if len(f) < 5:
            continue
        dev, root, point = f[2], _unescape(f[3]), _unescape(f[4])
        fs_roots.setdefault(dev, []).append((root, point))
        binds.append((dev, root, point))
    for dev, root, point in binds:
        for base_root, base_point in fs_roots.get(dev, []):
            if base_root == "/" and point != base_point:
                out.append((point, os.path.normpath(base_point.rstrip("/") + "/" + root.lstrip("/"))))
    return out


def node_root() -> Path | None:
    for cpath, host in _mounts():
        cpath, host = cpath.rstrip("/"), host.rstrip("/")
        if cpath and cpath != "/" and host.endswith(cpath) and host != cpath:
            root = Path(host[: -len(cpath)] or "/")
            if (root / STATE / "gpus.conf").exists():
                return root
    return None


def main() -> None:
    env = dict(os.environ)
    visible = env.get("NVIDIA_VISIBLE_DEVICES", "")
    if visible and visible not in ("void", "none") and "HAMI_EMU_GPU_STATE_DIR" not in env:
        root = node_root()
        if root is not None:
            sys.path.insert(0, env.get("PYTHONPATH", "") or str(Path(__file__).resolve().parents[2]))
            from testbed.hardware import library_env

            env = library_env(root / STATE, visible, base=env)
    os.execve(sys.executable, [sys.executable, *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
