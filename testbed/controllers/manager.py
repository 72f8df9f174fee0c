"""ControllerManager: starts the selected controllers over one set of shared informers."""

from __future__ import annotations

import logging

from kubeclient.client import Kube
from testbed.apiserver.versions import profile

from .base import Context, Controller, Options, SharedInformers
from .cronjob import CronJobController
from .daemonset import DaemonSetController
from .deployment import DeploymentController
from .endpoints import EndpointsController, EndpointSliceController
from .job import JobController
from .nodelifecycle import NodeLifecycleController, grace_default
from .podgc import PodGCController
from .replicaset import ReplicaSetController
from .statefulset import StatefulSetController
from .volumes import PersistentVolumeBinderController

log = logging.getLogger("testbed.controllers")

# names as kube-controller-manager's --controllers flag spells them
CONTROLLERS: dict[str, type[Controller]] = {
    "deployment": DeploymentController,
    "replicaset": ReplicaSetController,
    "daemonset": DaemonSetController,
    "statefulset": StatefulSetController,
    "job": JobController,
    "cronjob": CronJobController,
    "podgc": PodGCController,
    "nodelifecycle": NodeLifecycleController,
    "endpoint": EndpointsController,
    "endpointslice": EndpointSliceController,
    "persistentvolume-binder": PersistentVolumeBinderController,
}

# what the apiserver process already runs in the testbed (accepted in --controllers, nothing to start)
BUILT_IN = (
    "serviceaccount",
    "serviceaccount-token",
    "root-ca-cert-publisher",
    "namespace",
    "garbagecollector",
    "resourcequota",
)


def select(spec: str | list[str]) -> list[str]:
    """Resolve a --controllers value (``*`` for all, ``foo`` to add, ``-foo`` to remove)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [i.strip() for i in items if i.strip()] or ["*"]
    known = set(CONTROLLERS) | set(BUILT_IN)
    chosen: set[str] = set()
    star = "*" in items
    for item in items:
        name = item.lstrip("-")
        if item != "*" and name not in known:
            raise ValueError(f'"{name}" is not in the list of known controllers')
    for name in CONTROLLERS:
        if f"-{name}" in items:
            continue
        if star or name in items:
            chosen.add(name)
    return [n for n in CONTROLLERS if n in chosen]


class ControllerManager:
    """The testbed's kube-controller-manager.

    ``ControllerManager(kube, 33).start()`` runs every controller; ``controllers="*,-job"`` leaves
    some out; ``node_monitor_grace_period`` defaults to the minor's value (40 s, or 50 s from 1.32).
    """

    def __init__(
        self,
        kube: Kube,
        minor: int | str,
        *,
        controllers: str | list[str] = "*",
        node_monitor_grace_period: float | None = None,
        options: Options | None = None,
    ) -> None:
        self.kube = kube
        self.profile = profile(minor)
        self.options = options or Options()
        if node_monitor_grace_period is not None:
            self.options.node_monitor_grace_period = node_monitor_grace_period
        elif options is None:
            self.options.node_monitor_grace_period = grace_default(self.profile.minor)
        self.informers = SharedInformers(kube)
        self.ctx = Context(kube, self.profile, self.informers, self.options)
        self.names = select(controllers)
        self.controllers: list[Controller] = [CONTROLLERS[n](self.ctx) for n in self.names]
        self._started = False

    def start(self, wait: float = 30) -> ControllerManager:
        for c in self.controllers:
            c.setup()
        self.informers.start()
        if not self.informers.wait_synced(wait):
            log.warning("informer caches did not sync within %.0fs", wait)
        for c in self.controllers:
            c.start()
            log.info('Started "%s"', c.name)
        self._started = True
        return self

    def stop(self) -> None:
        for c in self.controllers:
            c.stop()
        self.informers.stop()
        for c in self.controllers:
            c.join(2)
        self._started = False

    def __enter__(self) -> ControllerManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
