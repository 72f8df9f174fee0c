"""A webhook call whose kept-alive connection the server closed is sent again on a new connection
(as kube-apiserver's Go transport does), once; a server that keeps dropping it still fails the call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from testbed.apiserver.errors import APIError
from testbed.apiserver.reader import DictReader
from testbed.apiserver.webhooks import MUTATING_CONFIGS, WebhookDispatcher
from tests.apiserver.test_webhooks import PKI, Hooks, allow, config, pod_request, webhook


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


class DroppingHooks(Hooks):
    """Closes the connection without an answer on the first ``drops`` requests (a kept-alive
    connection the server closed under the client), then answers as the behaviour says."""

    def __init__(self, drops: int) -> None:
        super().__init__()
        self.drops = drops

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.drops > 0:
            self.drops -= 1
            review = await request.json()
            self.seen.append((request.path, request.query_string, request.headers.get("Host", ""), review))
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        return await super()._handle(request)


PATCH = [{"op": "add", "path": "/metadata/labels/seen", "value": "yes"}]


def _run(drops: int, body: Any, pki: PKI) -> None:
    async def main() -> None:
        h = DroppingHooks(drops)
        h.behaviours["/mutate"] = allow(PATCH)
        await h.start(pki.server_context((), ("127.0.0.1",)))
        try:
            await body(h)
        finally:
            await h.stop()

    asyncio.run(main())


def _dispatcher(h: Hooks, pki: PKI, policy: str = "Fail") -> WebhookDispatcher:
    url = f"https://127.0.0.1:{h.port}/mutate"
    hook = webhook("m.example.com", url, ca=pki.ca_bundle, failurePolicy=policy)
    return WebhookDispatcher(DictReader({MUTATING_CONFIGS: [config("m", hook)]}), ("v1",))


def test_a_dropped_connection_is_retried_once(pki: PKI) -> None:
    async def body(h: Hooks) -> None:
        d = _dispatcher(h, pki)
        out = await d.mutate(pod_request())
        await d.close()
        assert out is not None and out["metadata"]["labels"] == {"seen": "yes"}
        assert len(h.calls("/mutate")) == 2

    _run(1, body, pki)


def test_a_server_that_keeps_dropping_fails_the_call(pki: PKI) -> None:
    async def body(h: Hooks) -> None:
        d = _dispatcher(h, pki)
        failed = r'failed calling webhook "m\.example\.com": failed to call webhook'
        with pytest.raises(APIError, match=failed):
            await d.mutate(pod_request())
        await d.close()
        assert len(h.calls("/mutate")) == 2

    _run(5, body, pki)
