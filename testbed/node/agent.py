"""Node agents: a kubelet's job for emulated nodes (registration, status, lease, kubelet API, pods).

One process runs many agents. They share an asyncio loop (timers, the kubelet HTTPS servers, the
port forwarders), a small thread pool for blocking API calls, one API client and one pod informer;
executed pods get a worker thread each (``runtime.py``).

In-process use::

    agents = NodeAgents(kube, load_inventory("inventories/emulated/two-nodes-a100.yaml"), data_dir).start()
    ...
    agents.stop()
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import logging
import os
import platform
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubeclient.client import ApiError, Kube
from kubeclient.informer import Informer
from testbed import pki
from testbed.k8s.timefmt import now_micro as _micro_now

from . import netns, podcheckpoint
from .devices_api import DeviceManager, NullDeviceManager
from .events import Recorder
from .inventory import NodeSpec, node_address
from .kubelet_server import serve
from .runtime import PodRuntime, ensure_dirs
from .runtime import now as _now

log = logging.getLogger("testbed.node")

TESTBED_RUNTIME_VERSION = "1.0.0"
LEASE_NS = "kube-node-lease"


@dataclass
class AgentOptions:
    lease_interval: float = 10.0  # kubelet: renew about every 10 s
    lease_duration: int = 40  # nodeLeaseDurationSeconds
    status_report_interval: float = (
        300.0  # nodeStatusReportFrequency: unchanged status is re-posted every 5 min
    )
    backoff_base: float = 10.0  # CrashLoopBackOff / ImagePullBackOff start
    mount_retry: float = 2.0
    use_netns: bool = os.geteuid() == 0
    use_mount_ns: bool = os.geteuid() == 0
    create_hardware: bool = True
    kubelet_server: bool = True


NODE_ADDRESS_ENV = "TESTBED_NODE_ADDRESS"


def agent_address(spec: NodeSpec, nodes: int) -> str:
    """The node's InternalIP (its kubelet server listens there): ``$TESTBED_NODE_ADDRESS`` for the
    one node of a lab host's agent (the host's routable lab address, so the control plane on
    another host reaches its kubelet), else a loopback address of its own (``node_address``)."""
    env = os.environ.get(NODE_ADDRESS_ENV)
    if env and nodes == 1:
        return env
    return node_address(spec.index)


@functools.cache  # node_status runs on every lease tick; the OS does not change under us
def _os_image() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "Linux"


@functools.cache
def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


class NodeAgent:
    """One emulated node. Created and driven by :class:`NodeAgents`."""

    def __init__(
        self, group: NodeAgents, spec: NodeSpec, device_manager: DeviceManager | None = None
    ) -> None:
        self.group = group
        self.spec = spec
        self.name = spec.name
        self.kube = group.kube
        self.options = group.options
        self.root = group.data_dir / "nodes" / spec.name
        self.ip = agent_address(spec, len(group.inventory))
        self.devices: DeviceManager = device_manager or NullDeviceManager()
        self.recorder = Recorder(self.kube, self.name)
        self.runtime = PodRuntime(self)
        self.ready = True
        self.not_ready_message = ""
        self.kubelet_port = 0
        self._runner: Any = None
        self._status: dict[str, Any] | None = None
        self._lease_rv = ""
        self._last_report = 0.0
        self._hb = _now()
        self.stopped = False
        self.hardware_dir: Path | None = None

    # -- shared resources -------------------------------------------------------------------------------

    @property
    def minor(self) -> int:
        return self.group.minor

    @property
    def ca_pem(self) -> bytes:
        return self.group.ca_pem

    @property
    def api_addr(self) -> tuple[str, int]:
        return self.group.api_addr

    @property
    def forwarder(self) -> netns.Forwarder:
        return self.group.forwarder

    def service_env(self) -> dict[str, str]:
        host, port = self.group.api_addr
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.group.submit(fn, *args)

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.group.later(delay, fn, *args)

    # -- node object ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        ensure_dirs(self.root)
        nvidia = self.spec.hardware.get("nvidia")
        if nvidia and not self.spec.simulated and self.options.create_hardware:
            from testbed.hardware import create_state

            self.hardware_dir = self.root / "hardware" / "nvidia"
            create_state(self.hardware_dir, nvidia, node_name=self.name).close()
        ascend = self.spec.hardware.get("ascend")
        if ascend and not self.spec.simulated and self.options.create_hardware:
            from testbed.hardware.ascend import create_npu_state

            create_npu_state(self.root / "hardware" / "ascend", ascend, node_name=self.name)
        if not self.spec.simulated and self.options.create_hardware:
            from testbed.hardware import families

            # the data-driven families (Hygon DCU, Cambricon MLU, ...): one devices file per vendor
            for vendor in sorted(set(self.spec.hardware) & set(families.MODELS)):
                hw = self.spec.hardware[vendor]
                families.create_state(
                    families.node_state_dir(self.root), vendor, hw["model"], hw["count"], node_name=self.name
                )
                families.create_device_nodes(self.root, vendor, hw["count"])

    def capacity(self) -> tuple[dict[str, str], dict[str, str]]:
        cap = dict(self.spec.capacity)
        alloc = self.spec.allocatable()
        cap.setdefault("hugepages-1Gi", "0")
        cap.setdefault("hugepages-2Mi", "0")
        alloc.setdefault("hugepages-1Gi", "0")
        alloc.setdefault("hugepages-2Mi", "0")
        for res, (c, a) in self.devices.capacity().items():
            cap[res], alloc[res] = str(c), str(a)
        return cap, alloc

    def conditions(self) -> list[dict[str, Any]]:
        old = {c["type"]: c for c in (self._status or {}).get("conditions") or []}

        def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
            prev = old.get(ctype)
            trans = prev["lastTransitionTime"] if prev and prev["status"] == status else _now()
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": self._hb,
                "lastTransitionTime": trans,
            }

        ready = (
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
            if self.ready
            else cond(
                "Ready", "False", "KubeletNotReady", self.not_ready_message or "container runtime is down"
            )
        )
        return [
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            ready,
        ]

    def node_status(self) -> dict[str, Any]:
        cap, alloc = self.capacity()
        info = {
            "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, f"machine/{self.name}").hex,
            "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"system/{self.name}")),
            "bootID": self.group.boot_id,
            "kernelVersion": platform.release(),
            "osImage": _os_image(),
            "containerRuntimeVersion": f"testbed://{TESTBED_RUNTIME_VERSION}",
            "kubeletVersion": self.group.kubelet_version,
            "operatingSystem": "linux",
            "architecture": _arch(),
        }
        if self.minor <= 30:
            info["kubeProxyVersion"] = self.group.kubelet_version
        return {
            "capacity": cap,
            "allocatable": alloc,
            "conditions": self.conditions(),
            "addresses": [
                {"type": "InternalIP", "address": self.ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": info,
            "images": [],
        }

    def register(self) -> None:
        arch = _arch()
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
            **self.spec.labels,
        }
        annotations = {
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            **self.spec.annotations,
        }
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": annotations},
            "spec": {},
        }
        if self.spec.taints:
            body["spec"]["taints"] = self.spec.taints
        status = self.node_status()
        body["status"] = status
        try:
            self.kube.create("/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
            # re-registration after an agent restart: the kubelet reconciles labels and status
            self.kube.patch(f"/api/v1/nodes/{self.name}", {"metadata": {"labels": labels}}, kind="merge")
        self.post_status()
        self.ensure_lease()
        self.recorder.node_event("Normal", "Starting", "Starting kubelet.")
        self.recorder.node_event("Normal", "NodeReady", f"Node {self.name} status is now: NodeReady")

    def post_status(self) -> None:
        self._hb = _now()
        st = self.node_status()
        self.kube.patch(f"/api/v1/nodes/{self.name}/status", {"status": st}, kind="merge")
        self._status = st
        self._last_report = _mono()

    def status_changed(self) -> bool:
        if self._status is None:
            return True
        new = self.node_status()
        strip = lambda s: {k: v for k, v in s.items() if k != "conditions"}  # noqa: E731
        old_c = [(c["type"], c["status"], c["message"]) for c in self._status["conditions"]]
        new_c = [(c["type"], c["status"], c["message"]) for c in new["conditions"]]
        return strip(new) != strip(self._status) or old_c != new_c

    def ensure_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"
        node = self.kube.get(f"/api/v1/nodes/{self.name}")
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": LEASE_NS,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
                ],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": self.options.lease_duration,
                "renewTime": _micro_now(),
            },
        }
        try:
            out = self.kube.create(path, body)
        except ApiError as e:
            if e.status != 409:
                raise
            out = self.kube.get(f"{path}/{self.name}")
            out["spec"].update(body["spec"])
            out = self.kube.update(f"{path}/{self.name}", out)
        self._lease_rv = out["metadata"]["resourceVersion"]
        self._lease = out

    def renew_lease(self) -> None:
        if self.stopped or not self.ready:
            return  # a NotReady (stopped) kubelet no longer renews; the lease then goes stale
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{self.name}"
        lease = dict(self._lease)
        lease["spec"] = {**lease["spec"], "renewTime": _micro_now()}
        try:
            self._lease = self.kube.update(path, lease)
        except ApiError as e:
            if e.status in (404, 409):
                self.ensure_lease()
            else:
                log.warning("node %s: lease renewal failed: %s", self.name, e)
                raise
        if self.status_changed() or _mono() - self._last_report >= self.options.status_report_interval:
            self.post_status()

    def set_ready(self, ready: bool, message: str = "") -> None:
        """Report NotReady (``ready=False``) or Ready again; posted at once."""
        self.ready = ready
        self.not_ready_message = message
        self.post_status()
        if ready:
            self.ensure_lease()

    def on_devices_changed(self) -> None:
        self.submit(self._safe_post)

    def _safe_post(self) -> None:
        try:
            if self.status_changed():
                self.post_status()
        except Exception as e:
            log.warning("node %s: status update failed: %r", self.name, e)


def _mono() -> float:
    return time.monotonic()


class NodeAgents:
    """Runs one agent per inventory node in this process."""

    def __init__(
        self,
        kube: Kube,
        inventory: list[NodeSpec],
        data_dir: str | Path,
        *,
        options: AgentOptions | None = None,
        device_managers: Callable[[NodeAgent], DeviceManager] | None = None,
        kubeconfig: str | None = None,
    ) -> None:
        self.kube = kube
        self.inventory = inventory
        self.data_dir = Path(data_dir).resolve()
        self.options = options or AgentOptions()
        self.device_managers = device_managers
        self.agents: dict[str, NodeAgent] = {}
        self.loop = asyncio.new_event_loop()
        self.pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="node-agent")
        self.forwarder = netns.Forwarder(self.loop)
        self.boot_id = str(uuid.uuid4())
        cfg = kube.api.configuration
        u = urlparse(cfg.host)
        self.api_addr = (u.hostname or "127.0.0.1", u.port or 443)
        self.ca_pem = Path(cfg.ssl_ca_cert).read_bytes() if cfg.ssl_ca_cert else b""
        self.minor = 33
        self.kubelet_version = "v1.33.0"
        self._thread = threading.Thread(target=self._run_loop, name="node-agents", daemon=True)
        self._informer: Informer | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._stopping = False

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if not self._stopping:
            self.pool.submit(_logged, fn, *args)

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        def fire() -> None:
            self.submit(fn, *args)

        self.loop.call_soon_threadsafe(lambda: self._timers.append(self.loop.call_later(delay, fire)))

    def start(self, wait_ready: bool = True) -> NodeAgents:
        ver = self.kube.get("/version")
        self.kubelet_version = ver.get("gitVersion", self.kubelet_version).split("+")[0]
        self.minor = int(str(ver.get("minor", "33")).rstrip("+"))
        self._thread.start()
        ssl_ctx = self._ssl_context()
        for spec in self.inventory:
            a = NodeAgent(self, spec)
            if self.device_managers is not None:
                a.devices = self.device_managers(a)
            a.devices.on_change(a.on_devices_changed)
            self.agents[spec.name] = a
        futs = []
        for a in self.agents.values():
            a.prepare()
            if self.options.kubelet_server:
                a._runner, a.kubelet_port = asyncio.run_coroutine_threadsafe(
                    serve(a, ssl_ctx), self.loop
                ).result(10)
            futs.append(self.pool.submit(self._register, a))
        for a in self.agents.values():
            # before any pod event: stop what a previous agent of the node left, re-claim its pod IPs
            podcheckpoint.recover(a.runtime)
        self._start_informer()
        if wait_ready:
            for f in futs:
                f.result(120)
        return self

    def _register(self, a: NodeAgent) -> None:
        delay = a.spec.simulate.node_ready_seconds if a.spec.simulated else 0
        if delay:
            time.sleep(delay)
        a.register()
        self._schedule_lease(a)

    def _schedule_lease(self, a: NodeAgent) -> None:
        # as the kubelet's lease controller: a failed renewal (the apiserver restarting) is retried
        # after 200 ms, doubling to 7 s, instead of waiting out the whole renew interval
        retry = [0.0]

        def tick() -> None:
            if a.stopped or self._stopping:
                return
            try:
                a.renew_lease()
                retry[0] = 0.0
            except Exception as e:
                log.debug("node %s: lease renewal failed (%r); retrying", a.name, e)
                retry[0] = min(7.0, retry[0] * 2) if retry[0] else 0.2
            self.later(retry[0] or self.options.lease_interval, tick)

        self.later(self.options.lease_interval, tick)

    def _start_informer(self) -> None:
        names = list(self.agents)
        fs = f"spec.nodeName={names[0]}" if len(names) == 1 else ""
        inf = Informer(self.kube, "/api/v1/pods", field_selector=fs, name="node-agent pods")

        def handle(etype: str, pod: dict[str, Any], _old: dict[str, Any] | None) -> None:
            agent = self.agents.get((pod.get("spec") or {}).get("nodeName") or "")
            if agent is not None and not agent.stopped:
                agent.runtime.on_pod(etype, pod)

        inf.add_handler(handle)
        self._informer = inf.start()

    def _ssl_context(self) -> ssl.SSLContext:
        ca = pki.make_ca("testbed-kubelet-ca")
        # one certificate for every agent of the process, naming each node's address
        hosts = ["localhost", "127.0.0.1",
                 *sorted({agent_address(s, len(self.inventory)) for s in self.inventory})]
        leaf = pki.make_serving_cert(ca, "testbed-kubelet", hosts)
        pki_dir = self.data_dir / "pki"
        pki_dir.mkdir(parents=True, exist_ok=True)
        # a process serving one node (the real control plane runs one per node, concurrently) keeps
        # its own pair, so two processes never write the same files
        stem = f"kubelet-{self.inventory[0].name}" if len(self.inventory) == 1 else "kubelet"
        leaf.write(pki_dir / f"{stem}.crt", pki_dir / f"{stem}.key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki_dir / f"{stem}.crt", pki_dir / f"{stem}.key")
        return ctx

    def agent(self, name: str) -> NodeAgent:
        return self.agents[name]

    def stop(self, grace: float = 0) -> None:
        """Stop every agent: pods' processes end, servers close. Nodes stay registered (a stopped
        kubelet does not delete its Node; the lease simply stops being renewed)."""
        if self._stopping:
            return
        self._stopping = True
        if self._informer is not None:
            self._informer.stop()
        for a in self.agents.values():
            a.stopped = True
            a.runtime.stop(grace)

        async def close() -> None:
            for t in self._timers:
                t.cancel()
            for a in self.agents.values():
                if a._runner is not None:
                    await a._runner.cleanup()
                # a device manager with a stop() (sync or async) is stopped with its node
                stop = getattr(a.devices, "stop", None)
                if callable(stop):
                    try:
                        res = stop()
                        if asyncio.iscoroutine(res):
                            await res
                    except Exception:
                        log.exception("node %s: device manager stop failed", a.name)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(15)
            self.forwarder.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> NodeAgents:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("node agent task %s failed", getattr(fn, "__name__", fn))


def kubeconfig_ca(kubeconfig: str) -> bytes:
    """The CA of a kubeconfig (inline data or file), for kube-root-ca.crt fallbacks."""
    import yaml

    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = (cfg.get("clusters") or [{}])[0].get("cluster") or {}
    if cluster.get("certificate-authority-data"):
        return base64.b64decode(cluster["certificate-authority-data"])
    if cluster.get("certificate-authority"):
        return Path(cluster["certificate-authority"]).read_bytes()
    return b""


__all__ = ["AgentOptions", "NodeAgent", "NodeAgents", "kubeconfig_ca"]
