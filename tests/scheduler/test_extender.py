"""Extenders over HTTPS (a CA from testbed.pki, an aiohttp extender written here), wire bodies,
nodeCacheCapable, managedResources, ignorable, unreachable/garbage/timeout, binding extenders."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from kubeclient.client import Kube
from testbed import pki
from testbed.embedded import EmbeddedTestbed
from testbed.scheduler import Scheduler
from testbed.scheduler.config import ExtenderConfig, LeaderElection, SchedulerConfig, TLSConfig

from .helpers import events_for, make_node, make_pod, node_of, wait_for

Handler = Callable[[str, dict[str, Any]], Any]


class Extender:
    """An HTTPS extender on loopback; ``handler(verb, body)`` returns the JSON reply (or raw bytes)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ca = pki.make_ca()
        self.cert = pki.make_serving_cert(self.ca, "extender", ["127.0.0.1"])
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        verb = request.match_info["verb"]
        body = orjson.loads(await request.read())
        self.calls.append((verb, body))
        out = await self.loop.run_in_executor(None, self.handler, verb, body)
        if isinstance(out, bytes):
            return web.Response(body=out, content_type="application/json")
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    def start(self, tmp: Any) -> Extender:
        import ssl

        (tmp / "tls.crt").write_bytes(self.cert.cert_pem)
        (tmp / "tls.key").write_bytes(self.cert.key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tmp / "tls.crt"), str(tmp / "tls.key"))
        self._thread.start()

        async def up() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/ext/{verb}", self._handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
            await site.start()
            self.port = runner.addresses[0][1]
            return runner

        self.runner = asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def config(self, **kw: Any) -> ExtenderConfig:
        return ExtenderConfig(url_prefix=f"https://127.0.0.1:{self.port}/ext", enable_https=True,
                              tls=TLSConfig(ca_data=self.ca.cert_pem), **kw)

    def verbs(self) -> list[str]:
        return [v for v, _ in self.calls]


@pytest.fixture
def kube() -> Iterator[Kube]:
    with EmbeddedTestbed(33) as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        make_node(k, "n1")
        make_node(k, "n2")
        make_node(k, "n3")
        yield k
        k.close()


def run_scheduler(kube: Kube, *exts: ExtenderConfig) -> Scheduler:
    from testbed.scheduler.config import _apply_managed_ignored

    cfg = SchedulerConfig(extenders=list(exts), leader_election=LeaderElection(leader_elect=False))
    _apply_managed_ignored(cfg)
    return Scheduler(kube, cfg, 33).start()


def test_filter_prioritize_bind_over_https_with_go_field_names(kube: Kube, tmp_path: Any) -> None:
    def handler(verb: str, body: dict[str, Any]) -> Any:
        if verb == "filter":
            names = [n["metadata"]["name"] for n in body["Nodes"]["items"]]
            return {"Nodes": {"items": [n for n in body["Nodes"]["items"] if n["metadata"]["name"] != "n1"]},
                    "FailedNodes": {"n1": "n1 is reserved"}, "Error": "", "NodeNames": None} if names else {}
        if verb == "prioritize":
            return [{"Host": n["metadata"]["name"], "Score": 10 if n["metadata"]["name"] == "n3" else 0}
                    for n in body["Nodes"]["items"]]
        if verb == "bind":
            kube.create(f"/api/v1/namespaces/{body['PodNamespace']}/pods/{body['PodName']}/binding", {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": body["PodName"]},
                "target": {"kind": "Node", "name": body["Node"]}})
            return {"Error": ""}
        raise AssertionError(verb)

    ext = Extender(handler).start(tmp_path)
    s = run_scheduler(kube, ext.config(filter_verb="filter", prioritize_verb="prioritize", bind_verb="bind",
                                       weight=5))
    try:
        pod = make_pod(kube, "gpu-pod", requests={"cpu": "100m"})
        assert wait_for(lambda: node_of(kube, "gpu-pod")) == "n3"
        assert ext.verbs() == ["filter", "prioritize", "bind"]
        fbody = ext.calls[0][1]
        assert set(fbody) == {"Pod", "Nodes", "NodeNames"} and fbody["NodeNames"] is None
        assert fbody["Pod"]["metadata"]["name"] == "gpu-pod"
        assert sorted(n["metadata"]["name"] for n in fbody["Nodes"]["items"]) == ["n1", "n2", "n3"]
        assert sorted(n["metadata"]["name"] for n in ext.calls[1][1]["Nodes"]["items"]) == ["n2", "n3"]
        assert ext.calls[2][1] == {"PodName": "gpu-pod", "PodNamespace": "default",
                                   "PodUID": pod["metadata"]["uid"], "Node": "n3"}
        ev = wait_for(lambda: events_for(kube, "gpu-pod", reason="Scheduled"))[0]
        assert ev["message"] == "Successfully assigned default/gpu-pod to n3"
    finally:
        s.stop()
        ext.stop()


def test_node_cache_capable_sends_names_and_decodes_case_insensitively(kube: Kube, tmp_path: Any) -> None:
    def handler(verb: str, body: dict[str, Any]) -> Any:
        keep = [n for n in body["NodeNames"] if n == "n2"]
        fail = {n: "no gpu" for n in body["NodeNames"] if n != "n2"}
        return {"nodenames": keep, "failedNodes": fail, "error": ""}

    ext = Extender(handler).start(tmp_path)
    s = run_scheduler(kube, ext.config(filter_verb="filter", node_cache_capable=True))
    try:
        make_pod(kube, "p")
        assert wait_for(lambda: node_of(kube, "p")) == "n2"
        body = ext.calls[0][1]
        assert body["Nodes"] is None and sorted(body["NodeNames"]) == ["n1", "n2", "n3"]
    finally:
        s.stop()
        ext.stop()


