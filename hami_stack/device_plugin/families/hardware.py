"""The plugin's view of a node's devices: the driver files the emulated hardware (or a node agent)
writes, ``<dir>/<vendor>/devices.json``, a JSON list of ``{uuid, index, model, memory_mib,
compute_units, bus_id, numa, healthy}`` (``testbed/hardware/families.py`` writes them), and for
Enflame DRS cards ``drs_capacity`` (slices) and ``drs_profiles`` (profile name -> id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

STATE_ENV = "HAMI_FAMILY_HARDWARE_DIR"
DEVICES_FILE = "devices.json"


class HardwareError(Exception):
    """The device file cannot be read as a device list; the message names the file."""


@dataclass(frozen=True)
class Device:
    uuid: str
    index: int
    model: str
    memory_mib: int
    compute_units: int
    bus_id: str = ""
    numa: int = 0
    healthy: bool = True
    drs_capacity: int = 0  # Enflame DRS: the card's slices (0: a card used whole)
    drs_profiles: dict[str, str] = field(default_factory=dict)  # DRS profile name -> id


_FIELDS = {f.name for f in fields(Device)}


def devices(state_dir: Path, vendor: str) -> list[Device]:
    """The node's devices as the plugin sees them: through the vendor's management library where the
    vendor's own plugin uses one (``mgmt/<vendor>.py``), else from the driver's device file."""
    from . import mgmt  # the bindings import this module

    bound = mgmt.binding(vendor)
    if bound is None:
        return read(state_dir, vendor)
    if bound.LIBRARY is None:  # the vendor's plugin reads driver files (sysfs), not a library
        return sorted(bound.devices_from_files(Path(state_dir)), key=lambda d: d.index)
    return sorted(bound.devices(mgmt.open_library(bound.LIBRARY)), key=lambda d: d.index)


def read(state_dir: Path, vendor: str) -> list[Device]:
    """The vendor's devices from the driver's device file (none when the file is absent: no driver, no
    devices)."""
    path = Path(state_dir) / vendor / DEVICES_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, json.JSONDecodeError) as e:
        raise HardwareError(f"{path}: {e}") from e
    if not isinstance(raw, list):
        raise HardwareError(f"{path}: expected a JSON list of devices")
    out = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            raise HardwareError(f"{path}: device {i} is not an object")
        try:
            out.append(Device(**{k: v for k, v in d.items() if k in _FIELDS}))
        except TypeError as e:
            raise HardwareError(f"{path}: device {i}: {e}") from e
    return sorted(out, key=lambda d: d.index)
