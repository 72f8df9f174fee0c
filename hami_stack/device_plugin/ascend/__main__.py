"""``python -m hami_stack.device_plugin.ascend``: run the Ascend device plugin until SIGTERM/SIGINT.

Flags as upstream's: ``--config_file`` (the device config with the ``vnpus`` section, chart:
``/device-config.yaml``), plus ``--node-name`` (default ``$NODE_NAME``) and ``--kubeconfig``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from pathlib import Path

from kubeclient.client import Kube

from .dcmi import DcmiError, DcmiUnavailable
from .plugin import (
    AscendDevicePlugin,
    PluginConfigError,
    load_vnpus,
    node_hami_core_override,
    options_from_env,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ascend-device-plugin", description="HAMi-compatible Ascend device plugin"
    )
    p.add_argument(
        "--config_file",
        "--config-file",
        dest="config_file",
        default=None,
        help="device config with the vnpus section (default /device-config.yaml)",
    )
    p.add_argument("--node-name", default=None, help="node name (default $NODE_NAME)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster credentials)")
    p.add_argument("--socket-dir", default=None, help="kubelet device-plugin directory ($DP_SOCKET_DIR)")
    p.add_argument("--register-interval", type=float, default=30.0, help="seconds between node registrations")
    p.add_argument("--health-interval", type=float, default=5.0, help="seconds between DCMI health polls")
    p.add_argument("-v", "--v", dest="verbosity", type=int, default=0)
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if a.verbosity >= 5 else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("hami.ascend-device-plugin")
    try:
        opts = options_from_env(a.node_name, a.config_file, a.kubeconfig)
        opts = dataclasses.replace(
            opts,
            register_interval_s=a.register_interval,
            health_interval_s=a.health_interval,
            socket_dir=Path(a.socket_dir) if a.socket_dir else opts.socket_dir,
        )
        vnpus = load_vnpus(opts.config_file)
        override = node_hami_core_override(opts.node_config_file, opts.node_name)
        if override is not None:  # the node config wins over vnpus.hamiVnpuCore
            vnpus = dataclasses.replace(vnpus, hami_vnpu_core=override)
    except PluginConfigError as e:
        log.error("%s", e)
        return 1
    kube = Kube.from_config(opts.kubeconfig, user_agent="hami-ascend-device-plugin")
    plugin = AscendDevicePlugin(opts, kube, vnpus)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        plugin.start()
    except (DcmiUnavailable, DcmiError, PluginConfigError) as e:
        log.error("%s", e)
        return 1
    done.wait()
    plugin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
