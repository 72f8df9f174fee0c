"""Benchmark (not a timed test): the real control plane against the emulated one.

    python bench/controlplane.py                    # builds in the cache, warm `up` real vs emulated
    python bench/controlplane.py --minor 1.33 --scheduling 100,1000 --pods 300
    python bench/controlplane.py --minor 1.35 --scheduling 100,1000 --extender binpack,spread
    python bench/controlplane.py --cell --workers 3 # also one NVIDIA conformance cell on each

Reported: each cached build's cold build time (as recorded when it was built: ``manifest.json``) and
binary sizes; the wall time of ``testbed up --detach`` with two executed nodes, real and emulated, on
a kept data dir (warm: the second start); pods/s bound by each control plane's default scheduler on N
simulated nodes; with ``--extender POLICIES``, pods/s bound through the HAMi scheduler (the chart's
kube-scheduler of the minor with the HAMi extender) on N simulated GPU nodes under each node policy
(``bench/hami_scheduling.py``); with ``--cell``, the wall time of ``hami-conformance run`` on each.
Timings on a shared 2-core machine are inflated by other load: compare the ratios. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import hami_scheduling  # noqa: E402  (bench/ is on sys.path when this file runs)

from testbed.controlplane.build import find  # noqa: E402
from testbed.controlplane.releases import MINORS  # noqa: E402

TWO_NODES = "nodes:\n  - name: n1\n    capacity: {cpu: '8', memory: 16Gi}\n" \
            "  - name: n2\n    capacity: {cpu: '8', memory: 16Gi}\n"


def _tb(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TESTBED_CONTROL_PLANE"}
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def builds() -> dict[str, Any]:
    out = {}
    for m in MINORS:
        b = find(m)
        if b is not None:
            cold = b.manifest.get("compiledPackages", 0) >= 0.9 * b.manifest.get("packages", 1)
            out[f"1.{m}"] = {"version": b.release.version,
                             "cold_build_s": b.manifest.get("buildSeconds") if cold else None,
                             "build_s": b.manifest.get("buildSeconds"),
                             "go": b.manifest.get("go"),
                             # seconds spent generating the OpenAPI definitions (older minors), in build_s
                             "openapi_gen_s": (b.manifest.get("openapi") or {}).get("seconds"),
                             "sizes_bytes": {k: v["size"] for k, v in b.manifest["binaries"].items()}}
    return out


def up_time(minor: str, mode: str, inventory: Path, tmp: Path) -> dict[str, float]:
    """Cold (fresh data dir) and warm (second start on it) `up --detach` wall times."""
    data = tmp / f"up-{mode}"
    times = {}
    for label in ("cold", "warm"):
        t = time.monotonic()
        r = _tb("up", "--k8s", minor, "--control-plane", mode, "--detach", "--port", "0",
                "--data-dir", str(data), "--nodes", str(inventory))
        times[f"{label}_s"] = round(time.monotonic() - t, 2)
        _tb("down", "--data-dir", str(data))
        if r.returncode != 0:
            raise SystemExit(f"testbed up ({mode}) failed: {r.stderr[-1500:]}")
    return times


def scheduling(minor: str, mode: str, nodes: int, pods: int, tmp: Path) -> float:
    """Pods per second bound by the default scheduler on ``nodes`` simulated nodes."""
    from kubernetes import client, config

    inv = tmp / f"sim-{nodes}.yaml"
    inv.write_text("defaults:\n  capacity: {cpu: '96', memory: 1Ti, pods: '110'}\n  mode: simulated\n"
                   f"nodes:\n  - namePattern: 'sim-{{index:04d}}'\n    count: {nodes}\n")
    data = tmp / f"sched-{mode}-{nodes}"
    r = _tb("up", "--k8s", minor, "--control-plane", mode, "--detach", "--port", "0", "--data-dir", str(data),
            "--nodes", str(inv), timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"testbed up ({mode}, {nodes} nodes) failed: {r.stderr[-1500:]}")
    try:
        core = client.CoreV1Api(config.new_client_from_config(str(data / "kubeconfig")))
        deadline = time.monotonic() + 60
        while not core.list_namespaced_service_account("default").items and time.monotonic() < deadline:
            time.sleep(0.2)
        t = time.monotonic()
        for i in range(pods):
            core.create_namespaced_pod("default", {
                "metadata": {"name": f"p{i}"},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                                         "resources": {"requests": {"cpu": "10m"}}}]}})
        bound = 0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            bound = sum(1 for p in core.list_namespaced_pod("default").items if p.spec.node_name)
            if bound >= pods:
                break
            time.sleep(0.2)
        return round(bound / (time.monotonic() - t), 1)
    finally:
        _tb("down", "--data-dir", str(data))


def cell(minor: str, mode: str, tmp: Path, workers: int = 0) -> dict[str, Any]:
    """Wall time and verdict of one NVIDIA cell (``workers`` > 1: a testbed per xdist worker)."""
    env = {**os.environ, "TESTBED_CONTROL_PLANE": mode}
    t = time.monotonic()
    cmd = [sys.executable, "-m", "conformance", "run", "--k8s", minor, "--workers", str(workers),
           "--out", str(tmp / f"cell-{mode}-{workers}")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO, env=env, check=False)
    verdict = next((ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines()
                    if ln.startswith("verdict:")), f"exit {proc.returncode}")
    return {"wall_s": round(time.monotonic() - t, 1), "verdict": verdict, "workers": workers}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minor", default="1.33")
    p.add_argument("--scheduling", default="", help="simulated node counts, e.g. 100,1000 (empty: skip)")
    p.add_argument("--pods", type=int, default=300)
    p.add_argument("--extender", default="",
                   help="node policies (binpack,spread) to measure pods/s through the HAMi extender at each "
                        "--scheduling size instead of the default scheduler")
    p.add_argument("--binpack-pods", type=int, default=60,
                   help="pods per binpack run (its binds wait for each other's node lock: slow)")
    p.add_argument("--cell", action="store_true", help="also time one NVIDIA conformance cell on each")
    p.add_argument("--workers", type=int, default=0, help="xdist workers of that cell (a testbed each)")
    args = p.parse_args()
    result: dict[str, Any] = {"builds": builds(), "minor": args.minor}
    minor_num = int(args.minor.split(".")[1])
    if find(minor_num) is None:
        result["skipped"] = (f"no real build of {args.minor}: "
                             f"python -m testbed.controlplane build {args.minor}")
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as d:
        tmp = Path(d)
        inv = tmp / "two.yaml"
        inv.write_text(TWO_NODES)
        for mode in ("real", "emulated"):
            result[f"up_{mode}"] = up_time(args.minor, mode, inv, tmp)
            print(f"up {mode}: {result[f'up_{mode}']}", file=sys.stderr, flush=True)
        policies = [x for x in args.extender.split(",") if x]
        for n in [int(x) for x in args.scheduling.split(",") if x]:
            for mode in ("real", "emulated"):
                for policy in policies:
                    pods = args.binpack_pods if policy == "binpack" else args.pods
                    r = hami_scheduling.measure(args.minor, mode, n, pods, tmp, policy=policy)
                    result[f"hami_pods_per_s_{mode}_{n}_nodes_{policy}"] = r["pods_per_s"]
                    result.setdefault("hami_runs", []).append(r | {"nodes": n})
                    print(f"HAMi scheduling {mode} {n} nodes {policy}: {r}", file=sys.stderr, flush=True)
                if policies:
                    continue
                result[f"pods_per_s_{mode}_{n}_nodes"] = scheduling(args.minor, mode, n, args.pods, tmp)
                print(f"scheduling {mode} {n} nodes: {result[f'pods_per_s_{mode}_{n}_nodes']}/s",
                      file=sys.stderr, flush=True)
        if args.cell:
            for mode in ("real", "emulated"):
                result[f"cell_{mode}"] = cell(args.minor, mode, tmp, args.workers)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
