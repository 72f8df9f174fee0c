"""The PodResources API reports the device manager's real assignments (generated client stubs)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubeletapi import podresources_v1_pb2 as v1
from kubeletapi import podresources_v1_pb2_grpc as v1_grpc
from kubeletapi import podresources_v1alpha1_pb2 as v1alpha1
from kubeletapi import podresources_v1alpha1_pb2_grpc as v1alpha1_grpc
from kubeletapi.sockets import unix_target
from testbed.node.devices import DevicePluginManager
from testbed.node.devices.stub import StubDevice, StubDevicePlugin
from testbed.node.podresources import PodResourcesServer

GPU = "example.com/gpu"


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pr", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def mkpod(uid: str, name: str, gpus: int) -> dict[str, Any]:
    limits = {GPU: str(gpus)} if gpus else {}
    return {
        "metadata": {"uid": uid, "name": name, "namespace": "ml"},
        "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}, {"name": "sidecar"}]},
    }


class Node:
    """A manager, a plugin with 4 GPUs on 2 NUMA nodes, and a PodResources server."""

    def __init__(self, root: Path, minor: int, **gates: bool) -> None:
        self.root, self.minor, self.gates = root, minor, gates
        self.pods: list[dict[str, Any]] = []

    async def __aenter__(self) -> Node:
        self.manager = DevicePluginManager(self.root, self.minor, active_pods=lambda: self.pods)
        await self.manager.start()
        devices = [StubDevice(f"gpu-{i}", numa=i // 2) for i in range(4)]
        self.plugin = StubDevicePlugin(self.manager.socket_dir, GPU, devices)
        await self.plugin.start()
        deadline = asyncio.get_running_loop().time() + 10
        while self.manager.capacity().get(GPU) != (4, 4):
            assert asyncio.get_running_loop().time() < deadline, "plugin never advertised"
            await asyncio.sleep(0.02)
        self.server = PodResourcesServer(
            self.root,
            self.minor,
            active_pods=lambda: self.pods,
            devices=self.manager,
            feature_gates=self.gates,
        )
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(unix_target(self.server.socket_path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.server.stop()
        await self.plugin.stop()
        await self.manager.stop()

    async def admit(self, pod: dict[str, Any]) -> None:
        self.pods.append(pod)
        for c in pod["spec"]["containers"]:
            await self.manager.allocate(pod, c)


def test_v1_list_and_allocatable_report_assignments(root: Path) -> None:
    async def scenario() -> None:
        async with Node(root, 33) as node:
            await node.admit(mkpod("u1", "train", 3))
            await node.admit(mkpod("u2", "idle", 0))
            stub = v1_grpc.PodResourcesListerStub(node.channel)
            listed = await stub.List(v1.ListPodResourcesRequest())
            by_name = {p.name: p for p in listed.pod_resources}
            assert set(by_name) == {"train", "idle"} and by_name["train"].namespace == "ml"
            main = by_name["train"].containers[0]
            assert main.name == "main"
            assert [
                (d.resource_name, list(d.device_ids), [n.ID for n in d.topology.nodes]) for d in main.devices
            ] == [
                (GPU, ["gpu-0", "gpu-1"], [0]),
                (GPU, ["gpu-2"], [1]),
            ]
            assert list(by_name["train"].containers[1].devices) == []
            assert list(by_name["idle"].containers[0].devices) == []

            alloc = await stub.GetAllocatableResources(v1.AllocatableResourcesRequest())
            assert [
                (d.resource_name, list(d.device_ids), [n.ID for n in d.topology.nodes]) for d in alloc.devices
            ] == [
                (GPU, ["gpu-0"], [0]),
                (GPU, ["gpu-1"], [0]),
                (GPU, ["gpu-2"], [1]),
                (GPU, ["gpu-3"], [1]),
            ]
            assert list(alloc.cpu_ids) == [] and list(alloc.memory) == []

            # The pod ends: its devices disappear from List.
            node.pods = [p for p in node.pods if p["metadata"]["uid"] != "u1"]
            node.manager.release("u1")
            listed = await stub.List(v1.ListPodResourcesRequest())
            assert [p.name for p in listed.pod_resources] == ["idle"]

            # Get is gated off by default through 1.33.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Get(v1.GetPodResourcesRequest(pod_name="idle", pod_namespace="ml"))
            assert err.value.code() == grpc.StatusCode.UNKNOWN
            assert err.value.details() == "PodResources API Get method disabled"

    run(scenario())


def test_v1alpha1_list(root: Path) -> None:
    async def scenario() -> None:
        async with Node(root, 33) as node:
            await node.admit(mkpod("u1", "train", 2))
            stub = v1alpha1_grpc.PodResourcesListerStub(node.channel)
            listed = await stub.List(v1alpha1.ListPodResourcesRequest())
            [pres] = listed.pod_resources
            assert (pres.name, pres.namespace) == ("train", "ml")
            assert [(d.resource_name, list(d.device_ids)) for d in pres.containers[0].devices] == [
                (GPU, ["gpu-0", "gpu-1"])
            ]

    run(scenario())


def test_get_with_the_gate_on(root: Path) -> None:
    async def scenario() -> None:
        async with Node(root, 30, KubeletPodResourcesGet=True) as node:
            await node.admit(mkpod("u1", "train", 1))
            stub = v1_grpc.PodResourcesListerStub(node.channel)
            got = await stub.Get(v1.GetPodResourcesRequest(pod_name="train", pod_namespace="ml"))
            assert list(got.pod_resources.containers[0].devices[0].device_ids) == ["gpu-0"]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Get(v1.GetPodResourcesRequest(pod_name="nope", pod_namespace="ml"))
            assert err.value.details() == "pod nope in namespace ml not found"

    run(scenario())


@pytest.mark.parametrize(
    ("minor", "code", "details"),
    [
        (22, grpc.StatusCode.UNKNOWN, "PodResources API GetAllocatableResources disabled"),
        (
            20,
            grpc.StatusCode.UNIMPLEMENTED,
            "unknown method GetAllocatableResources for service v1.PodResourcesLister",
        ),
    ],
)
def test_get_allocatable_per_minor(root: Path, minor: int, code: grpc.StatusCode, details: str) -> None:
    async def scenario() -> None:
        async with Node(root, minor) as node:
            stub = v1_grpc.PodResourcesListerStub(node.channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetAllocatableResources(v1.AllocatableResourcesRequest())
            assert (err.value.code(), err.value.details()) == (code, details)
            listed = await stub.List(v1.ListPodResourcesRequest())
            assert list(listed.pod_resources) == []

    run(scenario())


def test_only_v1alpha1_before_1_20(root: Path) -> None:
    async def scenario() -> None:
        async with Node(root, 19) as node:
            await node.admit(mkpod("u1", "train", 3))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await v1_grpc.PodResourcesListerStub(node.channel).List(v1.ListPodResourcesRequest())
            assert (err.value.code(), err.value.details()) == (
                grpc.StatusCode.UNIMPLEMENTED,
                "unknown service v1.PodResourcesLister",
            )
            listed = await v1alpha1_grpc.PodResourcesListerStub(node.channel).List(
                v1alpha1.ListPodResourcesRequest()
            )
            # One entry per resource before 1.20.
            assert [
                (d.resource_name, list(d.device_ids)) for d in listed.pod_resources[0].containers[0].devices
            ] == [(GPU, ["gpu-0", "gpu-1", "gpu-2"])]

    run(scenario())
