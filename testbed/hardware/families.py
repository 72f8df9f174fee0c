"""Emulated hardware for the device families driven by data (Hygon DCU first), as files.

Each node's devices of one vendor live in ``<state>/<vendor>/devices.json``: a JSON list of
``{uuid, index, model, memory_mib, compute_units, bus_id, numa, healthy}``, the properties the
generic family plugin (``hami_stack.device_plugin.families``) registers and the scheduler reads.
Health is flipped in place (:func:`set_health`), which is how faults reach the plugin.

Adding a family here (the data seams; append, keep the shapes):

* :data:`MODELS`: ``vendor -> {model name -> Model}``. The vendor is at once an inventory hardware
  kind (``hardware.<vendor>: {model, count}``, ``testbed/node/inventory.py``), and node agents of
  executed nodes write ``<node root>/hardware/families/<vendor>/devices.json`` for it;
* :data:`VISIBLE_ENV`: ``vendor -> the env variable naming the devices a container gets`` (what that
  vendor's Allocate sets). The node agent's container runtime (``testbed/node/toolkit.py``) gives a
  container whose env sets it ``$HAMI_FAMILY_HARDWARE_DIR`` (the node's ``hardware/families``,
  mounted read-only) - the driver files as the vendor's runtime would expose them. ``all`` is the
  host view a device-plugin DaemonSet asks for; anything else is a workload's list of device IDs
  (the probe shows only those: :func:`visible`; ``$HAMI_FAMILY_VISIBLE_ENVS`` tells it which
  variable is whose).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_ENV = "HAMI_FAMILY_HARDWARE_DIR"  # the plugin finds <dir>/<vendor>/devices.json here
VISIBLE_LIST_ENV = "HAMI_FAMILY_VISIBLE_ENVS"  # "<vendor>=<its visibility variable>,..." the runtime set
DEVICES_FILE = "devices.json"
# the same devices for the emulated vendor management libraries (src/family_common.c): a magic line,
# then one tab-separated line per device (see :func:`render_conf`)
CONF_FILE = "devices.conf"
CONF_MAGIC = "hami-family-devices 1"
NODE_SUBDIR = "hardware/families"  # under a node agent's root
MAX_DEVICES = 16  # per node and vendor


@dataclass(frozen=True)
class Model:
    vendor: str
    name: str
    memory_mib: int
    compute_units: int
    uuid_prefix: str
    # Enflame DRS: the slices a card is cut into and the profiles ("<slices>g.<GB>gb" -> id) its
    # driver offers; 0 / () for cards used whole
    drs_slices: int = 0
    drs_profiles: tuple[tuple[str, str], ...] = ()
    drs_half: bool = False  # only the second half of a node's cards are DRS cards (a mixed node)


# what Enflame's DRS documentation shows for a 48 GB S60: six slices, three instance sizes
S60_DRS_PROFILES = (("1g.6gb", "0"), ("3g.20gb", "1"), ("6g.40gb", "2"))

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
    "iluvatar": {  # the model is the chip's common word (the register type the scheduler matches)
        "BI-V150": Model("iluvatar", "BI-V150", 65536, 100, "ILU"),
        "BI-V100": Model("iluvatar", "BI-V100", 32768, 100, "ILU"),
        "MR-V100": Model("iluvatar", "MR-V100", 32768, 100, "ILU"),
    },
    "mthreads": {  # 16 sGPU cores and 96 memory units of 512 MiB (S4000) per card, as HAMi assumes
        "MTT-S4000": Model("mthreads", "MTT-S4000", 49152, 16, "MT"),
    },
    "metax": {  # the C500's 64 GiB is what HAMi assumes for every whole MetaX card
        "C500": Model("metax", "C500", 65536, 100, "MX"),
    },
    "kunlunxin": {  # 96 GiB, the whole card HAMi's vXPU partitions (24576/49152/98304 MiB) divide
        "P800": Model("kunlunxin", "P800", 98304, 100, "XPU"),
    },
    "vastai": {
        "VA1": Model("vastai", "VA1", 16384, 100, "VA"),
    },
    "biren": {
        "BR104": Model("biren", "BR104", 32768, 100, "BR"),
    },
    "enflame": {  # S60: whole GCUs (HAMi counts them in percent); S60-DRS: cut into DRS slices
        "S60": Model("enflame", "S60", 49152, 100, "GCU"),
        "S60-DRS": Model("enflame", "S60-DRS", 49152, 24, "GCU", 6, S60_DRS_PROFILES),
        # a node whose admin cut half of its S60s into DRS slices: both Enflame families on one node
        "S60-MIXED": Model("enflame", "S60-MIXED", 49152, 24, "GCU", 6, S60_DRS_PROFILES, drs_half=True),
    },
    "awsneuron": {  # compute units = NeuronCores per device
        "Trainium": Model("awsneuron", "Trainium", 32768, 2, "NEURON"),
    },
    "amd": {  # compute units are what HAMi's AMD cores percentage is taken of
        "MI300X": Model("amd", "MI300X", 196608, 304, "AMD"),
    },
}


# vendor -> the env variable of a container's devices (set by that family's Allocate; ``all``: every one)
VISIBLE_ENV: dict[str, str] = {
    "hygon": "DCU_VISIBLE_DEVICES",
    "cambricon": "CAMBRICON_SPLIT_VISIBLE_DEVICES",
    "iluvatar": "ILUVATAR_VISIBLE_DEVICES",
    "mthreads": "MTHREADS_VISIBLE_DEVICES",
    "metax": "METAX_VISIBLE_DEVICES",
    "kunlunxin": "XPU_VISIBLE_DEVICES",
    "vastai": "VASTAI_VISIBLE_DEVICES",
    "biren": "BIREN_VISIBLE_DEVICES",
    "enflame": "ENFLAME_VISIBLE_DEVICES",
    "awsneuron": "AWS_NEURON_VISIBLE_DEVICES",
    "amd": "ROCR_VISIBLE_DEVICES",
}


# vendor -> the device nodes a node with that vendor's hardware has (what Allocate names as device
# specs): "{index}" per device, "{render}" = 128 + index (DRM render nodes); no placeholder: once per
# node. The node agent creates them as plain files under its root (``create_device_nodes``); the
# container runtime binds a device spec from there, so Allocate naming a device the node lacks fails
# the container as runc would.
DEVICE_NODES: dict[str, tuple[str, ...]] = {
    "hygon": ("/dev/kfd", "/dev/mkfd", "/dev/dri/card{index}", "/dev/dri/renderD{render}"),
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
    drs_capacity: int = 0  # Enflame DRS slices of the card (0: not a DRS card)
    drs_profiles: dict[str, str] = field(default_factory=dict)


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
            drs_capacity=m.drs_slices if not m.drs_half or i >= (count + 1) // 2 else 0,
            drs_profiles=dict(m.drs_profiles) if not m.drs_half or i >= (count + 1) // 2 else {},
        )
        for i in range(count)
    ]
    write(state_dir, vendor, devices)
    return devices


def write(state_dir: Path, vendor: str, devices: list[Device]) -> None:
    path = Path(state_dir) / vendor / DEVICES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rows = [asdict(d) for d in devices]
    for row in rows:  # DRS fields only on DRS cards: other vendors' files keep their shape
        if not row["drs_capacity"]:
            del row["drs_capacity"], row["drs_profiles"]
    tmp.write_text(json.dumps(rows, indent=1))
    conf = path.with_name(CONF_FILE)
    conf_tmp = conf.with_suffix(".tmp-conf")
    conf_tmp.write_text(render_conf(devices))
    # readers never see half a file; the libraries' view first, so a reader of both never sees the
    # JSON ahead of what the driver library reports
    os.replace(conf_tmp, conf)
    os.replace(tmp, path)


def render_conf(devices: list[Device]) -> str:
    """``devices.conf``: ``index uuid model memory_mib compute_units bus_id numa healthy drs_capacity
    profiles`` per line (tab separated; profiles ``name=id,...`` or ``-``), what the C libraries parse."""
    lines = [CONF_MAGIC]
    for d in devices:
        profiles = ",".join(f"{k}={v}" for k, v in d.drs_profiles.items()) or "-"
        if any(c in f for f in (d.uuid, d.model, d.bus_id, profiles) for c in "\t\n "):
            raise ValueError(f"{d.uuid!r}: device fields must not hold whitespace")
        lines.append("\t".join(str(x) for x in (
            d.index, d.uuid, d.model, d.memory_mib, d.compute_units, d.bus_id or "-", d.numa,
            1 if d.healthy else 0, d.drs_capacity, profiles,
        )))
    return "\n".join(lines) + "\n"


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


def node_state_dir(node_root: Path) -> Path:
    """Where a node agent keeps its family devices (``<root>/hardware/families``)."""
    return Path(node_root) / NODE_SUBDIR


def vendors_present(state_dir: Path) -> list[str]:
    """The vendors with a devices file under ``state_dir``."""
    return sorted(v for v in MODELS if (Path(state_dir) / v / DEVICES_FILE).is_file())


def visible(state_dir: Path, vendor: str, value: str) -> list[Device]:
    """The devices a container whose visibility env is ``value`` sees: ``all`` every one, else
    those whose UUID or index is listed (comma separated), in the listed order."""
    devices = read(state_dir, vendor)
    if value.strip() == "all":
        return devices
    by_key = {d.uuid: d for d in devices} | {str(d.index): d for d in devices}
    out = []
    for key in (k.strip() for k in value.split(",")):
        if key in by_key and by_key[key] not in out:
            out.append(by_key[key])
    return out


def create_device_nodes(node_root: Path, vendor: str, count: int) -> list[Path]:
    """Stand-ins for the vendor's device nodes under ``node_root`` (see :data:`DEVICE_NODES`)."""
    out: list[Path] = []
    for pattern in DEVICE_NODES.get(vendor, ()):
        indices = range(count) if "{" in pattern else range(1)
        for i in indices:
            path = Path(node_root) / pattern.format(index=i, render=128 + i).lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            out.append(path)
    return out
