"""Node agents against a live testbed apiserver: registration, lease, kubelet API, pods."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeclient.client import Kube
from testbed import clients
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, parse_inventory

from .helpers import cond, create_bound_pod, events, get_pod, pod_gone, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory(
        {
            "nodes": [
                {
                    "name": "node-a",
                    "labels": {"pool": "x"},
                    "capacity": {"cpu": "16"},
                    "hardware": {"nvidia": {"model": "A100-SXM4-80GB", "count": 2}},
                },
                {"name": "sim-a", "mode": "simulated", "simulate": {"podStartSeconds": 0.1}},
            ]
        }
    )
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, tmp_path_factory.mktemp("nodes"), options=opts) as ag:
        yield ag


def test_node_registered_with_status(agents: NodeAgents, kube: Kube) -> None:
    node = kube.get("/api/v1/nodes/node-a")
    st = node["status"]
    assert node["metadata"]["labels"]["pool"] == "x"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-a"
    assert st["capacity"]["cpu"] == "16" and st["allocatable"]["pods"] == "110"
    info = st["nodeInfo"]
    assert info["kubeletVersion"] == kube.get("/version")["gitVersion"]
    assert info["containerRuntimeVersion"].startswith("testbed://")
    assert info["operatingSystem"] == "linux"
    addrs = {a["type"]: a["address"] for a in st["addresses"]}
    assert addrs["InternalIP"].startswith("127.") and addrs["Hostname"] == "node-a"
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == agents.agent("node-a").kubelet_port
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "KubeletReady"
    assert conds["MemoryPressure"]["reason"] == "KubeletHasSufficientMemory"
    assert conds["DiskPressure"]["status"] == "False" and conds["PIDPressure"]["status"] == "False"
    root = agents.agent("node-a").root
    assert (root / "var/lib/kubelet/device-plugins").is_dir() and (root / "var/log/pods").is_dir()
    assert (root / "hardware/nvidia/gpus.conf").read_text().count("[gpu.") == 2


def test_lease_renewed(agents: NodeAgents, kube: Kube) -> None:
    path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-a"
    first = kube.get(path)
    assert first["spec"]["holderIdentity"] == "node-a"
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Node"
    wait_for(lambda: kube.get(path)["spec"]["renewTime"] != first["spec"]["renewTime"])


def test_not_ready_and_back(agents: NodeAgents, kube: Kube) -> None:
    a = agents.agent("sim-a")
    a.set_ready(False, "container runtime network not ready")
    ready = {c["type"]: c for c in kube.get("/api/v1/nodes/sim-a")["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "KubeletNotReady"
    assert ready["message"] == "container runtime network not ready"
    a.set_ready(True)
    ready = {c["type"]: c for c in kube.get("/api/v1/nodes/sim-a")["status"]["conditions"]}["Ready"]
    assert ready["status"] == "True"


def test_full_pod_init_configmap_downward_readiness(
    agents: NodeAgents, kube: Kube, core, ns: str, testbed: EmbeddedTestbed
) -> None:
    kube.create(
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "cfg"}, "data": {"greeting": "hello from configmap"}},
    )
    spec = {
        "initContainers": [
            {
                "name": "init-1",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "echo init one > /work/order; echo init-1 done"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            },
            {
                "name": "init-2",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "echo init two >> /work/order"],
                "volumeMounts": [{"name": "work", "mountPath": "/work"}],
            },
        ],
        "containers": [
            {
                "name": "app",
                "image": "busybox:1.36",
                "command": [
                    "sh",
                    "-c",
                    "cat /work/order; cat /cfg/greeting; echo; echo pod=$MY_POD node=$MY_NODE; "
                    "touch /work/ready; sleep 60",
                ],
                "env": [
                    {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                "readinessProbe": {"exec": {"command": ["test", "-f", "/work/ready"]}, "periodSeconds": 1},
                "volumeMounts": [
                    {"name": "work", "mountPath": "/work"},
                    {"name": "cfg", "mountPath": "/cfg"},
                ],
            }
        ],
        "volumes": [{"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}],
        "terminationGracePeriodSeconds": 2,
    }
    create_bound_pod(kube, ns, "node-a", "full", spec)
    pod = wait_for(lambda: (p := get_pod(kube, ns, "full")) and cond(p, "Ready") == "True" and p)
    st = pod["status"]
    assert st["phase"] == "Running" and st["podIP"].startswith("127.")
    assert [c["state"]["terminated"]["reason"] for c in st["initContainerStatuses"]] == ["Completed"] * 2
    app = st["containerStatuses"][0]
    assert app["ready"] and app["started"] and app["containerID"].startswith("testbed://")
    assert "running" in app["state"] and app["imageID"]
    assert {c["type"] for c in st["conditions"]} >= {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodReadyToStartContainers",
    }
    text = wait_for(lambda: (t := core.read_namespaced_pod_log("full", ns)) and "pod=" in t and t)
    assert text.splitlines()[:3] == ["init one", "init two", "hello from configmap"]
    assert "pod=full node=node-a" in text
    assert core.read_namespaced_pod_log("full", ns, tail_lines=1).strip() == "pod=full node=node-a"
    stamped = core.read_namespaced_pod_log("full", ns, timestamps=True).splitlines()[0]
    assert stamped.endswith(" init one") and stamped[:4].isdigit()
    assert core.read_namespaced_pod_log("full", ns, container="init-1").strip() == "init-1 done"
    reasons = [e["reason"] for e in events(kube, ns, "full")]
    assert {"Pulled", "Created", "Started"} <= set(reasons)
    kubectl = clients.kubectl_path(33)
    if kubectl is None:
        pytest.skip(clients.skip_reason(33))
    out = subprocess.run(
        [str(kubectl), "--kubeconfig", str(testbed.kubeconfig_path), "-n", ns, "logs", "full", "--tail=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pod=full node=node-a"


def test_incluster_client_with_sa_token(agents: NodeAgents, kube: Kube, core, ns: str) -> None:
    script = textwrap.dedent("""
        from kubernetes import client, config
        config.load_incluster_config()
        r = client.AuthenticationV1Api().create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                                     "kind": "SelfSubjectReview"})
        print("user=" + r.status.user_info.username)
    """)
    spec = {
        "containers": [{"name": "c", "image": "python:3.11", "command": [sys.executable, "-c", script]}],
        "restartPolicy": "Never",
    }
    create_bound_pod(kube, ns, "node-a", "incluster", spec)
    pod = wait_for(
        lambda: (p := get_pod(kube, ns, "incluster"))["status"].get("phase") in ("Succeeded", "Failed") and p,
        timeout=30,
    )
    log = core.read_namespaced_pod_log("incluster", ns)
    assert pod["status"]["phase"] == "Succeeded", log
    assert f"user=system:serviceaccount:{ns}:default" in log


@ROOT_ONLY
def test_two_pods_same_port_and_pod_ip(agents: NodeAgents, kube: Kube, ns: str) -> None:
    server = [sys.executable, "-m", "http.server", "8080", "--bind", "0.0.0.0"]
    for name in ("web-1", "web-2"):
        create_bound_pod(
            kube,
            ns,
            "node-a",
            name,
            {
                "containers": [
                    {
                        "name": "web",
                        "image": "python:3.11",
                        "command": server,
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                    }
                ],
                "terminationGracePeriodSeconds": 1,
            },
        )
    pods = [
        wait_for(lambda n=n: (p := get_pod(kube, ns, n)) and cond(p, "Ready") == "True" and p, timeout=20)
        for n in ("web-1", "web-2")
    ]
    ips = {p["status"]["podIP"] for p in pods}
    assert len(ips) == 2
    import urllib.request

    for ip in ips:  # host -> pod through the pod IP
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as r:
            assert r.status == 200


@ROOT_ONLY
def test_ld_so_preload_file_mount(agents: NodeAgents, kube: Kube, core, ns: str) -> None:
    root = agents.agent("node-a").root
    (root / "preload").mkdir(exist_ok=True)
    (root / "preload/ld.so.preload").write_text("/usr/local/vgpu/libvgpu.so\n")
    host_before = Path("/etc/ld.so.preload").read_text() if Path("/etc/ld.so.preload").exists() else ""
    spec = {
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "command": ["cat", "/etc/ld.so.preload"],
                "volumeMounts": [
                    {"name": "p", "mountPath": "/etc/ld.so.preload", "subPath": "ld.so.preload"}
                ],
            }
        ],
        "volumes": [{"name": "p", "hostPath": {"path": "/preload", "type": "Directory"}}],
        "restartPolicy": "Never",
    }
    create_bound_pod(kube, ns, "node-a", "preload", spec)
    wait_for(lambda: get_pod(kube, ns, "preload")["status"].get("phase") == "Succeeded", timeout=20)
    text = core.read_namespaced_pod_log("preload", ns)
    assert "/usr/local/vgpu/libvgpu.so" in text.splitlines()  # stdout; stderr lines may interleave
    # the dynamic loader of the container's process really read the mounted file
    assert "from /etc/ld.so.preload cannot be preloaded" in text
    host_after = Path("/etc/ld.so.preload").read_text() if Path("/etc/ld.so.preload").exists() else ""
    assert host_after == host_before  # the mount stayed inside the container's mount namespace


def test_unknown_image_err_image_pull(agents: NodeAgents, kube: Kube, ns: str) -> None:
    create_bound_pod(
        kube, ns, "node-a", "noimg", {"containers": [{"name": "c", "image": "example.invalid/nope:1"}]}
    )

    def reason() -> str:
        cs = (get_pod(kube, ns, "noimg")["status"].get("containerStatuses") or [{}])[0]
        return (cs.get("state", {}).get("waiting") or {}).get("reason", "")

    wait_for(lambda: reason() == "ErrImagePull")
    wait_for(lambda: reason() == "ImagePullBackOff")
    msgs = [e["message"] for e in events(kube, ns, "noimg") if e["reason"] == "Failed"]
    assert any(m.startswith('Failed to pull image "example.invalid/nope:1"') for m in msgs)


def test_missing_command_start_error(agents: NodeAgents, kube: Kube, ns: str) -> None:
    create_bound_pod(
        kube,
        ns,
        "node-a",
        "nocmd",
        {
            "containers": [{"name": "c", "image": "busybox", "command": ["no-such-binary-xyz"]}],
            "restartPolicy": "Never",
        },
    )
    pod = wait_for(lambda: (p := get_pod(kube, ns, "nocmd"))["status"].get("phase") == "Failed" and p)
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["reason"] == "StartError" and term["exitCode"] == 128
    assert 'exec: "no-such-binary-xyz": executable file not found in $PATH' in term["message"]


def test_graceful_delete(agents: NodeAgents, kube: Kube, ns: str) -> None:
    script = "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    create_bound_pod(
        kube,
        ns,
        "node-a",
        "grace",
        {
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
            "terminationGracePeriodSeconds": 10,
        },
    )
    wait_for(lambda: get_pod(kube, ns, "grace")["status"].get("phase") == "Running")
    uid = get_pod(kube, ns, "grace")["metadata"]["uid"]
    kube.delete(f"/api/v1/namespaces/{ns}/pods/grace")
    assert get_pod(kube, ns, "grace")["metadata"]["deletionGracePeriodSeconds"] == 10
    wait_for(lambda: pod_gone(kube, ns, "grace"), timeout=15)
    log_dir = agents.agent("node-a").root / "var/log/pods" / f"{ns}_grace_{uid}" / "c"
    assert "got TERM" in (log_dir / "0.log").read_text()
    assert "Killing" in [e["reason"] for e in events(kube, ns, "grace")]


def test_crash_loop_back_off(agents: NodeAgents, kube: Kube, ns: str) -> None:
    create_bound_pod(
        kube,
        ns,
        "node-a",
        "crash",
        {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "exit 3"]}]},
    )

    def cs() -> dict:
        return (get_pod(kube, ns, "crash")["status"].get("containerStatuses") or [{}])[0]

    wait_for(
        lambda: (
            cs().get("restartCount", 0) >= 1
            and (cs().get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
        )
    )
    last = cs()["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"


def test_simulated_pods(agents: NodeAgents, kube: Kube, ns: str) -> None:
    create_bound_pod(kube, ns, "sim-a", "sim-1", {"containers": [{"name": "c", "image": "anything:1"}]})
    create_bound_pod(
        kube,
        ns,
        "node-a",
        "sim-2",
        {"containers": [{"name": "c", "image": "anything:1"}]},
        annotations={"testbed.hami.io/simulate": "true"},
    )
    for name in ("sim-1", "sim-2"):
        pod = wait_for(lambda n=name: (p := get_pod(kube, ns, n))["status"].get("phase") == "Running" and p)
        assert cond(pod, "Ready") == "True" and pod["status"]["containerStatuses"][0]["ready"]
    kube.delete(f"/api/v1/namespaces/{ns}/pods/sim-1")
    wait_for(lambda: pod_gone(kube, ns, "sim-1"))


def test_kubelet_healthz_pods_and_cli_help(agents: NodeAgents, testbed: EmbeddedTestbed) -> None:
    import json
    import ssl
    import urllib.request

    a = agents.agent("node-a")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    auth = {"Authorization": f"Bearer {testbed.admin_token}"}  # the kubelet API authenticates callers
    req = urllib.request.Request(f"https://{a.ip}:{a.kubelet_port}/healthz", headers=auth)
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        assert r.read() == b"ok"
    req = urllib.request.Request(f"https://{a.ip}:{a.kubelet_port}/pods", headers=auth)
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        assert json.load(r)["kind"] == "PodList"
    out = subprocess.run(
        [sys.executable, "-m", "testbed.node", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0 and "--inventory" in out.stdout
