"""``python -m hami_stack.device_plugin.families --family dcu``: run one family's plugin until SIGTERM.

``--family`` may name several plugins of one vendor, comma separated (``enflame-gcu,enflame-drs``):
they run side by side in one process, each serving its share of the node's cards.

The device config (``--config-file``, default ``/device-config.yaml``) must enable the family's
section; the hardware directory is ``--hardware-dir`` or ``$HAMI_FAMILY_HARDWARE_DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from kubeclient.client import Kube
from kubeletapi.constants import DEVICE_PLUGINS_DIR

from ...devices.config import DeviceConfigError, load_device_config
from .hardware import STATE_ENV
from .plugin import FamilyDevicePlugin, FamilyOptions
from .specs import SPECS, PluginSpec, get


def _families(value: str) -> list[PluginSpec]:
    """``--family``: one plugin name or several of one config section, comma separated."""
    try:
        specs = [get(name.strip()) for name in value.split(",") if name.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not specs:
        raise argparse.ArgumentTypeError(f"no family named (known: {', '.join(sorted(SPECS))})")
    if len({s.config_section for s in specs}) > 1:
        raise argparse.ArgumentTypeError(f"{value!r}: the families must share one device-config section")
    return specs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="family-device-plugin", description="HAMi-compatible family device plugin"
    )
    p.add_argument(
        "--family", required=True, type=_families, help=f"one or more of {', '.join(sorted(SPECS))}"
    )
    p.add_argument("--config-file", default="/device-config.yaml")
    p.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""))
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--hardware-dir", default=os.environ.get(STATE_ENV, ""))
    p.add_argument("--socket-dir", default=os.environ.get("DP_SOCKET_DIR", DEVICE_PLUGINS_DIR))
    p.add_argument("--register-interval", type=float, default=30.0)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s")
    log = logging.getLogger("hami.family-device-plugin")
    specs: list[PluginSpec] = a.family
    spec = specs[0]
    if not a.node_name:
        log.error("no node name: set NODE_NAME or --node-name")
        return 1
    if not a.hardware_dir:
        log.error("no hardware directory: set %s or --hardware-dir", STATE_ENV)
        return 1
    # the emulated vendor libraries find the node's devices there (a real vendor library ignores it)
    os.environ[STATE_ENV] = a.hardware_dir
    try:
        section = load_device_config(Path(a.config_file)).section(spec.config_section)
    except (OSError, DeviceConfigError) as e:
        log.error("device config %s: %s", a.config_file, e)
        return 1
    if not section:
        log.error(
            "device config %s: the %s section is absent (family not enabled)",
            a.config_file,
            spec.config_section,
        )
        return 1
    opts = FamilyOptions(
        a.node_name,
        Path(a.hardware_dir),
        Path(a.socket_dir),
        hook_path=os.environ.get("HOOK_PATH", "/usr/local"),
        register_interval_s=a.register_interval,
    )
    kube = Kube.from_config(a.kubeconfig, user_agent=f"hami-{spec.name}-device-plugin")
    plugins = [FamilyDevicePlugin(s, opts, kube, s.make_family(section)) for s in specs]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    for plugin in plugins:
        plugin.start()
    done.wait()
    for plugin in plugins:
        plugin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
