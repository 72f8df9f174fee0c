"""The testbed kube-controller-manager as a process.

``python -m testbed.controllers --kubeconfig K [--controllers=*,-foo] [--node-monitor-grace-period=40s]``
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading

from kubeclient.client import Kube

from .manager import CONTROLLERS, ControllerManager


def parse_duration(text: str) -> float:
    """A Go duration (``40s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": time: invalid duration "{text}"')
    return sum(float(n) * units[u] for n, u in parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="testbed.controllers", description=__doc__)
    p.add_argument("--kubeconfig", default=None, help="kubeconfig (default: $KUBECONFIG, then in-cluster)")
    p.add_argument("--k8s", default="1.33", help="Kubernetes minor whose behaviour to follow")
    p.add_argument(
        "--controllers",
        default="*",
        help=f"controllers to run: * for all, foo to enable, -foo to disable ({', '.join(CONTROLLERS)})",
    )
    p.add_argument(
        "--node-monitor-grace-period",
        type=parse_duration,
        default=None,
        help="how long a node lease may go unrenewed before the node is marked Unknown",
    )
    p.add_argument("-v", "--v", type=int, default=2, help="log verbosity")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.v >= 4 else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    kube = Kube.from_config(args.kubeconfig, user_agent="kube-controller-manager/testbed")
    try:
        mgr = ControllerManager(
            kube,
            args.k8s,
            controllers=args.controllers,
            node_monitor_grace_period=args.node_monitor_grace_period,
        )
    except ValueError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mgr.start()
    stop.wait()
    mgr.stop()
    kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
