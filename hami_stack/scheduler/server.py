"""The extender's HTTP(S) routes and the process that wires informers, caches and loops together.

Routes (bodies up to 1 MiB): ``POST /filter``, ``POST /bind``, ``POST /webhook`` (the admission
webhook of :mod:`hami_stack.webhook`), ``GET /healthz``, ``GET /readyz`` (always 200). Metrics are
served on their own address (``GET /metrics``). With a certificate and key the main port is
HTTPS and the files are re-read when they change.

Decisions run on a thread pool (they hold the cache lock and may write to the apiserver), so the
event loop only parses and answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from kubeclient.client import Kube
from kubeclient.informer import Informer

from .. import faults
from ..devices.base import DeviceFamily
from ..tls import ReloadingCertificate
from ..webhook.admit import WebhookConfig
from ..webhook.server import MAX_BODY, add_routes
from .cache import UsageCache
from .extender import Extender, ExtenderOptions
from .metrics import make_registry, render
from .quota import QuotaCache
from .recorder import EventRecorder
from .registration import LeaderWatch, Registrar
from .wire import WireError, bind_result, decode_bind_args, decode_filter_args, filter_result

log = logging.getLogger("hami.scheduler.server")
EXTENDER_KEY = web.AppKey("hami_extender", Extender)
POOL_KEY = web.AppKey("hami_pool", concurrent.futures.ThreadPoolExecutor)
_JSON = "application/json"


def _json(obj: Any) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type=_JSON)


async def _filter(request: web.Request) -> web.Response:
    ext = request.app[EXTENDER_KEY]
    try:
        args = decode_filter_args(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, WireError) as e:
        return _json(filter_result(error=f"decode ExtenderArgs: {e}"))
    loop = asyncio.get_running_loop()
    return _json(await loop.run_in_executor(request.app[POOL_KEY], ext.filter, args))


async def _bind(request: web.Request) -> web.Response:
    ext = request.app[EXTENDER_KEY]
    try:
        args = decode_bind_args(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, WireError) as e:
        return _json(bind_result(f"decode ExtenderBindingArgs: {e}"))
    loop = asyncio.get_running_loop()
    return _json(await loop.run_in_executor(request.app[POOL_KEY], ext.bind, args))


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(
    ext: Extender, webhook: WebhookConfig | None, pool: concurrent.futures.ThreadPoolExecutor
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[EXTENDER_KEY] = ext
    app[POOL_KEY] = pool
    app.router.add_post("/filter", _filter)
    app.router.add_post("/bind", _bind)
    app.router.add_get("/healthz", _ok)
    app.router.add_get("/readyz", _ok)
    if webhook is not None:
        add_routes(app, webhook)
    return app


def parse_bind(address: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``host:port`` or ``:port`` (all addresses) -> (host, port)."""
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or default_host), int(port)


@dataclass
class ServiceConfig:
    http_bind: str = "127.0.0.1:8080"
    cert_file: str = ""
    key_file: str = ""
    metrics_bind: str = ":9395"
    legacy_metrics: bool = False
    leader_elect: bool = False
    lease_name: str = "hami-scheduler"
    lease_namespace: str = "kube-system"
    hostname: str | None = None
    register_interval: float = 15.0
    cert_reload_interval: float = 10.0
    options: ExtenderOptions = field(default_factory=ExtenderOptions)


