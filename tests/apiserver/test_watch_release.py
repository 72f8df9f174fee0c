"""Watches a client drops are released at once (their queues freed), not at their 30-60 minute
timeout: 1,000 idle watches used to keep their memory for good."""

from __future__ import annotations

import http.client
import ssl
import time


def _open(testbed, n: int) -> list[http.client.HTTPSConnection]:  # type: ignore[no-untyped-def]
    host, port = testbed.url.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(testbed.ca_path))
    conns = []
    for _ in range(n):
        c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
        c.request(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1",
            headers={"Authorization": f"Bearer {testbed.admin_token}"},
        )
        assert c.getresponse().status == 200
        conns.append(c)
    return conns


def _watchers(testbed) -> int:  # type: ignore[no-untyped-def]
    return sum(len(v) for v in testbed.server.store._watchers.values())


def test_dropped_watches_are_released(testbed) -> None:
    before = _watchers(testbed)
    conns = _open(testbed, 40)
    assert _watchers(testbed) == before + 40
    for c in conns:
        c.close()
    deadline = time.monotonic() + 10
    while _watchers(testbed) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _watchers(testbed) == before
