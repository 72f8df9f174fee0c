"""Latency of the HAMi extender's ``/filter`` and ``/bind`` over HTTPS (not a timed test).

Clusters of 100 and 1000 nodes with 8 GPUs each (A100-80GB, 10 slots) carry realistic existing
usage (0-5 pods per GPU, 1-12 GiB and 0-30 % cores each). Each round posts a kube-scheduler-shaped
``/filter`` (Go field names, all node names, nodeCacheCapable) for a new pod, then ``/bind`` for
the chosen node, over one keep-alive mutual-TLS connection (the client certificate the chart gives
the kube-scheduler) from a client process of its own.

The apiserver is an in-memory stub in the server process (pod GETs and patches, Binding creation,
node GETs for the lock), so the figures are the extender's own cost plus HTTP/TLS; a real
apiserver adds two round trips to /filter (the pod's GET and patch) and five to six to /bind.
``*_memo`` rounds reuse pod shapes (the per-node fit memo hits on the 99 % of nodes the previous
round did not change); ``*_cold`` rounds give every pod a unique annotation so every node is fitted.
A cProfile of cold filters at 100 nodes is printed before the JSON line.

    .venv/bin/python bench/extender.py [--rounds 400]
    .venv/bin/python bench/extender.py --stack upstream[@v2.10.0] [--rounds 200]

``--stack upstream`` compares our extender with upstream HAMi's Go extender (built by
``python -m testbed.upstream build``), both as processes against one live testbed apiserver, and
prints the ratios ours/upstream (``bench/extender_stacks.py``).

The last line printed is one JSON object; times are milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import cProfile
import http.client
import io
import json
import multiprocessing as mp
import pstats
import random
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiohttp import web

from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.protocol.register import DeviceInfo
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.server import ClientAuth, client_auth_context, make_app
from hami_stack.scheduler.wire import FilterArgs
from testbed import pki

GPUS = 8
MEM = 81920


CLIENT_CN = "hami-scheduler-extender-client"


class StubKube:
    """Just enough apiserver for filter/bind: node objects with resourceVersions, pod GETs/patches."""

    def __init__(self, pods: dict[str, dict[str, Any]]) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods = pods
        self.lock = threading.Lock()
        self.bindings = 0
        self.rv = 1

    def get(self, path: str, **_q: Any) -> Any:
        name = path.rsplit("/", 1)[1]
        with self.lock:
            if "/pods/" in path:
                pod = self.pods.get(name)
                if pod is None:
                    from kubeclient.client import ApiError

                    raise ApiError(404, {"reason": "NotFound", "message": f'pods "{name}" not found'})
                return orjson.loads(orjson.dumps(pod))
            node = self.nodes[name]
            return {"metadata": {**node["metadata"], "annotations": dict(node["metadata"]["annotations"])}}

    def patch(self, path: str, body: Any, kind: str = "merge") -> Any:
        if "/pods/" in path:
            name = path.rsplit("/", 1)[1]
            with self.lock:
                meta = self.pods[name]["metadata"]
                for field in ("labels", "annotations"):
                    target = meta.setdefault(field, {})
                    for k, v in (body["metadata"].get(field) or {}).items():
                        if v is None:
                            target.pop(k, None)
                        else:
                            target[k] = v
                self.rv += 1
                meta["resourceVersion"] = str(self.rv)
                return orjson.loads(orjson.dumps(self.pods[name]))
        if path.startswith("/api/v1/nodes/"):
            name = path.rsplit("/", 1)[1]
            with self.lock:
                meta = self.nodes[name]["metadata"]
                want = body["metadata"].get("resourceVersion")
                if want and want != meta["resourceVersion"]:
                    from kubeclient.client import ApiError

                    raise ApiError(409, {"reason": "Conflict", "message": "conflict"})
                for k, v in body["metadata"].get("annotations", {}).items():
                    if v is None:
                        meta["annotations"].pop(k, None)
                    else:
                        meta["annotations"][k] = v
                meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return {}

    def create(self, path: str, obj: Any) -> Any:
        self.bindings += 1
        node = obj["target"]["name"]
        with self.lock:  # the device plugin would release the lock after Allocate
            self.pods[obj["metadata"]["name"]]["spec"]["nodeName"] = node
            self.nodes[node]["metadata"]["annotations"].pop(ann.NODE_LOCK, None)
        return obj


def build(n_nodes: int, seed: int = 7) -> tuple[Extender, StubKube, dict[str, dict[str, Any]]]:
    rnd = random.Random(seed)
    nv = NvidiaFamily()
    pods: dict[str, dict[str, Any]] = {}
    kube = StubKube(pods)
    ext = Extender(kube, [nv], ExtenderOptions(), pod_getter=lambda ns, name: pods.get(name))  # type: ignore[arg-type]
    for i in range(n_nodes):
        name = f"node-{i:04d}"
        devices = [
            DeviceInfo(
                id=f"GPU-{i:04d}-{g}",
                index=g,
                count=10,
                devmem=MEM,
                devcore=100,
                type="NVIDIA-A100-SXM4-80GB",
                numa=g // 4,
            )
            for g in range(GPUS)
        ]
        node = {"metadata": {"name": name, "annotations": {}, "resourceVersion": "1"}}
        kube.nodes[name] = node
        ext.cache.on_node("ADDED", node)
        ext.cache.set_node_family(name, "NVIDIA", devices)
        for g in range(GPUS):
            for _ in range(rnd.randrange(0, 6)):
                uid = f"old-{len(pods)}"
                pod = {
                    "metadata": {"name": uid, "namespace": "default", "uid": uid},
                    "spec": {"containers": [{}]},
                }
                pods[uid] = pod
                cd = ContainerDevice(
                    f"GPU-{i:04d}-{g}", "NVIDIA", rnd.randrange(1, 13) * 1024, rnd.choice([0, 10, 30])
                )
                ext.cache.reserve(pod, name, {"NVIDIA": [[cd]]})
    return ext, kube, pods


def new_pod(i: int, cold: bool, pods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    shapes = [("1", "3000", "0"), ("1", "8000", "20"), ("2", "4000", "10")]
    gpu, mem, cores = shapes[i % len(shapes)]
    name = f"bench-{i}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "annotations": {"bench/round": str(i)} if cold else {},
        },
        "spec": {
            "schedulerName": "hami-scheduler",
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "resources": {
                        "limits": {
                            "nvidia.com/gpu": gpu,
                            "nvidia.com/gpumem": mem,
                            "nvidia.com/gpucores": cores,
                        }
                    },
                }
            ],
        },
    }
    pods[name] = pod
    return pod


Build = Callable[[int], tuple[Extender, "StubKube", dict[str, dict[str, Any]]]]
NewPod = Callable[[int, bool, dict[str, dict[str, Any]]], dict[str, Any]]


def serve(n_nodes: int, port_q: Any, cert: Path, key: Path, build_fn: Build | None = None) -> None:
    ext, _kube, pods = (build_fn or build)(n_nodes)
    auth = ClientAuth(require_cert=True, common_name=CLIENT_CN)
    app = make_app(ext, None, concurrent.futures.ThreadPoolExecutor(4), auth)

    async def record(request: web.Request) -> web.Response:  # the client registers pod bodies first
        pod = orjson.loads(await request.read())
        pods[pod["metadata"]["name"]] = pod
        return web.Response(text="ok")

    app.router.add_post("/bench/pod", record)
    ctx = client_auth_context(str(cert), str(key), str(cert.parent / "ca.crt"))

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port_q.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run_client(
    port: int, ca: bytes, client_cert: Path, n_nodes: int, rounds: int, cold: bool,
    new_pod_fn: NewPod | None = None,
) -> tuple[list[float], list[float]]:
    ctx = ssl.create_default_context(cadata=ca.decode())
    ctx.load_cert_chain(str(client_cert), str(client_cert.with_suffix(".key")))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    names = [f"node-{i:04d}" for i in range(n_nodes)]
    pods: dict[str, dict[str, Any]] = {}
    filt, bind = [], []
    base = 1_000_000 if cold else 0
    for i in range(rounds):
        pod = (new_pod_fn or new_pod)(base + i, cold, pods)
        conn.request("POST", "/bench/pod", body=orjson.dumps(pod))
        conn.getresponse().read()
        body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
        t0 = time.perf_counter()
        conn.request("POST", "/filter", body=body, headers={"Content-Type": "application/json"})
        res = orjson.loads(conn.getresponse().read())
        filt.append((time.perf_counter() - t0) * 1000)
        if not res.get("NodeNames"):
            continue
        meta = pod["metadata"]
        body = orjson.dumps(
            {
                "PodName": meta["name"],
                "PodNamespace": "default",
                "PodUID": meta["uid"],
                "Node": res["NodeNames"][0],
            }
        )
        t0 = time.perf_counter()
        conn.request("POST", "/bind", body=body, headers={"Content-Type": "application/json"})
        out = orjson.loads(conn.getresponse().read())
        bind.append((time.perf_counter() - t0) * 1000)
        assert out["Error"] == "", out
    conn.close()
    return filt, bind


def profile_cold(n_nodes: int, rounds: int = 50) -> str:
    ext, _kube, pods = build(n_nodes)
    ext.kube = None  # decision cost only
    names = [f"node-{i:04d}" for i in range(n_nodes)]
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for i in range(rounds):
        ext.filter(FilterArgs(new_pod(2_000_000 + i, True, pods), None, names))
    prof.disable()
    per = (time.perf_counter() - t0) * 1000 / rounds
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    return f"in-process cold filter at {n_nodes} nodes (profiled): {per:.2f} ms/filter\n{out.getvalue()}"


def measure(
    n_nodes: int, rounds: int, cold: bool, tmp: Path, ca: pki.KeyPair,
    build_fn: Build | None = None, new_pod_fn: NewPod | None = None,
) -> tuple[list[float], list[float]]:
    """Filter and bind times (ms) of ``rounds`` pods against a server process over ``n_nodes``; other
    vendors' benches pass their cluster (``build_fn``) and pod shapes (``new_pod_fn``)."""
    q: Any = mp.Queue()
    args = (n_nodes, q, tmp / "tls.crt", tmp / "tls.key", build_fn)
    proc = mp.Process(target=serve, args=args, daemon=True)
    proc.start()
    try:
        port = q.get(timeout=120)
        return run_client(port, ca.cert_pem, tmp / "client.crt", n_nodes, rounds, cold, new_pod_fn)
    finally:
        proc.terminate()
        proc.join(5)


