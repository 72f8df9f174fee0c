"""Give each node agent its kubelet device side: the device-plugin manager and PodResources server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .agent import NodeAgent
from .devices.runner import NodeDeviceServices
from .runtime import active_pods


class _NodeDevices:
    """The DeviceManager the pod runtime sees, with a synchronous stop for the agent's shutdown."""

    def __init__(self, services: NodeDeviceServices) -> None:
        self.services = services
        self.manager = services.manager
        self.loop = services.loop

    def capacity(self) -> dict[str, tuple[int, int]]:
        return self.manager.capacity()

    def allocate(self, pod: dict[str, Any], container: dict[str, Any]) -> Any:
        return self.manager.allocate(pod, container)

    def release(self, pod_uid: str) -> None:
        self.manager.release(pod_uid)

    def on_change(self, cb: Callable[[], None]) -> None:
        self.manager.on_change(cb)

    def stop(self) -> None:
        self.services.stop()


def device_services(agent: NodeAgent) -> _NodeDevices:
    """Factory for ``NodeAgents(device_managers=...)``: start the node's kubelet.sock and pod-resources."""
    services = NodeDeviceServices(agent.root, agent.minor, active_pods=lambda: active_pods(agent.runtime))
    services.start()
    return _NodeDevices(services)
