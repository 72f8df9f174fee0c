"""``python -m testbed.kubelet.forward``: the apiserver's port, inside the node's network namespace.

The real kubelet runs in a network namespace of its own (its bridge, its pods' veths and whatever
it would do to iptables stay there), while the control plane listens on the host's loopback. This
process creates its listening socket inside the node's namespace (``setns`` on the calling thread, then
back) and dials the apiserver from the host's namespace: a plain TCP relay, TLS stays end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
import sys

from testbed.streams import splice

CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def listen_in(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket bound in the network namespace ``netns`` (a /proc/<pid>/ns/net path);
    the calling thread is back in its own namespace on return."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(128)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    return s


async def serve(sock: socket.socket, to_host: str, to_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(to_host, to_port), 10)
        except (OSError, TimeoutError):
            writer.close()
            return
        await splice((reader, writer), (up_r, up_w))

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.kubelet.forward", description=__doc__)
    p.add_argument("--netns", required=True, help="/proc/<pid>/ns/net of the node's namespace")
    p.add_argument("--listen", required=True, help="host:port inside that namespace")
    p.add_argument("--to", required=True, help="host:port in this process's namespace")
    args = p.parse_args(argv)
    lh, _, lp = args.listen.rpartition(":")
    th, _, tp = args.to.rpartition(":")
    sock = listen_in(args.netns, lh, int(lp))
    print(f"forwarding {args.listen} in {args.netns} to {args.to}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sock, th, int(tp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
