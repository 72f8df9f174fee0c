"""Emulated Huawei Ascend NPUs: the state directory our ``libdcmi.so`` (``src/dcmi.c``) reads.

```python
from testbed.hardware.ascend import create_npu_state, npu_library_env
st = create_npu_state("/tmp/node-a/npus", {"chip": "910B3", "count": 8}, node_name="node-a")
env = npu_library_env(st.path, "3")      # a container given physical NPU 3
st.set_health(3, 2)                      # major fault: dcmi_get_device_health answers 2
st.lose(5)                               # the chip falls off the bus
```

Per chip model: the memory, AI cores and AI CPUs of one NPU and the vNPU templates the driver
knows (``npu-smi info -t template-info``); the numbers are those HAMi's chart configures for the same
chip. Cards: one NPU per card, except the 910C (chip ``Ascend910``) whose module holds two NPUs
(card = physical ID // 2). UUIDs are the VDIE die IDs, 5 x 32 bits, rendered as upstream's plugin
renders them (upper-case hex of the five words).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_ENV = "HAMI_EMU_NPU_STATE_DIR"
ALL_ENV = "HAMI_EMU_NPU_ALL"
VISIBLE_ENV = "ASCEND_VISIBLE_DEVICES"
SPECS_ENV = "ASCEND_VNPU_SPECS"
MAX_NPUS = 64


@dataclass(frozen=True)
class NpuModel:
    chip_name: str  # what dcmi_get_device_chip_info reports (matches vnpus.configs[].chipName)
    memory_mib: int
    aicore: int
    aicpu: int
    templates: tuple[tuple[str, int, int, int], ...]  # (name, memory MiB, AI cores, AI CPUs)
    npus_per_card: int = 1


NPU_MODELS: dict[str, NpuModel] = {
    "910A": NpuModel(
        "910A",
        32768,
        30,
        0,
        (("vir02", 2184, 2, 0), ("vir04", 4369, 4, 0), ("vir08", 8738, 8, 0), ("vir16", 17476, 16, 0)),
    ),
    "910B2": NpuModel(
        "910B2",
        65536,
        24,
        6,
        (("vir03_1c_8g", 8192, 3, 1), ("vir06_1c_16g", 16384, 6, 1), ("vir12_3c_32g", 32768, 12, 3)),
    ),
    "910B3": NpuModel("910B3", 65536, 20, 7, (("vir05_1c_16g", 16384, 5, 1), ("vir10_3c_32g", 32768, 10, 3))),
    "910B4-1": NpuModel(
        "910B4-1", 65536, 20, 7, (("vir05_1c_16g", 16384, 5, 1), ("vir10_3c_32g", 32768, 10, 3))
    ),
    "910B4": NpuModel("910B4", 32768, 20, 7, (("vir05_1c_8g", 8192, 5, 1), ("vir10_3c_16g", 16384, 10, 3))),
    "310P3": NpuModel(
        "310P3", 24576, 8, 7, (("vir01", 3072, 1, 1), ("vir02", 6144, 2, 2), ("vir04", 12288, 4, 4))
    ),
    "Ascend910": NpuModel(
        "Ascend910",
        65536,
        20,
        7,
        (("vir05_1c_16g", 16384, 5, 1), ("vir10_3c_32g", 32768, 10, 3)),
        npus_per_card=2,
    ),
}
ALIASES = {"910C": "Ascend910", "310P": "310P3"}


def lookup_npu_model(chip: str) -> NpuModel:
    key = ALIASES.get(chip, chip)
    if key not in NPU_MODELS:
        raise KeyError(f"unknown Ascend chip {chip!r}; known: {', '.join(sorted(NPU_MODELS))}")
    return NPU_MODELS[key]


def die_words(node_name: str, phy: int) -> tuple[int, ...]:
    digest = hashlib.sha256(f"{node_name}/npu/{phy}".encode()).digest()
    return tuple(int.from_bytes(digest[i * 4 : i * 4 + 4], "big") for i in range(5))


def die_uuid(words: tuple[int, ...]) -> str:
    return "".join(f"{w:08X}" for w in words)


@dataclass
class NpuState:
    path: Path
    model: NpuModel
    uuids: list[str] = field(default_factory=list)  # by physical ID

    def _write(self, what: str, phy: int, text: str | None) -> None:
        target = self.path / f"{what}.{phy}"
        if text is None:
            target.unlink(missing_ok=True)
            return
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)

    def set_health(self, phy: int, code: int) -> None:
        """0 healthy; 1 minor, 2 major, 3 critical alarm (what dcmi_get_device_health answers)."""
        self._write("health", phy, None if code == 0 else f"{code}\n")

    def lose(self, phy: int, lost: bool = True) -> None:
        self._write("lost", phy, "1\n" if lost else None)

    def set_used_mib(self, phy: int, mib: int) -> None:
        self._write("used_mib", phy, f"{mib}\n")

    def set_error_codes(self, phy: int, codes: list[int]) -> None:
        self._write("errcode", phy, " ".join(hex(c) for c in codes) + "\n" if codes else None)

    def clear_faults(self) -> None:
        for i in range(len(self.uuids)):
            self.set_health(i, 0)
            self.lose(i, False)
            self.set_error_codes(i, [])

    def vnpus(self, phy: int) -> list[tuple[int, str]]:
        p = self.path / f"vdev.{phy}"
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((int(parts[0]), parts[1]))
        return out


def render_conf(model: NpuModel, count: int, node_name: str, driver_version: str = "24.1.rc3") -> str:
    lines = [
        "chip_type=Ascend",
        f"chip_name={model.chip_name}",
        "chip_ver=V1",
        f"driver_version={driver_version}",
        f"dcmi_version={driver_version}",
        f"npu_count={count}",
    ]
    for name, mem, core, cpu in model.templates:
        lines += [f"[template.{name}]", f"memory_mib={mem}", f"aicore={core}", f"aicpu={cpu}"]
    for phy in range(count):
        words = die_words(node_name, phy)
        lines += [
            f"[npu.{phy}]",
            f"phy_id={phy}",
            f"card_id={phy // model.npus_per_card}",
            f"device_id={phy % model.npus_per_card}",
            "die_id=" + ",".join(hex(w) for w in words),
            f"memory_mib={model.memory_mib}",
            f"aicore={model.aicore}",
            f"aicpu={model.aicpu}",
        ]
    return "\n".join(lines) + "\n"


def create_npu_state(
    path: str | os.PathLike[str], spec: dict[str, Any], *, node_name: str = "node"
) -> NpuState:
    """Write ``npus.conf`` for ``spec`` (``chip``, ``count``), clearing earlier live state."""
    model = lookup_npu_model(str(spec.get("chip", "910B3")))
    count = int(spec.get("count", 8))
    if not 1 <= count <= MAX_NPUS:
        raise ValueError(f"hardware.ascend.count: between 1 and {MAX_NPUS}, got {count}")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name.split(".")[0] in ("health", "lost", "used_mib", "errcode", "vdev"):
            old.unlink()
    tmp = root / "npus.conf.tmp"
    tmp.write_text(render_conf(model, count, node_name, str(spec.get("driver_version", "24.1.rc3"))))
    os.replace(tmp, root / "npus.conf")
    return NpuState(root, model, [die_uuid(die_words(node_name, p)) for p in range(count)])


def npu_library_env(
    state_dir: str | os.PathLike[str],
    visible: str | None,
    *,
    base: dict[str, str] | None = None,
    host_view: bool = False,
    vnpu_spec: str | None = None,
) -> dict[str, str]:
    """Environment that loads our libdcmi.so over ``state_dir``, as the Ascend runtime prepares a container
    (``visible``: physical IDs, comma separated; ``host_view``: every NPU, for the device plugin)."""
    from .build import ensure_built

    env = dict(os.environ if base is None else base)
    for key in (VISIBLE_ENV, ALL_ENV, SPECS_ENV):
        env.pop(key, None)
    lib_dir = str(ensure_built())
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != lib_dir]
    env["LD_LIBRARY_PATH"] = ":".join([lib_dir, *parts])
    env[STATE_ENV] = str(Path(state_dir).resolve())
    if visible is not None:
        env[VISIBLE_ENV] = visible
    if host_view:
        env[ALL_ENV] = "1"
    if vnpu_spec:
        env[SPECS_ENV] = vnpu_spec
    return env
