"""Benchmark of the testbed apiserver through the official kubernetes Python client.

Starts a testbed in its own process (so server and clients do not share one interpreter), then
measures pod create throughput with concurrent client processes, get latency, list latency at 1k
and 10k pods, patch latency and watch-event delivery latency with 10 watchers.

    .venv/bin/python bench/apiserver.py [--minor 1.33] [--creates 3000] [--clients 4]

The last line printed is one JSON object with the figures (names carry their units).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml


def _client(kubeconfig: str) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return client.CoreV1Api(client.ApiClient(cfg))


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox:1.36",
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                }
            ]
        },
    }


def _create_worker(args: tuple[str, str, int, int]) -> tuple[int, float]:
    kubeconfig, ns, start, count = args
    core = _client(kubeconfig)
    t0 = time.perf_counter()
    for i in range(start, start + count):
        core.create_namespaced_pod(ns, _pod(f"p{i:06d}"), _preload_content=False).release_conn()
    return count, time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minor", default="1.33")
    ap.add_argument("--creates", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--gets", type=int, default=500)
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-apiserver-"))
    up = subprocess.run(
        [
            sys.executable,
            "-m",
            "testbed",
            "up",
            "--k8s",
            args.minor,
            "--detach",
            "--port",
            "0",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
    )
    if up.returncode != 0:
        print(up.stderr, file=sys.stderr)
        return 1
    kubeconfig = str(data / "kubeconfig")
    results: dict[str, Any] = {"minor": args.minor}
    try:
        core = _client(kubeconfig)
        core.create_namespace({"metadata": {"name": "bench"}})
        core.create_namespace({"metadata": {"name": "big"}})
        time.sleep(0.2)

        # 1. creates with concurrent client processes
        per = args.creates // args.clients
        ctx = mp.get_context("fork")
        with ctx.Pool(args.clients) as pool:
            t0 = time.perf_counter()
            out = pool.map(_create_worker, [(kubeconfig, "bench", i * per, per) for i in range(args.clients)])
            wall = time.perf_counter() - t0
        total = sum(n for n, _ in out)
        results["create_per_s"] = round(total / wall, 1)
        results["create_clients"] = args.clients

        # 2. get latency (sequential, one client)
        lat = []
        for i in range(args.gets):
            t = time.perf_counter()
            core.read_namespaced_pod(f"p{i % total:06d}", "bench", _preload_content=False).release_conn()
            lat.append((time.perf_counter() - t) * 1000)
        results["get_p50_ms"] = round(statistics.median(lat), 3)
        results["get_p99_ms"] = round(pct(lat, 99), 3)

        # 3. patch latency (strategic merge)
        lat = []
        for i in range(200):
            t = time.perf_counter()
            core.patch_namespaced_pod(
                f"p{i:06d}", "bench", {"metadata": {"labels": {"n": str(i)}}}, _preload_content=False
            ).release_conn()
            lat.append((time.perf_counter() - t) * 1000)
        results["patch_p50_ms"] = round(statistics.median(lat), 3)
        results["patch_p99_ms"] = round(pct(lat, 99), 3)

        # 4. list latency at 1k (namespace bench holds >= 1k) and 10k pods
        def list_ms(ns: str, decode: bool) -> float:
            samples = []
            for _ in range(5):
                t = time.perf_counter()
                if decode:
                    core.list_namespaced_pod(ns)
                else:
                    r = core.list_namespaced_pod(ns, _preload_content=False)
                    json.loads(r.data)
                samples.append((time.perf_counter() - t) * 1000)
            return round(statistics.median(samples), 1)

        r = core.list_namespaced_pod("bench", limit=1000, _preload_content=False)
        t_samples = []
        for _ in range(5):
            t = time.perf_counter()
            r = core.list_namespaced_pod("bench", limit=1000, _preload_content=False)
            json.loads(r.data)
            t_samples.append((time.perf_counter() - t) * 1000)
        results["list_1k_ms"] = round(statistics.median(t_samples), 1)
        need = 10_000
        with ctx.Pool(args.clients) as pool:
            pool.map(
                _create_worker,
                [
                    (kubeconfig, "big", i * (need // args.clients), need // args.clients)
                    for i in range(args.clients)
                ],
            )
        results["list_10k_ms"] = list_ms("big", decode=False)
        results["list_10k_ms_decoded_models"] = list_ms("big", decode=True)

        # 5. watch delivery latency, 10 watchers, events stamped with the send time
        results.update(_watch_latency(kubeconfig, watchers=10, events=300))
    finally:
        subprocess.run(
            [sys.executable, "-m", "testbed", "down", "--data-dir", str(data)], capture_output=True
        )
    results["cpus"] = os.cpu_count()
    print(json.dumps(results))
    return 0


def _watch_latency(kubeconfig: str, watchers: int, events: int) -> dict[str, float]:
    core = _client(kubeconfig)
    core.create_namespaced_config_map("bench", {"metadata": {"name": "tick"}, "data": {"t": "0"}})
    rv = core.read_namespaced_config_map("tick", "bench").metadata.resource_version
    delays: list[float] = []
    lock = threading.Lock()
    ready = threading.Barrier(watchers + 1)

    def watcher() -> None:
        c = _client(kubeconfig)
        resp = c.list_namespaced_config_map(
            "bench",
            watch=True,
            resource_version=rv,
            timeout_seconds=60,
            field_selector="metadata.name=tick",
            _preload_content=False,
        )
        ready.wait()
        got = 0
        buf = b""
        for chunk in resp.stream(4096):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                ev = json.loads(line)
                sent = float(ev["object"]["data"]["t"])
                if sent == 0:
                    continue
                with lock:
                    delays.append((time.time() - sent) * 1000)
                got += 1
                if got >= events:
                    resp.release_conn()
                    return

    threads = [threading.Thread(target=watcher, daemon=True) for _ in range(watchers)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.3)
    for _ in range(events):
        core.patch_namespaced_config_map(
            "tick", "bench", {"data": {"t": repr(time.time())}}, _preload_content=False
        ).release_conn()
        time.sleep(0.002)
    for t in threads:
        t.join(30)
    return {
        "watch_p50_ms_10_watchers": round(statistics.median(delays), 3),
        "watch_p99_ms_10_watchers": round(pct(delays, 99), 3),
        "watch_events_delivered": len(delays),
    }


if __name__ == "__main__":
    _ = yaml
    sys.exit(main())
