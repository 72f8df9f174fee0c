"""A stand-in for nodes in the controller tests: it plays kubelet (node objects, leases, pod status)
and a trivial round-robin scheduler for ``default-scheduler`` pods, until the real scheduler and node
agent exist."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kubeclient.client import ApiError, Kube
from kubeclient.informer import Informer
from testbed.controllers import ControllerManager, Options, util
from testbed.embedded import EmbeddedTestbed

Obj = dict[str, Any]


class FakeNodes:
    """Nodes that renew their leases, and bind / run / finish pods without a kubelet."""

    def __init__(self, kube: Kube, period: float = 0.2) -> None:
        self.kube = kube
        self.period = period
        self.nodes: dict[str, bool] = {}  # name -> renewing its lease
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ips = itertools.count(2)
        self._rr = itertools.count()
        self.pods = Informer(kube, "/api/v1/pods", name="fake-kubelet pods")
        self.node_cache = Informer(kube, "/api/v1/nodes", name="fake-kubelet nodes")
        self._wake = threading.Event()
        self.pods.add_handler(lambda *_: self._wake.set())
        self.node_cache.add_handler(lambda *_: self._wake.set())
        self._threads = [
            threading.Thread(target=self._leases, daemon=True),
            threading.Thread(target=self._pods_loop, daemon=True),
        ]

    def start(self) -> FakeNodes:
        self.pods.start()
        self.node_cache.start()
        self.pods.wait_synced()
        self.node_cache.wait_synced()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.pods.stop()
        self.node_cache.stop()
        for t in self._threads:
            t.join(5)

    # -- nodes ------------------------------------------------------------------------------------
    def add_node(
        self, name: str, *, labels: dict[str, str] | None = None, taints: list[Obj] | None = None
    ) -> Obj:
        at = util.now()
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **(labels or {}),
                },
            },
            "spec": {"taints": taints} if taints else {},
        }
        node = self.kube.create("/api/v1/nodes", body)
        node["status"] = {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [self._ready_condition(at)],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "operatingSystem": "linux", "architecture": "amd64"},
        }
        self.kube.update(f"/api/v1/nodes/{name}/status", node)
        with self._lock:
            self.nodes[name] = True
        self._renew(name)
        return node

    @staticmethod
    def _ready_condition(at: str) -> Obj:
        return {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
            "lastHeartbeatTime": at,
            "lastTransitionTime": at,
        }

    def pause(self, name: str) -> None:
        """Stop renewing the node's lease (the kubelet went away)."""
        with self._lock:
            self.nodes[name] = False

    def resume(self, name: str) -> None:
        with self._lock:
            self.nodes[name] = True
        self._renew(name)

    def delete_node(self, name: str) -> None:
        with self._lock:
            self.nodes.pop(name, None)
        self.kube.delete(f"/api/v1/nodes/{name}")

    def _renew(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": util.now_micro()}
        try:
            lease = self.kube.get(path)
            lease["spec"] = {**lease.get("spec", {}), **spec}
            self.kube.update(path, lease)
        except ApiError as e:
            if e.status != 404:
                raise
            node = self.kube.get(f"/api/v1/nodes/{name}")
            self.kube.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": name,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [
                            {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
                        ],
                    },
                    "spec": spec,
                },
            )
        # like a kubelet, post Ready again if the node controller marked the node Unknown
        node = self.node_cache.get(name)
        ready = util.node_condition(node, "Ready") if node else None
        if node is not None and ready is not None and ready.get("status") != "True":
            fresh = self.kube.get(f"/api/v1/nodes/{name}")
            at = util.now()
            fresh["status"]["conditions"] = [self._ready_condition(at)]
            self.kube.update(f"/api/v1/nodes/{name}/status", fresh)

    def _leases(self) -> None:
        while not self._stop.wait(self.period):
            with self._lock:
                live = [n for n, on in self.nodes.items() if on]
            for n in live:
                try:
                    self._renew(n)
                except Exception:  # a node deleted meanwhile, or the apiserver going away at teardown
                    if self._stop.is_set():
                        return

    # -- pods -----------------------------------------------------------------------------------------
    def _eligible(self, pod: Obj) -> list[str]:
        spec = pod.get("spec") or {}
        out = []
        for node in sorted(self.node_cache.items(), key=lambda n: n["metadata"]["name"]):
            name = node["metadata"]["name"]
            if name not in self.nodes or not util.node_matches_pod(spec, node):
                continue
            if util.untolerated_taints(
                spec.get("tolerations") or [], util.node_taints(node), ("NoSchedule", "NoExecute")
            ):
                continue
            out.append(name)
        return out

    def _pods_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            for pod in self.pods.items():
                try:
                    self._step(pod)
                except Exception:  # conflicts with the controllers, or teardown
                    if self._stop.is_set():
                        return

    def _step(self, pod: Obj) -> None:
        m, spec = pod["metadata"], pod.get("spec") or {}
        path = f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}"
        node = spec.get("nodeName")
        if m.get("deletionTimestamp"):
            if self.nodes.get(node):
                self.kube.delete(path, gracePeriodSeconds=0)  # the kubelet confirms the deletion
            return
        if not node:
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                return
            names = self._eligible(pod)
            if names:
                target = names[next(self._rr) % len(names)]
                self.kube.create(
                    f"{path}/binding",
                    {
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": m["name"]},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": target},
                    },
                )
            return
        if not self.nodes.get(node) or util.pod_phase(pod) != "Pending":
            return
        at = util.now()
        command = (spec.get("containers") or [{}])[0].get("command")
        phase = "Running"
        if command == ["true"]:
            phase = "Succeeded"
        elif command == ["false"]:
            phase = "Failed"
        statuses = []
        for c in spec.get("containers") or []:
            if phase == "Running":
                state: Obj = {"running": {"startedAt": at}}
            else:
                code = 0 if phase == "Succeeded" else 1
                state = {
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "startedAt": at,
                        "finishedAt": at,
                    }
                }
            statuses.append(
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "containerID": f"testbed://{m['uid']}-{c['name']}",
                    "ready": phase == "Running",
                    "restartCount": 0,
                    "started": phase == "Running",
                    "state": state,
                }
            )
        ready = "True" if phase == "Running" else "False"
        reason = {} if phase == "Running" else {"reason": "PodCompleted"}
        ip = next(self._ips)
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": f"10.244.{ip // 250}.{ip % 250 + 1}",
            "startTime": at,
            "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
            "conditions": [
                {
                    "type": "Initialized",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": at,
                    **reason,
                },
                {"type": "Ready", "status": ready, "lastProbeTime": None, "lastTransitionTime": at, **reason},
                {
                    "type": "ContainersReady",
                    "status": ready,
                    "lastProbeTime": None,
                    "lastTransitionTime": at,
                    **reason,
                },
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": at},
            ],
            "containerStatuses": statuses,
        }
        new = dict(pod)
        new["status"] = status
        self.kube.update(f"{path}/status", new)

    def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        pod = self.kube.get(path)
        for c in pod["status"]["conditions"]:
            if c["type"] in ("Ready", "ContainersReady"):
                c["status"] = "True" if ready else "False"
                c["lastTransitionTime"] = util.now()
        for cs in pod["status"].get("containerStatuses") or []:
            cs["ready"] = ready
        self.kube.update(f"{path}/status", pod)


def wait_for(fn: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    """Poll ``fn`` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except ApiError as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def testbed() -> Iterator[EmbeddedTestbed]:
    with EmbeddedTestbed(33, bookmark_interval=0.5, history=5000) as tb:
        yield tb


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Iterator[Kube]:
    k = Kube.from_config(str(testbed.kubeconfig_path))
    yield k
    k.close()


@pytest.fixture(scope="module")
def nodes(kube: Kube) -> Iterator[FakeNodes]:
    fake = FakeNodes(kube).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def manager(kube: Kube, testbed: EmbeddedTestbed) -> Iterator[ControllerManager]:
    opts = Options(node_monitor_grace_period=1.5, job_backoff_base=0.1, pod_gc_quarantine=0.5)
    mgr = ControllerManager(
        Kube.from_config(str(testbed.kubeconfig_path)), testbed.minor, options=opts
    ).start()
    yield mgr
    mgr.stop()


_ns = itertools.count()


@pytest.fixture
def ns(kube: Kube) -> str:
    name = f"c{next(_ns)}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # pods need the namespace's default ServiceAccount, which the apiserver creates right after
    wait_for(lambda: kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"), what="default SA")
    return name
