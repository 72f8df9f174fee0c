"""Scheduler throughput benchmark (not a timed test).

Runs a testbed apiserver in a child process (so it does not share the GIL with the scheduler),
creates N nodes and a batch of pending pods, starts the default scheduler and measures pods bound
per second. Then measures the added latency per pod of one HTTPS extender filter call. The last line
printed is one JSON object.

    .venv/bin/python bench/scheduler.py [--pods 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubeclient.client import Kube  # noqa: E402
from testbed import pki  # noqa: E402
from testbed.scheduler import Scheduler  # noqa: E402
from testbed.scheduler.config import ExtenderConfig, LeaderElection, SchedulerConfig, TLSConfig  # noqa: E402

SERVER = """
import sys, time
from pathlib import Path
from testbed.embedded import EmbeddedTestbed
tb = EmbeddedTestbed(33, data_dir=Path(sys.argv[1]), history=200000).start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""


def start_server(tmp: Path) -> tuple[subprocess.Popen[str], Kube]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc, Kube.from_config(str(tmp / "kubeconfig"))


def populate(kube: Kube, nodes: int, pods: int, ns: str) -> None:
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    existing = len(kube.get("/api/v1/nodes")["items"])
    for i in range(existing, nodes):
        alloc = {"cpu": "64", "memory": "256Gi", "pods": "110"}
        kube.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                      "metadata": {"name": f"node-{i:04d}", "labels": {"zone": f"z{i % 3}"}},
                                      "status": {"allocatable": alloc, "capacity": alloc}})
    for i in range(pods):
        kube.create(f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"},
            "spec": {"containers": [{"name": "c", "image": "x",
                                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})


def measure(kube: Kube, pods: int, extenders: list[ExtenderConfig]) -> float:
    cfg = SchedulerConfig(extenders=extenders, leader_election=LeaderElection(leader_elect=False))
    s = Scheduler(kube, cfg, 33)
    s.start()  # informers synced: the pending pods are queued
    t0 = time.perf_counter()
    while s.bound_count < pods:
        time.sleep(0.005)
    dt = time.perf_counter() - t0
    s.stop()
    return pods / dt


class Ext:
    def __init__(self) -> None:
        self.ca = pki.make_ca()
        self.cert = pki.make_serving_cert(self.ca, "ext", ["127.0.0.1"])
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._up(), self.loop).result(10)

    async def _up(self) -> int:
        import ssl

        from aiohttp import web

        d = Path(tempfile.mkdtemp())
        (d / "c").write_bytes(self.cert.cert_pem)
        (d / "k").write_bytes(self.cert.key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(d / "c"), str(d / "k"))

        async def flt(req: Any) -> Any:
            body = orjson.loads(await req.read())
            return web.Response(body=orjson.dumps({"NodeNames": body["NodeNames"], "FailedNodes": {}}),
                                content_type="application/json")

        app = web.Application()
        app.router.add_post("/filter", flt)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        return int(runner.addresses[0][1])

    def config(self) -> ExtenderConfig:
        return ExtenderConfig(url_prefix=f"https://127.0.0.1:{self.port}", filter_verb="filter",
                              enable_https=True, node_cache_capable=True,
                              tls=TLSConfig(ca_data=self.ca.cert_pem))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    args = ap.parse_args()
    out: dict[str, Any] = {"pods": args.pods}
    with tempfile.TemporaryDirectory() as d:
        proc, kube = start_server(Path(d))
        try:
            populate(kube, 100, args.pods, "b100")
            out["pods_per_s_100_nodes"] = round(measure(kube, args.pods, []), 1)
            print(f"100 nodes: {out['pods_per_s_100_nodes']} pods/s", flush=True)
            ext = Ext()
            n_ext = max(args.pods // 4, 100)
            populate(kube, 100, n_ext, "bext")
            with_ext = measure(kube, n_ext, [ext.config()])
            populate(kube, 100, n_ext, "bnoext")
            without = measure(kube, n_ext, [])
            out["extender_added_ms"] = round(max(1000 / with_ext - 1000 / without, 0.0), 3)
            print(f"extender: {with_ext:.1f} vs {without:.1f} pods/s", flush=True)
            populate(kube, 1000, args.pods, "b1000")
            out["pods_per_s_1000_nodes"] = round(measure(kube, args.pods, []), 1)
            print(f"1000 nodes: {out['pods_per_s_1000_nodes']} pods/s", flush=True)
        finally:
            kube.close()
            proc.terminate()
            proc.wait(10)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
