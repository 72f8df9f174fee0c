"""Leader election on a ``coordination.k8s.io/v1`` Lease, following client-go's leaderelection loop.

A candidate acquires the lease when it is free or its holder has not renewed it within
``leaseDuration``; the leader renews every ``retryPeriod`` and steps down when it could not renew
for ``renewDeadline``. Holder identity is ``<hostname>_<uuid>`` as kube-scheduler sets it.
"""

from __future__ import annotations

import datetime as dt
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


class LeaderElector:
    def __init__(self, kube: Kube, cfg: LeaderElection, on_started: Callable[[], None],
                 on_stopped: Callable[[], None], identity: str | None = None) -> None:
        self.kube = kube
        self.cfg = cfg
        self.identity = identity or default_identity()
        self.on_started, self.on_stopped = on_started, on_stopped
        self.path = (f"/apis/coordination.k8s.io/v1/namespaces/{cfg.resource_namespace}/leases/"
                     f"{cfg.resource_name}")
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

    def _spec(self, now: dt.datetime, acquire: dt.datetime, transitions: int) -> dict[str, Any]:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.cfg.lease_duration),
                "acquireTime": _micro(acquire), "renewTime": _micro(now), "leaseTransitions": transitions}

    def _try_acquire_or_renew(self, mono: float) -> bool:
        now = _now()
        try:
            lease = self.kube.get(self.path)
        except ApiError as e:
            if e.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.cfg.resource_name, "namespace": self.cfg.resource_namespace},
                    "spec": self._spec(now, now, 0)}
            try:
                self.kube.create(self.path.rsplit("/", 1)[0], body)
            except ApiError as e2:
                if e2.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        seen = (holder, str(spec.get("renewTime") or ""))
        if seen != self._observed:
            self._observed, self._observed_at = seen, mono
        duration = float(spec.get("leaseDurationSeconds") or self.cfg.lease_duration)
        if holder and holder != self.identity and mono - self._observed_at < duration:
            return False  # someone else holds an unexpired lease (timed from when we saw it change)
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquire = _parse(spec.get("acquireTime")) or now
        else:
            acquire, transitions = now, transitions + (1 if holder else 0)
        lease["spec"] = self._spec(now, acquire, transitions)
        try:
            self.kube.update(self.path, lease)
        except ApiError as e:
            if e.status == 409:
                return False
            raise
        self._observed = (self.identity, lease["spec"]["renewTime"])
        return True

    def _release(self) -> None:
        """Give the lease up on a clean stop (ReleaseOnCancel), so a standby takes over at once."""
        try:
            lease = self.kube.get(self.path)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            self.kube.update(self.path, lease)
        except Exception as e:
            log.debug("release lease: %s", e)
        self.is_leader = False
