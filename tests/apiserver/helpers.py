"""Small helpers for apiserver tests: raw HTTPS requests and waiting."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from testbed.embedded import EmbeddedTestbed


def raw(
    tb: EmbeddedTestbed,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(tb.ca_path))
    req = urllib.request.Request(tb.url + path, data=body, method=method)
    if token != "":
        req.add_header("Authorization", f"Bearer {token or tb.admin_token}")
    if body is not None:
        req.add_header("Content-Type", content_type)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_json(tb: EmbeddedTestbed, method: str, path: str, obj: Any = None, **kw: Any) -> tuple[int, Any]:
    body = json.dumps(obj).encode() if obj is not None and not isinstance(obj, bytes) else obj
    code, _, data = raw(tb, method, path, body, **kw)
    return code, json.loads(data) if data else None


def wait_for(fn: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last!r})")
