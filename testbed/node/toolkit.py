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
ASCEND_VISIBLE = "ASCEND_VISIBLE_DEVICES"
ASCEND_STATE = "HAMI_EMU_NPU_STATE_DIR"


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


def ascend_state_dir(node_root: Path) -> Path | None:
    """The node's emulated Ascend state directory, when the node has emulated NPUs."""
    path = node_root / "hardware" / "ascend"
    return path if (path / "npus.conf").is_file() else None


def inject_ascend(env: Mapping[str, str], state_dir: Path | None) -> dict[str, str]:
    """What the Ascend container runtime does for a container with ``ASCEND_VISIBLE_DEVICES``: the
    driver library (our ``libdcmi.so``) on ``LD_LIBRARY_PATH`` and the node's NPU state. ``all`` is the
    host view a privileged device-plugin container with the driver mounted has (the emulated library
    reads it as ``HAMI_EMU_NPU_ALL=1``); ``ASCEND_VNPU_SPECS`` passes through (the library shows the
    vNPU the runtime would create from it)."""
    out = dict(env)
    visible = env.get(ASCEND_VISIBLE, "").strip()
    if state_dir is None or not visible:
        return out
    from testbed.hardware.ascend import npu_library_env
    from testbed.hardware.build import BuildError

    host = visible == "all"
    try:
        lib = npu_library_env(
            state_dir,
            None if host else visible,
            base={"LD_LIBRARY_PATH": env.get("LD_LIBRARY_PATH", "")},
            host_view=host,
            vnpu_spec=env.get("ASCEND_VNPU_SPECS") or None,
        )
    except (BuildError, OSError) as e:
        raise StartError(f"ascend-docker-runtime: cannot load the driver library: {e}") from e
    out.update(lib)
    if host:
        out.pop(ASCEND_VISIBLE, None)
    return out


def family_state_dir(node_root: Path) -> Path | None:
    """The node's emulated family devices (``hardware/families``), when it has any."""
    from testbed.hardware import families

    path = families.node_state_dir(node_root)
    return path if families.vendors_present(path) else None


def inject_families(env: Mapping[str, str], state_dir: Path | None) -> dict[str, str]:
    """What a family's container runtime does for a container naming its devices (the vendor's
    visibility env, :data:`testbed.hardware.families.VISIBLE_ENV`): the node's driver files, here
    ``$HAMI_FAMILY_HARDWARE_DIR`` (the caller mounts it read-only). ``all`` is the device plugin's
    host view; a list of IDs a workload's (``families.visible`` filters by it)."""
    out = dict(env)
    if state_dir is None:
        return out
    from testbed.hardware import families

    named = [
        f"{vendor}={families.VISIBLE_ENV[vendor]}"
        for vendor in families.vendors_present(state_dir)
        if vendor in families.VISIBLE_ENV and env.get(families.VISIBLE_ENV[vendor], "").strip()
    ]
    if named:
        from testbed.hardware.build import ensure_built

        out[families.STATE_ENV] = str(state_dir)
        # the vendors' management libraries (ours, emulated) on the loader path, as each vendor's
        # runtime mounts its driver libraries into the container
        libdir = str(ensure_built())
        prior = env.get("LD_LIBRARY_PATH", "")
        out["LD_LIBRARY_PATH"] = f"{libdir}:{prior}" if prior else libdir
        # which variable names which vendor's devices (read by the probe's family view)
        out[families.VISIBLE_LIST_ENV] = ",".join(named)
    return out
