"""Emulated hardware for the device families driven by data (Hygon DCU first), as files.

Each node's devices of one vendor live in ``<state>/<vendor>/devices.json``: a JSON list of
``{uuid, index, model, memory_mib, compute_units, bus_id, numa, healthy}``, the properties the
generic family plugin (``hami_stack.device_plugin.families``) registers and the scheduler reads.
Health is flipped in place (:func:`set_health`), which is how faults reach the plugin.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_ENV = "HAMI_FAMILY_HARDWARE_DIR"  # the plugin finds <dir>/<vendor>/devices.json here
DEVICES_FILE = "devices.json"


@dataclass(frozen=True)
class Model:
    vendor: str
    name: str
    memory_mib: int
    compute_units: int
    uuid_prefix: str


# the models an inventory may name per vendor (facts from the vendors' data sheets)
MODELS: dict[str, dict[str, Model]] = {
    "hygon": {
        "Z100L": Model("hygon", "Z100L", 32768, 60, "DCU"),
        "Z100": Model("hygon", "Z100", 16384, 60, "DCU"),
        "K100": Model("hygon", "K100", 65536, 120, "DCU"),
    },
    "cambricon": {
        "MLU370-X8": Model("cambricon", "MLU370-X8", 24576, 100, "MLU"),
        "MLU590": Model("cambricon", "MLU590", 49152, 100, "MLU"),
    },
}


@dataclass
class Device:
    uuid: str
    index: int
    model: str
    memory_mib: int
    compute_units: int
    bus_id: str
    numa: int = 0
    healthy: bool = True


def lookup_model(vendor: str, name: str) -> Model:
    models = MODELS.get(vendor)
    if models is None:
        raise ValueError(f"no emulated hardware for vendor {vendor!r} (known: {', '.join(sorted(MODELS))})")
    if name not in models:
        raise ValueError(f"unknown {vendor} model {name!r} (known: {', '.join(sorted(models))})")
    return models[name]


def create_state(
    state_dir: Path, vendor: str, model: str, count: int, *, node_name: str = ""
) -> list[Device]:
    """Write ``count`` devices of ``model`` for one node; UUIDs are unique per node name."""
    m = lookup_model(vendor, model)
    salt = sum(node_name.encode()) % 4096
    devices = [
        Device(
            uuid=f"{m.uuid_prefix}-{salt:03x}{i:02d}" if node_name else f"{m.uuid_prefix}-{i}",
            index=i,
            model=m.name,
            memory_mib=m.memory_mib,
            compute_units=m.compute_units,
            bus_id=f"0000:{0x1A + i:02x}:00.0",
            numa=0 if i < max(1, count // 2) else 1,
        )
        for i in range(count)
    ]
    write(state_dir, vendor, devices)
    return devices


def write(state_dir: Path, vendor: str, devices: list[Device]) -> None:
    path = Path(state_dir) / vendor / DEVICES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(d) for d in devices], indent=1))
    os.replace(tmp, path)  # readers never see half a file


def read(state_dir: Path, vendor: str) -> list[Device]:
    path = Path(state_dir) / vendor / DEVICES_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from e
    return [Device(**d) for d in raw]


def set_health(state_dir: Path, vendor: str, index: int, healthy: bool) -> None:
    devices = read(state_dir, vendor)
    for d in devices:
        if d.index == index:
            d.healthy = healthy
            write(state_dir, vendor, devices)
            return
    raise ValueError(f"{vendor}: no device with index {index} under {state_dir}")
