"""The kubelet's HTTPS API, the part the apiserver proxies to: ``/containerLogs``, ``/healthz``, ``/pods``.

Like a kubelet behind an apiserver without ``--kubelet-certificate-authority``, it serves a
self-signed certificate and does not authenticate the apiserver (loopback only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from typing import TYPE_CHECKING

from aiohttp import web

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


def make_app(agent: NodeAgent) -> web.Application:
    app = web.Application()

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
    return app


async def serve(agent: NodeAgent, ssl_ctx: ssl.SSLContext) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, agent.ip, 0, ssl_context=ssl_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, int(port)
