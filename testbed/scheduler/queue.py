"""The scheduling queue: active pods by priority, per-pod exponential backoff, and an unschedulable
pool that cluster events (node added/updated, pod deleted) move back, as kube-scheduler's
PriorityQueue does. A pod is in exactly one place, and a pod being scheduled or bound ("in flight")
is never handed out again, so nothing is scheduled twice.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

ACTIVE, BACKOFF, UNSCHEDULABLE, IN_FLIGHT = "active", "backoff", "unschedulable", "in-flight"


@dataclass
class QueuedPod:
    uid: str
    pod: Obj
    attempts: int = 0
    state: str = ACTIVE
    ready_at: float = 0.0
    last_attempt: float = 0.0
    moved: bool = False  # a cluster event arrived while the pod was in flight
    token: int = 0
    deleted: bool = field(default=False)

    @property
    def priority(self) -> int:
        return int((self.pod.get("spec") or {}).get("priority") or 0)


class SchedulingQueue:
    def __init__(self, initial_backoff: float = 1.0, max_backoff: float = 10.0,
                 unschedulable_timeout: float = 300.0) -> None:
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        self._cond = threading.Condition()
        self._pods: dict[str, QueuedPod] = {}
        self._active: list[tuple[int, int, int, str]] = []  # (-priority, seq, token, uid)
        self._backoff: list[tuple[float, int, str]] = []  # (ready_at, token, uid)
        self._seq = itertools.count()
        self._closed = False

    def backoff_for(self, attempts: int) -> float:
        d = self.initial_backoff * (2 ** max(attempts - 1, 0))
        return min(d, self.max_backoff)

    def _push_active(self, qp: QueuedPod) -> None:
        qp.state, qp.token = ACTIVE, next(self._seq)
        heapq.heappush(self._active, (-qp.priority, qp.token, qp.token, qp.uid))
        self._cond.notify()

    def _push_backoff(self, qp: QueuedPod) -> None:
        qp.ready_at = qp.last_attempt + self.backoff_for(qp.attempts)
        if qp.ready_at <= time.monotonic():
            self._push_active(qp)
            return
        qp.state, qp.token = BACKOFF, next(self._seq)
        heapq.heappush(self._backoff, (qp.ready_at, qp.token, qp.uid))
        self._cond.notify()

    def add_or_update(self, uid: str, pod: Obj) -> None:
        with self._cond:
            qp = self._pods.get(uid)
            if qp is None:
                qp = self._pods[uid] = QueuedPod(uid, pod)
                self._push_active(qp)
                return
            qp.pod = pod
            if qp.state == UNSCHEDULABLE:  # the pod changed: it may fit now
                self._push_backoff(qp)

    def delete(self, uid: str) -> None:
        with self._cond:
            qp = self._pods.pop(uid, None)
            if qp is not None:
                qp.deleted = True

    def move_all(self) -> None:
        """A cluster event that may make unschedulable pods fit."""
        with self._cond:
            for qp in self._pods.values():
                if qp.state == UNSCHEDULABLE:
                    self._push_backoff(qp)
                elif qp.state == IN_FLIGHT:
                    qp.moved = True

    def pop(self, timeout: float) -> QueuedPod | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                self._flush(now)
                while self._active:
                    _p, _s, token, uid = heapq.heappop(self._active)
                    qp = self._pods.get(uid)
                    if qp is None or qp.token != token or qp.state != ACTIVE:
                        continue
                    qp.state, qp.moved = IN_FLIGHT, False
                    qp.attempts += 1
                    qp.last_attempt = now
                    return qp
                wait = deadline - now
                if self._backoff:
                    wait = min(wait, self._backoff[0][0] - now)
                if wait <= 0 and now >= deadline:
                    return None
                self._cond.wait(max(wait, 0.001))
            return None

    def _flush(self, now: float) -> None:
        while self._backoff and self._backoff[0][0] <= now:
            _r, token, uid = heapq.heappop(self._backoff)
            qp = self._pods.get(uid)
            if qp is not None and qp.token == token and qp.state == BACKOFF:
                self._push_active(qp)
        for qp in self._pods.values():
            if qp.state == UNSCHEDULABLE and now - qp.last_attempt > self.unschedulable_timeout:
                self._push_backoff(qp)

    def done(self, uid: str) -> None:
        """The pod was bound: forget it."""
        with self._cond:
            self._pods.pop(uid, None)

    def requeue(self, qp: QueuedPod, *, unschedulable: bool) -> None:
        """After a failed attempt: a fit failure waits for a cluster event, an error backs off."""
        with self._cond:
            if self._pods.get(qp.uid) is not qp:
                return
            if unschedulable and not qp.moved:
                qp.state = UNSCHEDULABLE
            else:
                self._push_backoff(qp)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._pods)
