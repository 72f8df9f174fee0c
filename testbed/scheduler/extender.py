"""HTTP(S) scheduler extenders, speaking the wire types of ``k8s.io/kube-scheduler/extender/v1``.

Those Go types carry no JSON tags, so requests use the Go field names (``Pod``, ``Nodes``,
``NodeNames``, ``PodName``...) and replies are matched case-insensitively, as ``encoding/json`` does.
Errors read like Go's ``net/http`` client errors, because the real scheduler puts ``err.Error()``
into the pod's FailedScheduling event.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3

from .config import ExtenderConfig
from .nodeinfo import pod_limits_and_requests_names

Obj = dict[str, Any]
MAX_EXTENDER_PRIORITY = 10


class ExtenderError(Exception):
    pass


@dataclass
class FilterResult:
    nodes: list[str]
    failed: dict[str, str]
    failed_unresolvable: dict[str, str]


def _ci_get(obj: Any, key: str) -> Any:
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if k.lower() == low:
            return v
    return None


def _json_error(raw: bytes) -> str:
    """The message Go's json decoder gives for a body that is not the expected JSON."""
    text = raw.lstrip()
    if not text:
        return "EOF"
    ch = text[:1].decode(errors="replace")
    if ch in "{[\"-0123456789tfn":
        return "unexpected EOF" if ch in "{[" else f"invalid character {ch!r} after top-level value"
    return f"invalid character {ch!r} looking for beginning of value"


