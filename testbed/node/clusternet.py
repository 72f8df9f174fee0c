"""Cluster networking for the pods of one node-agent process: kube-proxy's and CoreDNS's jobs.

All of it lives in network namespaces the testbed creates, except the NodePort listeners:

* one *service namespace* per agent process, where the Service CIDR is local (``ip route add local
  <cidr> dev lo``, the "AnyIP" route) so a socket can listen on any ClusterIP. A userspace proxy
  listens there on ``<ClusterIP>:<port>`` for each TCP and UDP port of each Service and forwards every
  connection (UDP: every client address, until it has been idle ``UDP_IDLE`` seconds) to a ready
  endpoint, picked at random (kube-proxy's iptables mode is random too):
  straight into the endpoint pod's own namespace when that pod runs in this process, else to
  ``<podIP>:<targetPort>`` on the host (which the owning agent forwards for declared containerPorts).
  A Service without ready endpoints refuses connections (nothing listens). The cluster DNS server
  (``dns.py``) answers there on ``<DNS IP>:53`` (UDP and TCP), the address every pod's
  ``/etc/resolv.conf`` names (``podspec.resolv_conf``); the agents keep a ``kube-system/kube-dns``
  Service at that address;
* each pod namespace gets a veth link ``svc0`` into the service namespace (a link-local /32 address
  per pod) and a route for the Service CIDR over it. The pod's own sockets are untouched: a pod that
  listens on ``0.0.0.0:80`` can still be the backend of a Service on port 80;
* NodePort and LoadBalancer Services are also served on ``<node address>:<nodePort>`` for each node
  of the process, in the host's namespace (node addresses are loopback addresses of the host), so
  the host reaches them as it would reach a node.

A userspace proxy rather than iptables/nftables DNAT: the host needs neither tool (this machine has
none) and the proxy can dial into another pod's namespace directly. Services and Endpoints come from
informers (list and watch); every ``POLL`` seconds the listeners are reconciled with them and new pod
namespaces are linked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from kubeclient.client import ApiError
from kubeclient.informer import Informer

from . import dns, netns

if TYPE_CHECKING:
    from .agent import NodeAgent

log = logging.getLogger("testbed.node.clusternet")

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")  # the testbed apiserver's (testbed/apiserver/builtin.py)
DNS_IP = str(SERVICE_CIDR.network_address + 10)  # 10.96.0.10, where kind and kubeadm put kube-dns
POLL = 0.25
UDP_IDLE = 30.0  # seconds a UDP flow keeps its backend (conntrack's default UDP timeout is 30 s)
# Each UDP flow holds a socket until it has been idle UDP_IDLE seconds: a pod sending from ever new source
# ports would otherwise use up the node agent's descriptors (shared by all its nodes). Past this many
# flows of one Service port a new client's datagrams are dropped, as a full conntrack table drops them.
UDP_MAX_FLOWS = 1024
UDP_MAX_PENDING = 64  # datagrams queued for a flow whose backend socket is still being opened


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: dns.Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.resolver.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class ClusterNet:
    def __init__(self, agent: NodeAgent) -> None:
        self.kube = agent.kube
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.agents: list[NodeAgent] = []
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoints: dict[tuple[str, str], dict[str, Any]] = {}
        self.resolver = dns.Resolver(lambda: self.services, lambda: self.endpoints)
        self.svc_name = netns.service_netns_name(agent.group.data_dir)
        self.svc_path = ""
        self.servers: dict[tuple[str, int, str], Any] = {}  # (ip, port, protocol) -> server or transport
        # NodePorts: (node address, node port, protocol) -> (the Service's ClusterIP address, listener)
        self.node_servers: dict[tuple[str, int, str], tuple[tuple[str, int, str], Any]] = {}
        self.dns: asyncio.BaseTransport | None = None
        self.dns_tcp: asyncio.base_events.Server | None = None
        self.pods: dict[str, int] = {}  # pod netns path -> link index
        # sessionAffinity ClientIP: ((ClusterIP, port, protocol), client IP) -> (backend, last used)
        self.affinity: dict[tuple[tuple[str, int, str], str], tuple[tuple[str, int, str], float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._dns_ensured = False
        # set (from any thread, through ``kick``) when a pod's namespace waits for its link: the next
        # sync runs at once instead of at the next POLL tick (a pod's containers start only once linked)
        self._kick = asyncio.Event()
        self._informers = (Informer(self.kube, "/api/v1/services", name="clusternet services"),
                           Informer(self.kube, "/api/v1/endpoints", name="clusternet endpoints"))

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        for inf in self._informers:
            inf.start()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        for inf in self._informers:
            inf.stop()
        if self._task is not None:
            self._task.cancel()
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        for _svc, server in self.node_servers.values():
            server.close()
        self.node_servers.clear()
        if self.dns is not None:
            self.dns.close()
        if self.dns_tcp is not None:
            self.dns_tcp.close()
        if self.svc_path:
            await asyncio.to_thread(netns.delete_netns, self.svc_name)  # the pods' veth ends go with it
        self.pods.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cluster networking sync failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), POLL)
            self._kick.clear()

    def kick(self) -> None:
        """Sync now (callable from any thread): a pod namespace is ready to be linked."""
        with contextlib.suppress(RuntimeError):  # the agent's loop is already closed: nothing to link
            self.loop.call_soon_threadsafe(self._kick.set)

    # -- state --------------------------------------------------------------------------------------

    def _cached(self) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], Any]]:
        def key(o: dict[str, Any]) -> tuple[str, str]:
            return o["metadata"]["namespace"], o["metadata"]["name"]

        svcs, eps = (inf.items() for inf in self._informers)
        return {key(s): s for s in svcs}, {key(e): e for e in eps}

    def _ensure_dns_service(self) -> None:
        body = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {"clusterIP": DNS_IP, "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
        }
        try:
            self.kube.create("/api/v1/namespaces/kube-system/services", body)
        except ApiError as e:
            if e.status not in (409, 422, 403, 404):
                raise
        self._dns_ensured = True

    def _pod_namespaces(self) -> dict[str, Any]:
        out = {}
        for a in list(self.agents):
            for w in list(a.runtime.workers.values()):
                if w.netns_path and w.sandbox_ready and not w.stopping.is_set():
                    out[w.netns_path] = w
        return out

    async def _service_namespace(self) -> None:
        def make() -> str:
            path = netns.create_netns(self.svc_name)
            _ip("-n", self.svc_name, "route", "replace", "local", str(SERVICE_CIDR), "dev", "lo")
            return path

        self.svc_path = await asyncio.to_thread(make)

        def dns_socket() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((DNS_IP, 53))
            s.setblocking(False)
            return s

        def dns_tcp_socket() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((DNS_IP, 53))
            s.listen(64)
            s.setblocking(False)
            return s

        sock = await asyncio.to_thread(netns.in_netns, self.svc_path, dns_socket)
        resolver = self.resolver
        self.dns, _ = await self.loop.create_datagram_endpoint(lambda: _DnsProtocol(resolver), sock=sock)
        # DNS over TCP (a resolver retries there when an answer is truncated, and some clients only use it)
        tcp = await asyncio.to_thread(netns.in_netns, self.svc_path, dns_tcp_socket)
        self.dns_tcp = await asyncio.start_server(lambda r, w: dns.serve_tcp(resolver, r, w), sock=tcp)

    async def sync(self) -> None:
        if not self._dns_ensured:
            await asyncio.to_thread(self._ensure_dns_service)
        if not self.svc_path:
            await self._service_namespace()
        self.services, self.endpoints = self._cached()
        current = self._pod_namespaces()
        for path in [p for p in self.pods if p not in current and not os.path.exists(p)]:
            # its namespace is gone, and the veth pair with it: only now may a new pod take its index
            # (a finished pod's namespace lingers while it is torn down; its peer p<index> and route
            # still exist in the service namespace, and a new pod given that index got no link: no DNS)
            del self.pods[path]
        for path in current:
            if path in self.pods:
                continue
            index = next(i for i in range(1, 60000) if i not in set(self.pods.values()))
            try:
                await asyncio.to_thread(_link_pod, path, self.svc_name, index)
            except OSError as e:
                log.warning("pod namespace %s: no cluster networking: %s", path, e)
                index = -index  # do not retry every round
            self.pods[path] = index
        await self._reconcile(self._listen_addresses())
        await self._reconcile_node_ports(self._node_ports())
        cutoff = time.monotonic() - 86400  # the longest affinity timeout the API accepts
        for key in [k for k, (_b, last) in self.affinity.items() if last < cutoff]:
            del self.affinity[key]

    def _listen_addresses(self) -> set[tuple[str, int, str]]:
        out = set()
        for (ns, name), svc in self.services.items():
            spec = svc.get("spec") or {}
            if (ns, name) == ("kube-system", "kube-dns") or spec.get("type") == "ExternalName":
                continue
            for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
                if not ip or ip == "None" or ":" in ip:
                    continue
                if ipaddress.ip_address(ip) not in SERVICE_CIDR:
                    continue
                for p in spec.get("ports") or []:
                    # listening only while there are ready endpoints: otherwise the kernel refuses the
                    # connection, as kube-proxy's REJECT rule does (SCTP is not proxied)
                    addr = (ip, int(p["port"]), p.get("protocol") or "TCP")
                    if addr[2] in ("TCP", "UDP") and self._backends(addr):
                        out.add(addr)
        return out

    def _node_ports(self) -> dict[tuple[str, int, str], tuple[str, int, str]]:
        """(node address, nodePort, protocol) -> the ClusterIP address it leads to, on every node
        address of this process, for NodePort and LoadBalancer Services with ready endpoints."""
        nodes = sorted({a.ip for a in list(self.agents)})
        out = {}
        for svc in self.services.values():
            spec = svc.get("spec") or {}
            ip = spec.get("clusterIP")
            if spec.get("type") not in ("NodePort", "LoadBalancer") or not ip or ip == "None":
                continue
            for p in spec.get("ports") or []:
                target = (ip, int(p["port"]), p.get("protocol") or "TCP")
                if not p.get("nodePort") or target[2] not in ("TCP", "UDP") or not self._backends(target):
                    continue
                for node in nodes:
                    out[(node, int(p["nodePort"]), target[2])] = target
        return out

    async def _reconcile_node_ports(self, wanted: dict[tuple[str, int, str], tuple[str, int, str]]) -> None:
        for addr in [a for a, (svc, _) in self.node_servers.items() if wanted.get(a) != svc]:
            self.node_servers.pop(addr)[1].close()
        for addr, target in wanted.items():
            if addr in self.node_servers:
                continue
            try:  # in the host's namespace: node addresses are the host's (127.0.x.y)
                if addr[2] == "UDP":
                    server, _ = await self.loop.create_datagram_endpoint(
                        lambda t=target, n=self: _UdpProxy(n, t), local_addr=addr[:2],  # type: ignore[misc]
                        reuse_port=False)
                else:
                    server = await asyncio.start_server(self._handler(target), addr[0], addr[1],
                                                        reuse_address=True)
            except OSError as e:
                log.warning("node port %s:%s/%s not served: %s", *addr, e)
                self.node_servers[addr] = (target, _Closed())  # not retried every round
                continue
            self.node_servers[addr] = (target, server)

    # -- listeners ----------------------------------------------------------------------------------

    async def _reconcile(self, wanted: set[tuple[str, int, str]]) -> None:
        for addr in [a for a in self.servers if a not in wanted]:
            self.servers.pop(addr).close()
        new = [a for a in wanted if a not in self.servers]
        if not new:
            return

        def make_all() -> list[tuple[tuple[str, int, str], socket.socket | None]]:
            out = []
            for addr in new:
                udp = addr[2] == "UDP"
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(addr[:2])
                    if not udp:
                        s.listen(128)
                    s.setblocking(False)
                    out.append((addr, s))
                except OSError:
                    s.close()
                    out.append((addr, None))
            return out

        for addr, sock in await asyncio.to_thread(netns.in_netns, self.svc_path, make_all):
            if sock is None:
                continue
            if addr[2] == "UDP":
                transport, _ = await self.loop.create_datagram_endpoint(
                    lambda a=addr, n=self: _UdpProxy(n, a), sock=sock)  # type: ignore[misc]
                self.servers[addr] = transport
            else:
                self.servers[addr] = await asyncio.start_server(self._handler(addr), sock=sock)

    # -- forwarding ---------------------------------------------------------------------------------

    def _backends(self, addr: tuple[str, int, str]) -> list[tuple[str, int, str]]:
        """(pod IP, target port, pod uid) of the ready endpoints behind a ClusterIP, port and protocol."""
        ip, port, proto = addr
        for (ns, name), svc in self.services.items():
            spec = svc.get("spec") or {}
            if ip not in (spec.get("clusterIPs") or [spec.get("clusterIP")]):
                continue
            sp = next((p for p in spec.get("ports") or []
                       if int(p["port"]) == port and (p.get("protocol") or "TCP") == proto), None)
            if sp is None:
                continue
            out = []
            for subset in (self.endpoints.get((ns, name)) or {}).get("subsets") or []:
                ports = subset.get("ports") or []
                ep = next((p for p in ports if (p.get("name") or "") == (sp.get("name") or "")
                           and (p.get("protocol") or "TCP") == proto), None)
                if ep is None and len(ports) == 1:
                    ep = ports[0]
                if ep is None:
                    continue
                for a in subset.get("addresses") or []:
                    out.append((a["ip"], int(ep["port"]), ((a.get("targetRef") or {}).get("uid") or "")))
            return out
        return []

    def _spec_of(self, addr: tuple[str, int, str]) -> dict[str, Any]:
        ip, port, proto = addr
        for svc in self.services.values():
            spec = svc.get("spec") or {}
            if ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) and any(
                    int(p["port"]) == port and (p.get("protocol") or "TCP") == proto
                    for p in spec.get("ports") or []):
                return dict(spec)
        return {}

    def pick(self, addr: tuple[str, int, str], client: str) -> tuple[str, int, str] | None:
        """A ready backend for a new connection or flow from ``client``: at random, or with
        ``sessionAffinity: ClientIP`` the one this client last used while it stays ready and the
        client came back within ``timeoutSeconds`` (default 3 hours), as kube-proxy's affinity."""
        backends = self._backends(addr)
        if not backends:
            return None
        spec = self._spec_of(addr)
        if spec.get("sessionAffinity") != "ClientIP":
            return random.choice(backends)
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        timeout = float(cfg.get("timeoutSeconds") or 10800)
        now = time.monotonic()
        last = self.affinity.get((addr, client))
        keep = last is not None and last[0] in backends and now - last[1] < timeout
        chosen = last[0] if keep and last is not None else random.choice(backends)
        self.affinity[(addr, client)] = (chosen, now)
        return chosen

    def _local_netns(self, uid: str) -> str | None:
        for a in list(self.agents):
            w = a.runtime.workers.get(uid)
            if w is not None and w.netns_path:
                return str(w.netns_path)
        return None

    def _handler(self, addr: tuple[str, int, str]) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername") or ("", 0)
            chosen = self.pick(addr, str(peer[0]))
            if chosen is None:
                writer.close()
                return
            ip, port, uid = chosen
            path = self._local_netns(uid) if uid else None
            try:
                up = await asyncio.to_thread(
                    netns.connect, path, "127.0.0.1" if path else ip, port, 5
                )
                up.setblocking(False)
                ur, uw = await asyncio.open_connection(sock=up)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, uw), _pipe(ur, writer))

        return handle


