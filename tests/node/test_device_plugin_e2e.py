"""A device plugin written in the test registers with a node agent's kubelet.sock; a pod asking for
its resource is admitted through Allocate and its container sees the plugin's env and mounts.

Also what the kubelet and the NVIDIA container toolkit add around Allocate: extended resources the node
does not advertise are dropped before admission, Allocate's host paths are paths of the node (under its
root, like hostPath volumes), and a container with ``NVIDIA_VISIBLE_DEVICES`` on a node with emulated
GPUs gets the emulated driver libraries."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.hardware import ensure_built
from testbed.node import AgentOptions, NodeAgents, parse_inventory
from testbed.node.devices.runner import shared_loop
from testbed.node.devices.stub import StubDevice, StubDevicePlugin
from testbed.node.podspec import node_path
from testbed.node.runtime import admission_requests
from testbed.node.wiring import device_services

from .helpers import create_bound_pod, get_pod, wait_for

RESOURCE = "example.com/widget"


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def node(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory(
        {
            "nodes": [
                {
                    "name": "dp-node",
                    "capacity": {"cpu": "8"},
                    "hardware": {"nvidia": {"model": "A100-SXM4-80GB", "count": 2}},
                }
            ]
        }
    )
    # A deep data directory: socket paths exceed the 108 bytes of a unix socket address.
    data = tmp_path_factory.mktemp("device-plugin-end-to-end") / ("deep" * 10)
    assert len(str(data / "nodes/dp-node/var/lib/kubelet/device-plugins/kubelet.sock")) > 108
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, data, options=opts, device_managers=device_services) as ag:
        yield ag


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run_coroutine_threadsafe(coro, shared_loop()).result(10)


def _uuids(root: Path) -> list[str]:
    conf = (root / "hardware/nvidia/gpus.conf").read_text().splitlines()
    return [line.split("=", 1)[1].strip() for line in conf if line.startswith("uuid")]


def test_plugin_devices_reach_node_status_and_container(node: NodeAgents, kube: Kube) -> None:
    agent = node.agent("dp-node")
    plugin_dir = agent.root / "var/lib/kubelet/device-plugins"
    # what a DaemonSet pod would have written through its hostPath /opt/widget-lib
    host_dir = agent.root / "opt/widget-lib"
    host_dir.mkdir(parents=True)
    (host_dir / "marker").write_text("from the plugin\n")
    lib = ensure_built() / "libnvidia-ml.so.1"
    (host_dir / "ld.so.preload").write_text(f"{lib}\n")
    gpu = _uuids(agent.root)[1]
    plugin = StubDevicePlugin(plugin_dir, RESOURCE, [StubDevice("w0"), StubDevice("w1"), StubDevice("w2")])

    def allocate(ids: list[str]):  # type: ignore[no-untyped-def]
        from kubeletapi import deviceplugin_v1beta1_pb2 as api

        resp = api.ContainerAllocateResponse(envs={"WIDGETS": ",".join(ids), "NVIDIA_VISIBLE_DEVICES": gpu})
        # host paths of the node, as a real plugin names them
        resp.mounts.add(container_path="/opt/widget", host_path="/opt/widget-lib", read_only=True)
        resp.mounts.add(container_path="/etc/ld.so.preload", host_path="/opt/widget-lib/ld.so.preload",
                        read_only=True)
        # a file inside a mounted directory, listed before its parent (as HAMi's shim and its
        # per-container directory are): parents are mounted first, so the file stays visible
        resp.mounts.add(container_path="/opt/nested/inner", host_path="/opt/widget-lib/marker",
                        read_only=True)
        resp.mounts.add(container_path="/opt/nested", host_path="/opt/widget-lib/empty", read_only=False)
        return resp
    plugin.allocate_fn = allocate
    _run(plugin.start())
    try:
        def published() -> bool:
            st = kube.get("/api/v1/nodes/dp-node")["status"]
            return st["capacity"].get(RESOURCE) == "3" and st["allocatable"].get(RESOURCE) == "3"
        wait_for(published)
        script = textwrap.dedent("""
            echo "widgets=$WIDGETS"
            echo "visible=$NVIDIA_VISIBLE_DEVICES"
            echo "state=$HAMI_EMU_GPU_STATE_DIR"
            echo "ldpath=$LD_LIBRARY_PATH"
            cat /opt/widget/marker 2>/dev/null || echo "mount=$TESTBED_MOUNT_0"
            echo "preload=$(cat /etc/ld.so.preload)"
            grep -c libnvidia-ml /proc/self/maps | sed 's/^/preloaded=/'
            echo "nested=$(cat /opt/nested/inner 2>&1)"
        """)
        # example.com/gizmo is not advertised by the node: dropped before admission, as by the kubelet
        create_bound_pod(kube, "default", "dp-node", "widget-user", {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script],
                            "resources": {"limits": {RESOURCE: "2", "example.com/gizmo": "3000"}}}]})
        wait_for(lambda: get_pod(kube, "default", "widget-user")["status"].get("phase") == "Succeeded")
        log = str(kube.text("/api/v1/namespaces/default/pods/widget-user/log"))
        assert plugin.calls.allocate and len(plugin.calls.allocate[-1]) == 2
        ids = plugin.calls.allocate[-1]
        assert set(ids) <= {"w0", "w1", "w2"}
        assert f"widgets={','.join(ids)}" in log
        # the toolkit's part: driver libraries of this node's emulated GPUs, the plugin's visibility kept
        assert f"visible={gpu}" in log
        assert f"state={agent.root.resolve() / 'hardware/nvidia'}" in log
        assert f"ldpath={lib.parent}" in log
        if os.geteuid() == 0:
            assert "from the plugin" in log
            assert f"preload={lib}" in log
            assert "preloaded=0" not in log
            assert "nested=from the plugin" in log
        else:
            assert f"/opt/widget={agent.root / 'opt/widget-lib'}" in log

        # resources the node does advertise are still checked
        create_bound_pod(kube, "default", "dp-node", "too-many", {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["true"],
                            "resources": {"limits": {RESOURCE: "4", "example.com/gizmo": "1"}}}]})
        rejected = wait_for(
            lambda: (p := get_pod(kube, "default", "too-many"))["status"].get("phase") == "Failed" and p
        )
        assert rejected["status"]["reason"] == f"OutOf{RESOURCE}"
        assert "requested: 4" in rejected["status"]["message"]

        # widget-user finished holding 2 of the 3: as the kubelet's active-pod filter does, a pod in a
        # terminal phase holds no devices, so 2 more fit while its API object still exists
        create_bound_pod(kube, "default", "dp-node", "after-finish", {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["true"],
                            "resources": {"limits": {RESOURCE: "2"}}}]})
        done = wait_for(lambda: (p := get_pod(kube, "default", "after-finish"))["status"].get("phase")
                        in ("Succeeded", "Failed") and p)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        assert len(plugin.calls.allocate[-1]) == 2

        # Flip a device unhealthy: allocatable drops, capacity stays.
        _run(plugin.set_health("w2", "Unhealthy"))

        def unhealthy_published() -> bool:
            st = kube.get("/api/v1/nodes/dp-node")["status"]
            return st["capacity"].get(RESOURCE) == "3" and st["allocatable"].get(RESOURCE) == "2"
        wait_for(unhealthy_published)
    finally:
        _run(plugin.stop())


@pytest.mark.parametrize(("visible", "count"), [("all", 2), ("none", 0), ("void", None)])
def test_nvidia_visible_devices_gets_the_emulated_driver(
    node: NodeAgents, kube: Kube, visible: str, count: int | None
) -> None:
    # A DaemonSet's device plugin asks for every GPU by env alone (no device request), as HAMi's chart does.
    name = f"nvml-{visible}"
    code = textwrap.dedent("""
        import os, pynvml
        print("state=" + os.environ.get("HAMI_EMU_GPU_STATE_DIR", ""))
        try:
            pynvml.nvmlInit()
            print("count=%d" % pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as e:
            print("error=%s" % e)
    """)
    create_bound_pod(kube, "default", "dp-node", name, {
        "restartPolicy": "Never",
        "containers": [{"name": "c", "image": "python:3.11", "command": [sys.executable, "-c", code],
                        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": visible}]}]})
    wait_for(lambda: get_pod(kube, "default", name)["status"].get("phase") == "Succeeded")
    log = str(kube.text(f"/api/v1/namespaces/default/pods/{name}/log"))
    if count is None:  # void: the toolkit stays out of the way
        assert "state=\n" in log + "\n" and "count=" not in log
    else:
        assert f"count={count}" in log
        assert "state=" + str(node.agent("dp-node").root.resolve() / "hardware/nvidia") in log


def test_one_rule_for_node_host_paths(tmp_path: Path) -> None:
    assert node_path(tmp_path, "/usr/local/vgpu/libvgpu.so") == tmp_path / "usr/local/vgpu/libvgpu.so"
    assert node_path(tmp_path, "/usr/local/vgpu/../vgpu/x") == tmp_path / "usr/local/vgpu/x"
    assert node_path(tmp_path, "/../../etc/passwd") == tmp_path / "etc/passwd"  # never outside the node


def test_admission_drops_only_resources_the_node_does_not_advertise() -> None:
    pod = {"spec": {
        "initContainers": [{"name": "i", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        "containers": [{"name": "c", "resources": {
            "limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "cpu": "1"}}}]}}
    assert admission_requests(pod, {"nvidia.com/gpu": "40", "cpu": "8"}) == {"nvidia.com/gpu": 1}
    # listed with 0 is still advertised: checked (and so rejected), not dropped
    assert admission_requests(pod, {"nvidia.com/gpu": "0", "nvidia.com/gpumem": "0"}) == {
        "nvidia.com/gpu": 1, "nvidia.com/gpumem": 3000}
    assert admission_requests(pod, {"cpu": "8"}) == {}
