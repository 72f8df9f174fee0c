"""Serving certificates that follow their files: the chart's cert Job may rotate them at any time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("hami.tls")


def server_ssl_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


class ReloadingCertificate:
    """An SSL context whose chain is reloaded when the certificate or key file changes.

    A loaded context keeps serving; new handshakes pick up the reloaded chain.
    """

    def __init__(self, cert_file: str | Path, key_file: str | Path, interval: float = 10.0) -> None:
        self.cert_file, self.key_file = str(cert_file), str(key_file)
        self.interval = interval
        self.context = server_ssl_context(cert_file, key_file)
        self._task: asyncio.Task[None] | None = None

    def _stamp(self) -> tuple[float, float]:
        return os.stat(self.cert_file).st_mtime, os.stat(self.key_file).st_mtime

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        last = self._stamp()
        while True:
            await asyncio.sleep(self.interval)
            try:
                now = self._stamp()
                if now != last:
                    self.context.load_cert_chain(self.cert_file, self.key_file)
                    last = now
                    log.info("reloaded certificate %s", self.cert_file)
            except (OSError, ssl.SSLError) as e:
                log.warning("certificate reload failed: %s", e)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
