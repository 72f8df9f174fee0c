"""The extender's HTTP(S) routes and the process that wires informers, caches and loops together.

Routes (bodies up to 1 MiB): ``POST /filter``, ``POST /bind``, ``POST /webhook`` (the admission
webhook of :mod:`hami_stack.webhook`), ``GET /healthz``, ``GET /readyz`` (always 200). Metrics are
served on their own address (``GET /metrics``). With a certificate and key the main port is
HTTPS and the files are re-read when they change.

Who may call ``/filter`` and ``/bind`` (:class:`ClientAuth`), failing closed: with
``--client-ca-file`` the TLS listener asks for a client certificate (optional at the TLS level, so
the apiserver's webhook calls and probes without one still connect) and those two routes answer 403
unless the caller's certificate was verified by that CA (and carries ``--client-cn`` when given).
Without a client CA they answer 403 to everyone unless ``--allow-unauthenticated-extender``.

Malformed bodies are answered 4xx naming the field (:mod:`.wire`), never 500: over 1 MiB 413,
nested deeper than 64 levels or not JSON 400 (:mod:`hami_stack.jsonguard`). Slow or stuck clients
are dropped: the TLS handshake must finish within ``handshake_timeout``, a connection that has not
delivered a complete request header within ``idle_timeout`` (idle keep-alive connections too) is
closed, and a request body must arrive within ``body_timeout`` (else 408).

Decisions run on a thread pool (they hold the cache lock and may write to the apiserver), so the
event loop only parses and answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from kubeclient.client import Kube
from kubeclient.informer import Informer

from .. import faults, jsonguard
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
_JSON = "application/json"
CLIENT_CN_FLAG = "--client-cn"
IDLE_TIMEOUT = 10.0  # no complete request header (or idle keep-alive) for this long: closed
HANDSHAKE_TIMEOUT = 10.0  # asyncio's default is 60 s
BODY_TIMEOUT = 10.0


@dataclass(frozen=True)
class ClientAuth:
    """Who may call ``/filter`` and ``/bind``.

    ``require_cert``: only callers whose TLS client certificate was verified by the configured
    client CA (the listener's only trust anchor), with subject CN ``common_name`` when that is set.
    Otherwise ``allow_all`` decides: True only with ``--allow-unauthenticated-extender``.
    """

    require_cert: bool = False
    common_name: str = ""
    allow_all: bool = False

    @classmethod
    def unauthenticated(cls) -> ClientAuth:
        """Everyone may call (local development, benchmarks); never the default."""
        return cls(allow_all=True)

    def refusal(self, request: web.Request, route: str) -> str:
        """Why ``request`` may not call ``route``; empty when it may."""
        if not self.require_cert:
            if self.allow_all:
                return ""
            return (
                f"{route} refused: the extender runs without --client-ca-file, so no caller can be "
                "authenticated; configure mutual TLS (--client-ca-file, the kube-scheduler's tlsConfig "
                "certFile/keyFile) or pass --allow-unauthenticated-extender for local development"
            )
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            return (
                f"{route} refused: the caller presented no client certificate verified by the "
                "--client-ca-file CA (mutual TLS is required)"
            )
        if self.common_name:
            cn = _common_name(cert)
            if cn != self.common_name:
                return (
                    f"{route} refused: client certificate CN {cn!r} is not {self.common_name!r} "
                    f"({CLIENT_CN_FLAG})"
                )
        return ""


def _common_name(cert: dict[str, Any]) -> str:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


EXTENDER_KEY = web.AppKey("hami_extender", Extender)
POOL_KEY = web.AppKey("hami_pool", concurrent.futures.ThreadPoolExecutor)
AUTH_KEY = web.AppKey("hami_client_auth", ClientAuth)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), content_type=_JSON, status=status)


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_args(request: web.Request, what: str) -> Any:
    """The JSON body within the size, depth and time limits; _BadRequest names what was wrong."""
    try:
        raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT)
    except TimeoutError as e:
        raise _BadRequest(408, f"decode {what}: request body not received within {BODY_TIMEOUT:g} s") from e
    try:
        return jsonguard.loads(raw, max_bytes=MAX_BODY)
    except jsonguard.JsonLimitError as e:
        raise _BadRequest(413 if len(raw) > MAX_BODY else 400, f"decode {what}: {e}") from e
    except ValueError as e:  # orjson.JSONDecodeError
        raise _BadRequest(400, f"decode {what}: {e}") from e


Decision = Callable[[Any], dict[str, Any]]


async def _serve_decision(
    request: web.Request,
    route: str,
    what: str,
    decode: Callable[[Any], Any],
    decide: Decision,
    answer: Callable[[str], dict[str, Any]],
) -> web.Response:
    refusal = request.app[AUTH_KEY].refusal(request, route)
    if refusal:
        log.warning("%s from %s: %s", route, request.remote, refusal)
        return _json(answer(refusal), 403)
    try:
        args = decode(await _read_args(request, what))
    except _BadRequest as e:
        return _json(answer(str(e)), e.status)
    except WireError as e:
        return _json(answer(f"decode {what}: {e}"), 400)
    loop = asyncio.get_running_loop()
    try:
        return _json(await loop.run_in_executor(request.app[POOL_KEY], decide, args))
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        # a structure the checks in .wire let through: the caller's input, not a server fault
        log.warning("%s: %s could not be evaluated", route, what, exc_info=True)
        return _json(answer(f"{what} could not be evaluated: {type(e).__name__}: {e}"), 422)


async def _filter(request: web.Request) -> web.Response:
    ext = request.app[EXTENDER_KEY]
    return await _serve_decision(
        request, "/filter", "ExtenderArgs", decode_filter_args, ext.filter, lambda m: filter_result(error=m)
    )


async def _bind(request: web.Request) -> web.Response:
    ext = request.app[EXTENDER_KEY]
    return await _serve_decision(
        request, "/bind", "ExtenderBindingArgs", decode_bind_args, ext.bind, bind_result
    )


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _no_tracebacks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bound every request body in time; an unexpected error is logged, answered without a traceback."""
    if request.method in ("POST", "PUT", "PATCH") and request.can_read_body:
        try:
            await asyncio.wait_for(request.read(), BODY_TIMEOUT)  # cached: handlers read it again
        except TimeoutError:
            resp = _json({"Error": f"request body not received within {BODY_TIMEOUT:g} s"}, 408)
            resp.force_close()  # the rest of that body would be read as the next request
            return resp
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("%s %s", request.method, request.path)
        return _json({"Error": "internal error (logged by the extender)"}, 500)


def make_app(
    ext: Extender,
    webhook: WebhookConfig | None,
    pool: concurrent.futures.ThreadPoolExecutor,
    auth: ClientAuth | None = None,
) -> web.Application:
    """The extender's routes; ``auth`` None refuses every /filter and /bind (fail closed)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_no_tracebacks])
    app[EXTENDER_KEY] = ext
    app[POOL_KEY] = pool
    app[AUTH_KEY] = auth or ClientAuth()
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
    client_ca_file: str = ""  # CA that signs the kube-scheduler's client certificate (mutual TLS)
    client_cn: str = ""  # required client certificate CN; empty: any certificate from that CA
    allow_unauthenticated: bool = False  # /filter and /bind for anyone (local development only)
    idle_timeout: float = IDLE_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    options: ExtenderOptions = field(default_factory=ExtenderOptions)

    def client_auth(self) -> ClientAuth:
        if self.client_ca_file:
            return ClientAuth(require_cert=True, common_name=self.client_cn)
        return ClientAuth(allow_all=self.allow_unauthenticated)

    def check(self) -> None:
        """Raise ValueError for combinations that cannot work."""
        if self.client_ca_file and not (self.cert_file and self.key_file):
            raise ValueError("--client-ca-file needs --cert_file and --key_file (mutual TLS needs TLS)")
        if self.client_cn and not self.client_ca_file:
            raise ValueError(f"{CLIENT_CN_FLAG} needs --client-ca-file")


class _TimedTCPSite(web.TCPSite):
    """A TCPSite whose TLS handshake is bounded (asyncio waits 60 s by default)."""

    def __init__(self, *args: Any, handshake_timeout: float = HANDSHAKE_TIMEOUT, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port


def client_auth_context(cert_file: str, key_file: str, client_ca_file: str) -> ssl.SSLContext:
    """Server context that asks for a client certificate and trusts only ``client_ca_file`` for it.

    CERT_OPTIONAL: a caller without a certificate (the apiserver calling /webhook, probes) still
    connects and is refused per route; a certificate that does not verify fails the handshake.
    No system CAs are loaded, so "verified" means "signed by the client CA".
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=client_ca_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


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
        self._ca_task: asyncio.Task[None] | None = None
        self.port = 0
        self.metrics_port = 0

    def is_leader(self) -> bool:
        return self.leader is None or self.leader.leader

    def _on_leader(self, leader: bool) -> None:
        if leader:
            self.registrar.wake()

    def _on_node(self, kind: str, node: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.cache.on_node(kind, node)
        # capacity families (Cambricon, Moore Threads) register from the capacity the kubelet adds one
        # resource at a time: register a change at once, as upstream's node informer notifies its
        # loop. The kube-scheduler retries a pod the extender refused only on a later node event, so
        # cards seen half-advertised until the next pass (15 s) kept such a pod pending
        if kind in ("ADDED", "DELETED") or _capacity_changed(node, old):
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
        cfg = self.config
        cfg.check()
        if cfg.cert_file and cfg.key_file:
            self._tls = ReloadingCertificate(cfg.cert_file, cfg.key_file, cfg.cert_reload_interval)
            if cfg.client_ca_file:
                # the reload loop re-reads the chain into whatever context it holds
                self._tls.context = client_auth_context(cfg.cert_file, cfg.key_file, cfg.client_ca_file)
                self._ca_task = asyncio.get_running_loop().create_task(self._watch_client_ca())
            self._tls.start()
        auth = cfg.client_auth()
        if auth.allow_all:
            log.warning("--allow-unauthenticated-extender: anyone reaching this port may /filter and /bind")
        app = make_app(self.extender, self.webhook, self.pool, auth)
        # lingering: after answering a request whose body never came, read its rest 2 s at most
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=cfg.idle_timeout, lingering_time=2.0)
        await runner.setup()
        host, port = parse_bind(cfg.http_bind)
        site = _TimedTCPSite(
            runner,
            host,
            port,
            ssl_context=self._tls.context if self._tls else None,
            handshake_timeout=cfg.handshake_timeout,
        )
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
            mrunner = web.AppRunner(mapp, access_log=None, keepalive_timeout=cfg.idle_timeout)
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

    async def _watch_client_ca(self) -> None:
        """A rotated client CA is trusted from the next handshake on (the old one until a restart:
        an SSL context can add trust anchors, not drop them)."""
        assert self._tls is not None
        path = self.config.client_ca_file
        last = os.stat(path).st_mtime
        while True:
            await asyncio.sleep(self.config.cert_reload_interval)
            try:
                now = os.stat(path).st_mtime
                if now != last:
                    self._tls.context.load_verify_locations(cafile=path)
                    last = now
                    log.info("reloaded client CA %s", path)
            except (OSError, ssl.SSLError) as e:
                log.warning("client CA reload failed: %s", e)

    async def stop_http(self) -> None:
        if self._ca_task is not None:
            self._ca_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ca_task
            self._ca_task = None
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


def _capacity_changed(node: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether a node update changed the advertised capacity (not a status heartbeat)."""
    now = (node.get("status") or {}).get("capacity")
    return old is None or now != (old.get("status") or {}).get("capacity")
