"""The seam between the pod runtime and the device-plugin manager.

The runtime asks a :class:`DeviceManager` for the node's extended resources (node status) and, at pod
admission, for each container's devices (``Allocate``). The device-plugin manager in
``testbed/node/devices/`` implements this protocol; :class:`NullDeviceManager` is used when a node
has no device plugins.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class ContainerDevices:
    """What a container gets from its device plugins, as the kubelet hands it to the runtime."""

    envs: dict[str, str] = field(default_factory=dict)
    mounts: list[tuple[str, str, bool]] = field(
        default_factory=list
    )  # (host path, container path, read-only)
    devices: list[tuple[str, str, str]] = field(default_factory=list)  # (host path, container path, "rwm")
    annotations: dict[str, str] = field(default_factory=dict)

    def merge(self, other: ContainerDevices) -> None:
        self.envs.update(other.envs)
        self.mounts.extend(other.mounts)
        self.devices.extend(other.devices)
        self.annotations.update(other.annotations)


class AllocationError(Exception):
    """An ``Allocate`` that failed; the pod is rejected with ``UnexpectedAdmissionError``."""


@runtime_checkable
class DeviceManager(Protocol):
    def capacity(self) -> dict[str, tuple[int, int]]:
        """Extended resource name -> (capacity, allocatable)."""
        ...

    def allocate(self, pod: dict[str, Any], container: dict[str, Any]) -> Any:
        """ContainerDevices for one container (may be a coroutine); raises on failure."""
        ...

    def release(self, pod_uid: str) -> None: ...

    def on_change(self, cb: Callable[[], None]) -> None:
        """Call ``cb`` whenever capacity() changes (a plugin registered, a device turned unhealthy)."""
        ...


class NullDeviceManager:
    """No device plugins: no extended resources; a container asking for one fails admission."""

    def capacity(self) -> dict[str, tuple[int, int]]:
        return {}

    def allocate(self, pod: dict[str, Any], container: dict[str, Any]) -> ContainerDevices:
        return ContainerDevices()

    def release(self, pod_uid: str) -> None:
        return None

    def on_change(self, cb: Callable[[], None]) -> None:
        return None


def run_allocate(dm: DeviceManager, pod: dict[str, Any], container: dict[str, Any]) -> ContainerDevices:
    """Call ``allocate`` whether it is sync or async. An async manager that exposes its running event
    loop as ``.loop`` gets the coroutine run there (gRPC channels belong to one loop); otherwise the
    coroutine runs on a private loop."""
    res = dm.allocate(pod, container)
    if inspect.isawaitable(res):
        import asyncio

        loop = getattr(dm, "loop", None)
        if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running():
            res = asyncio.run_coroutine_threadsafe(_await(res), loop).result(60)
        else:
            res = asyncio.run(_await(res))
    return res if isinstance(res, ContainerDevices) else ContainerDevices()


async def _await(aw: Any) -> Any:
    return await aw
