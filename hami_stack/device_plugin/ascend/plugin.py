"""The Ascend device plugin: DCMI discovery, kubelet endpoint, node registration, Allocate and health.

What it does, as HAMi's ``ascend-device-plugin`` does it:

* start: the chip name DCMI reports (``910B3``, ``Ascend910``...) selects the ``vnpus.configs`` entry of
  the device config (``can not find vnpu config for chip <name>`` otherwise); its common word names
  the resource (``huawei.com/<CW>``) and every annotation key;
* kubelet: one virtual device per vNPU slot, ``<uuid>-<i>`` for i < memoryAllocatable / smallest
  template, Unhealthy while DCMI reports a non-zero health code (or the chip vanished);
* registration, every ``register_interval_s`` (30 s) and at once on a health change: node annotations
  ``hami.io/node-register-<CW>`` (JSON: index, id = VDIE die ID, count = slots, devmem =
  memoryAllocatable, devcore = aiCore, or 100 in hami-core mode, type = CW, health, and for 910 chips
  ``custominfo.NetworkID``: 0 for the 910C, else 1 from index 4 on), ``hami.io/node-handshake-<CW>:
  Reported_<2006.01.02 15:04:05>`` and ``hami-vnpu-core: "true"|"false"``;
* Allocate (:class:`~hami_stack.device_plugin.allocate.Allocator`, the same lock-vouched protocol as
  NVIDIA): ``ASCEND_VISIBLE_DEVICES`` with the physical IDs, ``ASCEND_VNPU_SPECS`` in hard mode (the
  Ascend container runtime creates the vNPU from it), the hami-core env and mounts otherwise;
* hami-core mode (``vnpus.hamiVnpuCore``, or this node's entry in the node config, upstream's
  ``hami-device-node-config``): the hook directory gets the NPU limiter ``libvnpu.so``
  (``hami_stack/enforcer/ascend``) and an ``ld.so.preload`` naming it, which Allocate mounts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeclient.client import Kube
from kubeletapi.constants import DEVICE_PLUGINS_DIR

from ... import faults
from ...devices.ascend import (
    ASCEND_910_PREFIX,
    ASCEND_910C,
    NETWORK_ID,
    VNPU_MODE_HAMI_CORE,
    AscendFamily,
    VnpusConfig,
    hami_core_dir,
    parse_vnpus,
)
from ...devices.config import DeviceConfigError
from ...protocol import annotations as ann
from ...protocol.handshake import reported_ascend
from ...protocol.register import DeviceInfo, encode_register_json
from ...scheduler.recorder import EventRecorder
from ..allocate import Allocator
from ..server import PluginDevice, PluginServer
from . import dcmi

log = logging.getLogger("hami.ascend-device-plugin")


class PluginConfigError(Exception):
    """The device config cannot drive this node's chips; the message names what is missing."""


@dataclass(frozen=True)
class AscendOptions:
    node_name: str
    config_file: Path = Path("/device-config.yaml")
    kubeconfig: str | None = None
    socket_dir: Path = Path(DEVICE_PLUGINS_DIR)
    hook_path: str = ""  # HOOK_PATH; empty: /usr/local/hami-vnpu-core for the hami-core dirs
    node_config_file: Path = Path("/node-config.yaml")  # upstream's hami-device-node-config; optional
    register_interval_s: float = 30.0
    register_retry_s: float = 5.0
    health_interval_s: float = 5.0


