"""Latency of the extender's ``/filter`` and ``/bind`` for Ascend pods (not a timed test).

100 nodes (``--nodes``) with 8 Ascend 910B3 NPUs each (4 vNPU slots, 64 GiB, NetworkID 0/1 split at
index 4) carry existing usage: 0-3 template pods (vir05_1c_16g / vir10_3c_32g) per NPU. The timing is
``bench/extender.py``'s: a server process over HTTPS with mutual TLS and a stub apiserver, one
client posting kube-scheduler-shaped ``/filter`` then ``/bind`` per pod; only the cluster and the pod
shapes are Ascend's, cycling through one vir05 template, one vir10 template and two whole NPUs
(NetworkID topology choice). ``memo`` rounds reuse shapes, ``cold`` rounds give every pod a unique
annotation so every node is fitted. A bound pod stays placed.

    .venv/bin/python bench/ascend_extender.py [--nodes 100] [--rounds 300]

The last line printed is one JSON object; times are milliseconds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import extender as bench_extender
from bench.extender import StubKube
from hami_stack.devices.ascend import DEFAULT_CHIPS, AscendFamily
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.protocol.register import DeviceInfo
from hami_stack.scheduler.extender import Extender, ExtenderOptions

CW = "Ascend910B3"
NPUS = 8


def build(n_nodes: int, seed: int = 11) -> tuple[Extender, StubKube, dict[str, dict[str, Any]]]:
    rnd = random.Random(seed)
    cfg = next(c for c in DEFAULT_CHIPS if c.common_word == CW)
    fam = AscendFamily(cfg)
    pods: dict[str, dict[str, Any]] = {}
    kube = StubKube(pods)
    ext = Extender(kube, [fam], ExtenderOptions(), pod_getter=lambda ns, name: pods.get(name))  # type: ignore[arg-type]
    for i in range(n_nodes):
        name = f"node-{i:04d}"
        devices = [
            DeviceInfo(
                id=f"NPU-{i:04d}-{g}",
                index=g,
                count=cfg.vdevice_count,
                devmem=cfg.memory_allocatable,
                devcore=cfg.ai_core,
                type=CW,
                health=True,
                custom_info={"NetworkID": 1 if g > 3 else 0},
            )
            for g in range(NPUS)
        ]
        node = {"metadata": {"name": name, "annotations": {}, "resourceVersion": "1"}}
        kube.nodes[name] = node
        ext.cache.on_node("ADDED", node)
        ext.cache.set_node_family(name, CW, devices)
        for g in range(NPUS):
            used = 0
            for _ in range(rnd.randrange(0, 4)):
                mem = rnd.choice([16384, 32768])
                if used + mem > cfg.memory_allocatable:
                    break
                used += mem
                uid = f"old-{len(pods)}"
                pod = {
                    "metadata": {"name": uid, "namespace": "default", "uid": uid},
                    "spec": {"containers": [{}]},
                }
                pods[uid] = pod
                ext.cache.reserve(pod, name, {CW: [[ContainerDevice(f"NPU-{i:04d}-{g}", CW, mem, 0)]]})
    return ext, kube, pods


def new_pod(i: int, cold: bool, pods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    shapes = [("1", "16384"), ("1", "32768"), ("2", "65536")]
    count, mem = shapes[i % len(shapes)]
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
                    "resources": {"limits": {f"huawei.com/{CW}": count, f"huawei.com/{CW}-memory": mem}},
                }
            ],
        },
    }
    pods[name] = pod
    return pod


def measure(n_nodes: int, rounds: int, cold: bool, tmp: Path, ca: Any) -> dict[str, Any]:
    filt, bind = bench_extender.measure(n_nodes, rounds, cold, tmp, ca, build_fn=build, new_pod_fn=new_pod)
    return {
        "p50_ms": round(statistics.median(filt), 3),
        "p99_ms": round(bench_extender.pct(filt, 99), 3),
        "mean_ms": round(statistics.fmean(filt), 3),
        "bind_p50_ms": round(statistics.median(bind), 3) if bind else None,
        "rounds": rounds,
        "placed": len(bind),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=300)
    a = p.parse_args()
    tmp, ca = bench_extender.tls_dir()
    result = {
        "bench": "ascend-extender-filter",
        "nodes": a.nodes,
        "npus_per_node": NPUS,
        "chip": CW,
        "memo": measure(a.nodes, a.rounds, False, tmp, ca),
        "cold": measure(a.nodes, a.rounds, True, tmp, ca),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
