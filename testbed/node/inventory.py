"""Node inventories: YAML that describes the emulated nodes a node-agent process runs.

```yaml
defaults:                      # optional, merged under every node
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 500Gi}
nodes:
  - name: gpu-a                # or namePattern: "sim-{index:04d}" with count: 1000
    labels: {gpu: "on"}
    taints: [{key: k, value: v, effect: NoSchedule}]
    mode: executed             # executed | simulated
    simulate: {podStartSeconds: 0.5, podCompleteSeconds: 0}
    hardware:
      nvidia: {model: A100-SXM4-80GB, count: 4, memory_mib: 81920, numa: [0, 0, 1, 1]}
      ascend: {chip: 910B3, count: 8}   # Huawei NPUs (testbed/hardware/ascend.py); device_share: true
                                        # marks NPUs set up for hami-core (soft split) mode
      hygon: {model: Z100L, count: 4}   # any vendor of testbed/hardware/families.py MODELS
```

Every vendor with emulated hardware in :data:`testbed.hardware.families.MODELS` is a hardware kind
(``{model, count}``, model one of that vendor's), so a family added there needs no code here.

Loading is strict: unknown fields and impossible values raise :class:`InventoryError` naming the file,
the node and the field, because a typo silently ignored would give a cluster other than the one meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed.hardware import families
from testbed.hardware.ascend import MAX_NPUS, lookup_npu_model
from testbed.hardware.state import MAX_GPUS, lookup_model
from testbed.k8s.quantity import Quantity

DEFAULT_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"}
MODES = ("executed", "simulated")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TOP_KEYS = {"apiVersion", "kind", "defaults", "nodes"}
_NODE_KEYS = {
    "name",
    "namePattern",
    "count",
    "labels",
    "annotations",
    "taints",
    "capacity",
    "reserved",
    "mode",
    "simulate",
    "hardware",
}
_SIM_KEYS = {"podStartSeconds", "podCompleteSeconds", "nodeReadySeconds"}
_NVIDIA_KEYS = {
    "model",
    "count",
    "memory_mib",
    "numa",
    "cpus_per_numa",
    "reserved_mib",
    "nvlink",
    "uuids",
    "driver_version",
    "cuda_driver_version",
    "context_mib",
}
_ASCEND_KEYS = {"chip", "count", "driver_version", "device_share"}
_FAMILY_KEYS = {"model", "count"}


def hardware_kinds() -> set[str]:
    """nvidia, ascend and every vendor of the data-driven families (read when parsing, so a vendor
    appended to ``families.MODELS`` is a kind at once)."""
    return {"nvidia", "ascend", *families.MODELS}
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VAL_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


class InventoryError(ValueError):
    def __init__(self, file: str, node: str, field_path: str, detail: str) -> None:
        where = f"node {node!r}, " if node else ""
        super().__init__(f"{file}: {where}field {field_path}: {detail}")
        self.file, self.node, self.field, self.detail = file, node, field_path, detail


@dataclass(frozen=True)
class SimulateSpec:
    pod_start_seconds: float = 0.5
    pod_complete_seconds: float = 0.0  # 0: simulated pods stay Running
    node_ready_seconds: float = 0.0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    capacity: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CAPACITY))
    reserved: dict[str, str] = field(default_factory=dict)
    mode: str = "executed"
    simulate: SimulateSpec = field(default_factory=SimulateSpec)
    hardware: dict[str, dict[str, Any]] = field(default_factory=dict)
    index: int = 0  # position in the inventory; picks the node's 127.0.x.y address

    @property
    def simulated(self) -> bool:
        return self.mode == "simulated"

    def allocatable(self) -> dict[str, str]:
        out = dict(self.capacity)
        for k, v in self.reserved.items():
            if k in out:
                left = Quantity.parse(out[k]) - Quantity.parse(v)
                out[k] = str(left if left.sign() >= 0 else Quantity.from_int(0))
        return out


def node_address(index: int) -> str:
    """127.0.x.y for node ``index``; skips .0, .1 (the apiserver's) and .255 in the last octet."""
    hi, lo = divmod(index, 253)
    return f"127.0.{hi}.{lo + 2}" if hi else f"127.0.0.{lo + 2}"


class _Ctx:
    def __init__(self, file: str, node: str = "") -> None:
        self.file, self.node = file, node

    def err(self, field_path: str, detail: str) -> InventoryError:
        return InventoryError(self.file, self.node, field_path, detail)

    def mapping(self, v: Any, path: str) -> dict[str, Any]:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.err(path, f"must be a mapping, got {type(v).__name__}")
        return v

    def keys(self, v: dict[str, Any], allowed: set[str], path: str) -> None:
        unknown = sorted(set(v) - allowed)
        if unknown:
            raise self.err(
                f"{path}{unknown[0]}" if path else unknown[0],
                f"unknown field (allowed: {', '.join(sorted(allowed))})",
            )

    def int_(self, v: Any, path: str, minimum: int = 0) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(path, f"must be an integer, got {v!r}")
        if v < minimum:
            raise self.err(path, f"must be >= {minimum}, got {v}")
        return v

    def number(self, v: Any, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise self.err(path, f"must be a non-negative number, got {v!r}")
        return float(v)

    def quantity(self, v: Any, path: str) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise self.err(path, f"must be a quantity string, got {v!r}")
        try:
            q = Quantity.parse(str(v))
        except ValueError as e:
            raise self.err(path, f"bad quantity {v!r}: {e}") from None
        if q.sign() < 0:
            raise self.err(path, f"must not be negative, got {v!r}")
        return str(q)

    def str_map(
        self, v: Any, path: str, key_re: re.Pattern[str], val_re: re.Pattern[str] | None
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, val in self.mapping(v, path).items():
            if not isinstance(k, str) or not key_re.match(k):
                raise self.err(f"{path}.{k}", "invalid key")
            sval = "" if val is None else str(val) if not isinstance(val, bool) else str(val).lower()
            if val_re is not None and (len(sval) > 63 or not val_re.match(sval)):
                raise self.err(f"{path}.{k}", f"invalid label value {sval!r}")
            out[k] = sval
        return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _taints(ctx: _Ctx, v: Any) -> list[dict[str, str]]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ctx.err("taints", "must be a list")
    out = []
    for i, t in enumerate(v):
        t = ctx.mapping(t, f"taints[{i}]")
        ctx.keys(t, {"key", "value", "effect"}, f"taints[{i}].")
        if not isinstance(t.get("key"), str) or not _LABEL_KEY_RE.match(t["key"]):
            raise ctx.err(f"taints[{i}].key", "required, a qualified name")
        if t.get("effect") not in EFFECTS:
            raise ctx.err(
                f"taints[{i}].effect", f"must be one of {', '.join(EFFECTS)}, got {t.get('effect')!r}"
            )
        taint = {"key": t["key"], "effect": t["effect"]}
        if t.get("value") not in (None, ""):
            taint["value"] = str(t["value"])
        out.append(taint)
    return out


def _nvidia(ctx: _Ctx, v: Any) -> dict[str, Any]:
    spec = ctx.mapping(v, "hardware.nvidia")
    ctx.keys(spec, _NVIDIA_KEYS, "hardware.nvidia.")
    try:
        model = lookup_model(str(spec.get("model", "A100-SXM4-80GB")))
    except KeyError as e:
        raise ctx.err("hardware.nvidia.model", str(e.args[0])) from None
    count = ctx.int_(spec.get("count", 1), "hardware.nvidia.count")
    if count > MAX_GPUS:
        raise ctx.err("hardware.nvidia.count", f"at most {MAX_GPUS} GPUs per node, got {count}")
    if "memory_mib" in spec:
        ctx.int_(spec["memory_mib"], "hardware.nvidia.memory_mib", 1)
    numa = spec.get("numa")
    if numa is not None:
        if not isinstance(numa, list) or len(numa) != count:
            raise ctx.err("hardware.nvidia.numa", f"must list one NUMA node per GPU ({count})")
        for i, n in enumerate(numa):
            ctx.int_(n, f"hardware.nvidia.numa[{i}]")
    for k in ("cpus_per_numa", "reserved_mib", "context_mib"):
        if k in spec:
            ctx.int_(spec[k], f"hardware.nvidia.{k}", 1 if k == "cpus_per_numa" else 0)
    return {**spec, "model": model.key, "count": count}


def _ascend(ctx: _Ctx, v: Any) -> dict[str, Any]:
    """``hardware.ascend: {chip: 910B3, count: 8}`` (emulated NPUs read through libdcmi.so)."""
    spec = ctx.mapping(v, "hardware.ascend")
    ctx.keys(spec, _ASCEND_KEYS, "hardware.ascend.")
    try:
        model = lookup_npu_model(str(spec.get("chip", "910B3")))
    except KeyError as e:
        raise ctx.err("hardware.ascend.chip", str(e.args[0])) from None
    count = ctx.int_(spec.get("count", 8), "hardware.ascend.count", 1)
    if count > MAX_NPUS:
        raise ctx.err("hardware.ascend.count", f"at most {MAX_NPUS} NPUs per node, got {count}")
    # device_share: the NPUs are set up for sharing (npu-smi set -t device-share), which HAMi's
    # hami-core (soft split) mode needs; the testbed backend turns hami-core mode on for such nodes
    if not isinstance(spec.get("device_share", False), bool):
        raise ctx.err("hardware.ascend.device_share", "must be true or false")
    return {**spec, "chip": model.chip_name, "count": count}


def _family(ctx: _Ctx, vendor: str, v: Any) -> dict[str, Any]:
    """``hardware.<vendor>: {model, count}`` for a data-driven family (testbed/hardware/families.py)."""
    path = f"hardware.{vendor}"
    spec = ctx.mapping(v, path)
    ctx.keys(spec, _FAMILY_KEYS, f"{path}.")
    models = families.MODELS[vendor]
    if "model" not in spec:
        raise ctx.err(f"{path}.model", f"required (one of: {', '.join(sorted(models))})")
    try:
        model = families.lookup_model(vendor, str(spec["model"]))
    except ValueError as e:
        raise ctx.err(f"{path}.model", str(e)) from None
    count = ctx.int_(spec.get("count", 1), f"{path}.count", 1)
    if count > families.MAX_DEVICES:
        raise ctx.err(f"{path}.count", f"at most {families.MAX_DEVICES} devices per node, got {count}")
    return {"model": model.name, "count": count}


def _node(ctx: _Ctx, raw: dict[str, Any], name: str, index: int) -> NodeSpec:
    ctx.node = name
    if len(name) > 253 or not _NAME_RE.match(name):
        raise ctx.err("name", f"{name!r} is not a valid node name (RFC 1123 subdomain)")
    mode = raw.get("mode", "executed")
    if mode not in MODES:
        raise ctx.err("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    cap_raw = ctx.mapping(raw.get("capacity"), "capacity")
    capacity = dict(DEFAULT_CAPACITY)
    for k, v in cap_raw.items():
        capacity[str(k)] = ctx.quantity(v, f"capacity.{k}")
    for k in ("pods",):
        if not Quantity.parse(capacity[k]).is_integer():
            raise ctx.err(f"capacity.{k}", "must be a whole number")
    reserved = {
        str(k): ctx.quantity(v, f"reserved.{k}")
        for k, v in ctx.mapping(raw.get("reserved"), "reserved").items()
    }
    sim_raw = ctx.mapping(raw.get("simulate"), "simulate")
    ctx.keys(sim_raw, _SIM_KEYS, "simulate.")
    sim = SimulateSpec(
        pod_start_seconds=ctx.number(sim_raw.get("podStartSeconds", 0.5), "simulate.podStartSeconds"),
        pod_complete_seconds=ctx.number(sim_raw.get("podCompleteSeconds", 0), "simulate.podCompleteSeconds"),
        node_ready_seconds=ctx.number(sim_raw.get("nodeReadySeconds", 0), "simulate.nodeReadySeconds"),
    )
    hw_raw = ctx.mapping(raw.get("hardware"), "hardware")
    ctx.keys(hw_raw, hardware_kinds(), "hardware.")
    hardware = {"nvidia": _nvidia(ctx, hw_raw["nvidia"])} if "nvidia" in hw_raw else {}
    if "ascend" in hw_raw:
        hardware["ascend"] = _ascend(ctx, hw_raw["ascend"])
    for vendor in sorted(set(hw_raw) & set(families.MODELS)):
        hardware[vendor] = _family(ctx, vendor, hw_raw[vendor])
    return NodeSpec(
        name=name,
        labels=ctx.str_map(raw.get("labels"), "labels", _LABEL_KEY_RE, _LABEL_VAL_RE),
        annotations=ctx.str_map(raw.get("annotations"), "annotations", _LABEL_KEY_RE, None),
        taints=_taints(ctx, raw.get("taints")),
        capacity=capacity,
        reserved=reserved,
        mode=mode,
        simulate=sim,
        hardware=hardware,
        index=index,
    )


def parse_inventory(data: Any, file: str = "<inventory>") -> list[NodeSpec]:
    ctx = _Ctx(file)
    doc = ctx.mapping(data, "(top level)")
    ctx.keys(doc, _TOP_KEYS, "")
    defaults = ctx.mapping(doc.get("defaults"), "defaults")
    ctx.keys(defaults, _NODE_KEYS - {"name", "namePattern", "count"}, "defaults.")
    nodes_raw = doc.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise ctx.err("nodes", "must be a non-empty list")
    out: list[NodeSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(nodes_raw):
        ctx.node = ""
        entry = ctx.mapping(entry, f"nodes[{i}]")
        ctx.node = str(entry.get("name") or entry.get("namePattern") or f"nodes[{i}]")
        ctx.keys(entry, _NODE_KEYS, "")
        merged = _merge(defaults, entry)
        if "name" in entry and "namePattern" in entry:
            raise ctx.err("namePattern", "give either name or namePattern, not both")
        if "namePattern" in entry:
            count = ctx.int_(entry.get("count", 1), "count")
            pattern = str(entry["namePattern"])
            try:
                names = [pattern.format(index=k) for k in range(count)]
            except (KeyError, IndexError, ValueError) as e:
                raise ctx.err("namePattern", f"bad pattern {pattern!r}: {e}") from None
            if count > 1 and len(set(names)) != count:
                raise ctx.err("namePattern", "must contain {index} when count > 1")
        else:
            if "count" in entry:
                raise ctx.err("count", "count needs namePattern")
            if not isinstance(entry.get("name"), str):
                raise ctx.err("name", "required")
            names = [entry["name"]]
        for name in names:
            if name in seen:
                raise InventoryError(file, name, "name", "duplicate node name")
            seen.add(name)
            out.append(_node(ctx, merged, name, len(out)))
    return out


def load_inventory(path: str | Path) -> list[NodeSpec]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise InventoryError(str(p), "", "(file)", e.strerror or str(e)) from None
    except yaml.YAMLError as e:
        raise InventoryError(str(p), "", "(yaml)", str(e)) from None
    return parse_inventory(data, str(p))
