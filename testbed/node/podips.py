"""Pod IPs that are unique on the whole host, across every testbed running on it.

Pod IPs are 127.64.0.0/10 addresses and the node agents bind host-side forwarders on them, so two
testbeds on one machine (two pytest-xdist workers, a test next to a ``testbed up``) must never hand out
the same address. Like host-local IPAM, addresses come from a file shared by everyone on the host;
to keep that file small and the lock cheap, it records whole /24 *blocks* rather than single
addresses: an allocator leases a block (``{block: {pid, start, owner}}``) under ``flock`` and hands
out its 254 addresses in memory, leasing another block when they are used up. A lease whose process
is gone (or whose pid now belongs to a younger process) is reclaimed by the next allocator that needs
a block; :meth:`PodIPAllocator.close` gives its blocks back at once.

A node agent of a multi-host lab (``testbed/lab``) is given its host's own routable pod /24 instead,
in ``$TESTBED_POD_CIDR`` (a CNI's per-node pod CIDR): addresses then come from that range, in memory
(one agent per lab host owns it), and the lab makes the range local on that host and routes it
from the others (``testbed/lab/hosts.py``).

The registry is ``$TESTBED_POD_IP_REGISTRY`` or ``/tmp/testbed-pod-ip-blocks.json`` (falling back to a
per-user file when another user's file cannot be opened). It is deliberately not under ``$TMPDIR``:
a run that points ``TMPDIR`` at a scratch folder of its own still shares the host's addresses, and
two registries would hand out the same pod IP to two testbeds.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIRST_BLOCK = 64 * 256  # 127.64.0.0/24, as an index of /24 blocks inside 127/8
BLOCKS = 64 * 256  # 127.64.0.0/10 holds 16384 /24 blocks
ENV = "TESTBED_POD_IP_REGISTRY"
CIDR_ENV = "TESTBED_POD_CIDR"  # set by the lab's emulated_node role: this host's routable pod range
HOST_REGISTRY = "/tmp/testbed-pod-ip-blocks.json"  # one per host, whatever TMPDIR says


class PodIPsExhausted(Exception):
    """Every /24 block of 127.64.0.0/10 is leased by a live process."""


def default_registry() -> Path:
    return Path(os.environ.get(ENV) or HOST_REGISTRY)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" when unknown): tells pid reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name may hold spaces and parentheses: fields count from the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    now = _start_time(pid)
    return not (start and now and now != start)


def block_address(block: int, host: int) -> str:
    """Address ``host`` (1..254) of /24 block ``block`` (an index into 127.64.0.0/10)."""
    n = FIRST_BLOCK + block
    return f"127.{n // 256}.{n % 256}.{host}"


class PodIPAllocator:
    """Unique pod IPs for one process (thread-safe); blocks come from the host-wide registry."""

    def __init__(self, registry: str | os.PathLike[str] | None = None) -> None:
        self.registry = Path(registry) if registry is not None else default_registry()
        self.owner = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._blocks: list[int] = []
        self._in_use: set[str] = set()
        self._cursor = 0  # position in the round over our blocks' addresses: released ones are reused last

    # -- registry ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The registry's leases, read and written back under an exclusive flock."""
        try:
            fd = os.open(self.registry, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            reg = self.registry
            self.registry = reg.with_name(f"{reg.stem}-{os.getuid()}{reg.suffix}")
            fd = os.open(self.registry, os.O_RDWR | os.O_CREAT, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # other users' testbeds share the file (umask would narrow it)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = b""
            while chunk := os.read(fd, 1 << 16):
                raw += chunk
            try:
                data = json.loads(raw) if raw.strip() else {}
            except ValueError:
                data = {}  # a torn or foreign file: start over rather than wedge every testbed
            leases: dict[str, Any] = data.get("blocks") if isinstance(data.get("blocks"), dict) else {}
            before = json.dumps(leases, sort_keys=True)
            yield leases
            if json.dumps(leases, sort_keys=True) != before:
                body = json.dumps({"blocks": leases}, sort_keys=True).encode()
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, body)
        finally:
            os.close(fd)

    def _lease_block(self) -> int:
        pid = os.getpid()
        with self._locked() as leases:
            dead = [k for k, v in leases.items() if not _alive(int(v.get("pid", 0)), str(v.get("start", "")))]
            for key in dead:
                del leases[key]
            for block in range(BLOCKS):
                if str(block) not in leases:
                    leases[str(block)] = {"pid": pid, "start": _start_time(pid), "owner": self.owner}
                    return block
        raise PodIPsExhausted("no free /24 block in 127.64.0.0/10: every one is leased by a live process")

    def leased_blocks(self) -> list[int]:
        with self._lock:
            return list(self._blocks)

    # -- addresses ---------------------------------------------------------------------------------

    def allocate(self) -> str:
        """A pod IP no other live allocator on this host holds (never .0 or .255)."""
        with self._lock:
            total = len(self._blocks) * 254
            for step in range(total):
                i = (self._cursor + step) % total
                ip = block_address(self._blocks[i // 254], i % 254 + 1)
                if ip not in self._in_use:
                    self._cursor = i + 1
                    self._in_use.add(ip)
                    return ip
            block = self._lease_block()
            self._blocks.append(block)
            self._cursor = total + 1
            ip = block_address(block, 1)
            self._in_use.add(ip)
            return ip

    def claim(self, ip: str) -> bool:
        """Take this exact address again (a restarted node agent keeping its pods' IPs).

        Its /24 block is leased to us if it is free, held by a dead process (the agent that died) or
        already ours; False when a live allocator holds the block (then the pod needs a new address)."""
        try:
            a, b, c, host = (int(x) for x in ip.split("."))
        except ValueError:
            return False
        block = (b * 256 + c) - FIRST_BLOCK
        if a != 127 or not 0 <= block < BLOCKS or not 1 <= host <= 254:
            return False
        pid = os.getpid()
        with self._lock:
            if block not in self._blocks:
                with self._locked() as leases:
                    held = leases.get(str(block))
                    if held and held.get("owner") != self.owner and _alive(
                            int(held.get("pid", 0)), str(held.get("start", ""))):
                        return False
                    leases[str(block)] = {"pid": pid, "start": _start_time(pid), "owner": self.owner}
                self._blocks.append(block)
            self._in_use.add(ip)
            return True

    def release(self, ip: str) -> None:
        with self._lock:
            self._in_use.discard(ip)

    def close(self) -> None:
        """Give this allocator's blocks back to the registry."""
        with self._lock:
            if not self._blocks:
                return
            with self._locked() as leases:
                for block in self._blocks:
                    if (leases.get(str(block)) or {}).get("owner") == self.owner:
                        del leases[str(block)]
            self._blocks.clear()
            self._in_use.clear()
            self._cursor = 0


class CidrPodIPAllocator:
    """Pod IPs from one routable range that this process alone hands out (a lab host's pod CIDR).

    The first host address is kept back (a CNI bridge's gateway address); the round goes on past
    released addresses before reusing them, as :class:`PodIPAllocator` does."""

    def __init__(self, cidr: str) -> None:
        try:
            self.network = ipaddress.IPv4Network(cidr)
        except ValueError as e:
            raise ValueError(f"${CIDR_ENV}={cidr!r}: {e}") from None
        if self.network.num_addresses < 4:
            raise ValueError(f"${CIDR_ENV}={cidr!r}: too small for pods")
        self._lock = threading.Lock()
        self._in_use: set[str] = set()
        self._first = int(self.network.network_address) + 2
        self._count = self.network.num_addresses - 3  # not the network, gateway or broadcast address
        self._cursor = 0

    def allocate(self) -> str:
        with self._lock:
            for step in range(self._count):
                i = (self._cursor + step) % self._count
                ip = str(ipaddress.IPv4Address(self._first + i))
                if ip not in self._in_use:
                    self._cursor = i + 1
                    self._in_use.add(ip)
                    return ip
        raise PodIPsExhausted(f"every address of {self.network} (${CIDR_ENV}) is in use")

    def claim(self, ip: str) -> bool:
        """Take this exact address again (a restarted agent keeping its pods' IPs); False when it is
        not one of this range's pod addresses or another pod of this process holds it."""
        try:
            addr = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return False
        if not self._first <= addr < self._first + self._count:
            return False
        with self._lock:
            if ip in self._in_use:
                return False
            self._in_use.add(ip)
            return True

    def release(self, ip: str) -> None:
        with self._lock:
            self._in_use.discard(ip)

    def leased_blocks(self) -> list[int]:
        return []  # nothing leased from the host-wide registry

    def close(self) -> None:
        with self._lock:
            self._in_use.clear()
            self._cursor = 0


_default: PodIPAllocator | CidrPodIPAllocator | None = None
_default_lock = threading.Lock()


def default_allocator() -> PodIPAllocator | CidrPodIPAllocator:
    """The process's allocator (its leases die with the process and are reclaimed by the next one);
    the range in ``$TESTBED_POD_CIDR`` when that is set."""
    global _default
    with _default_lock:
        if _default is None:
            cidr = os.environ.get(CIDR_ENV)
            _default = CidrPodIPAllocator(cidr) if cidr else PodIPAllocator()
        return _default
