"""The watch endpoint: initial state, history replay, live events, bookmarks and timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from .errors import APIError
from .store import Entry, Event, Store

Filter = Callable[[dict[str, Any]], bool]
DISCONNECT_POLL_S = 1.0


def _disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()

Present = Callable[[Entry], bytes]


def _frame(kind: str, obj_raw: bytes) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":' + obj_raw + b"}\n"


async def serve_watch(
    request: web.Request,
    store: Store,
    store_key: str,
    namespace: str | None,
    *,
    since: int | None,
    send_initial: bool,
    initial_end_bookmark: bool,
    match: Filter,
    present: Present,
    bookmark_kind: tuple[str, str],
    allow_bookmarks: bool,
    timeout_s: float | None,
    bookmark_interval: float,
) -> web.StreamResponse:
    try:
        watcher, backlog = store.watch(store_key, namespace, since)
    except APIError as e:
        if e.code != 410:
            raise
        # The real server answers 200 and reports "too old" as an ERROR event in the stream.
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"type":"ERROR","object":' + orjson.dumps(e.status()) + b"}\n")
        await resp.write_eof()
        return resp
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    try:
        await resp.prepare(request)
        # Frames that are ready together go out in one write (one TLS record and send, not one per
        # object): a watch's initial list, its backlog and each burst of queued events.
        first: list[bytes] = []
        if send_initial:
            for e in sorted(store.entries(store_key, namespace), key=lambda e: e.rv):
                if match(e.obj):
                    first.append(_frame("ADDED", present(e)))
            if initial_end_bookmark:
                first.append(_bookmark(store.resource_version, bookmark_kind, initial_end=True))
        for past in backlog:
            frame = _event_frame(past, match, present)
            if frame:
                first.append(frame)
        if first:
            await resp.write(b"".join(first))
        if timeout_s is None:
            # The real server spreads watch lifetimes over [minRequestTimeout, 2x] (30-60 minutes).
            timeout_s = random.uniform(1800, 3600)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last_rv = max([store.resource_version if send_initial else (since or 0)] + [e.rv for e in backlog])
        next_bookmark = loop.time() + bookmark_interval
        while True:
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                break
            # aiohttp does not cancel a handler whose client went away: look every second, so an idle
            # watch a client dropped releases its queue at once instead of at its 30-60 min timeout
            wait = min(remaining, DISCONNECT_POLL_S)
            if allow_bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                ev = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
            except TimeoutError:
                if _disconnected(request):
                    break
                if allow_bookmarks and next_bookmark <= loop.time() < deadline:
                    await resp.write(_bookmark(max(last_rv, store.resource_version), bookmark_kind))
                    next_bookmark = loop.time() + bookmark_interval
                continue
            next_bookmark = loop.time() + bookmark_interval
            # Also handle what is already queued, without a wait_for per event. ``None`` is the
            # shutdown sentinel wherever it turns up: it ends the stream.
            burst: list[bytes] = []
            while ev is not None:
                last_rv = ev.rv
                frame = _event_frame(ev, match, present)
                if frame:
                    burst.append(frame)
                if watcher.queue.empty():
                    break
                ev = watcher.queue.get_nowait()
            if burst:
                await resp.write(b"".join(burst))
            if ev is None or watcher.overflowed:
                break
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        store.unwatch(watcher)
    return resp


def _event_frame(ev: Event, match: Filter, present: Present) -> bytes | None:
    now_in = match(ev.entry.obj)
    if ev.type == "MODIFIED" and ev.old is not None:
        was_in = match(ev.old.obj)
        if now_in and not was_in:
            return _frame("ADDED", present(ev.entry))
        if was_in and not now_in:
            return _frame("DELETED", present(ev.entry))
        return _frame("MODIFIED", present(ev.entry)) if now_in else None
    return _frame(ev.type, present(ev.entry)) if now_in else None


def _bookmark(rv: int, kind: tuple[str, str], initial_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": kind[1], "apiVersion": kind[0], "metadata": meta}
    return _frame("BOOKMARK", orjson.dumps(obj))


__all__ = ["serve_watch"]
