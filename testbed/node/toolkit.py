"""What the NVIDIA container toolkit does for a GPU container, done by the node agent before exec.

The real toolkit (nvidia-container-runtime-hook) looks at the container's final environment: when
``NVIDIA_VISIBLE_DEVICES`` is set and is not ``void``, it injects the host's driver libraries (and,
for ``none``, libraries without any GPU). Here the "driver" is the node's emulated hardware
(``<node root>/hardware/nvidia``): the container's environment gets the emulated libraries on
``LD_LIBRARY_PATH`` and the state directory in ``HAMI_EMU_GPU_STATE_DIR``
(:func:`testbed.hardware.library_env`); ``NVIDIA_VISIBLE_DEVICES`` and everything else stay as the pod
spec and the device plugins set them. A node without emulated NVIDIA hardware injects nothing, as a
node without the toolkit would.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .container import StartError

VISIBLE = "NVIDIA_VISIBLE_DEVICES"
INJECTED = ("LD_LIBRARY_PATH", "HAMI_EMU_GPU_STATE_DIR")


def nvidia_state_dir(node_root: Path) -> Path | None:
    """The node's emulated NVIDIA state directory, when the node has emulated NVIDIA GPUs."""
    path = node_root / "hardware" / "nvidia"
    return path if (path / "gpus.conf").is_file() else None


def wants_gpus(env: Mapping[str, str]) -> bool:
    visible = env.get(VISIBLE, "").strip()
    return bool(visible) and visible != "void"


def inject(env: Mapping[str, str], state_dir: Path | None) -> dict[str, str]:
    """``env`` plus the emulated driver libraries when the container asks for GPUs on a GPU node.

    Raises :class:`StartError` when the libraries cannot be built (the real hook fails the container
    the same way when it cannot find the driver)."""
    out = dict(env)
    if state_dir is None or not wants_gpus(env):
        return out
    from testbed.hardware import library_env
    from testbed.hardware.build import BuildError

    try:
        lib = library_env(state_dir, env[VISIBLE], base={"LD_LIBRARY_PATH": env.get("LD_LIBRARY_PATH", "")})
    except (BuildError, OSError) as e:
        raise StartError(f"nvidia-container-cli: initialization error: load library failed: {e}") from e
    for key in INJECTED:
        out[key] = lib[key]
    return out
