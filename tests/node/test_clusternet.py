"""Issue 14 item 5: cluster DNS and Service virtual IPs inside the pods' network namespaces: a pod
reaches a Service by name and port; resolv.conf as the kubelet writes it; DNS answers."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, dns, parse_inventory, podspec

from .helpers import create_bound_pod, get_pod, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (pod network namespaces)")
NS = "default"


def _query(name: str, qtype: int = dns.A) -> bytes:
    return struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + dns._name(name) + struct.pack(">HH", qtype, 1)


def test_dns_answers() -> None:
    services = {
        ("a", "web"): {"spec": {"clusterIP": "10.96.3.4", "clusterIPs": ["10.96.3.4"],
                                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
        ("a", "db"): {"spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
        ("a", "ext"): {"spec": {"type": "ExternalName", "externalName": "example.org"}},
    }
    endpoints = {("a", "db"): {"subsets": [{"addresses": [{"ip": "127.64.0.9", "hostname": "db-0"}]}]}}
    r = dns.Resolver(lambda: services, lambda: endpoints)
    assert r.lookup("web.a.svc.cluster.local", dns.A) == (dns.NOERROR, [(dns.A, bytes([10, 96, 3, 4]))])
    assert r.lookup("web.a.svc.cluster.local", dns.AAAA) == (dns.NOERROR, [])
    assert r.lookup("db.a.svc.cluster.local", dns.A)[1] == [(dns.A, bytes([127, 64, 0, 9]))]
    assert r.lookup("db-0.db.a.svc.cluster.local", dns.A)[1] == [(dns.A, bytes([127, 64, 0, 9]))]
    assert r.lookup("nope.a.svc.cluster.local", dns.A) == (dns.NXDOMAIN, [])
    assert r.lookup("example.com", dns.A) == (dns.NXDOMAIN, [])
    assert r.lookup("10-1-2-3.a.pod.cluster.local", dns.A)[1] == [(dns.A, bytes([10, 1, 2, 3]))]
    assert r.lookup("ext.a.svc.cluster.local", dns.A)[1][0][0] == dns.CNAME
    # reverse lookups: a cluster IP names its Service, a headless endpoint its hostname
    web_ptr = (dns.PTR, dns._name("web.a.svc.cluster.local"))
    assert r.lookup("4.3.96.10.in-addr.arpa", dns.PTR) == (dns.NOERROR, [web_ptr])
    db0 = dns._name("db-0.db.a.svc.cluster.local")
    assert r.lookup("9.0.64.127.in-addr.arpa", dns.PTR)[1] == [(dns.PTR, db0)]
    assert r.lookup("1.1.1.1.in-addr.arpa", dns.PTR) == (dns.NXDOMAIN, [])
    endpoints[("a", "web")] = {"subsets": [{"addresses": [{"ip": "127.64.0.7"}]}]}
    assert r.lookup("7.0.64.127.in-addr.arpa", dns.PTR)[1] == [
        (dns.PTR, dns._name("127-64-0-7.web.a.svc.cluster.local"))]
    srv = r.lookup("_http._tcp.web.a.svc.cluster.local", dns.SRV)[1]
    assert srv and struct.unpack(">HHH", srv[0][1][:6])[2] == 80
    reply = r.answer(_query("web.a.svc.cluster.local"))
    assert reply is not None and reply[:2] == b"\x00\x07" and reply[3] & 0x0F == 0
    assert struct.unpack(">H", reply[6:8])[0] == 1 and reply.endswith(bytes([10, 96, 3, 4]))


def test_resolv_conf_follows_dns_policy() -> None:
    pod: dict[str, Any] = {"metadata": {"namespace": "team"}, "spec": {}}
    conf = podspec.resolv_conf(pod)
    if conf is None:
        assert os.geteuid() != 0
        return
    assert conf.splitlines() == ["search team.svc.cluster.local svc.cluster.local cluster.local",
                                 "nameserver 10.96.0.10", "options ndots:5"]
    assert podspec.resolv_conf({**pod, "spec": {"dnsPolicy": "Default"}}) is None
    assert podspec.resolv_conf({**pod, "spec": {"hostNetwork": True}}) is None
    custom = podspec.resolv_conf({**pod, "spec": {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["1.2.3.4"], "searches": ["x.y"], "options": [{"name": "ndots", "value": "2"}]}}})
    assert custom == "search x.y\nnameserver 1.2.3.4\noptions ndots:2\n"


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory({"nodes": [{"name": "node-n", "capacity": {"cpu": "16"}}]})
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, tmp_path_factory.mktemp("clusternet"), options=opts) as ag:
        yield ag


def _running(kube: Kube, name: str) -> dict[str, Any]:
    return wait_for(lambda: (p := get_pod(kube, NS, name))["status"].get("phase") == "Running" and p, 30)


@ROOT_ONLY
def test_pod_reaches_a_service_by_name(kube: Kube, agents: NodeAgents) -> None:
    # the Service first, on the port its backend listens on: the backend's own wildcard listener and
    # the Service's address must not collide
    svc = kube.create(f"/api/v1/namespaces/{NS}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}})
    kube.create(f"/api/v1/namespaces/{NS}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
        "spec": {"selector": {"app": "none"}, "ports": [{"port": 81}]}})
    time.sleep(0.6)  # a sync round of the proxy
    create_bound_pod(kube, NS, "node-n", "backend", {"containers": [{"name": "c", "image": "nginx"}]})
    backend = _running(kube, "backend")
    # the Endpoints the endpoints controller would write for a ready backend
    kube.create(f"/api/v1/namespaces/{NS}/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": backend["status"]["podIP"], "targetRef": {
            "kind": "Pod", "name": "backend", "namespace": NS, "uid": backend["metadata"]["uid"]}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]})
    script = (
        "import socket, time, urllib.request\n"
        "for i in range(100):\n"
        "    try:\n"
        "        body = urllib.request.urlopen('http://web/', timeout=2).read().decode()\n"
        "        break\n"
        "    except OSError as e:\n"
        "        err = e; time.sleep(0.2)\n"
        "else:\n"
        "    raise SystemExit(f'no answer: {err}')\n"
        "print(socket.gethostbyname('web'), socket.gethostbyname('web.default.svc.cluster.local'))\n"
        "print('nginx' in body)\n"
        "try:\n"
        "    socket.gethostbyname('missing-svc')\n"
        "except OSError:\n"
        "    print('missing: NXDOMAIN')\n"
        "print(open('/etc/resolv.conf').read().split()[1])\n"
        "try:\n"
        "    urllib.request.urlopen('http://empty:81/', timeout=2)\n"
        "except Exception as e:\n"
        "    print('empty:', type(getattr(e, 'reason', e)).__name__)\n"
    )
    create_bound_pod(kube, NS, "node-n", "client", {"restartPolicy": "Never", "containers": [
        {"name": "c", "image": "python:3.11", "command": ["python3", "-c", script]}]})
    finished = ("Succeeded", "Failed")
    done = wait_for(lambda: (p := get_pod(kube, NS, "client"))["status"].get("phase") in finished and p, 40)
    log = next((agents.agent("node-n").root / "var/log/pods").glob(f"{NS}_client_*/c/0.log")).read_text()
    lines = [ln.split(" ", 3)[3] for ln in log.splitlines()]
    assert done["status"]["phase"] == "Succeeded", lines
    ip = svc["spec"]["clusterIP"]
    assert lines[:4] == [f"{ip} {ip}", "True", "missing: NXDOMAIN", "default.svc.cluster.local"], lines
    # a Service without ready endpoints refuses, as kube-proxy's REJECT rule makes it
    assert lines[4] == "empty: ConnectionRefusedError", lines
    assert get_pod(kube, NS, "backend")["status"]["containerStatuses"][0]["restartCount"] == 0
    dns_svc = kube.get("/api/v1/namespaces/kube-system/services/kube-dns")
    assert dns_svc["spec"]["clusterIP"] == "10.96.0.10"


UDP_ECHO = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 5353))\n"
    "while True:\n"
    "    data, addr = s.recvfrom(2048)\n"
    "    s.sendto(b'echo:' + data, addr)\n"
)
UDP_CLIENT = (
    "import os, socket, struct, time\n"
    "print(os.environ.get('UDP_ECHO_SERVICE_HOST'), os.environ.get('UDP_ECHO_SERVICE_PORT'),\n"
    "      os.environ.get('UDP_ECHO_SERVICE_PORT_U'), os.environ.get('UDP_ECHO_PORT'),\n"
    "      os.environ['ECHO_AT'])\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.settimeout(0.5)\n"
    "for i in range(60):\n"
    "    s.sendto(b'ping', ('udp-echo', 9999))\n"
    "    try:\n"
    "        data, src = s.recvfrom(2048)\n"
    "        break\n"
    "    except OSError:\n"
    "        time.sleep(0.2)\n"
    "print(data.decode(), src[0] == socket.gethostbyname('udp-echo'))\n"
    "q = struct.pack('>HHHHHH', 9, 0x100, 1, 0, 0, 0)\n"
    "q += b''.join(bytes([len(p)]) + p.encode() for p in 'udp-echo.default.svc.cluster.local'.split('.'))\n"
    "q += b'\\0' + struct.pack('>HH', 1, 1)\n"
    "t = socket.create_connection(('10.96.0.10', 53), timeout=5)\n"
    "t.sendall(struct.pack('>H', len(q)) + q)\n"
    "n = struct.unpack('>H', t.recv(2))[0]\n"
    "reply = b''\n"
    "while len(reply) < n:\n"
    "    reply += t.recv(n - len(reply))\n"
    "print('tcp-dns', socket.inet_ntoa(reply[-4:]))\n"
    "print(socket.gethostname(), open('/etc/hostname').read().strip())\n"
    "print('|'.join(l for l in open('/etc/hosts').read().splitlines() if l and not l.startswith('#')))\n"
)


@ROOT_ONLY
def test_udp_service_tcp_dns_service_env_and_hosts(kube: Kube, agents: NodeAgents) -> None:
    """A UDP Service port is proxied both ways (the reply comes from the ClusterIP); the cluster DNS
    answers over TCP; containers get the namespace's Service variables, also in $(VAR) references (not
    with enableServiceLinks: false), and the kubelet's /etc/hosts (hostname, subdomain, hostAliases)."""
    svc = kube.create(f"/api/v1/namespaces/{NS}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "udp-echo"},
        "spec": {"selector": {"app": "udp-echo"},
                 "ports": [{"name": "u", "port": 9999, "protocol": "UDP", "targetPort": 5353}]}})
    ip = svc["spec"]["clusterIP"]
    create_bound_pod(kube, NS, "node-n", "udp-backend", {"containers": [
        {"name": "c", "image": "python:3.11", "command": ["python3", "-c", UDP_ECHO]}]})
    backend = _running(kube, "udp-backend")
    kube.create(f"/api/v1/namespaces/{NS}/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "udp-echo"},
        "subsets": [{"addresses": [{"ip": backend["status"]["podIP"], "targetRef": {
            "kind": "Pod", "name": "udp-backend", "namespace": NS, "uid": backend["metadata"]["uid"]}}],
            "ports": [{"name": "u", "port": 5353, "protocol": "UDP"}]}]})
    time.sleep(0.6)  # a sync round: the client's container starts with the Service in the cache
    create_bound_pod(kube, NS, "node-n", "udp-client", {
        "restartPolicy": "Never", "hostname": "box", "subdomain": "grp",
        "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}],
        "containers": [{"name": "c", "image": "python:3.11", "command": ["python3", "-c", UDP_CLIENT],
                        "env": [{"name": "ECHO_AT",
                                 "value": "$(UDP_ECHO_SERVICE_HOST):$(UDP_ECHO_SERVICE_PORT)"}]}]})
    create_bound_pod(kube, NS, "node-n", "no-links", {
        "restartPolicy": "Never", "enableServiceLinks": False, "containers": [{
            "name": "c", "image": "busybox",
            "command": ["sh", "-c",
                        "echo links=${UDP_ECHO_SERVICE_HOST:-none} k8s=${KUBERNETES_SERVICE_HOST:+set}"]}]})
    finished = ("Succeeded", "Failed")
    root = agents.agent("node-n").root / "var/log/pods"
    for name in ("udp-client", "no-links"):
        done = wait_for(lambda n=name: (p := get_pod(kube, NS, n))["status"].get("phase") in finished and p,
                        40)
        log = next(root.glob(f"{NS}_{name}_*/c/0.log")).read_text()
        lines = [ln.split(" ", 3)[3] for ln in log.splitlines()]
        assert done["status"]["phase"] == "Succeeded", lines
        if name == "no-links":
            assert lines == ["links=none k8s=set"], lines
            continue
        assert lines[0] == f"{ip} 9999 9999 udp://{ip}:9999 {ip}:9999", lines  # $(VAR) sees them too
        assert lines[1:4] == ["echo:ping True", f"tcp-dns {ip}", "box box"], lines
        pod_ip = done["status"]["podIP"]
        hosts = lines[4].split("|")
        assert hosts[0] == "127.0.0.1\tlocalhost", hosts
        assert f"{pod_ip}\tbox.grp.{NS}.svc.cluster.local\tbox" in hosts, hosts
        assert hosts[-1] == "10.1.2.3\tfoo.local\tbar.local", hosts


