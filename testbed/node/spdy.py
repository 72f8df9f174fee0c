"""The server side of a SPDY/3.1 session, as the kubelet speaks it for exec, attach and port-forward.

kubectl (through Go's ``spdystream``) opens the streams: SYN_STREAM with headers such as
``streamtype: stdout`` or ``port: 80``; the server answers each with SYN_REPLY, then both sides send
DATA frames, FIN closing one direction. Header blocks are zlib-compressed with the SPDY/3 dictionary
(one compression context per direction for the whole session). PING is echoed; SETTINGS and
WINDOW_UPDATE are accepted and ignored: ``spdystream`` neither sends nor honours window updates, so
flow control is not enforced by either side.

The session reads from an ``asyncio.StreamReader`` and writes through a ``send`` coroutine, so the same
code serves a hijacked HTTP connection and SPDY tunnelled in WebSocket messages (newer kubectl's
port-forward).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import Awaitable, Callable

# The SPDY/3 header-compression dictionary (draft 3, 2.6.10.1): length-prefixed header names and
# values, then a run of status codes, reason phrases, dates and content types.
_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type", "date",
    "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match",
    "if-range", "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma",
    "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after", "server", "te",
    "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public",
    "set-cookie", "keep-alive", "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
MAX_DATA = 32 * 1024
RST_CANCEL = 5


class ProtocolError(Exception):
    pass


def _encode_headers(headers: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for k, v in headers.items():
        kb, vb = k.lower().encode(), v.encode()
        out += [struct.pack(">I", len(kb)), kb, struct.pack(">I", len(vb)), vb]
    return b"".join(out)


def _decode_headers(raw: bytes) -> dict[str, str]:
    (n,) = struct.unpack_from(">I", raw, 0)
    pos, out = 4, {}
    for _ in range(n):
        (kl,) = struct.unpack_from(">I", raw, pos)
        key = raw[pos + 4 : pos + 4 + kl].decode()
        pos += 4 + kl
        (vl,) = struct.unpack_from(">I", raw, pos)
        out[key] = raw[pos + 4 : pos + 4 + vl].decode(errors="replace")
        pos += 4 + vl
    return out


class Stream:
    """One SPDY stream: ``read()`` what the peer sends (b"" at its FIN), ``write()``/``close()`` ours."""

    def __init__(self, session: Session, sid: int, headers: dict[str, str]) -> None:
        self.session, self.id, self.headers = session, sid, headers
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.remote_closed = False
        self.local_closed = False
        self.reset = False

    async def read(self) -> bytes:
        if self.remote_closed and self._queue.empty():
            return b""
        return await self._queue.get()

    def _feed(self, data: bytes, fin: bool) -> None:
        if self.remote_closed:
            return
        if data:
            self._queue.put_nowait(data)
        if fin:
            self.remote_closed = True
            self._queue.put_nowait(b"")

    async def write(self, data: bytes) -> None:
        if self.local_closed or self.reset:
            return
        for i in range(0, len(data), MAX_DATA):
            await self.session.send_data(self.id, data[i : i + MAX_DATA], False)

    async def close(self) -> None:
        """Half-close: FIN on an empty data frame."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        await self.session.send_data(self.id, b"", True)


class Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        send: Callable[[bytes], Awaitable[None]],
        on_stream: Callable[[Stream], None],
    ) -> None:
        self.reader, self._send, self.on_stream = reader, send, on_stream
        self.streams: dict[int, Stream] = {}
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zdict=DICTIONARY)
        self._lock = asyncio.Lock()
        self.closed = asyncio.Event()

    async def _write(self, frame: bytes) -> None:
        async with self._lock:
            await self._send(frame)

    def _control(self, ftype: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload

    def _header_block(self, headers: dict[str, str]) -> bytes:
        raw = _encode_headers(headers)
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def send_data(self, sid: int, data: bytes, fin: bool) -> None:
        if self.closed.is_set():
            return
        frame = struct.pack(">II", sid & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data
        with contextlib.suppress(ConnectionError, OSError):
            await self._write(frame)

    async def reply(self, stream: Stream, headers: dict[str, str] | None = None) -> None:
        async with self._lock:  # compression context order must match frame order
            block = self._header_block(headers or {})
            await self._send(self._control(SYN_REPLY, 0, struct.pack(">I", stream.id) + block))

    async def goaway(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            last = max(self.streams, default=0)
            await self._write(self._control(GOAWAY, 0, struct.pack(">II", last, 0)))

    async def _read_exact(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def run(self) -> None:
        """Read frames until the peer goes away; streams go to ``on_stream`` once replied to."""
        try:
            while True:
                head = await self._read_exact(8)
                first, second = struct.unpack(">II", head)
                flags, length = second >> 24, second & 0xFFFFFF
                payload = await self._read_exact(length) if length else b""
                if first & 0x80000000:
                    await self._on_control((first >> 16) & 0x7FFF, first & 0xFFFF, flags, payload)
                else:
                    s = self.streams.get(first & 0x7FFFFFFF)
                    if s is not None:
                        s._feed(payload, bool(flags & FLAG_FIN))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ProtocolError):
            pass
        finally:
            self.closed.set()
            for s in self.streams.values():
                s._feed(b"", True)

    async def _on_control(self, version: int, ftype: int, flags: int, payload: bytes) -> None:
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version}")
        if ftype == SYN_STREAM:
            sid = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            try:
                headers = _decode_headers(self._inflate.decompress(payload[10:]))
            except (zlib.error, struct.error) as e:
                raise ProtocolError(f"header block: {e}") from e
            s = Stream(self, sid, headers)
            self.streams[sid] = s
            if flags & FLAG_FIN:
                s._feed(b"", True)
            await self.reply(s)
            self.on_stream(s)
        elif ftype == HEADERS:
            with contextlib.suppress(zlib.error):
                self._inflate.decompress(payload[4:])  # keep the context in step; nothing to do with it
        elif ftype == SYN_REPLY:
            with contextlib.suppress(zlib.error):
                self._inflate.decompress(payload[4:])
        elif ftype == RST_STREAM:
            s = self.streams.get(struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF)
            if s is not None:
                s.reset = True
                s._feed(b"", True)
        elif ftype == PING:
            await self._write(self._control(PING, 0, payload))
        elif ftype == GOAWAY:
            raise ProtocolError("peer went away")
        # SETTINGS, WINDOW_UPDATE: ignored (see the module doc)
