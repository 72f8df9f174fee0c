"""Leader election on a ``coordination.k8s.io/v1`` Lease (or the older Endpoints/ConfigMap locks and
their "...leases" pairs, kube-scheduler's default before 1.20), following client-go's leaderelection
loop.

A candidate acquires the lease when it is free or its holder has not renewed it within
``leaseDuration``; the leader renews every ``retryPeriod`` and steps down when it could not renew
for ``renewDeadline``. Holder identity is ``<hostname>_<uuid>`` as kube-scheduler sets it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from kubeclient.client import ApiError, Kube

from .config import LeaderElection

log = logging.getLogger("testbed.scheduler.leader")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: str | None) -> dt.datetime | None:
    if not s:
        return None
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4()}"


LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"  # the record on an Endpoints/ConfigMap lock


def _lease_record(spec: dict[str, Any]) -> dict[str, Any]:
    return {"holderIdentity": spec.get("holderIdentity") or "",
            "leaseDurationSeconds": spec.get("leaseDurationSeconds"),
            "acquireTime": spec.get("acquireTime"), "renewTime": spec.get("renewTime"),
            "leaderTransitions": spec.get("leaseTransitions") or 0}


class _Lock:
    """One lock object (client-go's resourcelock): a Lease, or the leader annotation of an Endpoints
    or ConfigMap (the older locks, 1.18/1.19 kube-scheduler's default being both: "endpointsleases")."""

    def __init__(self, kube: Kube, kind: str, namespace: str, name: str) -> None:
        self.kube, self.kind = kube, kind
        base = ("/apis/coordination.k8s.io/v1" if kind == "leases" else "/api/v1")
        self.collection = f"{base}/namespaces/{namespace}/{kind}"
        self.path = f"{self.collection}/{name}"
        self.namespace, self.name = namespace, name

    def get(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(record, object); (None, None) when the object does not exist; ApiError otherwise."""
        try:
            obj = self.kube.get(self.path)
        except ApiError as e:
            if e.status == 404:
                return None, None
            raise
        if self.kind == "leases":
            return _lease_record(obj.get("spec") or {}), obj
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(LEADER_ANNOTATION)
        try:
            record = dict(json.loads(raw)) if raw else {}
        except (ValueError, TypeError):
            record = {}
        return record, obj

    def _apply(self, obj: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "leases":
            obj["spec"] = {"holderIdentity": record["holderIdentity"],
                           "leaseDurationSeconds": record["leaseDurationSeconds"],
                           "acquireTime": record["acquireTime"], "renewTime": record["renewTime"],
                           "leaseTransitions": record["leaderTransitions"]}
        else:
            obj.setdefault("metadata", {}).setdefault("annotations", {})[LEADER_ANNOTATION] = \
                json.dumps(record, separators=(",", ":"))
        return obj

    def create(self, record: dict[str, Any]) -> None:
        api = "coordination.k8s.io/v1" if self.kind == "leases" else "v1"
        kind = {"leases": "Lease", "endpoints": "Endpoints", "configmaps": "ConfigMap"}[self.kind]
        body = {"apiVersion": api, "kind": kind, "metadata": {"name": self.name, "namespace": self.namespace}}
        self.kube.create(self.collection, self._apply(body, record))

    def update(self, obj: dict[str, Any], record: dict[str, Any]) -> None:
        self.kube.update(self.path, self._apply(obj, record))


def locks_for(kube: Kube, cfg: LeaderElection) -> list[_Lock]:
    """The lock objects of ``cfg.resource_lock``, primary first ("endpointsleases": the Endpoints,
    then a Lease that follows it, as client-go's MultiLock)."""
    kinds = {"leases": ["leases"], "endpoints": ["endpoints"], "configmaps": ["configmaps"],
             "endpointsleases": ["endpoints", "leases"], "configmapsleases": ["configmaps", "leases"]}
    if cfg.resource_lock not in kinds:
        raise ValueError(f'invalid leader-elect-resource-lock "{cfg.resource_lock}"')
    return [_Lock(kube, k, cfg.resource_namespace, cfg.resource_name) for k in kinds[cfg.resource_lock]]


def release_locks(locks: list[_Lock], holder: str | None = None) -> bool:
    """Give up each lock that is held (by ``holder`` only, when given): no holder and a 1 s duration,
    so the next candidate takes it at once. True when one was released."""
    released = False
    for lock in locks:
        record, obj = lock.get()
        current = (record or {}).get("holderIdentity")
        if obj is None or not current or (holder is not None and current != holder):
            continue
        lock.update(obj, {**(record or {}), "holderIdentity": "", "leaseDurationSeconds": 1})
        released = True
    return released


class LeaderElector:
    def __init__(self, kube: Kube, cfg: LeaderElection, on_started: Callable[[], None],
                 on_stopped: Callable[[], None], identity: str | None = None) -> None:
        self.kube = kube
        self.cfg = cfg
        self.identity = identity or default_identity()
        self.on_started, self.on_stopped = on_started, on_stopped
        self.locks = locks_for(kube, cfg)
        self.is_leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self.is_leader:
            self._release()

    def _run(self) -> None:
        import time

        last_renew = 0.0
        while not self._stop.is_set():
            ok = False
            try:
                ok = self._try_acquire_or_renew(time.monotonic())
            except Exception as e:  # apiserver down: keep trying, step down after renewDeadline
                log.warning("error retrieving resource lock %s/%s: %s", self.cfg.resource_namespace,
                            self.cfg.resource_name, e)
            now = time.monotonic()
            if ok:
                last_renew = now
                if not self.is_leader:
                    self.is_leader = True
                    log.info("successfully acquired lease %s/%s", self.cfg.resource_namespace,
                             self.cfg.resource_name)
                    self.on_started()
            elif self.is_leader and now - last_renew > self.cfg.renew_deadline:
                self.is_leader = False
                log.error("leaderelection lost")
                self.on_stopped()
            self._stop.wait(self.cfg.retry_period)

    def _record(self, now: dt.datetime, acquire: dt.datetime, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.cfg.lease_duration),
                "acquireTime": _micro(acquire), "renewTime": _micro(now), "leaderTransitions": transitions}

    def _write_secondary(self, record: dict[str, Any]) -> None:
        """A MultiLock's followers (the Lease of "endpointsleases") take the primary's record."""
        for lock in self.locks[1:]:
            _, obj = lock.get()
            if obj is None:
                lock.create(record)
            else:
                lock.update(obj, record)

    def _try_acquire_or_renew(self, mono: float) -> bool:
        now = _now()
        primary = self.locks[0]
        record, obj = primary.get()  # a refused read (RBAC) raises: never leader, as client-go
        if obj is None:
            fresh = self._record(now, now, 0)
            try:
                primary.create(fresh)
            except ApiError as e2:
                if e2.status == 409:
                    return False
                raise
            self._write_secondary(fresh)
            return True
        record = record or {}
        holder = str(record.get("holderIdentity") or "")
        seen = (holder, str(record.get("renewTime") or ""))
        if seen != self._observed:
            self._observed, self._observed_at = seen, mono
        duration = float(record.get("leaseDurationSeconds") or self.cfg.lease_duration)
        if holder and holder != self.identity and mono - self._observed_at < duration:
            return False  # someone else holds an unexpired lease (timed from when we saw it change)
        transitions = int(record.get("leaderTransitions") or 0)
        if holder == self.identity:
            acquire = _parse(record.get("acquireTime")) or now
        else:
            acquire, transitions = now, transitions + (1 if holder else 0)
        mine = self._record(now, acquire, transitions)
        try:
            primary.update(obj, mine)
        except ApiError as e:
            if e.status == 409:
                return False
            raise
        self._write_secondary(mine)
        self._observed = (self.identity, mine["renewTime"])
        return True

    def _release(self) -> None:
        """Give the lease up on a clean stop (ReleaseOnCancel), so a standby takes over at once."""
        try:
            release_locks(self.locks, self.identity)
        except Exception as e:
            log.debug("release lease: %s", e)
        self.is_leader = False
