"""Plumbing shared by every controller: keyed work queue, shared informers, expectations, events.

Each controller owns one kind of object. It registers handlers on shared informers (one list+watch
per collection, whatever the number of controllers reading it), turns events into keys on its own
work queue and reconciles one key at a time from the caches, as kube-controller-manager does.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubeclient.client import ApiError, Kube
from kubeclient.informer import Informer, key_of
from testbed.apiserver.versions import VersionProfile

from . import util

log = logging.getLogger("testbed.controllers")

Obj = dict[str, Any]


class WorkQueue:
    """A de-duplicating queue of keys with delayed adds; a key is never handed to two workers at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: list[str] = []
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._redo: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._seq = 0
        self._closed = False

    def add(self, key: str) -> None:
        with self._cond:
            if key in self._active:
                self._redo.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
                self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, key))
            self._cond.notify()

    def get(self) -> str | None:
        """Block until a key is due (or the queue is closed: None)."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, k = heapq.heappop(self._delayed)
                    if k in self._active:
                        self._redo.add(k)
                    elif k not in self._queued:
                        self._queued.add(k)
                        self._ready.append(k)
                if self._ready:
                    key = self._ready.pop(0)
                    self._queued.discard(key)
                    self._active.add(key)
                    return key
                wait = self._delayed[0][0] - now if self._delayed else None
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._redo:
                self._redo.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Index:
    """Secondary keys over one informer's cache (owner uid, node name, namespace), kept by its handler."""

    def __init__(self, informer: Informer, keyfn: Callable[[Obj], Iterable[str]]) -> None:
        self._informer = informer
        self._keyfn = keyfn
        self._lock = threading.Lock()
        self._by: dict[str, set[str]] = {}
        informer.add_handler(self._on_event)

    def _on_event(self, kind: str, obj: Obj, old: Obj | None) -> None:
        k = key_of(obj)
        with self._lock:
            if old is not None:
                for ik in self._keyfn(old):
                    self._by.get(ik, set()).discard(k)
            if kind != "DELETED":
                for ik in self._keyfn(obj):
                    self._by.setdefault(ik, set()).add(k)
            else:
                for ik in self._keyfn(obj):
                    self._by.get(ik, set()).discard(k)

    def get(self, index_key: str) -> list[Obj]:
        with self._lock:
            keys = list(self._by.get(index_key, ()))
        out = []
        for k in keys:
            o = self._informer.get(k)
            if o is not None:
                out.append(o)
        return out


