"""In-memory object storage with a global resourceVersion, history for watch resume, and fan-out.

The store runs inside the apiserver's event loop thread only, so it needs no locks. Objects are
kept both as dicts (for admission and patching) and as their JSON encoding, so that list, get and
watch responses are assembled from bytes without re-encoding on every read.
"""

from __future__ import annotations

import asyncio
import collections
import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .errors import APIError, gone

if TYPE_CHECKING:
    from .persist import SQLiteBackend

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass(slots=True)
class Entry:
    obj: dict[str, Any]
    raw: bytes
    rv: int


@dataclass(slots=True)
class Event:
    rv: int
    store_key: str
    type: str  # ADDED, MODIFIED, DELETED
    entry: Entry
    old: Entry | None


@dataclass(eq=False)
class Watcher:
    store_key: str
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(maxsize=100_000))
    # A watcher whose queue overflows is closed: the client reconnects, as with a real apiserver.
    overflowed: bool = False


def encode(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


# etcd's default --max-request-bytes (kind and kubeadm keep it): a larger object never reaches storage,
# and kube-apiserver answers etcd's error as it is, a 500 without a reason.
MAX_OBJECT_BYTES = 1536 * 1024


def too_large() -> APIError:
    return APIError(500, "", "etcdserver: request is too large")


class Store:
    """All objects of all resources, keyed by ``ResourceType.store_key``."""

    def __init__(self, history: int = 20_000, backend: SQLiteBackend | None = None) -> None:
        self._rv = 1
        # Every write goes to the backend (when there is one) before the caller answers its client.
        self.backend = backend
        self._data: dict[str, dict[Key, Entry]] = collections.defaultdict(dict)
        self._history: collections.deque[Event] = collections.deque(maxlen=history)
        # The oldest resourceVersion a watch can still resume from.
        self._compacted = 1
        self._watchers: dict[str, set[Watcher]] = collections.defaultdict(set)
        # Bumped on every write of a given store key; lets caches (RBAC) invalidate cheaply.
        self.revisions: dict[str, int] = collections.defaultdict(int)
        # Called on every object before it is stored: the server adds the fields the real server
        # always writes (see protobuf.fill_always).
        self.shape: Callable[[dict[str, Any]], None] | None = None
        # The size etcd would be sent for an object (its protobuf encoding); None: the JSON size.
        self.object_size: Callable[[dict[str, Any]], int | None] | None = None

    def load(self) -> int:
        """Bring back the objects and the resourceVersion counter kept by the backend; returns the count.

        The watch history does not survive a restart: a watch from an older version gets 410 Gone
        and the client relists, as after an etcd compaction."""
        if self.backend is None:
            return 0
        n = 0
        for store_key, namespace, name, rv, value in self.backend.load():
            obj = orjson.loads(value)
            self._data[store_key][(namespace, name)] = Entry(obj, bytes(value), rv)
            self.revisions[store_key] += 1
            n += 1
        self._rv = self.backend.resource_version()
        self._compacted = self._rv
        return n

    # -- reads -------------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        return self._rv

    def get_entry(self, store_key: str, namespace: str, name: str) -> Entry | None:
        return self._data[store_key].get((namespace, name))

    def get(self, store_key: str, namespace: str, name: str) -> dict[str, Any] | None:
        e = self._data[store_key].get((namespace, name))
        return e.obj if e else None

    def entries(self, store_key: str, namespace: str | None = None) -> Iterator[Entry]:
        items = self._data[store_key]
        if namespace is None:
            yield from items.values()
        else:
            for (ns, _), e in items.items():
                if ns == namespace:
                    yield e

    def list(self, store_key: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [e.obj for e in self.entries(store_key, namespace)]

    def sorted_entries(self, store_key: str, namespace: str | None) -> list[tuple[Key, Entry]]:
        items = self._data[store_key]
        if namespace is None:
            return sorted(items.items())
        return sorted((k, e) for k, e in items.items() if k[0] == namespace)

    def count(self, store_key: str) -> int:
        return len(self._data[store_key])

    # -- writes ------------------------------------------------------------------------------
    def _next(self) -> int:
        self._rv += 1
        return self._rv

    def put(self, store_key: str, obj: dict[str, Any], *, event: str) -> Entry:
        """Store ``obj`` (already validated) as a new version; fills metadata.resourceVersion."""
        if self.shape is not None:
            self.shape(obj)
        raw = encode(obj)
        if len(raw) > MAX_OBJECT_BYTES:
            size = self.object_size(obj) if self.object_size is not None else None
            if (size if size is not None else len(raw)) > MAX_OBJECT_BYTES:
                raise too_large()
        rv = self._next()
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(rv)
        key = (meta.get("namespace", ""), meta["name"])
        old = self._data[store_key].get(key)
        entry = Entry(obj, encode(obj), rv)
        if self.backend is not None:
            self.backend.put(store_key, key[0], key[1], rv, entry.raw)
        self._data[store_key][key] = entry
        self._emit(Event(rv, store_key, event, entry, old))
        return entry

    def remove(self, store_key: str, namespace: str, name: str) -> Entry | None:
        old = self._data[store_key].pop((namespace, name), None)
        if old is None:
            return None
        rv = self._next()
        if self.backend is not None:
            self.backend.delete(store_key, namespace, name, rv)
        obj = copy.deepcopy(old.obj)
        obj["metadata"]["resourceVersion"] = str(rv)
        entry = Entry(obj, encode(obj), rv)
        self._emit(Event(rv, store_key, "DELETED", entry, old))
        return entry

    def _emit(self, ev: Event) -> None:
        self.revisions[ev.store_key] += 1
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(ev)
        for w in list(self._watchers.get(ev.store_key, ())):
            if w.namespace is not None and ev.entry.obj["metadata"].get("namespace", "") != w.namespace:
                continue
            try:
                w.queue.put_nowait(ev)
            except asyncio.QueueFull:
                w.overflowed = True
                self._watchers[ev.store_key].discard(w)

    # -- watch -------------------------------------------------------------------------------
    def watch(self, store_key: str, namespace: str | None, since: int | None) -> tuple[Watcher, list[Event]]:
        """Register a watcher. With ``since``, also return the stored events after that version.

        Raises 410 Gone when ``since`` is older than the retained history, as etcd compaction does.
        """
        backlog: list[Event] = []
        if since is not None:
            if since < self._compacted:
                raise gone(f"too old resource version: {since} ({self._compacted})")
            backlog = [
                e
                for e in self._history
                if e.rv > since
                and e.store_key == store_key
                and (namespace is None or e.entry.obj["metadata"].get("namespace", "") == namespace)
            ]
        w = Watcher(store_key, namespace)
        self._watchers[store_key].add(w)
        return w, backlog

    def unwatch(self, w: Watcher) -> None:
        self._watchers[w.store_key].discard(w)

    def watcher_count(self) -> int:
        return sum(len(s) for s in self._watchers.values())

    def close_watchers(self) -> None:
        for ws in self._watchers.values():
            for w in ws:
                try:
                    w.queue.put_nowait(None)
                except asyncio.QueueFull:
                    # No room for the sentinel: the overflow flag ends the stream once it is drained.
                    w.overflowed = True
            ws.clear()

    def store_keys(self) -> Iterable[str]:
        return list(self._data.keys())
