"""Byte relays between asyncio streams, shared by every TCP forwarder of the testbed (the node agents'
namespace forwarders, the real control plane's egress proxy, the real kubelet's apiserver relay)."""

from __future__ import annotations

import asyncio
import contextlib


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` into ``writer`` until EOF or a broken connection, then close ``writer``."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Relay both ways between two connections until both directions are done."""
    await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))