class _Closed:
    def close(self) -> None:
        pass


class _UdpProxy(asyncio.DatagramProtocol):
    """One UDP Service port: each client address gets a flow to one backend (a connected socket, in the
    backend pod's namespace when it runs here); replies go back from the ClusterIP and port."""

    def __init__(self, net: ClusterNet, addr: tuple[str, int, str]) -> None:
        self.net, self.addr = net, addr
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], _UdpFlow] = {}
        self.full = False  # at UDP_MAX_FLOWS (logged once per episode)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
        flow = self.flows.get(client)
        if flow is not None and not flow.closed:
            flow.send(data)
            return
        if len(self.flows) >= UDP_MAX_FLOWS:
            if not self.full:
                log.warning("UDP %s:%s: %d flows, dropping new clients' datagrams",
                            *self.addr[:2], len(self.flows))
            self.full = True
            return
        self.full = False
        chosen = self.net.pick(self.addr, client[0])
        if chosen is None:
            return
        ip, port, uid = chosen
        path = self.net._local_netns(uid) if uid else None
        flow = self.flows[client] = _UdpFlow(self, client)
        flow.pending.append(data)
        flow.opener = asyncio.ensure_future(flow.open(path, "127.0.0.1" if path else ip, port))

    def connection_lost(self, exc: Exception | None) -> None:
        for flow in list(self.flows.values()):
            flow.close()
        self.flows.clear()


