"""HTTP connection upgrades on aiohttp servers: take over the raw byte stream after ``101 Switching
Protocols`` (SPDY), and proxy an upgrade request to another server byte for byte (the apiserver's
``pods/exec``, ``attach``, ``portforward`` and ``proxy`` towards the kubelet, as kube-apiserver's
upgrade-aware proxy does).

aiohttp hands the bytes after an upgrade request's headers to whatever parser the handler installs
(``set_parser``, the hook its own WebSocket support uses); :func:`hijack` installs one that feeds an
``asyncio.StreamReader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

# request headers that belong to the hop to the apiserver, not to the upstream request
_HOP = {"host", "authorization", "content-length", "transfer-encoding", "keep-alive", "proxy-connection",
        "impersonate-user", "impersonate-group", "impersonate-uid"}


class _RawParser:
    """What aiohttp's protocol feeds upgraded bytes to."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()


def is_upgrade(request: web.Request) -> str:
    """The protocol an upgrade request asks for (lower case), or ''."""
    conn = request.headers.get("Connection", "").lower()
    if "upgrade" not in conn:
        return ""
    return request.headers.get("Upgrade", "").lower()


async def hijack(request: web.Request, headers: dict[str, str]) -> tuple[asyncio.StreamReader, Any]:
    """Answer 101 with ``headers`` and return (reader of the client's further bytes, transport)."""
    resp = web.StreamResponse(status=101, headers=headers)
    await resp.prepare(request)
    reader = asyncio.StreamReader(limit=2**22)
    proto = request.protocol
    proto.set_parser(_RawParser(reader))  # type: ignore[arg-type]
    transport = request.transport
    assert transport is not None
    return reader, transport


async def pipe(reader: asyncio.StreamReader, write: Any, close: Any = None) -> None:
    try:
        while data := await reader.read(65536):
            write(data)
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        if close is not None:
            with contextlib.suppress(Exception):
                close()


async def proxy(
    request: web.Request, host: str, port: int, path_qs: str, ssl_ctx: ssl.SSLContext | None,
    dial: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] | None = None,
) -> web.StreamResponse:
    """Send ``request`` (method, upgrade headers, body) to ``host:port`` at ``path_qs``; relay the answer.

    ``dial`` replaces the TCP connection (e.g. one into a pod's network namespace). On ``101`` both
    connections are spliced until either side closes; any other answer is relayed as an ordinary
    response (status, content type, body)."""
    body = await request.read() if request.can_read_body else b""
    try:
        if dial is not None:
            up_r, up_w = await asyncio.wait_for(dial(), 10)
        else:
            sni = host if ssl_ctx else None
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl_ctx, server_hostname=sni), 10
            )
    except (TimeoutError, OSError) as e:
        raise web.HTTPServiceUnavailable(text=f"error dialing backend: dial tcp {host}:{port}: {e}") from e
    upgrading = bool(is_upgrade(request))
    lines = [f"{request.method} {path_qs} HTTP/1.1", f"Host: {host}:{port}"]
    for k, v in request.headers.items():
        if k.lower() not in _HOP and (upgrading or k.lower() != "connection"):
            lines.append(f"{k}: {v}")
    if not upgrading:
        lines.append("Connection: close")  # one request per connection: the body ends at EOF at worst
    if body:
        lines.append(f"Content-Length: {len(body)}")
    up_w.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await up_w.drain()
    status_line = await up_r.readline()
    try:
        status = int(status_line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        up_w.close()
        raise web.HTTPBadGateway(text=f"bad answer from {host}:{port}: {status_line[:100]!r}") from None
    headers: list[tuple[str, str]] = []
    while (line := await up_r.readline()) not in (b"\r\n", b"\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
    if status == 101:
        resp = web.StreamResponse(status=101)
        for k, v in headers:
            if k.lower() not in ("date", "server", "content-length"):
                resp.headers.add(k, v)
        await resp.prepare(request)
        reader = asyncio.StreamReader(limit=2**22)
        request.protocol.set_parser(_RawParser(reader))  # type: ignore[arg-type]
        transport = request.transport
        assert transport is not None

        def down(data: bytes) -> None:
            transport.write(data)

        def up(data: bytes) -> None:
            up_w.write(data)

        await asyncio.gather(
            pipe(up_r, down, transport.close),
            pipe(reader, up, lambda: up_w.close()),
        )
        return resp
    # an ordinary answer: the body by Content-Length, chunked, or until close
    hdr = {k.lower(): v for k, v in headers}
    if "content-length" in hdr:
        data = await up_r.readexactly(int(hdr["content-length"]))
    elif hdr.get("transfer-encoding", "").lower() == "chunked":
        data = b""
        while True:
            size = int((await up_r.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await up_r.readline()
                break
            data += await up_r.readexactly(size)
            await up_r.readline()
    else:
        data = await up_r.read()
    up_w.close()
    resp_headers = {k: v for k, v in headers if k.lower() in ("content-type",)}
    return web.Response(status=status, body=data, headers=resp_headers)