def tls_dir() -> tuple[Path, pki.KeyPair]:
    """A directory with the server's and the kube-scheduler client's certificates, and their CA."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-extender-"))
    ca = pki.make_ca()
    pki.make_serving_cert(ca, "hami-scheduler", ["127.0.0.1"]).write(tmp / "tls.crt", tmp / "tls.key")
    (tmp / "ca.crt").write_bytes(ca.cert_pem)
    pki.make_serving_cert(ca, CLIENT_CN, [], client=True).write(tmp / "client.crt", tmp / "client.key")
    return tmp, ca


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument(
        "--stack",
        default="ours",
        help="ours (in-process, stub apiserver) or upstream[@TAG]: ours vs upstream HAMi on a live apiserver",
    )
    args = ap.parse_args()
    if args.stack != "ours":
        from bench.extender_stacks import compare
        from testbed.upstream.source import resolve

        name, _, tag = args.stack.partition("@")
        if name != "upstream":
            ap.error(f"--stack {args.stack}: expected ours or upstream[@TAG]")
        print(json.dumps(compare("upstream@" + resolve(tag or "latest", None).tag, args.rounds)))
        return
    tmp, ca = tls_dir()
    result: dict[str, Any] = {}
    for n, rounds in ((100, args.rounds), (1000, max(args.rounds // 4, 50))):
        for cold in (False, True):
            f, b = measure(n, rounds, cold, tmp, ca)
            tag = f"{n}_nodes" + ("_cold" if cold else "")
            result[f"filter_p50_ms_{tag}"] = round(statistics.median(f), 3)
            result[f"filter_p99_ms_{tag}"] = round(pct(f, 99), 3)
            result[f"bind_p50_ms_{tag}"] = round(statistics.median(b), 3) if b else None
            result[f"binds_{tag}"] = len(b)
            print(
                f"{tag}: filter p50 {result[f'filter_p50_ms_{tag}']} ms "
                f"p99 {result[f'filter_p99_ms_{tag}']} ms, "
                f"bind p50 {result[f'bind_p50_ms_{tag}']} ms ({len(b)} binds)",
                flush=True,
            )
    print(profile_cold(100))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