class HTTPExtender:
    def __init__(self, cfg: ExtenderConfig, minor: int) -> None:
        self.cfg = cfg
        self.minor = minor
        self.base = cfg.url_prefix.rstrip("/")
        self.managed = {name for name, _ in cfg.managed_resources}
        parts = urlsplit(self.base)
        timeout = urllib3.Timeout(total=cfg.http_timeout)
        https = cfg.enable_https or parts.scheme == "https"
        host, port = parts.hostname or "127.0.0.1", parts.port or (443 if https else 80)
        self._tmp: list[Any] = []
        if https:
            self.pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                host, port, timeout=timeout, maxsize=16, retries=False, ssl_context=self._ssl(),
                assert_hostname=False if (cfg.tls and cfg.tls.insecure) else (cfg.tls.server_name or None)
                if cfg.tls else None)
        else:
            self.pool = urllib3.HTTPConnectionPool(host, port, timeout=timeout, maxsize=16, retries=False)
        self.path_prefix = parts.path.rstrip("/")
        self.scheme = "https" if https else "http"

    def _ssl(self) -> ssl.SSLContext:
        tls = self.cfg.tls
        ctx = ssl.create_default_context()
        if tls is None:
            return ctx
        if tls.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            # The configuration asked for no verification, as kube-scheduler's tlsConfig.insecure does;
            # urllib3's per-request warning would only repeat that choice.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if tls.ca_data:
            ctx.load_verify_locations(cadata=tls.ca_data.decode())
        elif tls.ca_file:
            ctx.load_verify_locations(cafile=tls.ca_file)
        cert, key = tls.cert_file, tls.key_file
        if tls.cert_data and tls.key_data:
            cert, key = self._write(tls.cert_data), self._write(tls.key_data)
        if cert and key:
            ctx.load_cert_chain(cert, key)
        return ctx

    def _write(self, data: bytes) -> str:
        f = tempfile.NamedTemporaryFile(prefix="extender-", suffix=".pem")  # noqa: SIM115 - kept open
        f.write(data)
        f.flush()
        self._tmp.append(f)  # keep alive so the file exists while the context loads it
        return f.name

    # -- what the scheduler asks ---------------------------------------------------------------

    def __str__(self) -> str:
        return self.base

    def interested(self, pod: Obj) -> bool:
        if not self.managed:
            return True
        return bool(self.managed & pod_limits_and_requests_names(pod))

    @property
    def is_binder(self) -> bool:
        return bool(self.cfg.bind_verb)

    def _send(self, verb: str, body: Any) -> Any:
        url = f"{self.base}/{verb}"
        q = f'"{url}"' if self.minor >= 19 else url  # Go 1.14+ quotes the URL in url.Error
        try:
            resp = self.pool.urlopen("POST", f"{self.path_prefix}/{verb}", body=orjson.dumps(body),
                                     headers={"Content-Type": "application/json"}, preload_content=True)
        except urllib3.exceptions.NewConnectionError as e:  # (a ConnectTimeoutError subclass in urllib3)
            raise ExtenderError(f"Post {q}: {self._dial_message(e)}") from e
        except urllib3.exceptions.TimeoutError as e:
            raise ExtenderError(f"Post {q}: context deadline exceeded (Client.Timeout exceeded while "
                                "awaiting headers)") from e
        except urllib3.exceptions.SSLError as e:
            raise ExtenderError(f"Post {q}: {_tls_message(e)}") from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ExtenderError(f"Post {q}: {self._dial_message(e)}") from e
        if resp.status != 200:
            word = "Failed" if self.minor <= 18 else "failed"
            raise ExtenderError(f"{word} {verb} with extender at URL {url}, code {resp.status}")
        try:
            return orjson.loads(resp.data)
        except orjson.JSONDecodeError as e:
            raise ExtenderError(_json_error(resp.data)) from e

    def _dial_message(self, e: Exception) -> str:
        host, port = self.pool.host, self.pool.port
        text = repr(e)
        if "Connection refused" in text or isinstance(e, ConnectionRefusedError):
            return f"dial tcp {host}:{port}: connect: connection refused"
        if isinstance(e, socket.gaierror) or "Name or service not known" in text:
            return f"dial tcp: lookup {host}: no such host"
        if "RemoteDisconnected" in text or "ProtocolError" in text:
            return "EOF"
        return f"dial tcp {host}:{port}: {e}"

    def filter(self, pod: Obj, nodes: list[str], node_objs: dict[str, Obj]) -> FilterResult:
        if self.cfg.node_cache_capable:
            args = {"Pod": pod, "Nodes": None, "NodeNames": nodes}
        else:
            args = {"Pod": pod, "Nodes": {"metadata": {}, "items": [node_objs[n] for n in nodes]},
                    "NodeNames": None}
        res = self._send(self.cfg.filter_verb, args)
        err = _ci_get(res, "Error")
        if err:
            raise ExtenderError(str(err))
        names_raw = _ci_get(res, "NodeNames")
        nodes_raw = _ci_get(res, "Nodes")
        if self.cfg.node_cache_capable and names_raw is not None:
            out = [str(n) for n in names_raw]
        elif isinstance(nodes_raw, dict):
            items = _ci_get(nodes_raw, "items") or []
            out = [str(((i or {}).get("metadata") or {}).get("name", "")) for i in items]
        else:
            out = [str(n) for n in names_raw or []]
        failed = {str(k): str(v) for k, v in (_ci_get(res, "FailedNodes") or {}).items()}
        unres = {str(k): str(v) for k, v in (_ci_get(res, "FailedAndUnresolvableNodes") or {}).items()}
        return FilterResult(out, failed, unres)

    def prioritize(self, pod: Obj, nodes: list[str], node_objs: dict[str, Obj]) -> dict[str, int]:
        if self.cfg.node_cache_capable:
            args = {"Pod": pod, "Nodes": None, "NodeNames": nodes}
        else:
            args = {"Pod": pod, "Nodes": {"metadata": {}, "items": [node_objs[n] for n in nodes]},
                    "NodeNames": None}
        res = self._send(self.cfg.prioritize_verb, args)
        out: dict[str, int] = {}
        for hp in res or []:
            host = _ci_get(hp, "Host")
            if host is not None:
                out[str(host)] = int(_ci_get(hp, "Score") or 0)
        return out

    def bind(self, pod: Obj, node: str) -> None:
        meta = pod.get("metadata") or {}
        args = {"PodName": meta.get("name", ""), "PodNamespace": meta.get("namespace", ""),
                "PodUID": meta.get("uid", ""), "Node": node}
        res = self._send(self.cfg.bind_verb, args)
        err = _ci_get(res, "Error")
        if err:
            raise ExtenderError(str(err))

    def close(self) -> None:
        self.pool.close()
        for f in self._tmp:
            f.close()


def _tls_message(e: Exception) -> str:
    text = str(e)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "tls: failed to verify certificate: x509: certificate signed by unknown authority"
    return f"remote error: tls: {text}"
