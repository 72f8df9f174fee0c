"""A thin JSON layer over the official kubernetes client's ApiClient.

Components address resources by path (``/api/v1/namespaces/x/pods``) and get plain dicts back, which
keeps one code path for every kind and avoids model deserialisation on hot paths. Errors come back
as :class:`ApiError` carrying the server's ``Status``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from kubernetes import client, config


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | None, text: str = "") -> None:
        self.status = status
        self.body = body or {}
        self.reason = self.body.get("reason", "")
        super().__init__(self.body.get("message") or text or f"HTTP {status}")


def load_config(kubeconfig: str | None = None, context: str | None = None) -> client.Configuration:
    """Kubeconfig (argument, then $KUBECONFIG) or, inside a pod, the in-cluster credentials."""
    cfg = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 4, 16)
    return cfg


MAX_RETRY_AFTER = 10  # client-go's rest.Request maxRetries


def retry_after(status: int, header: str | None) -> float | None:
    """Seconds to wait before sending again, as client-go's checkWait: only a 429 or 5xx answer with
    an integer ``Retry-After`` (capped at 10 s); None: the error stands."""
    if not (status == 429 or status >= 500) or not header:
        return None
    try:
        seconds = int(header.strip())
    except ValueError:
        return None
    return float(min(max(seconds, 0), 10))


@dataclass
class Kube:
    """JSON requests against one apiserver."""

    api: client.ApiClient

    @classmethod
    def from_config(cls, kubeconfig: str | None = None, context: str | None = None,
                    user_agent: str = "testbed") -> Kube:
        api = client.ApiClient(load_config(kubeconfig, context))
        api.user_agent = user_agent
        return cls(api)

    def _send(self, method: str, path: str, query: dict[str, Any] | None, body: Any, content_type: str,
              timeout: float | None) -> Any:
        """One HTTP exchange through the client's pool; returns the urllib3 response (not yet read)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _m, url, headers, data, _p = self.api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"])
        if query:
            url += "?" + urlencode(query, doseq=True)
        if isinstance(body, (bytes, str)):
            data = body
        for attempt in range(MAX_RETRY_AFTER + 1):
            try:
                resp = self.api.call_api(method, url, header_params=headers, body=data,
                                         _request_timeout=timeout)
            except client.ApiException as e:
                raise ApiError(e.status or 0, _parse(e.body), str(e.body or e)) from e
            if resp.status < 400:
                return resp.response
            raw = resp.read()
            wait = retry_after(resp.status, resp.getheader("Retry-After"))
            if wait is None or attempt == MAX_RETRY_AFTER:
                raise ApiError(resp.status, _parse(raw), raw.decode(errors="replace") if raw else "")
            # client-go waits and sends the request again (up to 10 times) when a 429 or 5xx answer
            # carries Retry-After: e.g. "No API token found for service account" while a 1.20
            # namespace's token Secret is still being made, or the server's max-in-flight limit
            time.sleep(wait)
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
                content_type: str = "application/json", timeout: float | None = 30) -> Any:
        resp = self._send(method, path, query, body, content_type, timeout)
        raw = resp.data
        return orjson.loads(raw) if raw else None

    def text(self, path: str, **query: Any) -> str:
        """A GET whose answer is plain text (pod logs)."""
        resp = self._send("GET", path, query or None, None, "application/json", 30)
        return resp.data.decode(errors="replace")

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, obj: dict[str, Any], **query: Any) -> Any:
        return self.request("POST", path, obj, query=query or None)

    def update(self, path: str, obj: dict[str, Any]) -> Any:
        return self.request("PUT", path, obj)

    def patch(self, path: str, patch: Any, kind: str = "strategic") -> Any:
        ctype = {"strategic": "application/strategic-merge-patch+json",
                 "merge": "application/merge-patch+json", "json": "application/json-patch+json"}[kind]
        return self.request("PATCH", path, patch, content_type=ctype)

    def delete(self, path: str, **options: Any) -> Any:
        return self.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", **options}
                            if options else None)

    def watch(self, path: str, *, resource_version: str = "", timeout_seconds: int = 300,
              bookmarks: bool = True, **query: Any) -> Iterator[dict[str, Any]]:
        """Yield watch events (``{"type", "object"}``) until the server ends the stream."""
        q: dict[str, Any] = {"watch": "true", "timeoutSeconds": timeout_seconds, **query}
        if resource_version:
            q["resourceVersion"] = resource_version
        if bookmarks:
            q["allowWatchBookmarks"] = "true"
        resp = self._send("GET", path, q, None, "application/json", timeout_seconds + 10)
        buf = b""
        ended = False
        try:
            for chunk in resp.stream(65536, decode_content=False):
                # One split per chunk: slicing the buffer per line would copy the rest of it each time.
                *lines, buf = (buf + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
            ended = True
        finally:
            if ended:
                resp.release_conn()
            else:
                # left early (the caller saw what it waited for): the server is still streaming on
                # this connection, so it must not go back to the pool for the next request
                resp.close()

    def close(self) -> None:
        self.api.close()


def _parse(body: Any) -> dict[str, Any] | None:
    try:
        v = orjson.loads(body) if body else None
    except (orjson.JSONDecodeError, TypeError):
        return None
    return v if isinstance(v, dict) else None
