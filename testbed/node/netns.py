"""Pod networking: one network namespace per pod (as root), with loopback-only forwarding.

Each pod gets a pod IP in 127.64.0.0/10 (unique on the host: ``podips.py``) and, as root, a network
namespace of its own with just ``lo`` up, so its containers share a localhost and two pods can listen
on the same port. Nothing is configured outside the namespaces we create, and no non-loopback address
is ever used:

* host -> pod: for every declared ``containerPort`` (TCP) the agent listens on ``<podIP>:<port>`` in
  the host namespace (127/8 is local on ``lo``) and forwards into the pod's namespace, so probes,
  webhooks and metrics scrapes reach the pod by its IP;
* pod -> apiserver: inside the namespace the agent listens on the apiserver's own loopback address
  and port and forwards to the host apiserver, so ``KUBERNETES_SERVICE_HOST`` keeps the address the
  serving certificate names.

In a multi-host lab (``testbed/lab``) pod IPs come from the host's routable pod CIDR instead
(``$TESTBED_POD_CIDR``, ``podips.py``) and the apiserver's address is the control-plane host's lab
address, which the pod's namespace then gets on ``lo`` for the apiserver forwarder.

Without root (or when ``ip netns`` fails) pods share the host's network namespace; the pod IP is
still a distinct 127/8 address but two pods binding the same wildcard port collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..streams import splice
from .podips import default_allocator

log = logging.getLogger("testbed.node.netns")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def next_pod_ip() -> str:
    """A fresh address in 127.64.0.0/10 that no other testbed on this host holds (``podips.py``)."""
    return default_allocator().allocate()


def release_pod_ip(ip: str) -> None:
    """The pod is gone: its address may be handed out again (by this process)."""
    default_allocator().release(ip)


def can_use_netns() -> bool:
    return os.geteuid() == 0 and _which("ip")


def _which(cmd: str) -> bool:
    import shutil

    return shutil.which(cmd) is not None


def _run_ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")


def create_netns(name: str, pod_ip: str | None = None) -> str:
    """A pod's namespace with ``lo`` up. A routable (lab) pod IP is put on its ``lo`` too, as a CNI
    puts it on the pod's interface, so probes and the pod itself reach the pod by its IP (a
    127/8 pod IP is local there already)."""
    with contextlib.suppress(OSError):
        _run_ip("netns", "del", name)  # a leftover from an agent that died
    _run_ip("netns", "add", name)
    _run_ip("-n", name, "link", "set", "lo", "up")
    if pod_ip and not pod_ip.startswith("127."):
        _run_ip("-n", name, "addr", "add", f"{pod_ip}/32", "dev", "lo")
    return f"{NETNS_DIR}/{name}"


def service_netns_name(data_dir: Path) -> str:
    """The cluster-network (Services, DNS) namespace of the node agents running from ``data_dir``:
    named after the directory, so a later ``testbed down`` finds what a killed agent left."""
    return f"tbsvc-{hashlib.sha1(str(data_dir).encode()).hexdigest()[:10]}"


def delete_netns(name: str) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _run_ip("netns", "del", name)


def in_netns(path: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a short-lived thread that has joined the namespace at ``path`` (setns is per
    thread, so the agent's other threads stay in the host namespace). Sockets keep their namespace."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out["value"] = fn()
        except BaseException as e:  # handed back to the caller
            out["error"] = e

    t = threading.Thread(target=body, name="netns", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def socket_in(path: str | None) -> socket.socket:
    """A TCP socket in the namespace at ``path`` (host namespace when None)."""
    if not path:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    return in_netns(path, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))


def connect(path: str | None, host: str, port: int, timeout: float) -> socket.socket:
    s = socket_in(path)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        raise
    return s


class Forwarder:
    """TCP forwarding between namespaces, on the agent's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._servers: list[asyncio.base_events.Server] = []

    def listen(
        self,
        listen_ns: str | None,
        listen_addr: tuple[str, int],
        target_ns: str | None,
        target_addr: tuple[str, int],
    ) -> asyncio.base_events.Server:
        """Listen in ``listen_ns`` and forward each connection to ``target_addr`` in ``target_ns``;
        returns the listener for :meth:`unlisten`."""

        if listen_ns and not listen_addr[0].startswith("127."):
            # a lab's apiserver listens on its host's lab address, not on loopback: the pod's
            # namespace (only ``lo`` in it) gets that address on ``lo`` so the pod-side end of the
            # apiserver forwarder can listen on it and the serving certificate still matches
            _run_ip("-n", os.path.basename(listen_ns), "addr", "replace", f"{listen_addr[0]}/32", "dev", "lo")

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(listen_addr)
            s.listen(128)
            s.setblocking(False)
            return s

        sock = in_netns(listen_ns, make) if listen_ns else make()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up = socket_in(target_ns)
                up.setblocking(False)
                await self.loop.sock_connect(up, target_addr)
                ur, uw = await asyncio.open_connection(sock=up)
            except OSError:
                writer.close()
                return
            await splice((reader, writer), (ur, uw))

        async def start() -> asyncio.base_events.Server:
            server = await asyncio.start_server(handle, sock=sock)
            self._servers.append(server)
            return server

        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def unlisten(self, servers: list[asyncio.base_events.Server]) -> None:
        """Close a pod's listeners (its address may be handed to another pod later)."""

        async def stop() -> None:
            for s in servers:
                s.close()
                if s in self._servers:
                    self._servers.remove(s)

        if servers and self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)

    def close(self) -> None:
        async def stop() -> None:
            for s in self._servers:
                s.close()
            self._servers.clear()

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
