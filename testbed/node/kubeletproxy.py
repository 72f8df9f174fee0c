"""The apiserver's side of the subresources that end on a node: ``pods/exec``, ``pods/attach``,
``pods/portforward`` (proxied to the pod's kubelet, upgrade and all, as kube-apiserver's upgrade-aware
proxy does), ``pods/proxy`` (to the pod's IP) and ``nodes/proxy`` (to the node's kubelet API).

Called from ``testbed/apiserver/server.py`` after authentication and authorisation (RBAC on
``pods/exec`` etc.); the kubelet then authorises the apiserver's ``kube-apiserver-kubelet-client``
certificate itself.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from . import upgrade

POD_STREAMING = ("exec", "attach", "portforward")
_KUBELET_PATH = {"exec": "exec", "attach": "attach", "portforward": "portForward"}


class ProxyError(Exception):
    """(code, message): the apiserver answers with a Status of this code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _pod_container(pod: dict[str, Any], name: str, container: str) -> str:
    spec = pod.get("spec") or {}
    if container:
        names = [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
        names += [c["name"] for c in spec.get("ephemeralContainers") or []]
        if container not in names:
            raise ProxyError(400, f"container {container} is not valid for pod {name}")
        return container
    app = [c["name"] for c in spec.get("containers") or []]
    if len(app) != 1:
        choices = " ".join(app)
        msg = f"a container name must be specified for pod {name}, choose one of: [{choices}]"
        raise ProxyError(400, msg)
    return app[0]


def pod_stream_path(pod: dict[str, Any], sub: str, query: Any) -> str:
    """The kubelet path and query for a pod's exec/attach/portforward request."""
    meta = pod["metadata"]
    ns, name = meta["namespace"], meta["name"]
    if sub == "portforward":
        return f"/portForward/{quote(ns)}/{quote(name)}?{urlencode(list(query.items()))}"
    container = _pod_container(pod, name, query.get("container", ""))
    if sub == "exec" and not query.getall("command", []):
        raise ProxyError(400, "you must specify at least 1 command")
    rest = [(k, v) for k, v in query.items() if k != "container"]
    return f"/{_KUBELET_PATH[sub]}/{quote(ns)}/{quote(name)}/{quote(container)}?{urlencode(rest)}"


async def pod_subresource(
    request: web.Request, pod: dict[str, Any], node: dict[str, Any] | None, sub: str, rest: str,
    endpoint: Any, kubelet_tls: ssl.SSLContext,
) -> web.StreamResponse:
    """Proxy ``sub`` of ``pod``; ``endpoint(node)`` gives the kubelet's (address, port)."""
    if sub in POD_STREAMING:
        if node is None:
            if not (pod.get("spec") or {}).get("nodeName"):
                raise ProxyError(400, f"pod {pod['metadata']['name']} does not have a host assigned")
            raise ProxyError(404, f'nodes "{pod["spec"]["nodeName"]}" not found')
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            msg = f"cannot exec into a container in a completed pod; current phase is {phase}"
            raise ProxyError(400, msg)
        host, port = endpoint(node)
        return await upgrade.proxy(request, host, port, pod_stream_path(pod, sub, request.query), kubelet_tls)
    if sub == "proxy":
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise ProxyError(503, f"pod {pod['metadata']['name']} has no IP yet")
        scheme, port = _scheme_port(request.match_info.get("name", "") or pod["metadata"]["name"], pod)
        qs = request.query_string
        path = "/" + rest.lstrip("/") + (f"?{qs}" if qs else "")
        ctx = None
        if scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return await upgrade.proxy(request, ip, port, path, ctx)
    raise ProxyError(404, f"the server could not find the requested resource ({sub})")


def _scheme_port(name_field: str, pod: dict[str, Any]) -> tuple[str, int]:
    """``[scheme:]name[:port]`` as the pod proxy names its target (port defaults to the first declared)."""
    parts = name_field.split(":")
    scheme = "http"
    if len(parts) == 3:
        scheme, _, port = parts
    elif len(parts) == 2:
        port = parts[1]
    else:
        port = ""
    if not port:
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                return scheme, int(p["containerPort"])
        return scheme, 80
    if not port.isdigit():
        for c in (pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") == port:
                    return scheme, int(p["containerPort"])
        raise ProxyError(400, f"no port named {port!r} in pod {pod['metadata']['name']}")
    return scheme, int(port)


async def node_proxy(request: web.Request, node: dict[str, Any], rest: str, endpoint: Any,
                     kubelet_tls: ssl.SSLContext) -> web.StreamResponse:
    host, port = endpoint(node)
    qs = request.query_string
    return await upgrade.proxy(request, host, port, "/" + rest.lstrip("/") + (f"?{qs}" if qs else ""),
                               kubelet_tls)
