"""HTTP exposition of the vGPU monitor's metrics."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from hami_stack.monitor.collector import (
    DEFAULT_CONTAINERS_DIR,
    PodResolver,
    VGPUCollector,
    pods_file_resolver,
)
from hami_stack.monitor.hostgpu import HostGPUCollector


def serve(containers_dir: Path, port: int, addr: str = "127.0.0.1",
          resolver: PodResolver | None = None,
          node: str | None = None) -> tuple[WSGIServer, threading.Thread, CollectorRegistry]:
    """Start serving ``GET /metrics`` in a background thread; returns (server, thread, registry).

    With ``node`` (this node's name) the host GPU series are served too, read from NVML."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VGPUCollector(containers_dir, resolver))
    if node is not None:
        registry.register(HostGPUCollector(node))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return server, thread, registry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hami_stack.monitor", description=__doc__)
    ap.add_argument("--containers-dir", type=Path, default=DEFAULT_CONTAINERS_DIR,
                    help="host directory holding <podUID>_<container>/ region directories")
    ap.add_argument("--port", type=int, default=9394)
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on (the chart passes 0.0.0.0)")
    ap.add_argument("--pods-file", type=Path, help='JSON {"<pod uid>": {"namespace": .., "name": ..}}')
    ap.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""),
                    help="resolve pod names by watching this node's pods through the API "
                         "(default $NODE_NAME; in-cluster credentials or $KUBECONFIG)")
    ap.add_argument("--kubeconfig", default=None)
    # HAMi's chart passes klog's -v=4 to vGPUmonitor; 4 and above mean debug logging here
    ap.add_argument("-v", "--v", dest="verbosity", type=lambda t: int(t.lstrip("=")), default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbosity >= 4 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    resolver = pods_file_resolver(args.pods_file) if args.pods_file else None
    if resolver is None and args.node_name:
        from kubeclient.client import Kube

        from .podnames import NodePodNames

        try:
            resolver = NodePodNames(Kube.from_config(args.kubeconfig), args.node_name).start().resolve
        except Exception as e:  # no credentials: labels fall back to pod UIDs, as documented
            logging.getLogger(__name__).warning("pod names unavailable (%s); labelling by pod UID", e)
    # the host series' node label: $NODE_NAME as upstream, else the host name (a monitor run by hand)
    node = args.node_name or socket.gethostname()
    _, thread, _ = serve(args.containers_dir, args.port, args.bind, resolver, node)
    logging.getLogger(__name__).info("serving on %s:%d from %s", args.bind, args.port, args.containers_dir)
    thread.join()
    return 0
