"""A device plugin written in the test registers with a node agent's kubelet.sock; a pod asking for
its resource is admitted through Allocate and its container sees the plugin's env and mounts."""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, parse_inventory
from testbed.node.devices.runner import shared_loop
from testbed.node.devices.stub import StubDevice, StubDevicePlugin
from testbed.node.wiring import device_services

from .helpers import create_bound_pod, get_pod, wait_for

RESOURCE = "example.com/widget"


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def node(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory({"nodes": [{"name": "dp-node", "capacity": {"cpu": "8"}}]})
    # A deep data directory: socket paths exceed the 108 bytes of a unix socket address.
    data = tmp_path_factory.mktemp("device-plugin-end-to-end") / ("deep" * 10)
    assert len(str(data / "nodes/dp-node/var/lib/kubelet/device-plugins/kubelet.sock")) > 108
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, data, options=opts, device_managers=device_services) as ag:
        yield ag


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run_coroutine_threadsafe(coro, shared_loop()).result(10)


def test_plugin_devices_reach_node_status_and_container(node: NodeAgents, kube: Kube, tmp_path: Path) -> None:
    agent = node.agent("dp-node")
    plugin_dir = agent.root / "var/lib/kubelet/device-plugins"
    host_dir = tmp_path / "widget-lib"
    host_dir.mkdir()
    (host_dir / "marker").write_text("from the plugin\n")
    plugin = StubDevicePlugin(plugin_dir, RESOURCE, [StubDevice("w0"), StubDevice("w1"), StubDevice("w2")])

    def allocate(ids: list[str]):  # type: ignore[no-untyped-def]
        from kubeletapi import deviceplugin_v1beta1_pb2 as api

        resp = api.ContainerAllocateResponse(envs={"WIDGETS": ",".join(ids)})
        resp.mounts.add(container_path="/opt/widget", host_path=str(host_dir), read_only=True)
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
            cat /opt/widget/marker 2>/dev/null || echo "mount=$TESTBED_MOUNT_0"
        """)
        create_bound_pod(kube, "default", "dp-node", "widget-user", {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script],
                            "resources": {"limits": {RESOURCE: "2"}}}]})
        wait_for(lambda: get_pod(kube, "default", "widget-user")["status"].get("phase") == "Succeeded")
        log = kube.text("/api/v1/namespaces/default/pods/widget-user/log")
        assert plugin.calls.allocate and len(plugin.calls.allocate[-1]) == 2
        ids = plugin.calls.allocate[-1]
        assert set(ids) <= {"w0", "w1", "w2"}
        assert f"widgets={','.join(ids)}" in str(log)
        if os.geteuid() == 0:
            assert "from the plugin" in str(log)
        else:
            assert "/opt/widget" in str(log)
        # Flip a device unhealthy: allocatable drops, capacity stays.
        _run(plugin.set_health("w2", "Unhealthy"))

        def unhealthy_published() -> bool:
            st = kube.get("/api/v1/nodes/dp-node")["status"]
            return st["capacity"].get(RESOURCE) == "3" and st["allocatable"].get(RESOURCE) == "2"
        wait_for(unhealthy_published)
    finally:
        _run(plugin.stop())
