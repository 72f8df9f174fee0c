"""Pod logs are proxied from the node's kubelet API, as the real apiserver does."""

from __future__ import annotations

import json
import ssl
import tempfile
from pathlib import Path

import pytest
from aiohttp import web
from kubernetes.client.rest import ApiException

from testbed import pki


@pytest.fixture
def kubelet(testbed):  # type: ignore[no-untyped-def]
    """A minimal kubelet log endpoint on 127.0.0.1 written in the test."""
    seen: list[dict] = []

    async def logs(request: web.Request) -> web.StreamResponse:
        seen.append({"path": request.path, **request.query})
        lines = [f"line {i}\n" for i in range(5)]
        if "tailLines" in request.query:
            lines = lines[-int(request.query["tailLines"]) :]
        return web.Response(text="".join(lines))

    ca = pki.make_ca()
    leaf = pki.make_serving_cert(ca, "kubelet", ["127.0.0.1"])
    d = Path(tempfile.mkdtemp())
    leaf.write(d / "c", d / "k")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "c", d / "k")
    holder: dict = {}

    async def start() -> int:
        app = web.Application()
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", logs)
        holder["runner"] = r = web.AppRunner(app)
        await r.setup()
        site = web.TCPSite(r, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    port = testbed.call(start())
    yield port, seen
    testbed.call(holder["runner"].cleanup())


def test_logs_proxied_with_tail_lines(core, ns, kubelet):
    port, seen = kubelet
    core.create_node(
        {
            "metadata": {"name": f"node-{ns}"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            },
        }
    )
    core.create_namespaced_pod(
        ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "i"}]}}
    )
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("p", ns)
    assert e.value.status == 400 and "waiting to start" in json.loads(e.value.body)["message"]
    core.create_namespaced_binding(
        ns,
        {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": f"node-{ns}"}},
        _preload_content=False,
    )
    assert core.read_namespaced_pod_log("p", ns, tail_lines=2) == "line 3\nline 4\n"
    assert seen[-1]["path"] == f"/containerLogs/{ns}/p/main" and seen[-1]["tailLines"] == "2"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("p", ns, container="other")
    assert e.value.status == 400 and "not valid for pod" in json.loads(e.value.body)["message"]
