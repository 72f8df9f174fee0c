"""List-and-watch caches (informers) over JSON objects, for the testbed's components.

An informer lists a collection, then watches from the list's resourceVersion, relisting on
``410 Gone`` and reconnecting when the server ends a watch, and calls handlers for each change. It
runs in its own thread; handlers run on that thread and must be quick (queue work elsewhere).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .client import ApiError, Kube

log = logging.getLogger("testbed.informer")

Obj = dict[str, Any]
Handler = Callable[[str, Obj, Obj | None], None]  # (event type, object, old object)


def key_of(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Informer:
    def __init__(self, kube: Kube, path: str, *, label_selector: str = "", field_selector: str = "",
                 name: str = "") -> None:
        self.kube = kube
        self.path = path
        self.query: dict[str, str] = {}
        if label_selector:
            self.query["labelSelector"] = label_selector
        if field_selector:
            self.query["fieldSelector"] = field_selector
        self.name = name or path
        self._items: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._handlers: list[Handler] = []
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.resource_version = ""

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer {self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float = 30) -> bool:
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._items.values())

    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._items.get(key)

    def _emit(self, kind: str, obj: Obj, old: Obj | None) -> None:
        for h in self._handlers:
            try:
                h(kind, obj, old)
            except Exception:
                log.exception("%s: handler failed on %s %s", self.name, kind, key_of(obj))

    def _relist(self) -> None:
        lst = self.kube.get(self.path, **self.query)
        fresh = {key_of(o): o for o in lst.get("items") or []}
        with self._lock:
            old = self._items
            self._items = fresh
        for k, o in fresh.items():
            prev = old.get(k)
            if prev is None:
                self._emit("ADDED", o, None)
            elif (prev.get("metadata") or {}).get("resourceVersion") != (o.get("metadata") or {}).get(
                    "resourceVersion"):
                self._emit("MODIFIED", o, prev)
        for k, o in old.items():
            if k not in fresh:
                self._emit("DELETED", o, None)
        self.resource_version = lst["metadata"]["resourceVersion"]
        self._synced.set()

    def _run(self) -> None:
        backoff = 0.1
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                for ev in self.kube.watch(self.path, resource_version=self.resource_version,
                                          timeout_seconds=300, **self.query):
                    if self._stop.is_set():
                        return
                    self._handle(ev)
                backoff = 0.1
            except ApiError as e:
                if e.status == 410:
                    need_list = True
                    continue
                log.warning("%s: %s", self.name, e)
                need_list = True
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except _Expired:
                need_list = True
            except Exception as e:
                if self._stop.is_set():
                    return
                log.debug("%s: watch interrupted: %r", self.name, e)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)

    def _handle(self, ev: dict[str, Any]) -> None:
        kind, obj = ev.get("type"), ev.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise ApiError(int(obj.get("code") or 500), obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion", "")
        if kind == "BOOKMARK":
            self.resource_version = rv or self.resource_version
            return
        k = key_of(obj)
        with self._lock:
            old = self._items.get(k)
            if kind == "DELETED":
                self._items.pop(k, None)
            else:
                self._items[k] = obj
        self.resource_version = rv or self.resource_version
        self._emit(str(kind), obj, old)


class _Expired(Exception):
    pass
