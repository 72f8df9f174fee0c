"""Our extender and upstream HAMi's, side by side, against one live testbed apiserver.

``bench/extender.py --stack upstream`` runs this. For each cluster size a fresh testbed apiserver
(its own process) is seeded with the same nodes as the in-process bench (8 A100-80GB per node,
10 slots, registered through ``hami.io/node-nvidia-register`` with ``nvidia.com/gpu`` allocatable)
and the same existing usage (one Running pod per node holding 0-5 slices per GPU,
``hami.io/vgpu-devices-allocated``). Then each stack's scheduler binary is started with the same
flags (HTTPS with the same certificate, ``--kubeconfig`` of the testbed), and one client posts the
same sequence of kube-scheduler-shaped ``/filter`` requests (Go field names, every node name), then
``/bind`` for the node chosen. Between rounds, outside the timing, the client releases the node lock
as the device plugin's Allocate would. Each stack gets a freshly seeded apiserver, so both see the
same state. Unlike the in-process bench, the extender's own apiserver round trips are in the figures.
"""

from __future__ import annotations

import datetime as dt
import http.client
import multiprocessing as mp
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.assignment import ContainerDevice, encode_pod_devices
from hami_stack.protocol.handshake import reported
from hami_stack.protocol.register import DeviceInfo, encode_register_json
from kubeclient.client import Kube
from testbed import pki

GPUS = 8
MEM = 81920
CLIENT_CN = "hami-scheduler-extender-client"
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _apiserver(data_dir: str, q: Any) -> None:
    from testbed.embedded import EmbeddedTestbed

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # taken by sigwait below: a clean stop
    tb = EmbeddedTestbed(33, data_dir=Path(data_dir)).start()
    q.put(str(tb.kubeconfig_path))
    signal.sigwait({signal.SIGTERM})
    tb.stop()


def seed(kube: Kube, n_nodes: int, seed_: int = 7) -> list[str]:
    """The nodes and their existing usage (same generator as the in-process bench)."""
    rnd = random.Random(seed_)
    names = []
    now = dt.datetime.now(dt.UTC)
    for i in range(n_nodes):
        name = f"node-{i:04d}"
        names.append(name)
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
        annotations = {
            ann.NVIDIA_KEYS.register: encode_register_json(devices),
            ann.NVIDIA_KEYS.handshake: reported(now),
        }
        res = {"cpu": "64", "memory": "512Gi", "pods": "250", "nvidia.com/gpu": str(GPUS * 10)}
        kube.create(
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "annotations": annotations},
            },
        )
        kube.patch(
            f"/api/v1/nodes/{name}/status",
            {
                "status": {
                    "capacity": res,
                    "allocatable": res,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "lastHeartbeatTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        }
                    ],
                }
            },
            kind="merge",
        )
        containers: list[list[ContainerDevice]] = []
        for g in range(GPUS):
            for _ in range(rnd.randrange(0, 6)):
                containers.append(
                    [
                        ContainerDevice(
                            f"GPU-{i:04d}-{g}", "NVIDIA", rnd.randrange(1, 13) * 1024, rnd.choice([0, 10, 30])
                        )
                    ]
                )
        if not containers:
            continue
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"usage-{name}",
                "namespace": "default",
                "annotations": {
                    ann.VGPU_NODE: name,
                    ann.BIND_PHASE: "success",
                    ann.NVIDIA_KEYS.allocated: encode_pod_devices(containers),
                    ann.NVIDIA_KEYS.to_allocate: encode_pod_devices([[] for _ in containers]),
                },
            },
            "spec": {
                "nodeName": name,
                "schedulerName": "hami-scheduler",
                "containers": [
                    {
                        "name": f"c{j}",
                        "image": "busybox",
                        "resources": {
                            "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(cs[0].usedmem)}
                        },
                    }
                    for j, cs in enumerate(containers)
                ],
            },
        }
        kube.create("/api/v1/namespaces/default/pods", pod)
        kube.patch(
            f"/api/v1/namespaces/default/pods/usage-{name}/status",
            {"status": {"phase": "Running"}},
            kind="merge",
        )
    return names


