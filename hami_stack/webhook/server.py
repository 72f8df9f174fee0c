"""``POST /webhook`` over TLS: AdmissionReview ``admission.k8s.io/v1`` and ``v1beta1`` in, same version out.

Embed it in another aiohttp app with :func:`add_routes` (the scheduler extender serves the webhook
on its own HTTPS port, as HAMi does), or run it alone with :class:`WebhookServer`.

Transport rules (as controller-runtime's admission handler): the answer is always HTTP 200 with an
AdmissionReview, also for unreadable bodies (then ``allowed: false`` with code 400); the response
carries the request's ``uid``; a non-empty patch goes base64-encoded with ``patchType: JSONPatch``.
Bodies over 1 MiB or nested deeper than 64 levels are answered 400 before any parsing
(:mod:`hami_stack.jsonguard`); fields of the wrong type are answered 400 naming the field
(:mod:`.shape`). Certificate and key files are re-read when they change on disk.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import jsonguard
from ..tls import ReloadingCertificate
from .admit import AdmissionResponse, WebhookConfig, admit, errored
from .shape import json_type

log = logging.getLogger(__name__)

REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
MAX_BODY = 1 << 20
CONFIG_KEY = web.AppKey("hami_webhook_config", WebhookConfig)


def review_response(api_version: str, uid: str, resp: AdmissionResponse) -> dict[str, Any]:
    body: dict[str, Any] = {"uid": uid, "allowed": resp.allowed, "status": resp.status()}
    if resp.patch:
        body["patch"] = base64.b64encode(json.dumps(resp.patch, separators=(",", ":")).encode()).decode()
        body["patchType"] = "JSONPatch"
    if resp.warnings:
        body["warnings"] = list(resp.warnings)
    return {"kind": "AdmissionReview", "apiVersion": api_version, "response": body}


def handle_review(raw: bytes, config: WebhookConfig) -> dict[str, Any]:
    """One AdmissionReview body -> the AdmissionReview to answer (never raises)."""
    try:
        review = jsonguard.loads(raw, max_bytes=MAX_BODY)
    except ValueError as e:  # bad JSON, or over the size or nesting limit
        return review_response(REVIEW_VERSIONS[0], "", errored(400, f"couldn't decode AdmissionReview: {e}"))
    if not isinstance(review, dict):
        message = f"AdmissionReview: expected an object, got {json_type(review)}"
        return review_response(REVIEW_VERSIONS[0], "", errored(400, message))
    api_version = review.get("apiVersion")
    request = review.get("request")
    uid = request.get("uid") if isinstance(request, dict) else ""
    uid = uid if isinstance(uid, str) else ""
    if api_version not in REVIEW_VERSIONS or review.get("kind") != "AdmissionReview":
        got = f"{api_version}, Kind={review.get('kind')}"
        return review_response(REVIEW_VERSIONS[0], uid, errored(400, f"unsupported AdmissionReview: {got}"))
    if request is None:
        return review_response(api_version, uid, errored(400, "request: missing"))
    if not isinstance(request, dict):
        return review_response(
            api_version, uid, errored(400, f"request: expected an object, got {json_type(request)}")
        )
    try:
        resp = admit(request, config)
    except Exception as e:  # a bug, not the caller's fault: answer it, keep serving
        log.exception("admission of request %s failed", uid)
        resp = errored(500, f"internal error: {type(e).__name__}: {e}")
    obj = request.get("object")
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    log.info(
        "admission %s %s/%s: allowed=%s %s",
        request.get("operation", ""),
        request.get("namespace", ""),
        meta.get("name") or meta.get("generateName", ""),
        resp.allowed,
        resp.message,
    )
    return review_response(api_version, uid, resp)


async def _webhook(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    raw = await request.read()
    return web.json_response(handle_review(raw, config))


def add_routes(app: web.Application, config: WebhookConfig, path: str = "/webhook") -> None:
    app[CONFIG_KEY] = config
    app.router.add_post(path, _webhook)


def make_app(config: WebhookConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    add_routes(app, config)
    return app


class WebhookServer:
    """A standalone HTTPS server for ``/webhook`` (plain HTTP when no certificate is given)."""

    def __init__(
        self,
        config: WebhookConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        reload_interval: float = 10.0,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.cert_file = cert_file
        self.key_file = key_file
        self.reload_interval = reload_interval
        self._runner: web.AppRunner | None = None
        self._tls: ReloadingCertificate | None = None

    async def start(self) -> int:
        """Start serving; returns the bound port."""
        if self.cert_file and self.key_file:
            self._tls = ReloadingCertificate(self.cert_file, self.key_file, self.reload_interval)
        self._runner = web.AppRunner(make_app(self.config), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port,
                           ssl_context=self._tls.context if self._tls else None)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self._tls is not None:
            self._tls.start()
        return self.port

    async def stop(self) -> None:
        if self._tls is not None:
            await self._tls.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