def test_extender_failed_nodes_give_a_fit_error(kube: Kube, tmp_path: Any) -> None:
    def handler(verb: str, body: dict[str, Any]) -> Any:
        return {"NodeNames": [], "FailedNodes": {"n1": "no gpu", "n2": "no gpu"},
                "FailedAndUnresolvableNodes": {"n3": "node unregistered"}}

    ext = Extender(handler).start(tmp_path)
    s = run_scheduler(kube, ext.config(filter_verb="filter", node_cache_capable=True))
    try:
        make_pod(kube, "p")
        ev = wait_for(lambda: events_for(kube, "p", reason="FailedScheduling"))[0]
        assert ev["message"] == ("0/3 nodes are available: 1 node unregistered, 2 no gpu. preemption: 0/3 "
                                 "nodes are available: 1 Preemption is not helpful for scheduling, 2 No "
                                 "preemption victims found for incoming pod..")
    finally:
        s.stop()
        ext.stop()


def test_managed_resources_decide_interest_and_ignored_by_scheduler(kube: Kube, tmp_path: Any) -> None:
    def handler(verb: str, body: dict[str, Any]) -> Any:
        return {"NodeNames": ["n1"]}

    ext = Extender(handler).start(tmp_path)
    s = run_scheduler(kube, ext.config(filter_verb="filter", node_cache_capable=True,
                                       managed_resources=[("nvidia.com/gpu", True)]))
    try:
        make_pod(kube, "plain")
        wait_for(lambda: node_of(kube, "plain"))
        assert ext.calls == []  # not interested: the pod asks for none of its resources
        make_pod(kube, "gpu", limits={"nvidia.com/gpu": "1"}, requests={"nvidia.com/gpu": "1"})
        assert wait_for(lambda: node_of(kube, "gpu")) == "n1"  # no node has nvidia.com/gpu: ignored by fit
        assert ext.verbs() == ["filter"]
    finally:
        s.stop()
        ext.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_extender_blocks_unless_ignorable(kube: Kube) -> None:
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    s = run_scheduler(kube, ExtenderConfig(url_prefix=url, filter_verb="filter", enable_https=True,
                                           tls=TLSConfig(insecure=True)))
    try:
        make_pod(kube, "p")
        ev = wait_for(lambda: events_for(kube, "p", reason="FailedScheduling"))[0]
        assert ev["message"] == f'Post "{url}/filter": dial tcp 127.0.0.1:{port}: connect: connection refused'
        conds = wait_for(lambda: kube.get("/api/v1/namespaces/default/pods/p")["status"].get("conditions"))
        cond = next(c for c in conds if c["type"] == "PodScheduled")
        assert cond["reason"] == "SchedulerError" and node_of(kube, "p") == ""
    finally:
        s.stop()
    s = run_scheduler(kube, ExtenderConfig(url_prefix=url, filter_verb="filter", enable_https=True,
                                           tls=TLSConfig(insecure=True), ignorable=True))
    try:
        make_pod(kube, "q")
        assert wait_for(lambda: node_of(kube, "q"))
    finally:
        s.stop()


def test_garbage_and_timeout_and_error_replies(kube: Kube, tmp_path: Any) -> None:
    import time

    mode = {"v": "garbage"}

    def handler(verb: str, body: dict[str, Any]) -> Any:
        if mode["v"] == "garbage":
            return b"garbage"
        if mode["v"] == "slow":
            time.sleep(1.0)
            return {"NodeNames": body["NodeNames"]}
        return {"Error": "extender says no"}

    ext = Extender(handler).start(tmp_path)
    s = run_scheduler(kube, ext.config(filter_verb="filter", node_cache_capable=True, http_timeout=0.3))
    try:
        make_pod(kube, "g")
        ev = wait_for(lambda: events_for(kube, "g", reason="FailedScheduling"))[0]
        assert ev["message"] == "invalid character 'g' looking for beginning of value"
        mode["v"] = "slow"
        make_pod(kube, "t")
        ev = wait_for(lambda: events_for(kube, "t", reason="FailedScheduling"))[0]
        assert ev["message"] == (f'Post "https://127.0.0.1:{ext.port}/ext/filter": context deadline exceeded '
                                 "(Client.Timeout exceeded while awaiting headers)")
        mode["v"] = "error"
        make_pod(kube, "e")
        ev = wait_for(lambda: events_for(kube, "e", reason="FailedScheduling"))[0]
        assert ev["message"] == "extender says no"
        assert node_of(kube, "g") == node_of(kube, "t") == node_of(kube, "e") == ""
    finally:
        s.stop()
        ext.stop()


def test_failed_extender_bind_leaves_the_pod_pending(kube: Kube, tmp_path: Any) -> None:
    def handler(verb: str, body: dict[str, Any]) -> Any:
        return {"Error": "node n1 has been locked within 5m0s: node lock contention"}

    ext = Extender(handler).start(tmp_path)
    s = run_scheduler(kube, ext.config(bind_verb="bind"))
    try:
        make_pod(kube, "p")
        ev = wait_for(lambda: events_for(kube, "p", reason="FailedScheduling"))[0]
        assert ev["message"] == "node n1 has been locked within 5m0s: node lock contention"
        assert node_of(kube, "p") == ""
        assert s._bound == {}  # the assumed pod was forgotten, its resources released
    finally:
        s.stop()
        ext.stop()
