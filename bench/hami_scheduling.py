"""Pods/s scheduled through a control plane's kube-scheduler and the HAMi extender (not a timed test).

``bench/controlplane.py --scheduling 100,1000 --extender`` calls :func:`measure`. The cluster is the
testbed of one minor (real or emulated control plane) with the stack installed by its chart, as a
conformance cell has it: one executed GPU node carries the chart's pods (the HAMi scheduler pod runs
the kube-scheduler of the minor, with the extender beside it), and ``nodes`` simulated nodes carry
the load. Each simulated node is registered as the HAMi device plugin would register it: 8
A100-80GB (10 slots each) in ``hami.io/node-nvidia-register`` and ``nvidia.com/gpu: 80``.

A simulated node runs no device plugin, so :class:`PluginStandIn` does the two things the plugin
does that scheduling waits on: it answers the scheduler's handshake (``Requesting`` ->
``Reported``), and, for a pod bound to a simulated node with ``hami.io/bind-phase: allocating``,
what Allocate does at its end: ``bind-phase: success`` and the release of the node lock the
extender's bind took. A real plugin does this only after the kubelet has started the pod, so
these figures are an upper bound for a cluster whose pods start instantly.

The pods go through the chart's mutating webhook (which sets ``schedulerName: hami-scheduler``),
request one GPU with 1000 MiB, and select the simulated nodes. The chart's node policy (binpack)
fills one node before the next, so most binds meet the lock of the bind before them: the figure
includes the extender's lock protocol, as a HAMi cluster has it.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cpu_by_process  # noqa: E402  (bench/ is on sys.path: this file's own directory)

from hami_stack.protocol import annotations as ann  # noqa: E402
from hami_stack.protocol.handshake import REQUESTING, reported  # noqa: E402
from hami_stack.protocol.nodelock import may_release  # noqa: E402
from hami_stack.protocol.register import DeviceInfo, encode_register_json  # noqa: E402
from kubeclient.client import ApiError, Kube  # noqa: E402
from kubeclient.informer import Informer  # noqa: E402

GPUS, SLOTS, MEM_MIB = 8, 10, 81920
NAMESPACE = "bench"
SIM_LABEL = "hami-bench/simulated"
BIND_PHASE_ALLOCATING = "allocating"
BIND_PHASE_SUCCESS = "success"


def inventory(nodes: int) -> dict[str, Any]:
    """One executed GPU node for the chart's pods, ``nodes`` simulated ones registered as HAMi's."""
    now = dt.datetime.now(dt.UTC)
    sims = []
    for i in range(nodes):
        devices = [DeviceInfo(id=f"GPU-sim{i:04d}-{g}", index=g, count=SLOTS, devmem=MEM_MIB, devcore=100,
                              type="NVIDIA-A100-SXM4-80GB", numa=g // 4) for g in range(GPUS)]
        sims.append({
            "name": f"sim-{i:04d}",
            "mode": "simulated",
            "labels": {SIM_LABEL: "true"},
            # the chart's own pods (the HAMi scheduler among them) must run on the executed node
            "taints": [{"key": SIM_LABEL, "value": "true", "effect": "NoSchedule"}],
            "annotations": {ann.NVIDIA_KEYS.register: encode_register_json(devices),
                            ann.NVIDIA_KEYS.handshake: reported(now)},
            "capacity": {"cpu": "96", "memory": "1Ti", "pods": "250", "nvidia.com/gpu": str(GPUS * SLOTS)},
        })
    executed = {
        "name": "gpu-node-1",
        "mode": "executed",
        "labels": {"gpu": "on", "nvidia.com/gpu.present": "true"},
        "capacity": {"cpu": "64", "memory": "512Gi", "pods": "110"},
        "hardware": {"nvidia": {"model": "A100-SXM4-80GB", "count": 1, "memory_mib": 81920}},
    }
    return {"nodes": [executed, *sims]}


class PluginStandIn:
    """What the simulated nodes' device plugins would write: handshake answers and Allocate's end."""

    def __init__(self, admin: Kube, plugin: Kube) -> None:
        # writes carry the plugin's identity; the watches the admin's (the plugin may read only its node)
        self.kube = plugin
        self.pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="plugin-stand-in")
        self.nodes = Informer(admin, "/api/v1/nodes", label_selector=f"{SIM_LABEL}=true", name="sim nodes")
        self.pods = Informer(admin, f"/api/v1/namespaces/{NAMESPACE}/pods", name="bench pods")
        self.nodes.add_handler(self._node)
        self.pods.add_handler(self._pod)
        self.allocated = 0
        self.errors: list[str] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> PluginStandIn:
        self.nodes.start()
        self.pods.start()
        if not (self.nodes.wait_synced(120) and self.pods.wait_synced(120)):
            raise SystemExit("the bench's node and pod watches did not sync within 120 s")
        return self

    def stop(self) -> None:
        self.nodes.stop()
        self.pods.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _node(self, kind: str, node: dict[str, Any], _old: dict[str, Any] | None) -> None:
        annotations = node["metadata"].get("annotations") or {}
        if kind != "DELETED" and annotations.get(ann.NVIDIA_KEYS.handshake, "").startswith(REQUESTING):
            self.pool.submit(self._guard, self._report, node["metadata"]["name"])

    def _report(self, name: str) -> None:
        patch = {"metadata": {"annotations": {ann.NVIDIA_KEYS.handshake: reported(dt.datetime.now(dt.UTC))}}}
        self.kube.patch(f"/api/v1/nodes/{name}", patch, "merge")

    def _pod(self, kind: str, pod: dict[str, Any], _old: dict[str, Any] | None) -> None:
        meta = pod["metadata"]
        phase = (meta.get("annotations") or {}).get(ann.BIND_PHASE)
        node = (pod.get("spec") or {}).get("nodeName") or (meta.get("annotations") or {}).get(ann.VGPU_NODE)
        if kind == "DELETED" or phase != BIND_PHASE_ALLOCATING or not node:
            return
        with self._lock:
            if meta["uid"] in self._seen:
                return
            self._seen.add(meta["uid"])
        self.pool.submit(self._guard, self._allocate, meta["name"], node)

    def _allocate(self, name: str, node: str) -> None:
        self.kube.patch(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}",
                        {"metadata": {"annotations": {ann.BIND_PHASE: BIND_PHASE_SUCCESS}}}, "merge")
        for _ in range(5):  # as the plugin does: only the holder's lock, guarded by resourceVersion
            current = self.kube.get(f"/api/v1/nodes/{node}")["metadata"]
            if not may_release((current.get("annotations") or {}).get(ann.NODE_LOCK), NAMESPACE, name):
                break
            try:
                self.kube.patch(f"/api/v1/nodes/{node}", {"metadata": {
                    "annotations": {ann.NODE_LOCK: None}, "resourceVersion": current["resourceVersion"]}},
                    "merge")
                break
            except ApiError as e:
                if e.status != 409:
                    raise
        with self._lock:
            self.allocated += 1

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # a stand-in failure is reported, not raised in a pool
            with self._lock:
                self.errors.append(f"{fn.__name__}{args}: {e}")


def gpu_pod(i: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"g{i}", "namespace": NAMESPACE},
        "spec": {
            "nodeSelector": {SIM_LABEL: "true"},
            "tolerations": [{"key": SIM_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                            "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"}}}],
        },
    }


def create_all(kube: Kube, path: str, bodies: list[dict[str, Any]], threads: int = 4) -> float:
    """Create ``bodies`` from ``threads`` clients at once (one client's round trips would cap the
    rate below what a scheduler binds); returns the seconds it took."""
    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda b: kube.create(path, b), bodies))
    return time.monotonic() - t


def measure(minor: str, mode: str, nodes: int, pods: int, work: Path, *, policy: str = "binpack",
            timeout: float = 900) -> dict[str, Any]:
    """Provision the cell (chart installed, node policy ``policy``), then time ``pods`` GPU pods until
    each is bound."""
    from conformance.backends import Options
    from conformance.backends.testbed import TestbedBackend

    inv = work / f"hami-sim-{mode}-{nodes}.yaml"
    inv.write_text(yaml.safe_dump(inventory(nodes), sort_keys=False))
    os.environ["TESTBED_CONTROL_PLANE"] = mode
    backend = TestbedBackend()
    t = time.monotonic()
    info = backend.provision(Options(
        k8s_version=minor, inventory=str(inv), timeout=600,
        chart_set=[f"scheduler.defaultSchedulerPolicy.nodeSchedulerPolicy={policy}"]))
    provision_s = time.monotonic() - t
    kube = Kube.from_config(info.kubeconfig)
    stand_in = None
    try:
        kube.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        stand_in = PluginStandIn(kube, _as_plugin(kube, info.kubeconfig, info.hami_namespace, work)).start()
        _wait_all_registered(kube, nodes)
        _wait_webhook(kube)
        cpu_before = cpu_by_kind()
        t = time.monotonic()
        create_s = create_all(kube, f"/api/v1/namespaces/{NAMESPACE}/pods", [gpu_pod(i) for i in range(pods)])
        bound = 0
        deadline = t + timeout
        while time.monotonic() < deadline:
            bound = sum(1 for p in stand_in.pods.items() if (p.get("spec") or {}).get("nodeName"))
            if bound >= pods:
                break
            time.sleep(0.2)
        wall = time.monotonic() - t
        cpu = {k: round(v - cpu_before.get(k, 0.0), 1) for k, v in cpu_by_kind().items()}
        on_nodes = {(p.get("spec") or {}).get("nodeName") for p in stand_in.pods.items()} - {None}
        return {
            "pods_per_s": round(bound / wall, 2),
            "node_policy": policy,
            "bound": bound,
            "pods": pods,
            "complete": bound >= pods,
            "wall_s": round(wall, 2),
            "create_s": round(create_s, 2),
            "nodes_used": len(on_nodes),
            "allocations_answered": stand_in.allocated,
            "stand_in_errors": stand_in.errors[:5],
            "provision_s": round(provision_s, 1),
            # CPU-s in the timed window by process kind (processes alive at its end; the machine's
            # other load included): which component bounds the rate
            "cpu_s": {k: v for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.5},
            "control_plane": mode,
            "git_version": info.git_version,
        }
    finally:
        if stand_in is not None:
            stand_in.stop()
        kube.close()
        backend.teardown(info)


def cpu_by_kind() -> dict[str, float]:
    """CPU-s used so far by each kind of live process on the machine (``bench/cpu_by_process.py`` kinds)."""
    out: dict[str, float] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := cpu_by_process._stat(int(d.name))) is not None:
            kind = cpu_by_process.kind_of(cpu_by_process._cmdline(int(d.name)))
            out[kind] = out.get(kind, 0.0) + st[1] / cpu_by_process.TICK
    return out


def _wait_all_registered(kube: Kube, nodes: int, timeout: float = 180) -> None:
    """Until every simulated node is Ready with ``nvidia.com/gpu`` allocatable (the agent may still be
    registering the last of a thousand when the chart is up)."""
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        items = kube.get("/api/v1/nodes", labelSelector=f"{SIM_LABEL}=true").get("items") or []
        ready = sum(1 for n in items
                    if _ready(n) and (n["status"].get("allocatable") or {}).get("nvidia.com/gpu"))
        if ready >= nodes:
            return
        time.sleep(1)
    raise SystemExit(
        f"only {ready} of {nodes} simulated nodes Ready with nvidia.com/gpu after {timeout:.0f} s")


def _as_plugin(kube: Kube, kubeconfig: str, namespace: str, work: Path) -> Kube:
    """A client with the device plugin's identity: the webhook lets only the stack's service accounts
    write allocation annotations, and the chart's RBAC decides what the plugin may patch."""
    sets = kube.get(f"/apis/apps/v1/namespaces/{namespace}/daemonsets").get("items") or []
    names = [d["spec"]["template"]["spec"].get("serviceAccountName") for d in sets
             if "device-plugin" in d["metadata"]["name"]]
    if not names or not names[0]:
        raise SystemExit(f"no device-plugin DaemonSet with a service account in {namespace}")
    token = kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{names[0]}/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200}})["status"]["token"]
    config = yaml.safe_load(Path(kubeconfig).read_text())
    for user in config.get("users") or []:
        user["user"] = {"token": token}
    path = work / "plugin-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return Kube.from_config(str(path), user_agent="bench-plugin-stand-in")


def _wait_webhook(kube: Kube, timeout: float = 120) -> None:
    """Until the chart's webhook answers (a dry-run create calls it): the Service gets its endpoint
    only once the extender labels its pod leader, which can be after helm's wait returns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kube.create(f"/api/v1/namespaces/{NAMESPACE}/pods", gpu_pod(-1), dryRun="All")
            return
        except ApiError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"the HAMi webhook did not answer within {timeout:.0f} s: {e}") from e
            time.sleep(1)


def _ready(node: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])