class _UdpFlow(asyncio.DatagramProtocol):
    def __init__(self, proxy: _UdpProxy, client: tuple[str, int]) -> None:
        self.proxy, self.client = proxy, client
        self.up: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.closed = False
        self.last = time.monotonic()
        self.idle: asyncio.TimerHandle | None = None
        self.opener: asyncio.Future[None] | None = None

    async def open(self, path: str | None, ip: str, port: int) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((ip, port))
            s.setblocking(False)
            return s

        try:
            sock = await (asyncio.to_thread(netns.in_netns, path, make) if path else asyncio.to_thread(make))
            self.up, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, sock=sock)
        except OSError:
            self.close()
            return
        for data in self.pending:
            self.up.sendto(data)
        self.pending.clear()
        self._arm()

    def _arm(self) -> None:
        self.last = time.monotonic()
        if self.idle is None:
            self.idle = asyncio.get_running_loop().call_later(UDP_IDLE, self._expire)

    def _expire(self) -> None:
        self.idle = None
        if time.monotonic() - self.last >= UDP_IDLE:
            self.close()
        else:
            self.idle = asyncio.get_running_loop().call_later(UDP_IDLE - (time.monotonic() - self.last),
                                                              self._expire)

    def send(self, data: bytes) -> None:
        if self.up is None:
            if len(self.pending) < UDP_MAX_PENDING:  # beyond: dropped, as a full socket buffer drops
                self.pending.append(data)
            return
        self.up.sendto(data)
        self._arm()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        t = self.proxy.transport
        if t is not None and not t.is_closing():
            t.sendto(data, self.client)
        self._arm()

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from the backend: the client times out, as through DNAT

    def close(self) -> None:
        self.closed = True
        if self.proxy.flows.get(self.client) is self:
            del self.proxy.flows[self.client]
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if self.up is not None:
            self.up.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        await asyncio.sleep(0)


