"""The NVIDIA device plugin's settings: flags, their env fallbacks, the device config and the node config.

Precedence, lowest first (so the chart's ConfigMaps and flags behave as HAMi's do):

1. built-in defaults (:class:`~hami_stack.devices.config.NvidiaConfig`, e.g. ``deviceSplitCount`` 10);
2. the device config file (``--config-file``, chart: ``/device-config.yaml``), section ``nvidia``;
3. flags given explicitly, or their env vars (``DEVICE_SPLIT_COUNT``, ``DEVICE_MEMORY_SCALING``, ...);
   a flag's *default* never overrides the file (HAMi's flag default of 2 splits loses to the config's 10);
4. the entry of the per-node file (``/config/config.json``, ``{"nodeconfig": [...]}``) whose ``name`` is
   this node.

A missing device config or node config file is not an error (defaults apply); an unreadable or invalid
one is, and names the file and field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeletapi.constants import DEVICE_PLUGINS_DIR, KUBELET_SOCKET

from ..devices.config import DeviceConfigError, NvidiaConfig, load_device_config
from ..protocol.register import MODE_HAMI_CORE, MODE_MIG, MODE_MPS

DEFAULT_CONFIG_FILE = "/device-config.yaml"
DEFAULT_NODE_CONFIG_FILE = "/config/config.json"
DEFAULT_KUBELET_SOCKET = f"{DEVICE_PLUGINS_DIR}/{KUBELET_SOCKET}"
OPERATING_MODES = (MODE_HAMI_CORE, MODE_MIG, MODE_MPS)
DEVICE_LIST_STRATEGIES = ("envvar", "volume-mounts")


class OptionsError(ValueError):
    """Settings the plugin cannot start with; the message names the flag, variable or file field."""


@dataclass(frozen=True)
class FilterDevices:
    """GPUs excluded from registration (node config ``filterdevices``)."""

    uuids: frozenset[str] = frozenset()
    indexes: frozenset[int] = frozenset()

    def excludes(self, uuid: str, index: int) -> bool:
        return uuid in self.uuids or index in self.indexes


@dataclass(frozen=True)
class PluginOptions:
    node_name: str
    nvidia: NvidiaConfig
    resource_name: str
    kubelet_socket: Path = Path(DEFAULT_KUBELET_SOCKET)
    kubeconfig: str | None = None
    hook_path: str = "/usr/local"
    device_list_strategy: str = "envvar"
    pass_device_specs: bool = False
    operating_mode: str = MODE_HAMI_CORE
    mig_strategy: str = "none"
    filter_devices: FilterDevices = field(default_factory=FilterDevices)
    enable_preferred_realign: bool = False  # node config enablegetpreferredallocation
    fail_on_init_error: bool = True
    register_interval_s: float = 30.0
    register_retry_s: float = 5.0
    health_interval_s: float = 5.0  # NVML health poll (on top of the Xid event wait)
    xid_recovery_s: float = 60.0  # a GPU hit by a critical Xid must poll healthy this long after it
    verbosity: int = 0

    @property
    def socket_dir(self) -> Path:
        return self.kubelet_socket.parent

    @property
    def endpoint(self) -> str:
        """Socket file name: ``nvidia-`` + the part of the resource name after ``/`` (``nvidia-gpu.sock``)."""
        return f"nvidia-{self.resource_name.split('/')[-1]}.sock"


def _bool_text(where: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "t", "true", "yes", "on"):
        return True
    if low in ("0", "f", "false", "no", "off", ""):
        return False
    raise OptionsError(f"{where}: invalid boolean {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nvidia-device-plugin",
        description="HAMi-compatible NVIDIA device plugin (hami-core mode).",
    )
    # Unset flags stay None so that only explicit values (or env) override the config file.
    p.add_argument("--node-name", default=None, help="node name (env NodeName, then NODE_NAME)")
    p.add_argument("--config-file", default=None, help=f"device config (default {DEFAULT_CONFIG_FILE})")
    p.add_argument(
        "--node-config-file", default=None, help=f"per-node config (default {DEFAULT_NODE_CONFIG_FILE})"
    )
    p.add_argument(
        "--device-split-count",
        type=int,
        default=None,
        help="virtual devices per GPU (env DEVICE_SPLIT_COUNT)",
    )
    p.add_argument("--device-memory-scaling", type=float, default=None, help="env DEVICE_MEMORY_SCALING")
    p.add_argument("--device-cores-scaling", type=float, default=None, help="env DEVICE_CORES_SCALING")
    p.add_argument(
        "--disable-core-limit", default=None, nargs="?", const="true", help="env DISABLE_CORE_LIMIT"
    )
    p.add_argument("--resource-name", default=None, help="count resource (default: config resourceCountName)")
    p.add_argument("--mig-strategy", default=None, help="only 'none' is supported (env MIG_STRATEGY)")
    p.add_argument("--fail-on-init-error", default=None, nargs="?", const="true")
    p.add_argument("--pass-device-specs", default=None, nargs="?", const="true", help="env PASS_DEVICE_SPECS")
    p.add_argument(
        "--device-list-strategy", default=None, help="envvar | volume-mounts (env DEVICE_LIST_STRATEGY)"
    )
    p.add_argument("--kubelet-socket", default=None, help=f"default {DEFAULT_KUBELET_SOCKET}")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster credentials)")
    p.add_argument("--register-interval", type=float, default=30.0, help="seconds between node registrations")
    p.add_argument(
        "--health-interval",
        default=None,
        help="seconds between NVML health polls of every GPU (env HEALTH_INTERVAL, default 5)",
    )
    p.add_argument(
        "--xid-recovery",
        default=None,
        help="seconds after a critical Xid before a GPU that polls healthy is healthy again "
        "(env XID_RECOVERY, default 60)",
    )
    p.add_argument("-v", "--v", dest="v", type=int, default=0, help="log verbosity")
    return p


def _pick(flag: Any, env: Mapping[str, str], *names: str) -> Any:
    if flag is not None:
        return flag
    for n in names:
        if env.get(n, "") != "":
            return env[n]
    return None


def _number(where: str, value: Any, kind: type) -> Any:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise OptionsError(f"{where}: invalid number {value!r}") from None
    if out <= 0:
        raise OptionsError(f"{where}: must be positive, got {value!r}")
    return out


def _node_entry(path: Path, node: str) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OptionsError(f"node config {path}: cannot read: {e.strerror}") from e
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise OptionsError(f"node config {path}: invalid JSON: {e}") from e
    entries = data.get("nodeconfig") if isinstance(data, dict) else None
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise OptionsError(f"node config {path}: nodeconfig must be a list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise OptionsError(f"node config {path}: nodeconfig[{i}] must be an object")
        if entry.get("name") == node:
            return entry
    return None


def _apply_node_entry(
    path: Path, entry: Mapping[str, Any], cfg: NvidiaConfig, out: dict[str, Any]
) -> NvidiaConfig:
    where = f"node config {path} ({entry.get('name')})"
    changes: dict[str, Any] = {}
    if "devicesplitcount" in entry:
        changes["device_split_count"] = _number(f"{where}.devicesplitcount", entry["devicesplitcount"], int)
    if "devicememoryscaling" in entry:
        changes["device_memory_scaling"] = _number(
            f"{where}.devicememoryscaling", entry["devicememoryscaling"], float
        )
    if "devicecorescaling" in entry:
        changes["device_core_scaling"] = _number(
            f"{where}.devicecorescaling", entry["devicecorescaling"], float
        )
    if "preconfigureddevicememory" in entry:
        v = entry["preconfigureddevicememory"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise OptionsError(
                f"{where}.preconfigureddevicememory: must be a non-negative integer, got {v!r}"
            )
        changes["pre_configured_device_memory"] = v
    if "libcudaloglevel" in entry:
        v = entry["libcudaloglevel"]
        try:
            changes["lib_cuda_log_level"] = int(str(v))
        except ValueError:
            raise OptionsError(f"{where}.libcudaloglevel: must be an integer, got {v!r}") from None
    if "enablenumatopology" in entry:
        changes["enable_numa_topology"] = _bool_text(
            f"{where}.enablenumatopology", str(entry["enablenumatopology"])
        )
    if "operatingmode" in entry:
        mode = entry["operatingmode"] or MODE_HAMI_CORE
        if mode not in OPERATING_MODES:
            raise OptionsError(
                f"{where}.operatingmode: must be one of {', '.join(OPERATING_MODES)}, got {mode!r}"
            )
        out["operating_mode"] = mode
    if "migstrategy" in entry:
        out["mig_strategy"] = entry["migstrategy"] or "none"
    if "enablegetpreferredallocation" in entry:
        out["enable_preferred_realign"] = _bool_text(
            f"{where}.enablegetpreferredallocation", str(entry["enablegetpreferredallocation"])
        )
    fd = entry.get("filterdevices")
    if fd:
        if not isinstance(fd, dict):
            raise OptionsError(f"{where}.filterdevices: must be an object")
        try:
            out["filter_devices"] = FilterDevices(
                frozenset(str(u) for u in fd.get("uuid") or []),
                frozenset(int(i) for i in fd.get("index") or []),
            )
        except (TypeError, ValueError):
            raise OptionsError(f"{where}.filterdevices.index: must be a list of integers") from None
    return dataclasses.replace(cfg, **changes)


def _seconds(where: str, value: Any, default: float, minimum: float) -> float:
    if value is None:
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise OptionsError(f"{where}: invalid number of seconds {value!r}") from None
    if not minimum <= out < float("inf"):  # also refuses NaN
        raise OptionsError(f"{where}: must be at least {minimum} seconds, got {value!r}")
    return float(out)


def resolve(argv: Sequence[str], env: Mapping[str, str] | None = None) -> PluginOptions:
    """Parse flags and read the config files (raises :class:`OptionsError`; argparse exits on bad syntax)."""
    env = os.environ if env is None else env
    a = build_parser().parse_args(list(argv))
    node = _pick(a.node_name, env, "NodeName", "NODE_NAME")
    if not node:
        raise OptionsError("node name: set --node-name, NodeName or NODE_NAME")
    config_path = Path(a.config_file or DEFAULT_CONFIG_FILE)
    try:
        cfg = load_device_config(config_path, strict=False).nvidia if config_path.exists() else NvidiaConfig()
    except DeviceConfigError as e:
        raise OptionsError(f"device config {config_path}: {e}") from e
    if cfg is None:
        raise OptionsError(f"device config {config_path}: no nvidia section")
    changes: dict[str, Any] = {}
    v = _pick(a.device_split_count, env, "DEVICE_SPLIT_COUNT")
    if v is not None:
        changes["device_split_count"] = _number("--device-split-count", v, int)
    v = _pick(a.device_memory_scaling, env, "DEVICE_MEMORY_SCALING")
    if v is not None:
        changes["device_memory_scaling"] = _number("--device-memory-scaling", v, float)
    v = _pick(a.device_cores_scaling, env, "DEVICE_CORES_SCALING")
    if v is not None:
        changes["device_core_scaling"] = _number("--device-cores-scaling", v, float)
    v = _pick(a.disable_core_limit, env, "DISABLE_CORE_LIMIT")
    if v is not None:
        changes["disable_core_limit"] = _bool_text("--disable-core-limit", str(v))
    resource = _pick(a.resource_name, env, "RESOURCE_NAME") or cfg.resource_count_name
    changes["resource_count_name"] = resource
    cfg = dataclasses.replace(cfg, **changes)
    extra: dict[str, Any] = {}
    node_path = Path(a.node_config_file or DEFAULT_NODE_CONFIG_FILE)
    entry = _node_entry(node_path, node)
    if entry is not None:
        cfg = _apply_node_entry(node_path, entry, cfg, extra)
    mig = extra.pop("mig_strategy", None) or _pick(a.mig_strategy, env, "MIG_STRATEGY") or "none"
    if mig != "none":
        raise OptionsError(f"--mig-strategy: only 'none' is supported, got {mig!r}")
    if extra.get("operating_mode", MODE_HAMI_CORE) != MODE_HAMI_CORE:
        raise OptionsError(f"operatingmode {extra['operating_mode']!r} is not supported (hami-core only)")
    strategy = _pick(a.device_list_strategy, env, "DEVICE_LIST_STRATEGY") or "envvar"
    if strategy not in DEVICE_LIST_STRATEGIES:
        raise OptionsError(
            f"--device-list-strategy: must be one of {', '.join(DEVICE_LIST_STRATEGIES)}, got {strategy!r}"
        )
    return PluginOptions(
        node_name=node,
        nvidia=cfg,
        resource_name=resource,
        kubelet_socket=Path(a.kubelet_socket or DEFAULT_KUBELET_SOCKET),
        kubeconfig=a.kubeconfig,
        hook_path=env.get("HOOK_PATH") or "/usr/local",
        device_list_strategy=strategy,
        pass_device_specs=_bool_text(
            "--pass-device-specs", str(_pick(a.pass_device_specs, env, "PASS_DEVICE_SPECS") or "false")
        ),
        mig_strategy=mig,
        fail_on_init_error=_bool_text(
            "--fail-on-init-error", str(_pick(a.fail_on_init_error, env, "FAIL_ON_INIT_ERROR") or "true")
        ),
        register_interval_s=a.register_interval,
        health_interval_s=_seconds(
            "--health-interval", _pick(a.health_interval, env, "HEALTH_INTERVAL"), 5.0, 0.1
        ),
        xid_recovery_s=_seconds("--xid-recovery", _pick(a.xid_recovery, env, "XID_RECOVERY"), 60.0, 0.0),
        verbosity=a.v,
        **extra,
    )
