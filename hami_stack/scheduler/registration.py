"""Node registration (section 3.4) and leader awareness (section 1.1).

Leader: the extender runs no election of its own. It watches the kube-scheduler's Lease
(``--leader-elect-resource-name`` in ``--leader-elect-resource-namespace``) and is leader while the
holder identity starts with its hostname (kube-scheduler's identity is ``<hostname>_<uuid>``).
Without ``--leader-elect`` it is always leader. The leader labels its own pod (``POD_NAME`` /
``POD_NAMESPACE``) ``hami.io/scheduler-role: leader`` and its sibling pods ``follower``.

Registration (leader only), every 15 s and on node add/delete or on becoming leader; per node and
family: decode devices (a malformed annotation drops the family's devices whole, logged), check
health with the family's rule; unhealthy while cached -> remove the handshake key and drop the
devices; healthy and (needs update or not cached yet) -> write ``Requesting_<now>`` when the
family has a handshake and the rule asked for it, and cache the devices. After the first pass
``synced`` is set, which unblocks ``/filter``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kubeclient.client import ApiError, Kube
from kubeclient.informer import Informer

from ..devices.base import DeviceFamily, HealthState
from ..protocol import annotations as ann
from ..protocol.errors import ProtocolError
from ..protocol.handshake import requesting
from .cache import UsageCache

log = logging.getLogger("hami.scheduler.register")
Obj = dict[str, Any]
REGISTER_INTERVAL = 15.0


class Registrar:
    def __init__(
        self,
        kube: Kube | None,
        families: Sequence[DeviceFamily],
        cache: UsageCache,
        nodes: Callable[[], list[Obj]],
        *,
        interval: float = REGISTER_INTERVAL,
        is_leader: Callable[[], bool] = lambda: True,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.kube = kube
        self.families = list(families)
        self.cache = cache
        self.nodes = nodes
        self.interval = interval
        self.is_leader = is_leader
        self.now = now
        self.synced = threading.Event()
        self._states: dict[tuple[str, str], HealthState] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hami-register", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.is_leader():
                try:
                    self.run_pass()
                except Exception:
                    log.exception("registration pass failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def run_pass(self) -> None:
        now = self.now()
        seen: set[str] = set()
        for node in self.nodes():
            name = (node.get("metadata") or {}).get("name", "")
            seen.add(name)
            for family in self.families:
                self._check(node, name, family, now)
        for name in list(self.cache.nodes):
            if name not in seen:
                for cw in list(self.cache.nodes[name].families):
                    self.cache.drop_node_family(name, cw)
        self.passes += 1
        self.synced.set()

    def _check(self, node: Obj, name: str, family: DeviceFamily, now: dt.datetime) -> None:
        cw = family.common_word
        try:
            devices = family.node_devices(node)
        except ProtocolError as e:
            log.error("node %s: %s register annotation rejected: %s", name, cw, e)
            devices = []
        previous = self._states.get((name, cw))
        health, state = family.check_health(node, now, previous)
        self._states[(name, cw)] = state
        cached = self.cache.has_family(name, cw)
        if not health.healthy:
            if cached:
                log.warning("node %s: %s devices unhealthy, cleaning up node", name, cw)
                self._remove_handshake(name, family)
                self.cache.drop_node_family(name, cw)
            return
        if not devices:
            self.cache.drop_node_family(name, cw)
            return
        if health.needs_update and family.keys.handshake:
            self._patch(name, {family.keys.handshake: requesting(now)})
        if health.needs_update or not cached:
            self.cache.set_node_family(name, cw, devices)

    def _patch(self, node: str, annotations: dict[str, str | None]) -> None:
        if self.kube is None:
            return
        try:
            self.kube.patch(f"/api/v1/nodes/{node}", {"metadata": {"annotations": annotations}}, "merge")
        except ApiError as e:
            log.warning("node %s: handshake patch failed: %s", node, e)

    def _remove_handshake(self, node: str, family: DeviceFamily) -> None:
        if family.keys.handshake:
            self._patch(node, {family.keys.handshake: None})


class LeaderWatch:
    """Leader state from the kube-scheduler's Lease, and the scheduler-role pod labels."""

    def __init__(
        self,
        kube: Kube,
        name: str,
        namespace: str,
        *,
        hostname: str | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.hostname = hostname or socket.gethostname()
        self.on_change = on_change
        self.leader = False
        self.informer = Informer(
            kube,
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
            field_selector=f"metadata.name={name}",
            name="leases",
        )
        self.informer.add_handler(self._on_lease)

    def start(self) -> None:
        self.informer.start()

    def stop(self) -> None:
        self.informer.stop()

    def _on_lease(self, kind: str, lease: Obj, _old: Obj | None) -> None:
        holder = "" if kind == "DELETED" else ((lease.get("spec") or {}).get("holderIdentity") or "")
        now_leader = bool(holder) and holder.startswith(self.hostname)
        if now_leader != self.leader:
            self.leader = now_leader
            log.info("leader: %s (lease holder %r)", now_leader, holder)
            if now_leader:
                label_roles(self.kube)
            if self.on_change is not None:
                self.on_change(now_leader)


def label_roles(kube: Kube) -> None:
    """Label this pod ``leader`` and its sibling pods ``follower`` (needs POD_NAME/POD_NAMESPACE)."""
    pod_name, ns = os.environ.get("POD_NAME"), os.environ.get("POD_NAMESPACE")
    if not pod_name or not ns:
        return
    try:
        me = kube.get(f"/api/v1/namespaces/{ns}/pods/{pod_name}")
    except ApiError as e:
        log.warning("cannot read own pod %s/%s: %s", ns, pod_name, e)
        return
    labels = {
        k: v
        for k, v in ((me.get("metadata") or {}).get("labels") or {}).items()
        if k not in (ann.SCHEDULER_ROLE_LABEL, "pod-template-hash")
    }
    _set_role(kube, ns, pod_name, "leader")
    if not labels:
        return
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    try:
        siblings = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector=selector).get("items") or []
    except ApiError as e:
        log.warning("cannot list scheduler pods: %s", e)
        return
    for pod in siblings:
        other = (pod.get("metadata") or {}).get("name")
        if other and other != pod_name:
            _set_role(kube, ns, other, "follower")


def _set_role(kube: Kube, ns: str, name: str, role: str) -> None:
    try:
        kube.patch(
            f"/api/v1/namespaces/{ns}/pods/{name}",
            {"metadata": {"labels": {ann.SCHEDULER_ROLE_LABEL: role}}},
            "merge",
        )
    except ApiError as e:
        log.warning("label pod %s/%s %s: %s", ns, name, role, e)