class SchedulerService:
    """The whole extender process: informers -> caches -> registration -> HTTP(S) + metrics."""

    def __init__(self, kube: Kube, families: list[DeviceFamily], config: ServiceConfig) -> None:
        self.kube = kube
        self.families = families
        self.config = config
        self.cache = UsageCache(families)
        self.quotas = QuotaCache(families, self.cache)
        self.recorder = EventRecorder(kube, config.options.scheduler_name)
        self.nodes = Informer(kube, "/api/v1/nodes", name="nodes")
        self.pods = Informer(kube, "/api/v1/pods", name="pods")
        self.quota_informer = Informer(kube, "/api/v1/resourcequotas", name="resourcequotas")
        self.leader: LeaderWatch | None = None
        if config.leader_elect:
            self.leader = LeaderWatch(
                kube,
                config.lease_name,
                config.lease_namespace,
                hostname=config.hostname,
                on_change=self._on_leader,
            )
        self.registrar = Registrar(
            kube,
            families,
            self.cache,
            self.nodes.items,
            interval=config.register_interval,
            is_leader=self.is_leader,
        )
        self.extender = Extender(
            kube,
            families,
            config.options,
            cache=self.cache,
            quotas=self.quotas,
            recorder=self.recorder,
            synced=self._wait_synced,
            pod_getter=self._pod,
        )
        self.webhook = WebhookConfig(
            scheduler_name=config.options.scheduler_name, families=families, quota_fits=self.quotas.pod_fits,
            fault_skip_scheduler_name=faults.webhook_skips_scheduler_name(),
        )
        self.nodes.add_handler(self._on_node)
        self.pods.add_handler(lambda kind, obj, _old: self.cache.on_pod(kind, obj))
        self.quota_informer.add_handler(lambda kind, obj, _old: self.quotas.on_quota(kind, obj))
        self.pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="hami-ext")
        self._runners: list[web.AppRunner] = []
        self._tls: ReloadingCertificate | None = None
        self.port = 0
        self.metrics_port = 0

    def is_leader(self) -> bool:
        return self.leader is None or self.leader.leader

    def _on_leader(self, leader: bool) -> None:
        if leader:
            self.registrar.wake()

    def _on_node(self, kind: str, node: dict[str, Any], _old: dict[str, Any] | None) -> None:
        self.cache.on_node(kind, node)
        if kind in ("ADDED", "DELETED"):
            self.registrar.wake()

    def _pod(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.pods.get(f"{ns}/{name}")

    def _wait_synced(self, timeout: float) -> bool:
        # HAMi polls every 100 ms until the request is cancelled; the wait is bounded here instead
        return self.registrar.synced.wait(timeout)

    def start_background(self) -> None:
        for inf in (self.nodes, self.pods, self.quota_informer):
            inf.start()
        for inf in (self.nodes, self.pods, self.quota_informer):
            inf.wait_synced(30)
        if self.leader is not None:
            self.leader.start()
        self.registrar.start()

    async def start_http(self) -> int:
        if self.config.cert_file and self.config.key_file:
            self._tls = ReloadingCertificate(self.config.cert_file, self.config.key_file,
                                             self.config.cert_reload_interval)
            self._tls.start()
        app = make_app(self.extender, self.webhook, self.pool)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = parse_bind(self.config.http_bind)
        site = web.TCPSite(runner, host, port, ssl_context=self._tls.context if self._tls else None)
        await site.start()
        self._runners.append(runner)
        self.port = runner.addresses[0][1]
        if self.config.metrics_bind:
            registry = make_registry(self.cache, self.quotas, self.config.legacy_metrics)

            async def metrics(_r: web.Request) -> web.Response:
                body = render(registry)
                return web.Response(
                    body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
                )

            mapp = web.Application()
            mapp.router.add_get("/metrics", metrics)
            mrunner = web.AppRunner(mapp, access_log=None)
            await mrunner.setup()
            mhost, mport = parse_bind(self.config.metrics_bind)
            await web.TCPSite(mrunner, mhost, mport).start()
            self._runners.append(mrunner)
            self.metrics_port = mrunner.addresses[0][1]
        log.info(
            "extender listening on %s (%s), metrics on %s",
            self.config.http_bind,
            "https" if self._tls else "http",
            self.config.metrics_bind,
        )
        return self.port

    async def stop_http(self) -> None:
        if self._tls is not None:
            await self._tls.stop()
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()

    def stop_background(self) -> None:
        self.registrar.stop()
        if self.leader is not None:
            self.leader.stop()
        for inf in (self.nodes, self.pods, self.quota_informer):
            inf.stop()
        self.recorder.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