def _pod(i: int, cold: bool = False) -> dict[str, Any]:
    """Round ``i``'s pod: three shapes in turn; ``cold`` gives each a unique annotation, so a per-node
    fit memo keyed by pod shape (ours has one, upstream none) never hits."""
    shapes = [("1", "3000", "0"), ("1", "8000", "20"), ("2", "4000", "10")]
    gpu, mem, cores = shapes[i % len(shapes)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"bench-{i}{'-cold' if cold else ''}",
            "namespace": "default",
            "annotations": {"bench/round": str(i)} if cold else {},
        },
        "spec": {
            "schedulerName": "hami-scheduler",
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
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


def device_config(chart: Path, out: Path) -> Path:
    """The ``device-config.yaml`` upstream's chart renders (both stacks read the same file)."""
    import yaml

    from testbed.clients import helm_path

    helm = helm_path()
    if helm is None:
        raise SystemExit("helm is not cached: python -m testbed.clients fetch 1.33")
    text = subprocess.run(
        [str(helm), "template", "hami", str(chart), "--namespace", "kube-system"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for doc in yaml.safe_load_all(text):
        if doc and doc.get("kind") == "ConfigMap" and "device-config.yaml" in (doc.get("data") or {}):
            out.write_text(doc["data"]["device-config.yaml"])
            return out
    raise SystemExit(f"{chart}: no ConfigMap with device-config.yaml in the rendered chart")


def _upstream(stack: str) -> Any:
    from testbed.upstream.build import installed

    built = installed(stack.split("@", 1)[1])
    if built is None:
        raise SystemExit(f"upstream HAMi {stack} is not built: python -m testbed.upstream build <version>")
    return built


def _command(stack: str, port: int, tls: Path, kubeconfig: str) -> tuple[list[str], dict[str, str]]:
    common = [
        f"--http_bind=127.0.0.1:{port}",
        f"--cert_file={tls}/tls.crt",
        f"--key_file={tls}/tls.key",
        "--scheduler-name=hami-scheduler",
        f"--device-config-file={tls / 'device-config.yaml'}",
        f"--metrics-bind-address=127.0.0.1:{_free_port()}",
    ]
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    if stack == "ours":
        return [
            sys.executable,
            "-m",
            "hami_stack.scheduler",
            *common,
            f"--kubeconfig={kubeconfig}",
            f"--client-ca-file={tls}/ca.crt",
            f"--client-cn={CLIENT_CN}",
        ], {**env, "PYTHONPATH": str(REPO)}
    # upstream's client-side rate limiter (client-go's default 5 QPS, burst 10; the chart sets no
    # --kube-qps) makes registering 1000 nodes take many minutes and throttles /bind; lifted so the
    # figures are the extender's own cost, as ours has no client-side limiter
    return [str(_upstream(stack).binary("scheduler")), *common, "--kube-qps=1000", "--kube-burst=2000"], env


class Client:
    def __init__(self, port: int, tls: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        ctx.load_cert_chain(str(tls / "client.crt"), str(tls / "client.key"))
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)

    def post(self, path: str, body: Any) -> tuple[float, Any]:
        data = orjson.dumps(body)
        t0 = time.perf_counter()
        self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        raw = self.conn.getresponse().read()
        return (time.perf_counter() - t0) * 1000, orjson.loads(raw) if raw.strip() else {}


def _wait_ready(
    client: Client, kube: Kube, names: list[str], proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Until a probe pod fits on a sample of nodes (first, last, every 10th): registrations are cached."""
    sample = sorted(set([*names[:: max(1, len(names) // 10)], names[-1]]))
    probe = kube.create(
        "/api/v1/namespaces/default/pods",
        _pod(9_999_999) | {"metadata": {"name": "ready-probe", "namespace": "default"}},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"scheduler exited {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        try:
            ok = all(
                client.post("/filter", {"Pod": probe, "Nodes": None, "NodeNames": [n]})[1].get("NodeNames")
                for n in sample
            )
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
            ok = False
            client.conn.close()
        if ok:
            kube.delete("/api/v1/namespaces/default/pods/ready-probe")
            return
        time.sleep(1)
    raise SystemExit(f"scheduler not ready after 300 s; log {log}")


@dataclass
class Live:
    """A stack's extender running against a freshly seeded testbed apiserver."""

    stack: str
    client: Client
    kube: Kube
    names: list[str]
    log: Path

    def round(self, pod: dict[str, Any]) -> tuple[float, float | None, dict[str, Any], dict[str, Any]]:
        """Create ``pod``, filter it over every node, bind it to the first node given back.

        Returns (filter ms, bind ms or None, the filter's answer, the pod as filter left it).
        """
        pod = self.kube.create("/api/v1/namespaces/default/pods", pod)
        f_ms, res = self.client.post("/filter", {"Pod": pod, "Nodes": None, "NodeNames": self.names})
        meta = pod["metadata"]
        after = self.kube.get(f"/api/v1/namespaces/default/pods/{meta['name']}")
        if not res.get("NodeNames"):
            return f_ms, None, res, after
        node = res["NodeNames"][0]
        b_ms, out = self.client.post(
            "/bind", {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": node}
        )
        if out.get("Error"):
            raise RuntimeError(f"{self.stack}: bind of {meta['name']} to {node} failed: {out['Error']}")
        # what the device plugin's Allocate does: release the node lock (not timed)
        self.kube.patch(
            f"/api/v1/nodes/{node}", {"metadata": {"annotations": {ann.NODE_LOCK: None}}}, kind="merge"
        )
        return f_ms, b_ms, res, after

    def admit(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The stack's mutating webhook on a CREATE of ``pod``: its AdmissionReview response."""
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": f"review-{pod['metadata']['name']}",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": pod["metadata"]["name"],
                "namespace": pod["metadata"].get("namespace", "default"),
                "operation": "CREATE",
                "userInfo": {"username": "bench", "groups": ["system:authenticated"]},
                "object": pod,
                "oldObject": None,
                "dryRun": False,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            },
        }
        _ms, out = self.client.post("/webhook", review)
        return dict(out.get("response") or {})


@contextmanager
def live(stack: str, n_nodes: int, tls: Path, work: Path) -> Iterator[Live]:
    """``stack`` (ours or upstream@TAG) serving /filter and /bind over a seeded apiserver of its own."""
    q: Any = mp.get_context("spawn").Queue()
    api = mp.get_context("spawn").Process(target=_apiserver, args=(str(work / f"api-{stack}-{n_nodes}"), q))
    api.start()
    proc = None
    try:
        kubeconfig = q.get(timeout=120)
        kube = Kube.from_config(kubeconfig)
        t0 = time.monotonic()
        names = seed(kube, n_nodes)
        print(f"{stack} {n_nodes} nodes: seeded in {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
        port = _free_port()
        cmd, env = _command(stack, port, tls, kubeconfig)
        log = work / f"{stack.replace('@', '-')}-{n_nodes}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO))
        client = Client(port, tls)
        _wait_ready(client, kube, names, proc, log)
        yield Live(stack, client, kube, names, log)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if api.pid is not None:
            os.kill(api.pid, signal.SIGTERM)
        api.join(20)


def make_tls(work: Path, upstream: str) -> Path:
    """Serving certificate for 127.0.0.1, the kube-scheduler's client certificate (one CA) and the
    device config of ``upstream``'s chart, in one directory both stacks' flags point at."""
    tls = work / "tls"
    tls.mkdir(parents=True)
    device_config(_upstream(upstream).chart, tls / "device-config.yaml")
    ca = pki.make_ca()
    pki.make_serving_cert(ca, "hami-scheduler", ["127.0.0.1"]).write(tls / "tls.crt", tls / "tls.key")
    (tls / "ca.crt").write_bytes(ca.cert_pem)
    pki.make_serving_cert(ca, CLIENT_CN, [], client=True).write(tls / "client.crt", tls / "client.key")
    return tls


def measure(
    stack: str, n_nodes: int, rounds: int, tls: Path, work: Path
) -> dict[str, dict[str, list[float]]]:
    """``rounds`` repeated-shape rounds ("memo"), then ``rounds`` unique-pod rounds ("cold")."""
    out: dict[str, dict[str, list[float]]] = {}
    with live(stack, n_nodes, tls, work) as lv:
        for mode in ("memo", "cold"):
            filt: list[float] = []
            bind: list[float] = []
            for i in range(rounds):
                f_ms, b_ms, _res, _after = lv.round(_pod(i, cold=mode == "cold"))
                filt.append(f_ms)
                if b_ms is not None:
                    bind.append(b_ms)
            out[mode] = {"filter": filt, "bind": bind}
    return out


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def compare(upstream: str, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-extender-stacks-"))
    tls = make_tls(work, upstream)
    result: dict[str, Any] = {"upstream": upstream, "work_dir": str(work)}
    for n, r in ((100, rounds), (1000, max(rounds // 4, 50))):
        runs = {stack: measure(stack, n, r, tls, work) for stack in ("ours", upstream)}
        for mode in ("memo", "cold"):
            figures = {}
            for stack, m in runs.items():
                f, b = m[mode]["filter"], m[mode]["bind"]
                key = "ours" if stack == "ours" else "upstream"
                figures[key] = {
                    "filter_p50": statistics.median(f),
                    "filter_p99": _pct(f, 99),
                    "bind_p50": statistics.median(b) if b else None,
                    "bind_p99": _pct(b, 99) if b else None,
                    "binds": len(b),
                }
                for k, v in figures[key].items():
                    unit = "" if k == "binds" else "ms_"
                    result[f"{key}_{k}_{unit}{n}_nodes_{mode}"] = round(v, 3) if v else v
                print(
                    f"{key} {n} nodes {mode}: filter p50 {figures[key]['filter_p50']:.2f} ms p99 "
                    f"{figures[key]['filter_p99']:.2f} ms, bind p50 {figures[key]['bind_p50']} ms "
                    f"({len(b)} binds)",
                    flush=True,
                )
            for k in ("filter_p50", "filter_p99", "bind_p50", "bind_p99"):
                o, u = figures["ours"][k], figures["upstream"][k]
                result[f"ratio_ours_over_upstream_{k}_{n}_nodes_{mode}"] = (
                    round(o / u, 3) if o and u else None
                )
    return result