class SharedInformers:
    """One informer per collection path, created on first use and started together."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._informers: dict[str, Informer] = {}
        self._indexes: dict[tuple[str, str], Index] = {}
        self._started = False

    def get(self, path: str) -> Informer:
        inf = self._informers.get(path)
        if inf is None:
            inf = Informer(self.kube, path, name=path)
            self._informers[path] = inf
            if self._started:
                inf.start()
        return inf

    def index(self, path: str, name: str, keyfn: Callable[[Obj], Iterable[str]]) -> Index:
        ix = self._indexes.get((path, name))
        if ix is None:
            # Indexes must see every event, so they are registered before the informer starts.
            ix = Index(self.get(path), keyfn)
            self._indexes[(path, name)] = ix
        return ix

    def start(self) -> None:
        self._started = True
        for inf in self._informers.values():
            inf.start()

    def wait_synced(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        return all(inf.wait_synced(max(0.0, deadline - time.monotonic())) for inf in self._informers.values())

    def stop(self) -> None:
        for inf in self._informers.values():
            inf.stop()


class Expectations:
    """Writes a controller made that its caches have not shown yet (the real controllers' expectations).

    Without this, a sync running before the watch delivers a just-created pod would create it again.
    Entries expire so a lost event cannot wedge a controller.
    """

    TTL = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._adds: dict[str, dict[str, tuple[float, Obj]]] = {}
        self._dels: dict[str, dict[str, float]] = {}

    def created(self, owner: str, obj: Obj) -> None:
        with self._lock:
            self._adds.setdefault(owner, {})[key_of(obj)] = (time.monotonic(), obj)

    def deleted(self, owner: str, key: str) -> None:
        with self._lock:
            self._dels.setdefault(owner, {})[key] = time.monotonic()

    def merge(self, owner: str, cached: list[Obj]) -> list[Obj]:
        """The cached objects plus those created but not yet seen, minus those deleted but still seen."""
        now = time.monotonic()
        have = {key_of(o) for o in cached}
        with self._lock:
            adds = self._adds.get(owner, {})
            for k in [k for k, (t, _) in adds.items() if k in have or now - t > self.TTL]:
                del adds[k]
            dels = self._dels.get(owner, {})
            for k in [k for k, t in dels.items() if k not in have or now - t > self.TTL]:
                del dels[k]
            extra = [o for _, o in adds.values()]
            gone = set(dels)
        return [o for o in cached if key_of(o) not in gone] + extra

    def forget(self, owner: str) -> None:
        with self._lock:
            self._adds.pop(owner, None)
            self._dels.pop(owner, None)


@dataclass
class Options:
    """kube-controller-manager flags the testbed honours."""

    node_monitor_grace_period: float = 40.0
    node_monitor_period: float = 5.0
    # The Job controller's pod-failure backoff starts at 10 s and doubles (capped at 6 min).
    job_backoff_base: float = 10.0
    job_backoff_max: float = 360.0
    # PodGC waits this long for a missing node to appear before it deletes the node's pods
    # (kube-controller-manager's quarantineTime, 40 s in every minor 1.18-1.35)
    pod_gc_quarantine: float = 40.0
    extra: dict[str, Any] = field(default_factory=dict)


class Context:
    """What every controller gets: the client, the minor's profile, shared informers, options."""

    def __init__(
        self, kube: Kube, profile: VersionProfile, informers: SharedInformers, options: Options
    ) -> None:
        self.kube = kube
        self.profile = profile
        self.minor = profile.minor
        self.informers = informers
        self.options = options
        self.recorder = EventRecorder(kube)

    # the collections the controllers share
    PODS = "/api/v1/pods"
    NODES = "/api/v1/nodes"

    def pods(self) -> Informer:
        return self.informers.get(self.PODS)

    def pods_by_owner(self) -> Index:
        return self.informers.index(self.PODS, "owner", lambda o: [util.controller_uid(o) or ""])

    def pods_by_namespace(self) -> Index:
        return self.informers.index(
            self.PODS, "namespace", lambda o: [(o.get("metadata") or {}).get("namespace", "")]
        )

    def pods_by_node(self) -> Index:
        return self.informers.index(self.PODS, "node", lambda o: [(o.get("spec") or {}).get("nodeName", "")])

    def nodes(self) -> Informer:
        return self.informers.get(self.NODES)


class EventRecorder:
    """core/v1 Events as controllers emit them (reason, message, involved object, source component)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def event(
        self,
        obj: Obj,
        etype: str,
        reason: str,
        message: str,
        component: str,
        api_version: str = "",
        kind: str = "",
    ) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        now = util.now()
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            # named like client-go's recorder: <object>.<hex nanoseconds>
            "metadata": {"name": f"{meta.get('name', 'x')}.{time.time_ns():x}", "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion") or api_version,
                "kind": obj.get("kind") or kind,
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": etype,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": "",
        }
        try:
            self.kube.create(f"/api/v1/namespaces/{ns}/events", ev)
        except ApiError as e:
            log.debug("event %s on %s not recorded: %s", reason, key_of(obj), e)


class Controller:
    """One reconcile loop: subclasses register handlers in ``setup`` and implement ``sync(key)``.

    ``sync`` returns a delay in seconds to look again (or None); an exception or a 409 requeues
    the key with a short backoff.
    """

    name = "controller"
    component = "kube-controller-manager"
    # the kind this controller owns (list items carry no apiVersion/kind; events need them)
    api_version = ""
    kind = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.kube = ctx.kube
        self.queue = WorkQueue()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, int] = {}
        self.log = logging.getLogger(f"testbed.controllers.{self.name}")

    def setup(self) -> None:
        raise NotImplementedError

    def sync(self, key: str) -> float | None:
        raise NotImplementedError

    def enqueue(self, obj: Obj) -> None:
        self.queue.add(key_of(obj))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"controller {self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.queue.close()

    def join(self, timeout: float = 5) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def event(
        self, obj: Obj, etype: str, reason: str, message: str, *, api_version: str = "", kind: str = ""
    ) -> None:
        self.ctx.recorder.event(
            obj, etype, reason, message, self.component, api_version or self.api_version, kind or self.kind
        )

    def _run(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                again = self.sync(key)
                self._failures.pop(key, None)
                if again is not None:
                    self.queue.add_after(key, again)
            except Exception as e:
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                conflict = isinstance(e, ApiError) and e.status in (409, 404)
                if not conflict:
                    self.log.warning("%s: sync %s failed: %s", self.name, key, e, exc_info=n == 1)
                self.queue.add_after(key, min(0.05 * 2 ** min(n, 8), 5.0))
            finally:
                self.queue.done(key)
