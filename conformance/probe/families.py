"""The probe's view of a data-driven family's devices (Hygon DCU, Cambricon MLU, ...).

The container runtime of a family node exposes the node's driver files as ``$HAMI_FAMILY_HARDWARE_DIR``
(``<dir>/<vendor>/devices.json``: a JSON list of ``{uuid, index, model, memory_mib, ...}``) to a
container that names devices in the vendor's visibility variable. What the container may use is the
devices that variable lists (by UUID or index), as the vendor's runtime would show them; the probe
reports those, and the vendor's per-container limit files it finds (the DCU vdev config). Which
variable names which vendor's devices the runtime says in ``$HAMI_FAMILY_VISIBLE_ENVS``; where no
runtime says (a real cluster), the vendors' own variables (:data:`VISIBLE_ENVS`) are read, and a
device is what the variable lists (a UUID, or an index when all digits). Each vendor's entry also
carries the per-container limit variables its plugin sets (:data:`LIMIT_ENVS`), as ``limits``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STATE_ENV = "HAMI_FAMILY_HARDWARE_DIR"
VISIBLE_LIST_ENV = "HAMI_FAMILY_VISIBLE_ENVS"  # "<vendor>=<variable>,...": which variable is whose
VDEV_FILE = Path("/etc/vdev/docker/vdev0.conf")  # Hygon's per-container limits

# vendor -> the variable its device plugin names a container's devices in (when no runtime says)
VISIBLE_ENVS: dict[str, str] = {
    "hygon": "DCU_VISIBLE_DEVICES",
    "cambricon": "CAMBRICON_SPLIT_VISIBLE_DEVICES",
    "iluvatar": "ILUVATAR_VISIBLE_DEVICES",
    "mthreads": "MTHREADS_VISIBLE_DEVICES",
    "metax": "METAX_VISIBLE_DEVICES",
    "kunlunxin": "XPU_VISIBLE_DEVICES",
    "enflame": "ENFLAME_VISIBLE_DEVICES",
    "awsneuron": "AWS_NEURON_VISIBLE_DEVICES",
    "amd": "ROCR_VISIBLE_DEVICES",
    "vastai": "VASTAI_VISIBLE_DEVICES",
    "biren": "BIREN_VISIBLE_DEVICES",
}

# vendor -> names (or name prefixes ending in "_") of the per-container limits its plugin sets;
# vendors giving whole devices (Enflame GCU, Vastai, Biren) set none
LIMIT_ENVS: dict[str, tuple[str, ...]] = {
    "cambricon": ("CAMBRICON_SPLIT_MEMS", "CAMBRICON_SPLIT_ENABLE"),
    "iluvatar": ("CUDA_DEVICE_MEMORY_LIMIT_", "CUDA_DEVICE_SM_LIMIT"),
    "mthreads": ("MTHREADS_SGPU_MEMORY_MIB", "MTHREADS_SGPU_CORES"),
    "metax": ("METAX_SGPU_VRAM_MIB", "METAX_SGPU_COMPUTE"),
    "kunlunxin": ("XPU_VMEMORY_MIB",),
    "awsneuron": ("NEURON_RT_VISIBLE_CORES",),
    "amd": ("AMD_GPU_MEMORY_LIMIT_MIB", "AMD_GPU_COMPUTE_UNITS"),
    "enflame": ("ENFLAME_CONTAINER_",),  # DRS instances: sub card, usable processors and memory
}


def _visible(devices: list[dict[str, Any]], value: str) -> list[dict[str, Any]]:
    if value.strip() == "all":
        return devices
    out: list[dict[str, Any]] = []
    for key in (k.strip() for k in value.split(",") if k.strip()):
        for d in devices:
            if key in (str(d.get("uuid")), str(d.get("index"))) and d not in out:
                out.append(d)
    return out


def _listed(value: str) -> list[dict[str, Any]]:
    """Devices as the variable alone names them (no driver files to read): UUIDs or indices."""
    keys = [k.strip() for k in value.split(",") if k.strip()]
    return [{"uuid": None, "index": int(k)} if k.isdigit() else {"uuid": k, "index": None} for k in keys]


def limits(vendor: str, env: Mapping[str, str]) -> dict[str, str]:
    """The vendor's per-container limit variables present in ``env``."""
    names = LIMIT_ENVS.get(vendor, ())
    return {
        k: v
        for k, v in sorted(env.items())
        if any(k.startswith(n) if n.endswith("_") else k == n for n in names)
    }


def view(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``{vendor: {"env": name, "value": ..., "devices": [...]}}`` for each vendor the container names
    devices of; ``{"error": ...}`` in place of a vendor whose files cannot be read."""
    env = os.environ if environ is None else environ
    root = env.get(STATE_ENV, "")
    out: dict[str, Any] = {}
    told = env.get(VISIBLE_LIST_ENV, "")
    # the runtime's word on which variable is whose; without it (a real cluster) the vendors' own
    pairs = [p.split("=", 1) for p in told.split(",") if "=" in p] if told else list(VISIBLE_ENVS.items())
    for vendor, name in pairs:
        value = env.get(name, "")
        if not value.strip():
            continue
        if not root:
            seen = _listed(value)
            out[vendor] = {"env": name, "value": value, "devices": seen, "limits": limits(vendor, env)}
            continue
        path = Path(root) / vendor / "devices.json"
        try:
            devices = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            out[vendor] = {"env": name, "value": value, "error": f"{path}: {e}"}
            continue
        keep = ("uuid", "index", "model", "memory_mib", "compute_units", "healthy")
        shown = [{k: d.get(k) for k in keep} for d in _visible(devices, value) if isinstance(d, dict)]
        out[vendor] = {"env": name, "value": value, "devices": shown, "limits": limits(vendor, env)}
    if out.get("hygon") is not None and VDEV_FILE.is_file():
        try:
            out["hygon"]["vdev"] = VDEV_FILE.read_text().splitlines()
        except OSError as e:
            out["hygon"]["vdev"] = [f"error: {e}"]
    return out
