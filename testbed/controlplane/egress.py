"""``python -m testbed.controlplane.egress``: the real kube-apiserver's way into the testbed's network.

kube-apiserver reaches webhooks by their Service's ClusterIP, and pods and kubelets by their IPs.
On the testbed the ClusterIPs exist only inside the node agents' service namespaces, and pods' IPs are
loopback addresses (127.64.0.0/10) that Endpoints and EndpointSlices refuse to hold, so neither the
host route nor the endpoints controller can take the apiserver there. kube-apiserver's egress selector
(``--egress-selector-config-file``, the mechanism Konnectivity uses) sends all its "cluster" traffic
through an HTTP CONNECT proxy instead; this is that proxy. A CONNECT to a ClusterIP goes to a running,
ready pod the Service selects (its ``targetPort``, by number or container-port name), picked at random
as kube-proxy does; any other destination must be a loopback address (a node agent's kubelet API, a
pod IP) and is dialled as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..streams import splice

log = logging.getLogger("testbed.controlplane.egress")
_TTL = 1.0


class Resolver:
    """ClusterIP:port -> pod IP:port, from the apiserver (lists cached for a second)."""

    def __init__(self, kubeconfig: str, service_cidr: str) -> None:
        from kubeclient.client import Kube

        self.kube = Kube.from_config(kubeconfig, user_agent="testbed-egress")
        self.cidr = ipaddress.ip_network(service_cidr)
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def _list(self, path: str) -> list[dict[str, Any]]:
        hit = self._cache.get(path)
        if hit is None or hit[0] < time.monotonic():
            hit = (time.monotonic() + _TTL, list(self.kube.get(path).get("items") or []))
            self._cache[path] = hit
        return hit[1]

    def resolve(self, host: str, port: int) -> tuple[str, int]:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError as e:
            raise LookupError(f"{host}: not an IP address") from e
        if ip not in self.cidr:
            if not ip.is_loopback:
                raise LookupError(f"{host}: neither a ClusterIP nor a loopback address")
            return host, port
        def ips(s: dict[str, Any]) -> list[str]:
            spec = s.get("spec") or {}
            return list(spec.get("clusterIPs") or [spec.get("clusterIP")])

        svc = next((s for s in self._list("/api/v1/services") if host in ips(s)), None)
        if svc is None:
            raise LookupError(f"no Service has ClusterIP {host}")
        spec = svc["spec"]
        sport = next((p for p in spec.get("ports") or [] if int(p.get("port", 0)) == port), None)
        if sport is None or not spec.get("selector"):
            raise LookupError(f"Service {svc['metadata']['namespace']}/{svc['metadata']['name']} has no "
                              f"port {port} with a selector")
        ns = svc["metadata"]["namespace"]
        target = sport.get("targetPort", port)
        ready = []
        for pod in self._list(f"/api/v1/namespaces/{ns}/pods"):
            labels = pod["metadata"].get("labels") or {}
            st = pod.get("status") or {}
            if any(labels.get(k) != v for k, v in spec["selector"].items()) or not st.get("podIP"):
                continue
            if st.get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
                continue
            conds = st.get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                continue
            number = _target_port(pod, target)
            if number:
                ready.append((st["podIP"], number))
        if not ready:
            raise LookupError(f"Service {ns}/{svc['metadata']['name']} has no ready endpoint")
        return random.choice(ready)


def _target_port(pod: dict[str, Any], target: Any) -> int:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return 0


async def _handle(resolver: Resolver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        dest = await asyncio.to_thread(resolver.resolve, host.strip("[]"), int(port))
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*dest), 10)
    except (LookupError, OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as e:
        log.warning("CONNECT refused: %s", e)
        with contextlib.suppress(Exception):
            writer.write(f"HTTP/1.1 503 Service Unavailable\r\n\r\n{e}".encode())
            writer.close()
        return
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    await splice((reader, writer), (up_r, up_w))


async def serve(kubeconfig: str, socket_path: str, service_cidr: str) -> None:
    resolver = Resolver(kubeconfig, service_cidr)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = await asyncio.start_unix_server(lambda r, w: _handle(resolver, r, w), socket_path)
    os.chmod(socket_path, 0o600)
    log.info("egress proxy listening on %s", socket_path)
    async with server:
        await server.serve_forever()


def config_yaml(socket_path: str, minor: int) -> str:
    """The apiserver's EgressSelectorConfiguration: cluster traffic through this proxy, over a unix
    socket (an ``http://`` TCP transport without TLS makes kube-apiserver 1.33 crash at start-up)."""
    version = "v1beta1" if minor >= 20 else "v1alpha1"
    return (f"apiVersion: apiserver.k8s.io/{version}\nkind: EgressSelectorConfiguration\negressSelections:\n"
            f"- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    transport:\n"
            f"      uds:\n        udsName: {socket_path}\n")


def socket_path(data_dir: Path) -> str:
    """``<data dir>/real/egress.sock``, or a short path in the temp dir when that one is too long for
    a unix socket address (108 bytes)."""
    path = str(data_dir / "real" / "egress.sock")
    if len(path.encode()) < 100:
        return path
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return str(Path(tempfile.gettempdir()) / f"testbed-egress-{digest}.sock")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.controlplane.egress", description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--socket", required=True, help="unix socket to listen on")
    p.add_argument("--service-cidr", default="10.96.0.0/16")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s%(asctime)s %(name)s] %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.kubeconfig, args.socket, args.service_cidr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