def load_vnpus(path: Path) -> VnpusConfig:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise PluginConfigError(f"cannot read the device config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise PluginConfigError(f"device config {path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise PluginConfigError(f"device config {path}: must be a mapping")
    try:
        return parse_vnpus(data.get("vnpus"))
    except DeviceConfigError as e:
        raise PluginConfigError(f"device config {path}: {e}") from e


def node_hami_core_override(path: Path, node_name: str) -> bool | None:
    """This node's hami-core setting from the node config (upstream's ``hami-device-node-config``,
    ``nodes: [{name, hamiVnpuMode: hami-core | ..., or the older hami-vnpu-core: true|false}]``), which
    wins over the global ``vnpus.hamiVnpuCore``; None when the file or the node's entry is absent."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PluginConfigError(f"cannot read the node config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise PluginConfigError(f"node config {path}: invalid YAML: {e}") from e
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(nodes, list):
        raise PluginConfigError(f"node config {path}: want a mapping with a nodes list")
    for i, entry in enumerate(nodes):
        if not isinstance(entry, dict) or entry.get("name") != node_name:
            continue
        if "hamiVnpuMode" in entry:
            return str(entry["hamiVnpuMode"]) == VNPU_MODE_HAMI_CORE
        if "hami-vnpu-core" in entry:
            value = entry["hami-vnpu-core"]
            if not isinstance(value, bool):
                raise PluginConfigError(f"node config {path}: nodes[{i}].hami-vnpu-core: want true or false")
            return value
    return None


def network_id(index: int, common_word: str) -> int:
    """Upstream's rule: the 910C's dies all share one HCCS network; other 910s split at index 4."""
    if common_word == ASCEND_910C:
        return 0
    return 1 if index > 3 else 0


def register_entries(family: AscendFamily, npus: Sequence[dcmi.Npu], hami_core: bool) -> list[DeviceInfo]:
    cfg = family.config
    out = []
    for i, n in enumerate(npus):
        custom = (
            {NETWORK_ID: network_id(i, cfg.common_word)}
            if cfg.common_word.startswith(ASCEND_910_PREFIX)
            else {}
        )
        out.append(
            DeviceInfo(
                id=n.uuid,
                index=i,
                count=cfg.vdevice_count,
                devmem=cfg.memory_allocatable,
                devcore=100 if hami_core else cfg.ai_core,
                type=cfg.common_word,
                health=n.healthy and not faults.on("plugin-ascend-devices-unhealthy"),
                mode="",  # upstream's Ascend plugin writes no mode
                custom_info=custom,
            )
        )
    return out


class AscendDevicePlugin:
    def __init__(self, opts: AscendOptions, kube: Kube, vnpus: VnpusConfig) -> None:
        self.opts = opts
        self.kube = kube
        self.vnpus = vnpus
        self.npus: list[dcmi.Npu] = []
        self.known: dict[str, dcmi.Npu] = {}
        self.family: AscendFamily | None = None
        self.server: PluginServer | None = None
        self.allocator: Allocator | None = None
        self.events = EventRecorder(kube, "hami-ascend-device-plugin")
        self._registered: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def hami_core(self) -> bool:
        return self.vnpus.hami_vnpu_core

    def select_family(self, npus: Sequence[dcmi.Npu]) -> AscendFamily:
        if not npus:
            raise PluginConfigError("DCMI shows no NPU on this node")
        chip = npus[0]
        if chip.chip_type != "Ascend":
            raise PluginConfigError(f"chip type is not Ascend (DCMI reports {chip.chip_type!r})")
        cfg = self.vnpus.by_chip(chip.chip_name)
        if cfg is None:
            raise PluginConfigError(f"can not find vnpu config for chip {chip.chip_name}")
        family = AscendFamily(cfg, hami_vnpu_core=self.hami_core)
        family.phy_ids = lambda: {n.uuid: n.phy_id for n in self.npus}
        return family

    # --- state -----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the NPUs, push the device list and patch the node (raises on API errors)."""
        with self._lock:
            found = dcmi.discover()
            present = {n.uuid for n in found}
            for n in found:
                self.known[n.uuid] = n
            # a chip that vanished stays listed, unhealthy, until it is back
            gone = [as_lost(n) for u, n in self.known.items() if u not in present]
            self.npus = sorted(found + gone, key=lambda n: n.phy_id)
            assert self.family is not None and self.server is not None
            entries = register_entries(self.family, self.npus, self.hami_core)
            count = self.family.config.vdevice_count
            devices = [PluginDevice(f"{e.id}-{i}", e.health) for e in entries for i in range(count)]
            if self.server.set_devices(devices):
                log.info("device list: %d NPUs (%d healthy)", len(entries), sum(e.health for e in entries))
            self._patch_node(encode_register_json(entries))

    def _patch_node(self, register: str) -> None:
        assert self.family is not None
        keys = self.family.keys
        values: dict[str, str] = {
            keys.handshake: reported_ascend(dt.datetime.now()),
            ann.VNPU_CORE_NODE: "true" if self.hami_core else "false",
        }
        if register != self._registered:
            values[keys.register] = register
        self.kube.patch(
            f"/api/v1/nodes/{self.opts.node_name}", {"metadata": {"annotations": values}}, "merge"
        )
        if register != self._registered:
            log.info("patched %s on node %s: %s", keys.register, self.opts.node_name, register)
        self._registered = register

    # --- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        dcmi.init()
        npus = dcmi.discover()
        self.family = self.select_family(npus)
        self.npus = npus
        hook = hami_core_dir(self.opts.hook_path)  # the one Allocate mounts
        if self.hami_core:
            prepare_hook_dir(Path(hook))
        self.allocator = Allocator(
            self.kube, self.opts.node_name, self.family, hook_path=hook, events=self.events.pod_event
        )  # type: ignore[arg-type]
        endpoint = f"hami-ascend-{self.family.common_word}.sock"
        self.server = PluginServer(self.family.count_resource, self.opts.socket_dir, endpoint, self.allocator)
        log.info(
            "chip %s -> %s (%s), %d NPUs",
            npus[0].chip_name,
            self.family.common_word,
            self.family.count_resource,
            len(npus),
        )
        self.refresh()
        try:
            self.server.start()
        except Exception as e:  # the kubelet may not be up yet: the watcher registers once it is
            log.warning("registration with the kubelet failed, will retry: %s", e)
        self.server.watch_kubelet()
        for name, target in (("register", self._run), ("health", self._run_health)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _health_changed(self) -> bool:
        try:
            now = {n.uuid: n.health for n in dcmi.discover()}
        except dcmi.DcmiError as e:
            log.warning("NPU health poll failed: %s", e)
            return False
        before = {n.uuid: n.health for n in self.npus if n.uuid in now or n.healthy}
        return now != before

    def _run_health(self) -> None:
        while not self._stop.wait(self.opts.health_interval_s):
            if self._health_changed():
                self._wake.set()

    def _run(self) -> None:
        delay = self.opts.register_interval_s
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                delay = self.opts.register_interval_s
            except Exception as e:  # the loop must outlive API outages and driver hiccups
                log.warning("node registration failed, retrying in %.0fs: %s", self.opts.register_retry_s, e)
                delay = self.opts.register_retry_s

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        self.events.flush(2.0)
        self.events.close()
        if self.server is not None:
            self.server.stop()


LIMITER = "libvnpu.so"
LIMITER_IN_CONTAINER = "/hami-vnpu-core"  # where Allocate mounts the hook directory


def limiter_source() -> Path:
    """The limiter to install: ``$HAMI_VNPU_SOURCE`` (an image's prebuilt copy) or the project's build."""
    env = os.environ.get("HAMI_VNPU_SOURCE")
    if env:
        return Path(env)
    from ...enforcer.ascend.build import ensure_built

    return ensure_built()


def _replace(dest: Path, write: object) -> None:
    # by rename: a container that already mapped the old file keeps a whole one
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    write(tmp)  # type: ignore[operator]
    os.replace(tmp, dest)


def prepare_hook_dir(hook: Path, source: Path | None = None) -> None:
    """hami-core mode: the host directory Allocate mounts at /hami-vnpu-core (and its ld.so.preload at
    /etc/ld.so.preload). Installs the NPU limiter there and names it, by its path inside the container,
    in ``ld.so.preload``, so every process of a hami-core container loads it; ``containers/`` holds the
    per-container usage files. The fault ``plugin-ascend-no-limiter`` leaves ``ld.so.preload`` empty."""
    (hook / "containers").mkdir(parents=True, exist_ok=True)
    preload = hook / "ld.so.preload"
    if faults.on("plugin-ascend-no-limiter"):
        _replace(preload, lambda tmp: tmp.write_text(""))
        return
    lib = hook / LIMITER
    src = source or limiter_source()
    _replace(lib, lambda tmp: shutil.copyfile(src, tmp))
    lib.chmod(0o755)
    _replace(preload, lambda tmp: tmp.write_text(f"{LIMITER_IN_CONTAINER}/{LIMITER}\n"))


def as_lost(n: dcmi.Npu) -> dcmi.Npu:
    """A chip DCMI no longer lists: kept, with a non-zero (unhealthy) health code."""
    return dataclasses.replace(n, health=n.health or 0x7FFFFFFF)


def options_from_env(node_name: str | None, config_file: str | None, kubeconfig: str | None) -> AscendOptions:
    node = node_name or os.environ.get("NODE_NAME", "")
    if not node:
        raise PluginConfigError("no node name: set NODE_NAME or --node-name")
    return AscendOptions(
        node_name=node,
        config_file=Path(config_file or "/device-config.yaml"),
        kubeconfig=kubeconfig,
        socket_dir=Path(os.environ.get("DP_SOCKET_DIR", DEVICE_PLUGINS_DIR)),
        hook_path=os.environ.get("HOOK_PATH", ""),
        node_config_file=Path(os.environ.get("NODE_CONFIG_FILE", "/node-config.yaml")),
    )
