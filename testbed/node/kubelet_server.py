"""The kubelet's HTTPS API, the part the apiserver proxies to: ``/containerLogs``, ``/healthz``, ``/pods``,
and the streaming endpoints ``/exec``, ``/attach``, ``/portForward`` (``streaming.py``).

It serves a self-signed certificate (the apiserver runs without ``--kubelet-certificate-authority``)
and, like a kubelet with ``authentication.webhook`` and ``authorization.mode: Webhook`` and anonymous
access off, authenticates every request (a bearer token by TokenReview, a client certificate signed by
the cluster CA by its CN and O) and authorises it by SubjectAccessReview on ``nodes/<subresource>``
with the subresource the kubelet maps the path to: 401 without a valid credential, 403 when denied.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import clusternet, ephemeral, streaming, volumesync
from .logs import follow_from, pod_log_dir, read_lines

if TYPE_CHECKING:
    from .agent import NodeAgent


def _int(q: dict[str, str], key: str) -> int | None:
    v = q.get(key)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise web.HTTPBadRequest(text=f"invalid {key}: {v}") from None


# kubelet's path -> subresource mapping for authorisation (everything else is ``proxy``)
_SUBRESOURCES = (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/spec", "spec"))
_VERBS = {
    "GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"
}
_TTL = 10.0  # seconds a review answer is reused (the kubelet caches them for minutes)


def subresource_for(path: str) -> str:
    for prefix, sub in _SUBRESOURCES:
        if path == prefix or path.startswith(prefix + "/"):
            return sub
    return "proxy"


def _cert_user(peer: dict[str, Any] | None) -> dict[str, Any] | None:
    """The identity of a verified client certificate: CN is the user, each O a group."""
    if not peer:
        return None
    name, groups = "", []
    for rdn in peer.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    if not name:
        return None
    return {"username": name, "groups": [*groups, "system:authenticated"]}


class Auth:
    """Webhook authentication and authorisation against the apiserver, with a short cache."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._tokens: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._reviews: dict[tuple[Any, ...], tuple[float, bool]] = {}

    def _token_review(self, token: str) -> dict[str, Any] | None:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        st = self.agent.kube.create("/apis/authentication.k8s.io/v1/tokenreviews", body).get("status") or {}
        return st.get("user") if st.get("authenticated") else None

    def _access_review(self, user: dict[str, Any], verb: str, sub: str) -> bool:
        spec: dict[str, Any] = {
            "user": user.get("username", ""),
            "groups": user.get("groups") or [],
            "resourceAttributes": {
                "verb": verb, "resource": "nodes", "subresource": sub, "name": self.agent.name
            },
        }
        if user.get("uid"):
            spec["uid"] = user["uid"]
        if user.get("extra"):
            spec["extra"] = user["extra"]
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        st = self.agent.kube.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", body).get("status")
        return bool((st or {}).get("allowed"))

    async def user(self, r: web.Request) -> dict[str, Any] | None:
        header = r.headers.get("Authorization", "")
        if header[:7].lower() == "bearer " and header[7:].strip():
            token = header[7:].strip()
            hit = self._tokens.get(token)
            if hit is None or hit[0] < time.monotonic():
                hit = (time.monotonic() + _TTL, await asyncio.to_thread(self._token_review, token))
                self._tokens[token] = hit
            return hit[1]
        ssl_obj = r.transport.get_extra_info("ssl_object") if r.transport else None
        return _cert_user(ssl_obj.getpeercert() if ssl_obj is not None else None)

    async def allowed(self, user: dict[str, Any], verb: str, sub: str) -> bool:
        key = (user.get("username"), tuple(user.get("groups") or ()), user.get("uid"), verb, sub)
        hit = self._reviews.get(key)
        if hit is None or hit[0] < time.monotonic():
            hit = (time.monotonic() + _TTL, await asyncio.to_thread(self._access_review, user, verb, sub))
            self._reviews[key] = hit
        return hit[1]