LINK_NET = ipaddress.ip_network("169.254.0.0/16")  # one /32 per pod on its svc0 link


def _ip(*args: str, stdin: str | None = None) -> None:
    r = subprocess.run(["ip", *args], input=stdin, capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _link_pod(path: str, svc_name: str, index: int) -> None:
    """A veth pair from the pod's namespace (``svc0``) into the service namespace, and the routes."""
    pod = path.rsplit("/", 1)[-1]
    addr = str(LINK_NET.network_address + 256 + index)
    peer = f"p{index}"
    with_link = subprocess.run(["ip", "-n", pod, "link", "show", "svc0"], capture_output=True).returncode == 0
    if with_link:  # left by an agent before this one (its service namespace is gone): start afresh
        _ip("-n", pod, "link", "del", "svc0")
    _ip("-n", pod, "link", "add", "svc0", "type", "veth", "peer", "name", peer, "netns", svc_name)
    _ip("-n", pod, "-batch", "-", stdin=(
        f"addr add {addr}/32 dev svc0\nlink set svc0 up\n"
        f"route replace {SERVICE_CIDR} dev svc0 src {addr}\n"))
    _ip("-n", svc_name, "-batch", "-", stdin=f"link set {peer} up\nroute replace {addr}/32 dev {peer}\n")


# -- the Services' environment variables ----------------------------------------------------------


def service_env(agent: NodeAgent, ns: str) -> dict[str, str]:
    """``<NAME>_SERVICE_HOST``/``_PORT`` and the Docker-link variables for the Services of ``ns`` with a
    cluster IP, as the kubelet adds them (``enableServiceLinks``) at container start; from the
    informers' cache (empty for agents without cluster networking, whose pods cannot reach a ClusterIP).
    ``kubernetes`` in ``default`` is left out: the agent's own ``KUBERNETES_*`` name the apiserver."""
    net = _instances.get(id(agent.group))
    if net is None:
        return {}
    out: dict[str, str] = {}
    for (sns, name), svc in sorted(net._cached()[0].items()):
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        if sns != ns or not ip or ip == "None" or (sns, name) == ("default", "kubernetes"):
            continue
        out.update(link_env(name, ip, spec.get("ports") or []))
    return out


def link_env(name: str, ip: str, ports: list[dict[str, Any]]) -> dict[str, str]:
    """One Service's variables (the kubelet's ``envvars`` rules): upper case, ``-`` as ``_``."""
    if not ports:
        return {}
    pre = name.upper().replace("-", "_")
    first = ports[0]
    out = {f"{pre}_SERVICE_HOST": ip, f"{pre}_SERVICE_PORT": str(first["port"]),
           f"{pre}_PORT": f"{(first.get('protocol') or 'TCP').lower()}://{ip}:{first['port']}"}
    for p in ports:
        port, proto = str(p["port"]), (p.get("protocol") or "TCP")
        if p.get("name"):
            out[f"{pre}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = port
        link = f"{pre}_PORT_{port}_{proto.upper()}"
        out[link] = f"{proto.lower()}://{ip}:{port}"
        out[f"{link}_PROTO"] = proto.lower()
        out[f"{link}_PORT"] = port
        out[f"{link}_ADDR"] = ip
    return out


# -- one instance per agent process ----------------------------------------------------------------

_lock = threading.Lock()
_instances: dict[int, ClusterNet] = {}


LINK_WAIT_S = 10.0  # a sync round is POLL seconds; this bounds a stuck one, then the pod starts anyway


def wait_linked(
    agent: NodeAgent, netns_path: str, stop: threading.Event, timeout: float = LINK_WAIT_S
) -> bool:
    """Block (a pod worker's thread) until the cluster network has linked ``netns_path`` (or given up
    on it), as a kubelet starts containers only after CNI set up the sandbox's network: a container
    that resolved a Service name at once found no route to the DNS server. True when linked; False
    without cluster networking (an agent without it, or no sync within ``timeout``)."""
    net = _instances.get(id(agent.group))
    if net is None:
        return False
    deadline = time.monotonic() + timeout
    net.kick()
    while time.monotonic() < deadline and not stop.is_set():
        index = net.pods.get(netns_path)
        if index is not None:
            return index > 0
        stop.wait(0.02)
    log.warning("pod namespace %s: not linked to the cluster network after %.0f s; starting anyway",
                netns_path, timeout)
    return False


async def attach(agent: NodeAgent) -> None:
    """Called on the agent's loop when its kubelet API starts (pods of agents without network
    namespaces get nothing)."""
    if not agent.options.use_netns:
        return
    with _lock:
        net = _instances.get(id(agent.group))
        if net is None:
            net = _instances[id(agent.group)] = ClusterNet(agent)
            net.start()
        net.agents.append(agent)


async def detach(agent: NodeAgent) -> None:
    with _lock:
        net = _instances.get(id(agent.group))
        if net is None or agent not in net.agents:
            return
        net.agents.remove(agent)
        if net.agents:
            return
        del _instances[id(agent.group)]
    await net.stop()
