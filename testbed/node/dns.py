"""The cluster DNS answers (CoreDNS's ``kubernetes`` plugin, the part pods rely on), from the services
and endpoints ``clusternet.py`` keeps.

* ``<svc>.<ns>.svc.<domain>``: A record(s) of the ClusterIP, or of the ready endpoints of a headless
  Service; ``<hostname>.<svc>.<ns>.svc.<domain>`` for endpoints with a hostname (StatefulSets);
* ``_<port>._<proto>.<svc>.<ns>.svc.<domain>``: SRV records;
* ``<a-b-c-d>.<ns>.pod.<domain>``: the address written in the name;
* ExternalName Services: a CNAME;
* ``<d>.<c>.<b>.<a>.in-addr.arpa``: PTR to the Service of a cluster IP, or to the endpoint name of
  a Service's ready address;
* AAAA and other types of known names: no data (NOERROR, empty); anything else: NXDOMAIN (the
  testbed has no upstream resolver to forward to).

Over UDP (``clusternet._DnsProtocol``) and TCP (``serve_tcp``: each message after its 2-byte length).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from collections.abc import Callable
from typing import Any

DOMAIN = "cluster.local"
TTL = 5
# seconds a DNS-over-TCP connection may wait for its next query (or the rest of one) before it is closed,
# as CoreDNS's read timeout closes it: idle connections must not pile up in the node agent
TCP_IDLE = 10.0
A, CNAME, PTR, SRV, AAAA = 1, 5, 12, 33, 28
NOERROR, FORMERR, NXDOMAIN = 0, 1, 3


def _name(labels: str) -> bytes:
    out = b""
    for part in labels.strip(".").split("."):
        if part:
            out += bytes([len(part)]) + part.encode()
    return out + b"\x00"


def parse_query(data: bytes) -> tuple[int, int, str, int, int] | None:
    """(id, flags, qname, qtype, end of the question) of a one-question query, or None."""
    if len(data) < 12:
        return None
    qid, flags, qd = struct.unpack(">HHH", data[:6])
    if qd < 1:
        return None
    pos, labels = 12, []
    while pos < len(data):
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0:
            return None
        labels.append(data[pos + 1 : pos + 1 + n].decode(errors="replace"))
        pos += 1 + n
    if pos + 4 > len(data):
        return None
    qtype, _qclass = struct.unpack(">HH", data[pos : pos + 4])
    return qid, flags, ".".join(labels).lower(), qtype, pos + 4


Records = list[tuple[int, bytes]]  # (type, rdata)


class Resolver:
    """Looks names up in ``services()`` and ``endpoints()`` (``{(ns, name): object}``)."""

    def __init__(self, services: Callable[[], dict[tuple[str, str], Any]],
                 endpoints: Callable[[], dict[tuple[str, str], Any]], domain: str = DOMAIN) -> None:
        self.services, self.endpoints, self.domain = services, endpoints, domain

    def _ready_addresses(self, ns: str, name: str) -> list[dict[str, Any]]:
        ep = self.endpoints().get((ns, name)) or {}
        return [a for s in ep.get("subsets") or [] for a in s.get("addresses") or []]

    def lookup(self, qname: str, qtype: int) -> tuple[int, Records]:
        if qname.endswith(".in-addr.arpa"):
            return self._reverse(qname, qtype)
        suffix = "." + self.domain
        if not qname.endswith(suffix):
            return NXDOMAIN, []
        parts = qname[: -len(suffix)].split(".")
        if len(parts) >= 3 and parts[-1] == "pod":
            try:
                ip = ipaddress.IPv4Address(parts[-3].replace("-", "."))
            except ValueError:
                return NXDOMAIN, []
            return NOERROR, [(A, ip.packed)] if qtype == A else []
        if len(parts) < 3 or parts[-1] != "svc":
            return NXDOMAIN, []
        ns, name = parts[-2], parts[-3]
        svc = self.services().get((ns, name))
        if svc is None:
            return NXDOMAIN, []
        spec = svc.get("spec") or {}
        head = parts[:-3]
        if spec.get("type") == "ExternalName":
            return NOERROR, [(CNAME, _name(spec.get("externalName", "")))] if not head else []
        headless = spec.get("clusterIP") in ("None", "", None)
        if len(head) == 2 and head[0].startswith("_") and head[1].startswith("_"):
            return NOERROR, self._srv(spec, ns, name, head, headless) if qtype == SRV else []
        if len(head) == 1:  # <hostname>.<svc>: an endpoint with that hostname
            ips = [a["ip"] for a in self._ready_addresses(ns, name) if a.get("hostname") == head[0]]
            if not ips:
                return NXDOMAIN, []
            return NOERROR, [(A, ipaddress.IPv4Address(ip).packed) for ip in ips] if qtype == A else []
        if head:
            return NXDOMAIN, []
        if qtype != A:
            return NOERROR, []
        if headless:
            ips = [a["ip"] for a in self._ready_addresses(ns, name)]
        else:
            ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ":" not in ip]
        return NOERROR, [(A, ipaddress.IPv4Address(ip).packed) for ip in ips]

    def _reverse(self, qname: str, qtype: int) -> tuple[int, Records]:
        """PTR for a Service's cluster IP (``<svc>.<ns>.svc``), else for a ready endpoint address
        (``<hostname or a-b-c-d>.<svc>.<ns>.svc``), as CoreDNS answers; NXDOMAIN otherwise."""
        octets = qname[: -len(".in-addr.arpa")].split(".")
        if len(octets) != 4:
            return NXDOMAIN, []
        ip = ".".join(reversed(octets))
        services = sorted(self.services().items())
        names = []
        for (ns, name), svc in services:
            spec = svc.get("spec") or {}
            if ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]):
                names.append(f"{name}.{ns}.svc.{self.domain}")
        for (ns, name), _svc in services if not names else []:  # an endpoint: under each Service it backs
            for a in self._ready_addresses(ns, name):
                if a.get("ip") == ip:
                    names.append(f"{a.get('hostname') or ip.replace('.', '-')}.{name}.{ns}.svc.{self.domain}")
        if not names:
            return NXDOMAIN, []
        return NOERROR, [(PTR, _name(n)) for n in names] if qtype == PTR else []

    def _srv(self, spec: dict[str, Any], ns: str, name: str, head: list[str], headless: bool) -> Records:
        port_name, proto = head[0][1:], head[1][1:].upper()
        out: Records = []
        for p in spec.get("ports") or []:
            if (p.get("name") or "") != port_name or (p.get("protocol") or "TCP") != proto:
                continue
            targets = [f"{name}.{ns}.svc.{self.domain}"]
            if headless:
                targets = [f"{a.get('hostname') or a['ip'].replace('.', '-')}.{name}.{ns}.svc.{self.domain}"
                           for a in self._ready_addresses(ns, name)]
            for t in targets:
                out.append((SRV, struct.pack(">HHH", 0, 100, int(p["port"])) + _name(t)))
        return out

    def answer(self, data: bytes) -> bytes | None:
        q = parse_query(data)
        if q is None:
            if len(data) >= 2:
                return data[:2] + struct.pack(">HHHHH", 0x8000 | FORMERR, 0, 0, 0, 0)
            return None
        qid, flags, qname, qtype, end = q
        rcode, records = self.lookup(qname, qtype)
        rd = flags & 0x0100
        head = struct.pack(">HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, len(records), 0, 0)
        body = data[12:end]
        for rtype, rdata in records:
            body += struct.pack(">HHHIH", 0xC00C, rtype, 1, TTL, len(rdata)) + rdata
        return head + body


async def serve_tcp(resolver: Resolver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """DNS over TCP (RFC 1035 4.2.2, RFC 7766): length-prefixed queries, answered in order, until the
    client closes, sends something unparseable or stays silent ``TCP_IDLE`` seconds."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError):
        while True:
            n = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), TCP_IDLE))[0]
            reply = resolver.answer(await asyncio.wait_for(reader.readexactly(n), TCP_IDLE))
            if reply is None:
                break
            writer.write(struct.pack(">H", len(reply)) + reply)
            await writer.drain()
    writer.close()