def _middleware(auth: Auth) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(r: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        try:
            user = await auth.user(r)
        except Exception as e:  # the apiserver unreachable: the kubelet answers 401 too
            return web.Response(status=401, text=f"Unauthorized: token review failed: {e}")
        if user is None:
            return web.Response(status=401, text="Unauthorized")
        verb, sub = _VERBS.get(r.method, r.method.lower()), subresource_for(r.path)
        try:
            ok = await auth.allowed(user, verb, sub)
        except Exception as e:
            return web.Response(status=500, text=f"Authorization error: {e}")
        if not ok:
            name = user.get("username", "")
            return web.Response(
                status=403,
                text=f"Forbidden (user={name}, verb={verb}, resource=nodes, subresource={sub})",
            )
        return await handler(r)

    return check


_SYNC = web.AppKey("volume_sync", asyncio.Task)
_EPHEMERAL = web.AppKey("ephemeral_containers", asyncio.Task)


def make_app(agent: NodeAgent) -> web.Application:
    app = web.Application(middlewares=[_middleware(Auth(agent))])

    async def healthz(_r: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pods(_r: web.Request) -> web.Response:
        items = [w.pod for w in list(agent.runtime.workers.values())]
        items += list(agent.runtime.simulated.values())
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    async def container_logs(r: web.Request) -> web.StreamResponse:
        ns, name, cname = r.match_info["ns"], r.match_info["pod"], r.match_info["container"]
        q = dict(r.query)
        tail, since_s, limit = _int(q, "tailLines"), _int(q, "sinceSeconds"), _int(q, "limitBytes")
        timestamps = q.get("timestamps") in ("true", "1")
        follow = q.get("follow") in ("true", "1")
        previous = q.get("previous") in ("true", "1")
        worker = next(
            (w for w in list(agent.runtime.workers.values()) if w.ns == ns and w.name == name), None
        )
        if worker is None:
            raise web.HTTPNotFound(text=f'pod "{name}" in namespace "{ns}" not found on node {agent.name}')
        c = next((c for c in worker.init + worker.apps if c.name == cname), None)
        if c is None:
            raise web.HTTPNotFound(text=f'container "{cname}" in pod "{name}" not found')
        restart = c.restarts - 1 if previous else c.restarts
        if previous and restart < 0:
            raise web.HTTPBadRequest(
                text=f'previous terminated container "{cname}" in pod "{name}" not found'
            )
        path = pod_log_dir(agent.root, ns, name, worker.uid) / cname / f"{restart}.log"
        if not path.exists() and "waiting" in c.state:
            reason = c.state["waiting"].get("reason", "ContainerCreating")
            raise web.HTTPBadRequest(
                text=f'container "{cname}" in pod "{name}" is waiting to start: {reason}'
            )
        since = None
        if q.get("sinceTime"):
            since = dt.datetime.fromisoformat(q["sinceTime"].replace("Z", "+00:00"))
        elif since_s is not None:
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=since_s)
        lines, offset = await asyncio.to_thread(
            read_lines, path, since=since, tail=tail, timestamps=timestamps
        )
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(r)
        sent = 0

        async def send(chunk: list[bytes]) -> bool:
            nonlocal sent
            for line in chunk:
                if limit is not None and sent + len(line) > limit:
                    await resp.write(line[: limit - sent])
                    return False
                await resp.write(line)
                sent += len(line)
            return True

        more = await send(lines)
        if follow and more:
            gen = follow_from(path, offset, timestamps)
            while True:
                new, offset = next(gen)
                if not await send(new):
                    break
                running = (
                    not previous and c.proc is not None and c.proc.poll() is None and c.restarts == restart
                )
                if not running and not new:
                    break
                await asyncio.sleep(0.2)
        await resp.write_eof()
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/pods", pods)
    app.router.add_get("/containerLogs/{ns}/{pod}/{container}", container_logs)
    streaming.add_routes(app, agent)  # /exec, /attach, /portForward

    # the kubelet's periodic volume sync (volumesync.py) lives as long as its API server
    # and the process's cluster networking (Service proxy and DNS in the pods' namespaces)
    async def start_sync(app: web.Application) -> None:
        app[_SYNC] = asyncio.ensure_future(volumesync.run(agent))
        app[_EPHEMERAL] = asyncio.ensure_future(ephemeral.run(agent))
        await clusternet.attach(agent)

    async def stop_sync(app: web.Application) -> None:
        app[_SYNC].cancel()
        app[_EPHEMERAL].cancel()
        await clusternet.detach(agent)

    app.on_startup.append(start_sync)
    app.on_cleanup.append(stop_sync)
    return app


async def serve(agent: NodeAgent, ssl_ctx: ssl.SSLContext) -> tuple[web.AppRunner, int]:
    if agent.ca_pem and ssl_ctx.verify_mode != ssl.CERT_OPTIONAL:
        # client certificates are optional (tokens are the other way in) but must chain to the
        # cluster CA (the kubelet's --client-ca-file)
        ssl_ctx.load_verify_locations(cadata=agent.ca_pem.decode())
        ssl_ctx.verify_mode = ssl.CERT_OPTIONAL
    runner = web.AppRunner(make_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, agent.ip, 0, ssl_context=ssl_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)
