"""One node run by the real kubelet (testbed/kubelet/): the minor's kubelet with Debian's containerd
and runc joins a `testbed up --control-plane real` cluster, runs a busybox pod from a locally built
image, and HAMi's device plugin registers emulated GPUs with its device manager.

The node tests run only where everything is there (root, the kubelet and control-plane builds of
1.35, etcd, containerd, runc, CNI plugins, busybox-static); otherwise they skip saying what to install
or build. The first three tests (the build module, the image archive, the pause binary) need none of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.controlplane.build import find as find_control_plane
from testbed.controlplane.etcd import EtcdMissing, locate
from testbed.kubelet.build import find as find_kubelet
from testbed.kubelet.node import CGROUP_FS, POD_SUBNET, NodeLayout, alive, missing_prerequisites

REPO = Path(__file__).resolve().parents[2]
MINOR = 35
NODE = "kubelet-node-1"
GPUS = "A100-SXM4-80GB:2"
SPLIT = 10  # the device plugin's default deviceSplitCount: virtual devices per GPU


def _why_not() -> str:
    missing = missing_prerequisites()
    if missing:
        return "real kubelet node: missing " + "; ".join(missing)
    if find_control_plane(MINOR) is None:
        return f"no control plane build: python -m testbed.controlplane build 1.{MINOR}"
    if find_kubelet(MINOR) is None:
        return f"no kubelet build: python -m testbed.kubelet build 1.{MINOR}"
    try:
        locate()
    except EtcdMissing as e:
        return str(e)
    return ""


WHY_NOT = _why_not()
needs_node = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "all present")

UPSTREAM_GOMOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


def test_the_kubelet_module_is_the_control_planes_with_only_the_kubelet_as_tool():
    from testbed.controlplane.gomod import Release, build_gomod
    from testbed.kubelet.build import kubelet_gomod

    cp = build_gomod(Release(35, 8), UPSTREAM_GOMOD)
    text = kubelet_gomod(cp)
    assert "tool (\n\tk8s.io/kubernetes/cmd/kubelet\n)" in text
    assert "cmd/kube-apiserver" not in text and "cmd/kube-scheduler" not in text
    # everything but the tool block is the control plane's: same staging versions, same requires
    strip = lambda t: re.sub(r"(?ms)^tool \(.*?^\)$|^//.*$", "", t)  # noqa: E731
    assert strip(text) == strip(cp)
    assert "k8s.io/client-go => k8s.io/client-go v0.35.8" in text


def test_images_are_oci_layouts_whose_digests_hold(tmp_path: Path):
    from testbed.kubelet.images import _tar_layer, write_oci_archive

    layer = _tar_layer({"bin/tool": b"\x7fELF...", "bin/sh": "tool"}, ("bin", "tmp"))
    arc = write_oci_archive(tmp_path / "x.tar", "hami.local/testbed/x:1", layer, ["/bin/tool"], [])
    with tarfile.open(arc.path) as tf:
        blob = lambda d: tf.extractfile(f"blobs/sha256/{d.split(':')[1]}").read()  # type: ignore[union-attr]  # noqa: E731
        index = json.loads(tf.extractfile("index.json").read())  # type: ignore[union-attr]
        desc = index["manifests"][0]
        assert desc["annotations"]["io.containerd.image.name"] == "hami.local/testbed/x:1"
        assert desc["digest"] == arc.manifest_digest
        manifest = json.loads(blob(desc["digest"]))
        for d in [manifest["config"], *manifest["layers"]]:
            data = blob(d["digest"])
            assert len(data) == d["size"] and "sha256:" + hashlib.sha256(data).hexdigest() == d["digest"]
        config = json.loads(blob(manifest["config"]["digest"]))
        assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]  # uncompressed layer
        with tarfile.open(fileobj=io.BytesIO(blob(manifest["layers"][0]["digest"]))) as lt:
            assert lt.getmember("bin/sh").linkname == "tool" and lt.getmember("bin/tool").mode == 0o755


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc")
def test_pause_is_static_and_stops_cleanly_on_sigterm(tmp_path: Path):
    from testbed.kubelet.images import ImageError, build_pause

    try:
        pause = build_pause(tmp_path)
    except ImageError as e:  # no static libc (libc6-dev)
        pytest.skip(str(e))
    assert b"INTERP" not in subprocess.run(["readelf", "-l", str(pause)], capture_output=True,
                                           check=False).stdout  # no dynamic loader
    p = subprocess.Popen([str(pause)], stderr=subprocess.DEVNULL)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(5) == 0


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TESTBED_CONTROL_PLANE"}
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env, check=False)


def _wait(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def _pod(kube: Kube, name: str, command: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": extra.pop("annotations", {})},
        "spec": {"nodeName": NODE, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "hami.local/testbed/busybox:1",
                                 "imagePullPolicy": "Never", "command": ["sh", "-c", command], **extra}]},
    }
    return dict(kube.create("/api/v1/namespaces/default/pods", body))


def _running(kube: Kube, name: str) -> dict[str, Any] | None:
    pod = kube.get(f"/api/v1/namespaces/default/pods/{name}")
    return pod if pod.get("status", {}).get("phase") == "Running" else None


def _log(lay: NodeLayout, name: str) -> str:
    """The container's log as the kubelet's CRI log file holds it (what `kubectl logs` would serve;
    the apiserver cannot reach this kubelet, testbed/kubelet/README.md says why)."""
    return "".join(f.read_text() for f in sorted(lay.pod_logs.glob(f"default_{name}_*/c/*.log")))


@needs_node
def test_a_real_kubelet_node_runs_pods_and_registers_hami_gpus(tmp_path: Path):
    """One test, one cluster: the phases share the node (and ``pytest -n`` cannot split them)."""
    data = tmp_path / "d"
    up = _run("testbed", "up", "--k8s", f"1.{MINOR}", "--control-plane", "real", "--detach", "--port", "0",
              "--data-dir", str(data))
    assert up.returncode == 0, up.stdout + up.stderr
    lay = NodeLayout(data.resolve(), NODE)
    try:
        node_up = _run("testbed.kubelet", "up", "--k8s", f"1.{MINOR}", "--data-dir", str(data),
                       "--node", NODE, "--gpus", GPUS, "--detach")
        assert node_up.returncode == 0, node_up.stdout + node_up.stderr
        print(f"timings: {json.loads(node_up.stdout.strip().splitlines()[-1])['timings']}")
        kube = Kube.from_config(str(data / "kubeconfig"))
        _the_node_is_the_real_kubelet_on_containerd(kube)
        _a_pod_runs_through_containerd_and_runc(kube, lay)
        _hami_device_plugin_registers_with_the_real_device_manager(kube)
        _allocate_through_the_real_kubelet(kube, lay)
        _down_leaves_nothing_on_the_host(data, lay)
    finally:
        _run("testbed.kubelet", "down", "--data-dir", str(data), "--node", NODE)
        _run("testbed", "down", "--data-dir", str(data))


def _the_node_is_the_real_kubelet_on_containerd(kube: Kube) -> None:
    node = kube.get(f"/api/v1/nodes/{NODE}")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True", node["status"]["conditions"]
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == find_kubelet(MINOR).release.version  # type: ignore[union-attr]
    assert info["containerRuntimeVersion"].startswith("containerd://1."), info


def _a_pod_runs_through_containerd_and_runc(kube: Kube, lay: NodeLayout) -> None:
    t0 = time.monotonic()
    _pod(kube, "hello", "echo hello-from-the-real-kubelet uid=$(id -u); sleep 600")
    pod = _wait("pod hello Running", lambda: _running(kube, "hello"))
    print(f"pod Running {time.monotonic() - t0:.1f}s after create")
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_SUBNET)
    log = _wait("the container's output", lambda: _log(lay, "hello"), 20)
    assert "stdout F hello-from-the-real-kubelet uid=0" in log
    # its cgroup is the pod's, under the node's root (cgroupfs driver, cgroup v1)
    uid = pod["metadata"]["uid"]
    assert list((CGROUP_FS / "memory" / lay.cgroup_root.lstrip("/")).glob(f"kubepods/besteffort/pod{uid}"))
    kube.delete("/api/v1/namespaces/default/pods/hello")


def _hami_device_plugin_registers_with_the_real_device_manager(kube: Kube) -> None:
    node = kube.get(f"/api/v1/nodes/{NODE}")
    count = int(GPUS.split(":")[1])
    assert node["status"]["capacity"]["nvidia.com/gpu"] == str(count * SPLIT)
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(count * SPLIT)
    registered = json.loads(node["metadata"]["annotations"]["hami.io/node-nvidia-register"])
    assert len(registered) == count and all(d["type"] == "NVIDIA A100-SXM4-80GB" for d in registered)


def _allocate_through_the_real_kubelet(kube: Kube, lay: NodeLayout) -> None:
    """What HAMi's scheduler leaves at bind (node lock, the pod's assignment, bind-phase allocating),
    written here by hand; the real kubelet then calls the plugin's Allocate and starts the container
    with what it answered."""
    from hami_stack.protocol.assignment import ContainerDevice, encode_pod_devices
    from hami_stack.protocol.nodelock import format_lock

    node = kube.get(f"/api/v1/nodes/{NODE}")
    uuid = json.loads(node["metadata"]["annotations"]["hami.io/node-nvidia-register"])[0]["id"]
    devices = encode_pod_devices([[ContainerDevice(uuid, "NVIDIA", 1000, 30)]])
    lock = format_lock(dt.datetime.now(dt.UTC), "default", "gpu")
    kube.patch(f"/api/v1/nodes/{NODE}", {"metadata": {"annotations": {"hami.io/mutex.lock": lock}}})
    stamp = str(int(time.time()))
    _pod(kube, "gpu", "env; sleep 600", resources={"limits": {"nvidia.com/gpu": "1"}}, annotations={
        "hami.io/vgpu-node": NODE, "hami.io/vgpu-time": stamp, "hami.io/bind-phase": "allocating",
        "hami.io/bind-time": stamp, "hami.io/vgpu-devices-to-allocate": devices,
        "hami.io/vgpu-devices-allocated": devices})
    _wait("pod gpu Running", lambda: _running(kube, "gpu"))
    log = _wait("the container's env", lambda: _log(lay, "gpu"), 20)
    assert f"NVIDIA_VISIBLE_DEVICES={uuid}" in log
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=1000m" in log and "CUDA_DEVICE_SM_LIMIT=30" in log
    pod = kube.get("/api/v1/namespaces/default/pods/gpu")
    assert pod["metadata"]["annotations"]["hami.io/bind-phase"] == "success"
    # the hook dir it mounted is the node's own (with the shim installed), not the host's /usr/local
    assert (lay.dir / "hook" / "vgpu" / "libvgpu.so").is_file()
    kube.delete("/api/v1/namespaces/default/pods/gpu")


def _down_leaves_nothing_on_the_host(data: Path, lay: NodeLayout) -> None:
    state = json.loads(lay.state_file.read_text())
    down = _run("testbed.kubelet", "down", "--data-dir", str(data), "--node", NODE)
    assert down.returncode == 0, down.stdout + down.stderr
    pids = [state["holder"], *state["procs"].values()]
    assert [p for p in pids if alive(p)] == []  # (a zombie waits for PID 1, which reaps it)
    assert list(CGROUP_FS.glob(f"*/{lay.cgroup_root.lstrip('/')}")) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(lay.dir) not in mounts and " /var/lib/kubelet " not in mounts
