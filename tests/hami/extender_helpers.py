"""Synthetic NVIDIA nodes and pods for the extender tests (no apiserver)."""

from __future__ import annotations

import itertools
from typing import Any

from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.register import DeviceInfo, encode_register_json
from hami_stack.scheduler.cache import UsageCache
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs

NV = NvidiaFamily()
_uids = itertools.count()


def gpus(
    node: str,
    n: int = 2,
    mem: int = 16000,
    count: int = 10,
    type_: str = "NVIDIA-A100",
    numa: tuple[int, ...] = (),
) -> list[DeviceInfo]:
    return [
        DeviceInfo(
            id=f"GPU-{node}-{i}",
            index=i,
            count=count,
            devmem=mem,
            devcore=100,
            type=type_,
            numa=numa[i] if numa else 0,
        )
        for i in range(n)
    ]


def node_obj(
    name: str,
    devices: list[DeviceInfo],
    annotations: dict[str, str] | None = None,
    allocatable: int | None = None,
) -> dict[str, Any]:
    annos = {ann.NVIDIA_KEYS.register: encode_register_json(devices), **(annotations or {})}
    count = str(allocatable if allocatable is not None else sum(d.count for d in devices))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": annos, "labels": {"gpu": "on"}},
        "status": {
            "capacity": {"nvidia.com/gpu": count, "cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"nvidia.com/gpu": count, "cpu": "8", "memory": "32Gi", "pods": "110"},
        },
    }


def add_node(
    cache: UsageCache, name: str, devices: list[DeviceInfo], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    node = node_obj(name, devices, annotations)
    cache.on_node("ADDED", node)
    cache.set_node_family(name, "NVIDIA", devices)
    return node


def container(name: str = "c", **limits: Any) -> dict[str, Any]:
    res = {k.replace("_", "/", 1).replace("_", "-"): str(v) for k, v in limits.items()}
    return {"name": name, "image": "x", "resources": {"limits": res}}


def gpu_limits(
    gpu: int = 1, mem: int | None = None, cores: int | None = None, pct: int | None = None
) -> dict[str, str]:
    out = {"nvidia.com/gpu": str(gpu)}
    if mem is not None:
        out["nvidia.com/gpumem"] = str(mem)
    if cores is not None:
        out["nvidia.com/gpucores"] = str(cores)
    if pct is not None:
        out["nvidia.com/gpumem-percentage"] = str(pct)
    return out


def make_pod(
    *limits: dict[str, str],
    init: tuple[dict[str, str], ...] = (),
    name: str | None = None,
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    n = next(_uids)
    spec: dict[str, Any] = {
        "schedulerName": "hami-scheduler",
        "containers": [
            {"name": f"c{i}", "image": "x", "resources": {"limits": lim}} for i, lim in enumerate(limits)
        ],
    }
    if init:
        spec["initContainers"] = [
            {"name": f"i{i}", "image": "x", "resources": {"limits": lim}} for i, lim in enumerate(init)
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or f"p{n}",
            "namespace": namespace,
            "uid": f"uid-{n}",
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
    }


def extender(node_policy: str = "binpack", gpu_policy: str = "spread") -> Extender:
    return Extender(None, [NV], ExtenderOptions(node_policy=node_policy, gpu_policy=gpu_policy))


def filt(ext: Extender, pod: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    return ext.filter(FilterArgs(pod, None, nodes))


CLIENT_CN = "hami-scheduler-extender-client"


class RunningService:
    """A :class:`SchedulerService` on loopback HTTPS (CA from ``testbed.pki``), on its own loop thread.

    Mutual TLS as the chart sets it up: the service trusts ``ca`` for client certificates with CN
    ``hami-scheduler-extender-client``; :meth:`post`/:meth:`get` present such a certificate
    (``client_tls`` is the context, ``client_cert``/``client_key`` its files for a scheduler config).
    ``mtls=False`` runs it without a client CA (then pass ``allow_unauthenticated`` as needed).
    """

    def __init__(self, kube: Any, tmp: Any, *, mtls: bool = True, **config: Any) -> None:
        import asyncio
        import ssl
        import threading

        from hami_stack.scheduler.server import SchedulerService, ServiceConfig
        from testbed import pki

        self.tmp = tmp
        self.ca = pki.make_ca()
        cert = pki.make_serving_cert(self.ca, "hami-scheduler", ["127.0.0.1"])
        cert.write(tmp / "tls.crt", tmp / "tls.key")
        (tmp / "ca.crt").write_bytes(self.ca.cert_pem)
        client = pki.make_serving_cert(self.ca, CLIENT_CN, [], client=True)
        self.client_cert, self.client_key = tmp / "client.crt", tmp / "client.key"
        client.write(self.client_cert, self.client_key)
        if mtls:
            config.setdefault("client_ca_file", str(tmp / "ca.crt"))
            config.setdefault("client_cn", CLIENT_CN)
        cfg = ServiceConfig(
            http_bind="127.0.0.1:0",
            cert_file=str(tmp / "tls.crt"),
            key_file=str(tmp / "tls.key"),
            metrics_bind="127.0.0.1:0",
            register_interval=0.3,
            **config,
        )
        self.service = SchedulerService(kube, [NvidiaFamily()], cfg)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.service.start_background()
        self.port = asyncio.run_coroutine_threadsafe(self.service.start_http(), self.loop).result(10)
        self.ssl_anonymous = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        self.ssl = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        self.ssl.load_cert_chain(str(self.client_cert), str(self.client_key))

    def post(
        self, path: str, body: Any, raw: bytes | None = None, context: Any = None
    ) -> tuple[int, Any]:
        import http.client

        import orjson

        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context or self.ssl, timeout=30)
        try:
            conn.request(
                "POST",
                path,
                body=raw if raw is not None else orjson.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            data = resp.read()
            is_json = resp.getheader("Content-Type", "").startswith("application/json")
            return resp.status, (orjson.loads(data) if data and is_json else data)
        finally:
            conn.close()

    def get(self, path: str, metrics: bool = False) -> tuple[int, bytes]:
        import http.client

        if metrics:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                "127.0.0.1", self.service.metrics_port, timeout=10
            )
        else:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.service.stop_http(), self.loop).result(10)
        self.service.stop_background()
        self.loop.call_soon_threadsafe(self.loop.stop)


def api_node(kube: Any, name: str, n: int = 2, mem: int = 16000, **kw: Any) -> dict[str, Any]:
    return kube.create("/api/v1/nodes", node_obj(name, gpus(name, n=n, mem=mem), **kw))


def api_pod(
    kube: Any,
    name: str,
    limits: dict[str, str],
    ns: str = "default",
    scheduler: str = "hami-scheduler",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return kube.create(
        f"/api/v1/namespaces/{ns}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "schedulerName": scheduler,
                "containers": [{"name": "c", "image": "busybox", "resources": {"limits": limits}}],
            },
        },
    )


def wait_for(fn: Any, timeout: float = 10.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def events(kube: Any, pod: str, reason: str, ns: str = "default") -> list[dict[str, Any]]:
    items = kube.get(f"/api/v1/namespaces/{ns}/events")["items"]
    return [
        e for e in items if (e.get("involvedObject") or {}).get("name") == pod and e.get("reason") == reason
    ]
