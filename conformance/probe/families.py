"""The probe's view of a data-driven family's devices (Hygon DCU, Cambricon MLU, ...).

The container runtime of a family node exposes the node's driver files as ``$HAMI_FAMILY_HARDWARE_DIR``
(``<dir>/<vendor>/devices.json``: a JSON list of ``{uuid, index, model, memory_mib, ...}``) to a
container that names devices in the vendor's visibility variable. What the container may use is the
devices that variable lists (by UUID or index), as the vendor's runtime would show them; the probe
reports those, and the vendor's per-container limit files it finds (the DCU vdev config). Which
variable names which vendor's devices the runtime says in ``$HAMI_FAMILY_VISIBLE_ENVS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_ENV = "HAMI_FAMILY_HARDWARE_DIR"
VISIBLE_LIST_ENV = "HAMI_FAMILY_VISIBLE_ENVS"  # "<vendor>=<variable>,...": which variable is whose
VDEV_FILE = Path("/etc/vdev/docker/vdev0.conf")  # Hygon's per-container limits


def _visible(devices: list[dict[str, Any]], value: str) -> list[dict[str, Any]]:
    if value.strip() == "all":
        return devices
    out: list[dict[str, Any]] = []
    for key in (k.strip() for k in value.split(",") if k.strip()):
        for d in devices:
            if key in (str(d.get("uuid")), str(d.get("index"))) and d not in out:
                out.append(d)
    return out


def view(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``{vendor: {"env": name, "value": ..., "devices": [...]}}`` for each vendor the container names
    devices of; ``{"error": ...}`` in place of a vendor whose files cannot be read."""
    env = os.environ if environ is None else environ
    root = env.get(STATE_ENV, "")
    out: dict[str, Any] = {}
    pairs = [p.split("=", 1) for p in env.get(VISIBLE_LIST_ENV, "").split(",") if "=" in p]
    for vendor, name in pairs:
        value = env.get(name, "")
        if not value.strip():
            continue
        path = Path(root) / vendor / "devices.json"
        try:
            devices = json.loads(path.read_text()) if root else []
        except (OSError, ValueError) as e:
            out[vendor] = {"env": name, "value": value, "error": f"{path}: {e}"}
            continue
        keep = ("uuid", "index", "model", "memory_mib", "compute_units", "healthy")
        shown = [{k: d.get(k) for k in keep} for d in _visible(devices, value) if isinstance(d, dict)]
        out[vendor] = {"env": name, "value": value, "devices": shown}
    if out.get("hygon") is not None and VDEV_FILE.is_file():
        try:
            out["hygon"]["vdev"] = VDEV_FILE.read_text().splitlines()
        except OSError as e:
            out["hygon"]["vdev"] = [f"error: {e}"]
    return out
