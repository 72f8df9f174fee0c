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


async def _to_pod(
    request: web.Request, pod: dict[str, Any], node: dict[str, Any] | None, name_field: str, rest: str,
    endpoint: Any, kubelet_tls: ssl.SSLContext, port: tuple[str, int] | None,
) -> web.StreamResponse:
    """HTTP(S) to a pod's port: through its kubelet into the pod's namespace (any port the pod listens
    on), or to the pod IP when the pod has no node agent (declared ports only)."""
    meta = pod["metadata"]
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        raise ProxyError(503, f"pod {meta['name']} has no IP yet")
    scheme, num = port or _scheme_port(name_field, pod)
    qs = request.query_string
    path = "/" + rest.lstrip("/") + (f"?{qs}" if qs else "")
    if node is not None:
        host, kport = endpoint(node)
        kpath = f"/testbed/podProxy/{quote(meta['namespace'])}/{quote(meta['name'])}/{scheme}/{num}{path}"
        return await upgrade.proxy(request, host, kport, kpath, kubelet_tls)
    ctx = None
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return await upgrade.proxy(request, ip, num, path, ctx)


async def service_proxy(
    request: web.Request, svc: dict[str, Any], name_field: str, rest: str, get: Any, endpoint: Any,
    kubelet_tls: ssl.SSLContext,
) -> web.StreamResponse:
    """services/proxy: to a ready endpoint of the Service (``[scheme:]name[:port]``, port by name or
    number, default the first), through the endpoint pod's kubelet."""
    meta, spec = svc["metadata"], svc.get("spec") or {}
    parts = name_field.split(":")
    scheme = parts[0] if len(parts) == 3 else "http"
    want = parts[-1] if len(parts) >= 2 else ""
    ports = spec.get("ports") or []
    sp = next((p for p in ports if want in (str(p.get("name") or ""), str(p.get("port")))), None) if want \
        else (ports[0] if ports else None)
    if sp is None:
        raise ProxyError(503, f'no endpoints available for service "{name_field}"')
    ep = get("endpoints", meta["namespace"], meta["name"]) or {}
    for subset in ep.get("subsets") or []:
        eports = subset.get("ports") or []
        target = next((p for p in eports if (p.get("name") or "") == (sp.get("name") or "")), None)
        if target is None and len(eports) == 1:
            target = eports[0]
        for a in subset.get("addresses") or []:
            ref = a.get("targetRef") or {}
            pod = get("pods", ref.get("namespace") or meta["namespace"], ref.get("name", "")) if ref else None
            if target is None or pod is None:
                continue
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = get("nodes", "", node_name) if node_name else None
            return await _to_pod(request, pod, node, "", rest, endpoint, kubelet_tls,
                                 (scheme, int(target["port"])))
    raise ProxyError(503, f'no endpoints available for service "{meta["name"]}"')


async def pod_subresource(
    request: web.Request, pod: dict[str, Any], node: dict[str, Any] | None, sub: str, rest: str,
    endpoint: Any, kubelet_tls: ssl.SSLContext, name_field: str = "",
) -> web.StreamResponse:
    """Proxy ``sub`` of ``pod``; ``endpoint(node)`` gives the kubelet's (address, port); ``name_field``
    is the name as the URL gave it (``[scheme:]name[:port]`` for proxy)."""
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
        return await _to_pod(request, pod, node, name_field, rest, endpoint, kubelet_tls, None)
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
