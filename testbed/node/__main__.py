"""``python -m testbed.node --kubeconfig K --inventory FILE --data-dir D``: run the inventory's node agents
until SIGTERM/SIGINT (then stop cleanly: containers get SIGTERM, servers close)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from kubeclient.client import Kube

from .agent import AgentOptions, NodeAgents
from .inventory import InventoryError, load_inventory
from .wiring import device_services


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m testbed.node", description=__doc__)
    p.add_argument("--kubeconfig", default=None, help="kubeconfig of the apiserver (default: $KUBECONFIG)")
    p.add_argument("--inventory", required=True, help="node inventory YAML (see testbed/node/inventory.py)")
    p.add_argument("--data-dir", required=True, help="node roots go to DATA_DIR/nodes/<name>/")
    p.add_argument("--node", action="append", default=[], help="run only these nodes of the inventory")
    p.add_argument("--node-lease-renew-interval", type=float, default=10.0, help="seconds (kubelet: 10)")
    p.add_argument("--node-lease-duration-seconds", type=int, default=40)
    p.add_argument("--backoff-base", type=float, default=10.0, help="first restart/pull back-off, seconds")
    p.add_argument("--no-namespaces", action="store_true", help="no network or mount namespaces even as root")
    p.add_argument("--no-device-plugins", action="store_true",
                   help="do not serve kubelet.sock (device-plugin registration) or the PodResources API")
    p.add_argument("-v", "--v", type=int, default=2, help="log verbosity (klog style: 0-4)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.v >= 4 else logging.INFO if args.v >= 2 else logging.WARNING,
        format="%(levelname).1s%(asctime)s %(name)s] %(message)s",
        datefmt="%m%d %H:%M:%S",
    )
    try:
        nodes = load_inventory(args.inventory)
    except InventoryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.node:
        nodes = [n for n in nodes if n.name in set(args.node)]
    opts = AgentOptions(
        lease_interval=args.node_lease_renew_interval,
        lease_duration=args.node_lease_duration_seconds,
        backoff_base=args.backoff_base,
    )
    if args.no_namespaces:
        opts.use_netns = opts.use_mount_ns = False
    # "kubelet" names its writes in managedFields, as the real kubelet's User-Agent does
    kube = Kube.from_config(args.kubeconfig, user_agent="kubelet/testbed")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    factory = None if args.no_device_plugins else device_services
    agents = NodeAgents(kube, nodes, args.data_dir, options=opts, device_managers=factory).start()
    logging.getLogger("testbed.node").info(
        "%d node agent(s) running: %s",
        len(agents.agents),
        ", ".join(list(agents.agents)[:5]) + (" ..." if len(agents.agents) > 5 else ""),
    )
    done.wait()
    agents.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
