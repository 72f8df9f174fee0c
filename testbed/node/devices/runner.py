"""Run a node's device-plugin manager and PodResources server from threaded code (the node agent).

Both are asyncio/grpc.aio services. They run on one event loop per process, in a daemon thread, shared
by every node agent in the process (gRPC's asyncio layer is happiest with a single loop). The manager's
``.loop`` is that loop, so ``devices_api.run_allocate`` runs ``allocate`` there.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from testbed.node.devices.manager import DevicePluginManager
from testbed.node.podresources import PodResourcesServer

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process-wide loop for node device services, started on first use."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="node-devices", daemon=True).start()
            _loop = loop
        return _loop


class NodeDeviceServices:
    """One node's kubelet device side: ``.manager`` (DeviceManager for the pod runtime) and the
    PodResources server. ``start``/``stop`` block until the sockets are up / gone."""

    def __init__(
        self,
        node_root: Path | str,
        minor: int,
        *,
        active_pods: Callable[[], list[dict[str, Any]]],
        feature_gates: dict[str, bool] | None = None,
    ) -> None:
        self.manager = DevicePluginManager(
            node_root, minor, active_pods=active_pods, feature_gates=feature_gates
        )
        self.podresources = PodResourcesServer(
            node_root, minor, active_pods=active_pods, devices=self.manager, feature_gates=feature_gates
        )
        self.loop = shared_loop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the services' loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, timeout: float = 10.0) -> None:
        self.call(self._start(), timeout)

    async def _start(self) -> None:
        await self.manager.start()
        await self.podresources.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.call(self._stop(), timeout)

    async def _stop(self) -> None:
        await self.podresources.stop()
        await self.manager.stop()
