"""Chaos: kill each testbed component in turn during a GPU pod burst and check nothing is lost.

The testbed comes up as the conformance harness brings it up (``conformance/backends/testbed.py``:
``testbed up`` with the two-node A100 inventory, the HAMi stack installed by its chart). Then, for each
component in turn, a batch of the burst's GPU pods (``restartPolicy: Always``, 1 GPU and 2000 MiB each,
``hami-scheduler``) is created and the component is killed with SIGKILL at once:

* ``apiserver``, ``scheduler``, ``controllers``, ``node-agent``: the testbed's own processes (``state.json``
  names their pids); the supervisor restarts them (the apiserver on its persisted state and port, the
  node agent adopting its running pods: their containers keep running, with no restart counted);
* ``extender``: the ``vgpu-scheduler-extender`` container's process of the ``hami-scheduler`` pod;
* ``device-plugin``: the ``device-plugin`` container's process of one node's device plugin pod;
  (both found through the node agent's pod checkpoint); the node agent restarts them.

Time to recover is from the kill until the component works again: a probe pod bound and started through
the restarted apiserver (its watchers resumed) and every node's Lease renewed (apiserver), a probe pod
bound (scheduler), a probe ReplicaSet's pod created (controllers), every node's Lease renewed by the new
agent, every ``hami-system`` pod Ready and the GPUs allocatable again (node agent: the device plugins
re-registered), the killed container Ready again with one more restart and the nodes' GPUs allocatable
(extender, device plugin). ``agent_kill_restarted_pods`` counts the ``hami-system`` container restarts
the node-agent kill caused (adoption: 0). Invariants checked at the end: every burst pod Running, no
over-commit (per-GPU memory from the pods' ``hami.io/vgpu-devices-allocated`` <= the device's memory in
the node's register annotation), no lost object (every created pod and the chart's workloads still
there), no node lock older than its 5 min expiry, no process of the testbed left after ``down``.

    .venv/bin/python bench/chaos.py [--pods 50] [--components scheduler,extender,...]

The last line printed is one JSON object: ``recover_s`` per component, ``invariants``, ``ok``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from urllib3.exceptions import HTTPError  # noqa: E402

from conformance import contract as C  # noqa: E402
from conformance.backends import Options  # noqa: E402
from conformance.backends.testbed import TestbedBackend  # noqa: E402
from conformance.kube import ContainerSpec, describe_pod, pod_manifest  # noqa: E402
from hami_stack.protocol.assignment import decode_pod_devices  # noqa: E402
from hami_stack.protocol.nodelock import DEFAULT_TIMEOUT, parse_lock  # noqa: E402
from hami_stack.protocol.register import decode_register  # noqa: E402
from kubeclient.client import ApiError, Kube  # noqa: E402
from testbed.node.podcheckpoint import NAME as CHECKPOINT  # noqa: E402
from testbed.supervisor import Containment, descendants  # noqa: E402

ALL = ["scheduler", "controllers", "node-agent", "extender", "device-plugin", "apiserver"]
SUPERVISED = {"scheduler": "scheduler", "controllers": "controllers", "node-agent": "nodes",
              "apiserver": "apiserver"}
NS = "chaos"
HAMI_NS = "hami-system"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait(fn: Any, timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
        except (ApiError, OSError, KeyError, ValueError, HTTPError):
            v = None  # the component under test may be down: keep asking
        if v:
            return v
        time.sleep(every)
    return None


class Chaos:
    def __init__(self, kube: Kube, data_dir: Path) -> None:
        self.kube = kube
        self.data_dir = data_dir
        self.created: list[str] = []
        self.agent_kill_restarted_pods: int | None = None

    # -- the burst ---------------------------------------------------------------------------------

    def create_pods(self, names: list[str]) -> None:
        for name in names:
            pod = pod_manifest(name, [ContainerSpec(gpus=1, mem=2000,
                                                    args=["--alloc-mib", "0", "--kernel-seconds", "0",
                                                          "--hold-seconds", "3600"])],
                               scheduler_name="hami-scheduler", restart_policy="Always")
            while True:
                try:
                    self.kube.create(f"/api/v1/namespaces/{NS}/pods", pod)
                    break
                except ApiError as e:
                    if e.status == 409:
                        break
                    time.sleep(0.5)  # the webhook or the apiserver is down: a client retries
                except (OSError, HTTPError):
                    time.sleep(0.5)  # the apiserver is restarting
            self.created.append(name)

    # -- components --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "state.json").read_text())

    def hami_pod(self, prefix: str, node: str | None = None) -> dict[str, Any]:
        for p in self.kube.get(f"/api/v1/namespaces/{HAMI_NS}/pods")["items"]:
            on_node = node is None or p["spec"].get("nodeName") == node
            if p["metadata"]["name"].startswith(prefix) and on_node:
                return p  # type: ignore[no-any-return]
        raise KeyError(prefix)

    def container_pids(self, pod: dict[str, Any], container: str) -> list[int]:
        path = self.data_dir / "nodes" / pod["spec"]["nodeName"] / CHECKPOINT
        entry = json.loads(path.read_text())["pods"][pod["metadata"]["uid"]]
        return [p["pid"] for p in entry["processes"] if p["container"] == container]

    @staticmethod
    def restarts(pod: dict[str, Any], container: str) -> int:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs["name"] == container:
                return int(cs.get("restartCount") or 0)
        return -1

    def container_back(self, name: str, container: str, before: int) -> bool:
        p = self.kube.get(f"/api/v1/namespaces/{HAMI_NS}/pods/{name}")
        cs = next(c for c in p["status"]["containerStatuses"] if c["name"] == container)
        return bool(cs.get("ready")) and int(cs.get("restartCount") or 0) > before and self.gpus_allocatable()

    def gpus_allocatable(self) -> bool:
        nodes = self.kube.get("/api/v1/nodes")["items"]
        return all(int(n["status"].get("allocatable", {}).get(C.GPU, "0")) > 0 for n in nodes)

    def hami_restarts(self) -> dict[str, int]:
        return {p["metadata"]["name"]: sum(int(c.get("restartCount") or 0)
                                           for c in p["status"].get("containerStatuses") or [])
                for p in self.kube.get(f"/api/v1/namespaces/{HAMI_NS}/pods")["items"]}

    def hami_ready(self) -> bool:
        pods = self.kube.get(f"/api/v1/namespaces/{HAMI_NS}/pods")["items"]
        return bool(pods) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
            for p in pods)

    def leases_renewed(self, since: float) -> bool:
        leases = self.kube.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")["items"]
        stamps = [dt.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00")).timestamp()
                  for lease in leases]
        return bool(stamps) and all(t >= since for t in stamps)

    def kubelet_ports(self) -> dict[str, int]:
        return {n["metadata"]["name"]: int(((n["status"].get("daemonEndpoints") or {}).get("kubeletEndpoint")
                                            or {}).get("Port") or 0)
                for n in self.kube.get("/api/v1/nodes")["items"]}

    def probe_scheduled(self, running: bool = False) -> bool:
        """A probe pod is bound (or, with ``running``, reported Running by its node agent)."""
        name = f"probe-{int(time.monotonic() * 1000)}"
        self.kube.create(f"/api/v1/namespaces/{NS}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"chaos-probe": "1"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "600"]}]}})
        try:
            def done() -> bool:
                p = self.kube.get(f"/api/v1/namespaces/{NS}/pods/{name}")
                if running:
                    return (p.get("status") or {}).get("phase") == "Running"
                return bool(p["spec"].get("nodeName"))

            return bool(wait(done, 15, 0.1))
        finally:
            self.kube.delete(f"/api/v1/namespaces/{NS}/pods/{name}", gracePeriodSeconds=0)

    def probe_controllers(self) -> bool:
        name = f"probe-rs-{int(time.monotonic() * 1000)}"
        labels = {"chaos-rs": name}
        self.kube.create(f"/apis/apps/v1/namespaces/{NS}/replicasets", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox",
                                                           "command": ["sleep", "600"]}]}}}})
        try:
            return bool(wait(lambda: self.kube.get(f"/api/v1/namespaces/{NS}/pods",
                                                   labelSelector=f"chaos-rs={name}")["items"], 15, 0.1))
        finally:
            self.kube.delete(f"/apis/apps/v1/namespaces/{NS}/replicasets/{name}")

    def kill(self, component: str, timeout: float) -> float | None:
        """Kill one component; seconds until it works again (None: not within ``timeout``)."""
        if component in SUPERVISED:
            name = SUPERVISED[component]
            before = self.state()["components"][name]
            hami_before = self.hami_restarts()
            ports_before = self.kubelet_ports()
            os.kill(int(before["pid"]), signal.SIGKILL)
            t0 = time.monotonic()
            wall0 = time.time()

            def back() -> bool:
                now = self.state()["components"][name]
                if now["restarts"] <= before["restarts"] or not now.get("pid"):
                    return False
                if component == "scheduler":
                    return self.probe_scheduled()
                if component == "controllers":
                    return self.probe_controllers()
                if component == "apiserver":
                    # the whole loop works again: scheduler and node agent informers resumed, a new
                    # pod is bound and started, and the agents renew their leases
                    return self.probe_scheduled(running=True) and self.leases_renewed(wall0)
                # the new agent has registered (every node's kubelet endpoint is its new one) and renews
                # the leases; its pods were adopted (Ready, not restarted) and the device plugins have
                # registered again (GPUs allocatable in the status it posted)
                ports = self.kubelet_ports()
                return (all(ports.get(n) != p for n, p in ports_before.items()) and self.leases_renewed(wall0)
                        and self.hami_ready() and self.gpus_allocatable())

            took = time.monotonic() - t0 if wait(back, timeout) else None
            if component == "node-agent":
                after = self.hami_restarts()
                self.agent_kill_restarted_pods = sum(max(0, after.get(n, 0) - k)
                                                     for n, k in hami_before.items())
            return took
        if component in ("extender", "device-plugin"):
            prefix, container = (("hami-scheduler", "vgpu-scheduler-extender") if component == "extender"
                                 else ("hami-device-plugin", "device-plugin"))
            pod = self.hami_pod(prefix)
            before_restarts = self.restarts(pod, container)
            pids = self.container_pids(pod, container)
            if not pids:
                raise RuntimeError(f"no process of {pod['metadata']['name']}/{container} in the checkpoint")
            for pid in pids:
                os.killpg(pid, signal.SIGKILL)
            t0 = time.monotonic()
            name = pod["metadata"]["name"]
            ok = wait(lambda: self.container_back(name, container, before_restarts), timeout)
            return time.monotonic() - t0 if ok else None
        raise ValueError(f"cannot kill {component!r}")

    # -- invariants --------------------------------------------------------------------------------

    def invariants(self) -> dict[str, Any]:
        pods = {p["metadata"]["name"]: p for p in self.kube.get(f"/api/v1/namespaces/{NS}/pods")["items"]
                if not (p["metadata"].get("labels") or {}).get("chaos-probe")}
        not_running = sorted(n for n in self.created if (pods.get(n) or {}).get("status", {}).get("phase")
                             != "Running")
        lost = sorted(set(self.created) - set(pods))
        capacity: dict[str, int] = {}
        for n in self.kube.get("/api/v1/nodes")["items"]:
            ann = n["metadata"].get("annotations") or {}
            if C.NVIDIA_REGISTER in ann:
                for d in decode_register(ann[C.NVIDIA_REGISTER]):
                    capacity[d.id] = d.devmem
        used: dict[str, int] = {}
        for p in pods.values():
            value = (p["metadata"].get("annotations") or {}).get(C.NVIDIA_ALLOCATED)
            if value:
                for ctr in decode_pod_devices(value):
                    for dev in ctr:
                        used[dev.uuid] = used.get(dev.uuid, 0) + dev.usedmem
        over = {u: (m, capacity.get(u)) for u, m in used.items()
                if capacity.get(u) is None or m > capacity[u]}
        now = dt.datetime.now(dt.UTC)
        stuck = {}
        for n in self.kube.get("/api/v1/nodes")["items"]:
            lock = (n["metadata"].get("annotations") or {}).get(C.NODE_LOCK)
            if lock and now - parse_lock(lock).time > DEFAULT_TIMEOUT:
                stuck[n["metadata"]["name"]] = lock
        chart = {
            "deployments": [d["metadata"]["name"] for d in
                            self.kube.get(f"/apis/apps/v1/namespaces/{HAMI_NS}/deployments")["items"]],
            "daemonsets": [d["metadata"]["name"] for d in
                           self.kube.get(f"/apis/apps/v1/namespaces/{HAMI_NS}/daemonsets")["items"]],
        }
        # Allocate runs HAMi's plugin, whose pod patch passes the stack's webhook: a pod admitted on a
        # node while the extender (which serves the webhook) is down fails, as on a real cluster
        outage = sorted(n for n in not_running if "hami-scheduler.hami-system.svc" in str(
            (pods.get(n) or {}).get("status", {}).get("message", "")))
        why = {n: describe_pod(pods.get(n)) + " " + str({k: (pods.get(n) or {}).get("status", {}).get(k)
                                                          for k in ("reason", "message")})
               for n in not_running[:5]}
        return {"pods": len(self.created), "not_running": not_running, "not_running_why": why,
                "failed_webhook_down": outage,
                "lost": lost, "over_commit": over,
                "gpu_memory_used_mib": sum(used.values()), "stuck_locks": stuck, "chart_workloads": chart}


def run(components: list[str], pods: int, k8s: str, recover_timeout: float, settle: float) -> dict[str, Any]:
    backend = TestbedBackend()
    log(f"testbed {k8s} with the HAMi chart: provisioning")
    info = backend.provision(Options(k8s_version=k8s, timeout=180))
    data_dir = Path(info.state["data_dir"])
    kube = Kube.from_config(info.kubeconfig, user_agent="chaos")
    result: dict[str, Any] = {"k8s": k8s, "recover_s": {}, "skipped": {}, "goal_s": 15.0}
    orphans: list[int] = []
    tracked: set[int] = set()
    try:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        chaos = Chaos(kube, data_dir)
        killable = list(components)
        per = -(-pods // max(1, len(killable)))
        names = [f"burst-{i}" for i in range(pods)]
        for i, comp in enumerate(killable):
            batch = names[i * per:(i + 1) * per]
            creator = threading.Thread(target=chaos.create_pods, args=(batch,), daemon=True)
            creator.start()
            time.sleep(0.5)  # the burst is under way
            log(f"killing {comp} ({len(batch)} pods being created)")
            t = chaos.kill(comp, recover_timeout)
            result["recover_s"][comp] = round(t, 2) if t is not None else None
            log(f"{comp}: back in {t:.2f}s" if t is not None
                else f"{comp}: NOT back within {recover_timeout:.0f}s")
            creator.join(120)
        chaos.create_pods(names[len(killable) * per:])  # any rest
        log("waiting for every burst pod to run")
        wait(lambda: not chaos.invariants()["not_running"], settle, 1.0)
        result["invariants"] = chaos.invariants()
        agent_log = (data_dir / "logs" / "nodes.log").read_text(errors="replace").splitlines()
        result["invariants"]["agent_log"] = {
            n: [ln[:300] for ln in agent_log if n in ln][-6:]
            for n in result["invariants"]["not_running"][:3]}
        result["agent_kill_restarted_pods"] = chaos.agent_kill_restarted_pods
        st = chaos.state()
        result["restarts"] = {k: v["restarts"] for k, v in st["components"].items()}
        tracked = set(Containment(data_dir).pids()) | set(descendants(int(st["pid"]))) | {int(st["pid"])}
    finally:
        kube.close()
        log("testbed down")
        backend.teardown(info)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        orphans = [p for p in tracked if Path(f"/proc/{p}").exists()
                   and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
        if not orphans:
            break
        time.sleep(0.2)
    inv = result["invariants"]
    inv["orphans"] = orphans
    result["ok"] = (not inv["not_running"] and not inv["lost"] and not inv["over_commit"]
                    and not inv["stuck_locks"] and not orphans
                    and all(v is not None and v <= result["goal_s"] for v in result["recover_s"].values()))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k8s", default="1.33")
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--components", default=",".join(ALL), help=f"comma-separated, of {', '.join(ALL)}")
    ap.add_argument("--recover-timeout", type=float, default=60.0, help="give up on a component after this")
    ap.add_argument("--settle", type=float, default=180.0, help="seconds for every pod to end Running")
    args = ap.parse_args(argv)
    comps = [c for c in args.components.split(",") if c]
    bad = [c for c in comps if c not in ALL]
    if bad:
        ap.error(f"unknown component(s) {', '.join(bad)}; known: {', '.join(ALL)}")
    result = run(comps, args.pods, args.k8s, args.recover_timeout, args.settle)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
