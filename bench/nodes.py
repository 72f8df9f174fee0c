"""Node-agent benchmark (not a timed test): node registration and pod start latency.

    python bench/nodes.py [--nodes 100,1000] [--pods 20]

Measures, against an in-process testbed apiserver (1.33 profile):
* ready_s_<N>_nodes: time from starting N simulated agents until all N Nodes are Ready;
* pod_start_p50_ms_simulated / _executed: bound (Binding created) -> phase Running, median.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, parse_inventory


def _ready(kube: Kube, n: int) -> int:
    items = kube.get("/api/v1/nodes")["items"]
    return sum(
        1
        for it in items
        for c in it.get("status", {}).get("conditions") or []
        if c["type"] == "Ready" and c["status"] == "True"
    )


def bench_nodes(n: int) -> float:
    with EmbeddedTestbed(33) as tb, tempfile.TemporaryDirectory() as d:
        kube = Kube.from_config(str(tb.kubeconfig_path))
        inv = parse_inventory(
            {"nodes": [{"namePattern": "sim-{index:04d}", "count": n, "mode": "simulated"}]}
        )
        t0 = time.perf_counter()
        agents = NodeAgents(kube, inv, d, options=AgentOptions(kubelet_server=True)).start(wait_ready=False)
        while _ready(kube, n) < n:
            time.sleep(0.05)
        took = time.perf_counter() - t0
        agents.stop()
        return took


def _pod_start(kube: Kube, node: str, name: str, ann: dict[str, str]) -> float:
    spec = {
        "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "30"]}],
        "terminationGracePeriodSeconds": 0,
    }
    kube.create(
        "/api/v1/namespaces/default/pods", {"metadata": {"name": name, "annotations": ann}, "spec": spec}
    )
    t0 = time.perf_counter()
    kube.create(
        f"/api/v1/namespaces/default/pods/{name}/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"kind": "Node", "name": node},
        },
    )
    while kube.get(f"/api/v1/namespaces/default/pods/{name}")["status"].get("phase") != "Running":
        time.sleep(0.005)
    return (time.perf_counter() - t0) * 1000


def bench_pods(count: int) -> tuple[float, float]:
    with EmbeddedTestbed(33) as tb, tempfile.TemporaryDirectory() as d:
        kube = Kube.from_config(str(tb.kubeconfig_path))
        inv = parse_inventory(
            {
                "nodes": [
                    {"name": "exec-1"},
                    {"name": "sim-1", "mode": "simulated", "simulate": {"podStartSeconds": 0}},
                ]
            }
        )
        with NodeAgents(kube, inv, d):
            sim = [_pod_start(kube, "sim-1", f"s{i}", {}) for i in range(count)]
            exe = [_pod_start(kube, "exec-1", f"e{i}", {}) for i in range(count)]
    return statistics.median(sim), statistics.median(exe)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", default="100,1000")
    p.add_argument("--pods", type=int, default=20)
    args = p.parse_args()
    out: dict[str, float] = {}
    for n in [int(x) for x in args.nodes.split(",") if x]:
        out[f"ready_s_{n}_nodes"] = round(bench_nodes(n), 3)
        print(f"{n} simulated nodes Ready in {out[f'ready_s_{n}_nodes']} s", flush=True)
    sim, exe = bench_pods(args.pods)
    out["pod_start_p50_ms_simulated"] = round(sim, 1)
    out["pod_start_p50_ms_executed"] = round(exe, 1)
    print(f"pod start p50: simulated {sim:.1f} ms, executed {exe:.1f} ms", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
