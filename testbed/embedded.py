"""Run a testbed control plane inside the current process, on a background event-loop thread.

Tests, benchmarks and the demo use this to get a live HTTPS apiserver without a subprocess:

    with EmbeddedTestbed(minor=33) as tb:
        api = kubernetes.client.CoreV1Api(tb.api_client())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from . import pki
from .apiserver.server import APIServer, ServerConfig

T = TypeVar("T")


class EmbeddedTestbed:
    def __init__(
        self,
        minor: int | str = 33,
        *,
        data_dir: Path | None = None,
        port: int = 0,
        bookmark_interval: float = 5.0,
        history: int = 20_000,
    ) -> None:
        from .apiserver.versions import profile

        self.minor = profile(minor).minor
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="testbed-")
            data_dir = Path(self._tmp.name)
        self.data_dir = pki.private_dir(data_dir)  # 0700: kubeconfig and keys (issue 15)
        self.config = ServerConfig(
            minor=self.minor,
            port=port,
            data_dir=data_dir,
            bookmark_interval=bookmark_interval,
            history=history,
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="testbed-loop", daemon=True)
        self.server: APIServer | None = None
        self.kubeconfig_path = data_dir / "kubeconfig"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the testbed's loop and wait for its result."""
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def start(self) -> EmbeddedTestbed:
        self._thread.start()

        async def _start() -> APIServer:
            s = APIServer(self.config)
            await s.start()
            return s

        self.server = self.call(_start())
        self.server.write_kubeconfig(self.kubeconfig_path)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.call(self.server.stop())
            self.server = None
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedTestbed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def admin_token(self) -> str:
        assert self.server is not None
        return self.server.admin_token

    @property
    def ca_path(self) -> Path:
        return self.data_dir / "pki" / "ca.crt"

    def api_client(self, token: str | None = None) -> Any:
        """An official ``kubernetes`` client ApiClient for this testbed."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.ssl_ca_cert = str(self.ca_path)
        cfg.api_key = {"authorization": token or self.admin_token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)