@ROOT_ONLY
def test_node_port_reaches_the_backend_from_the_host(kube: Kube, agents: NodeAgents) -> None:
    """A NodePort Service gets a port of 30000-32767 from the apiserver, and the node agent serves it
    on its node address in the host's namespace, as kube-proxy serves it on every node."""
    import urllib.request

    svc = kube.create(f"/api/v1/namespaces/{NS}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "np-web"},
        "spec": {"type": "NodePort", "selector": {"app": "np-web"},
                 "ports": [{"name": "http", "port": 8080, "targetPort": 80}]}})
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767, svc["spec"]
    create_bound_pod(kube, NS, "node-n", "np-backend", {"containers": [{"name": "c", "image": "nginx"}]})
    backend = _running(kube, "np-backend")
    kube.create(f"/api/v1/namespaces/{NS}/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "np-web"},
        "subsets": [{"addresses": [{"ip": backend["status"]["podIP"], "targetRef": {
            "kind": "Pod", "name": "np-backend", "namespace": NS, "uid": backend["metadata"]["uid"]}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]})
    url = f"http://{agents.agent('node-n').ip}:{node_port}/"

    def fetch() -> str:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            time.sleep(0.2)
            return ""

    assert "Welcome to nginx!" in wait_for(fetch, 15)
    kube.delete(f"/api/v1/namespaces/{NS}/services/np-web")
    wait_for(lambda: fetch() == "", 10)  # the listener goes with the Service


def test_session_affinity_keeps_a_client_on_its_backend() -> None:
    """``sessionAffinity: ClientIP``: a client stays on the backend it got while that stays ready and
    it comes back within the timeout; other clients and Services without affinity spread at random."""
    from testbed.node import clusternet

    net = clusternet.ClusterNet.__new__(clusternet.ClusterNet)
    net.affinity = {}
    spec: dict[str, Any] = {"clusterIP": "10.96.9.9", "sessionAffinity": "ClientIP",
                            "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}
    net.services = {("a", "s"): {"spec": spec}}
    ips = [f"127.64.9.{i}" for i in range(1, 9)]
    net.endpoints = {("a", "s"): {"subsets": [{"addresses": [{"ip": ip} for ip in ips],
                                               "ports": [{"name": "p", "port": 8080}]}]}}
    addr = ("10.96.9.9", 80, "TCP")
    first = net.pick(addr, "169.254.1.1")
    assert first is not None and first[1] == 8080
    assert {net.pick(addr, "169.254.1.1") for _ in range(30)} == {first}
    assert len({net.pick(addr, f"169.254.1.{i}") for i in range(2, 60)}) > 1  # other clients spread
    # the chosen backend goes: the client moves to another one and stays there
    net.endpoints["a", "s"]["subsets"][0]["addresses"] = [{"ip": ip} for ip in ips if ip != first[0]]
    moved = net.pick(addr, "169.254.1.1")
    assert moved is not None and moved != first
    assert {net.pick(addr, "169.254.1.1") for _ in range(10)} == {moved}
    # a client back after its timeout is placed afresh
    spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 1}}

    def after_timeout() -> tuple[str, int, str] | None:
        net.affinity = {k: (v[0], v[1] - 2) for k, v in net.affinity.items()}
        return net.pick(addr, "169.254.1.1")

    assert len({after_timeout() for _ in range(40)}) > 1
    del spec["sessionAffinity"]
    assert len({net.pick(addr, "169.254.1.1") for _ in range(40)}) > 1


def test_udp_flows_of_a_service_port_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod spraying a UDP Service from ever new source ports must not exhaust the node agent's
    descriptors (every flow holds a socket for 30 s): past ``UDP_MAX_FLOWS`` flows a new client's
    datagrams are dropped, as a full conntrack table drops them; known flows still pass, and a
    flow still opening queues at most ``UDP_MAX_PENDING`` datagrams."""
    import asyncio
    import socket

    from testbed.node import clusternet

    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.bind(("127.0.0.1", 0))
    net = clusternet.ClusterNet.__new__(clusternet.ClusterNet)
    net.affinity = {}
    net.services = {("a", "u"): {"spec": {"clusterIP": "10.96.9.10",
                                          "ports": [{"name": "u", "port": 53, "protocol": "UDP"}]}}}
    net.endpoints = {("a", "u"): {"subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                                               "ports": [{"name": "u", "port": backend.getsockname()[1],
                                                          "protocol": "UDP"}]}]}}
    cap = 100  # the real bound, smaller: the test must not need a raised descriptor limit
    monkeypatch.setattr(clusternet, "UDP_MAX_FLOWS", cap)

    async def spray() -> tuple[int, int, int]:
        proxy = clusternet._UdpProxy(net, ("10.96.9.10", 53, "UDP"))
        before = len(os.listdir("/proc/self/fd"))
        for i in range(cap + 300):
            proxy.datagram_received(b"q", ("127.0.0.2", 1024 + i))
        first = proxy.flows[("127.0.0.2", 1024)]
        for _ in range(clusternet.UDP_MAX_PENDING + 50):
            first.send(b"more")
        queued = len(first.pending)
        await asyncio.gather(*(f.opener for f in list(proxy.flows.values()) if f.opener))
        opened = len(os.listdir("/proc/self/fd")) - before
        flows = len(proxy.flows)
        proxy.connection_lost(None)
        return flows, opened, queued

    try:
        flows, opened, queued = asyncio.run(spray())
    finally:
        backend.close()
    assert flows == cap
    assert opened <= cap + 16  # the flows' sockets and the loop's own, not one per source port
    assert queued <= clusternet.UDP_MAX_PENDING


def test_dns_over_tcp_drops_an_idle_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that connects to the cluster DNS over TCP and sends nothing (or half a query) is
    disconnected after ``TCP_IDLE`` seconds, as CoreDNS's read timeout does: idle connections
    must not pile up in the node agent. A client that asks in time is answered."""
    import asyncio

    monkeypatch.setattr(dns, "TCP_IDLE", 0.5)
    services = {("a", "web"): {"spec": {"clusterIP": "10.96.3.4", "ports": [{"port": 80}]}}}
    r = dns.Resolver(lambda: services, lambda: {})

    async def run() -> tuple[bytes, bytes, float]:
        server = await asyncio.start_server(lambda rd, wr: dns.serve_tcp(r, rd, wr), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            rd, wr = await asyncio.open_connection("127.0.0.1", port)
            q = _query("web.a.svc.cluster.local")
            wr.write(struct.pack(">H", len(q)) + q)
            n = struct.unpack(">H", await asyncio.wait_for(rd.readexactly(2), 5))[0]
            answer = await asyncio.wait_for(rd.readexactly(n), 5)
            t = time.monotonic()
            wr.write(b"\x00")  # half a length prefix, then nothing
            rest = await asyncio.wait_for(rd.read(), 5)  # b"" once the server hangs up
            wr.close()
            return answer, rest, time.monotonic() - t
        finally:
            server.close()

    answer, rest, waited = asyncio.run(run())
    assert bytes([10, 96, 3, 4]) in answer
    assert rest == b"" and waited < 3
