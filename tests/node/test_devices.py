"""The device-plugin manager against real gRPC device plugins over unix sockets."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubeletapi import deviceplugin_v1beta1_pb2 as api
from testbed.node.devices import AdmissionError, DevicePluginManager
from testbed.node.devices.names import is_extended_resource_name
from testbed.node.devices.stub import StubDevice, StubDevicePlugin
from testbed.node.devices_api import AllocationError, ContainerDevices

GPU = "example.com/gpu"
NIC = "example.com/nic"


@pytest.fixture
def root() -> Iterator[Path]:
    # Short paths: unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="dp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def gpus(n: int = 4) -> list[StubDevice]:
    return [StubDevice(f"gpu-{i}", numa=i // 2) for i in range(n)]


def pod(uid: str, *containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"uid": uid, "name": f"pod-{uid}", "namespace": "default"}, "spec": spec}


def ctr(name: str, **limits: int) -> dict[str, Any]:
    res = {f"example.com/{k}": str(v) for k, v in limits.items()}
    return {"name": name, "resources": {"limits": res, "requests": dict(res)}}


async def started(root: Path, minor: int = 33, **kw: Any) -> DevicePluginManager:
    m = DevicePluginManager(root, minor, **kw)
    await m.start()
    return m


def plugin(m: DevicePluginManager, resource: str = GPU, devices: list[StubDevice] | None = None, **kw: Any):
    return StubDevicePlugin(m.socket_dir, resource, devices if devices is not None else gpus(), **kw)


def test_registers_advertises_and_tracks_health(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root)
        changes: list[dict[str, tuple[int, int]]] = []
        m.on_change(lambda: changes.append(m.capacity()))
        p = plugin(m)
        await p.start()
        await until(lambda: m.capacity().get(GPU) == (4, 4), "devices advertised")
        assert changes and changes[-1] == {GPU: (4, 4)}
        await p.set_health("gpu-1", "Unhealthy")
        await until(lambda: m.capacity()[GPU] == (4, 3), "allocatable drops")
        assert m.device_ids(GPU) == ({"gpu-0", "gpu-2", "gpu-3"}, {"gpu-1"})
        assert changes[-1] == {GPU: (4, 3)}
        await p.set_health("gpu-1", "Healthy")
        await until(lambda: m.capacity()[GPU] == (4, 4), "device healthy again")
        await p.stop()
        await m.stop()
        assert not m.socket_path.exists()

    run(scenario())


def test_preferred_allocation_then_allocate_returns_envs_and_mounts(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root)
        p = plugin(m, preferred_available=True)
        await p.start()
        await until(lambda: m.capacity().get(GPU) == (4, 4), "devices")
        got = await m.allocate(pod("u1", ctr("main", gpu=2)), ctr("main", gpu=2), init=False)
        # The manager asked the plugin for its preference among all free devices...
        [req] = p.calls.preferred
        assert sorted(req.available_deviceIDs) == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
        assert list(req.must_include_deviceIDs) == [] and req.allocation_size == 2
        # ...and allocated exactly what the plugin preferred (the stub prefers the highest IDs).
        assert [sorted(ids) for ids in p.calls.allocate] == [["gpu-2", "gpu-3"]]
        assert isinstance(got, ContainerDevices)
        assert got.envs == {"STUB_GPU_DEVICES": "gpu-2,gpu-3"}
        assert got.mounts == [("/opt/stub", "/usr/local/stub", True)]
        assert got.devices == [("/dev/null", "/dev/stub0", "rw"), ("/dev/null", "/dev/stub1", "rw")]
        assert got.annotations == {"stub.example.com/devices": "gpu-2,gpu-3"}
        assert m.container_devices("u1", "main") == [(GPU, ["gpu-2", "gpu-3"], 1)]
        # A restarting container gets the same devices without a second Allocate.
        again = await m.allocate(pod("u1", ctr("main", gpu=2)), ctr("main", gpu=2), init=False)
        assert again.envs == got.envs and len(p.calls.allocate) == 1
        await p.stop()
        await m.stop()

    run(scenario())


def test_no_preferred_allocation_before_1_19(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root, minor=18)
        p = plugin(m, preferred_available=True)
        await p.start()
        await until(lambda: m.capacity().get(GPU) == (4, 4), "devices")
        await m.allocate(pod("u1", ctr("main", gpu=2)), ctr("main", gpu=2))
        assert p.calls.preferred == []
        assert p.calls.allocate == [["gpu-0", "gpu-1"]]
        # 1.18/1.19 checkpoints keep a flat device list per entry.
        doc = json.loads(m.checkpoint_path.read_text())
        assert doc["Data"]["PodDeviceEntries"][0]["DeviceIDs"] == ["gpu-0", "gpu-1"]
        await p.stop()
        await m.stop()

    run(scenario())


def test_init_container_devices_are_reused_and_exhaustion_is_rejected(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root)
        p = plugin(m, pre_start_required=True)
        await p.start()
        await until(lambda: m.capacity().get(GPU) == (4, 4), "devices")
        a = pod("a", ctr("app", gpu=2), init=[ctr("setup", gpu=2)])
        await m.allocate(a, ctr("setup", gpu=2), init=True)
        await m.allocate(a, ctr("app", gpu=2), init=False)
        # The app container reuses the init container's devices (Allocate is still called for it).
        assert p.calls.allocate == [["gpu-0", "gpu-1"], ["gpu-0", "gpu-1"]]
        assert p.calls.pre_start == [["gpu-0", "gpu-1"], ["gpu-0", "gpu-1"]]
        await m.allocate(pod("b", ctr("app", gpu=2)), ctr("app", gpu=2))
        assert p.calls.allocate[-1] == ["gpu-2", "gpu-3"]
        with pytest.raises(AdmissionError) as err:
            await m.allocate(pod("c", ctr("app", gpu=1)), ctr("app", gpu=1))
        assert err.value.reason == "UnexpectedAdmissionError"
        assert str(err.value) == (
            "Allocate failed due to requested number of devices unavailable for example.com/gpu. "
            "Requested: 1, Available: 0, which is unexpected"
        )
        # Releasing a pod frees its devices for the next one.
        m.release("b")
        await m.allocate(pod("c", ctr("app", gpu=1)), ctr("app", gpu=1))
        assert p.calls.allocate[-1] == ["gpu-2"]
        await p.stop()
        await m.stop()

    run(scenario())


def test_failing_allocate_rejects_the_pod_and_holds_nothing(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root)
        p = plugin(m)
        await p.start()
        await until(lambda: m.capacity().get(GPU) == (4, 4), "devices")
        p.fail_allocate = "device gpu-0 is busy"
        with pytest.raises(AllocationError) as err:
            await m.allocate(pod("x", ctr("app", gpu=4)), ctr("app", gpu=4))
        assert str(err.value) == (
            "Allocate failed due to rpc error: code = Unknown desc = device gpu-0 is busy, "
            "which is unexpected"
        )
        assert m.container_devices("x", "app") == []
        p.fail_allocate = ""
        await m.allocate(pod("y", ctr("app", gpu=4)), ctr("app", gpu=4))
        assert p.calls.allocate[-1] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
        await p.stop()
        await m.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("version", "resource", "message"),
    [
        (
            "v1alpha",
            GPU,
            'requested API version "v1alpha" is not supported by kubelet. Supported version is ["v1beta1"]',
        ),
        ("v1beta1", "gpu", 'the ResourceName "gpu" is invalid'),
        ("v1beta1", "kubernetes.io/gpu", 'the ResourceName "kubernetes.io/gpu" is invalid'),
        ("v1beta1", "example.com/big gpu", 'the ResourceName "example.com/big gpu" is invalid'),
    ],
)
def test_bad_registrations_are_refused_with_the_kubelet_message(
    root: Path, version: str, resource: str, message: str
) -> None:
    async def scenario() -> None:
        m = await started(root)
        p = plugin(m, resource=resource, version=version, endpoint="bad.sock")
        await p.serve()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await p.register()
        assert err.value.code() == grpc.StatusCode.UNKNOWN
        assert err.value.details() == message
        assert m.capacity() == {}
        await p.stop()
        await m.stop()

    run(scenario())


def test_unreachable_endpoint_fails_registration_from_1_25(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root, dial_timeout_s=0.3)
        p = plugin(m)  # registers without serving its socket
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await p.register()
        assert err.value.details() == "failed to dial device plugin: context deadline exceeded"
        await m.stop()
        # Before 1.25 the kubelet accepted the registration and dialled afterwards.
        old = await started(root, minor=24, dial_timeout_s=0.3)
        await p.register()
        assert old.capacity() == {}
        await old.stop()

    run(scenario())


def test_plugin_crash_marks_resource_unhealthy_and_others_keep_serving(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root, stop_grace_s=0.5)
        gpu = plugin(m)
        nic = plugin(m, resource=NIC, devices=[StubDevice("nic-0"), StubDevice("nic-1")])
        await gpu.start()
        await nic.start()
        await until(lambda: m.capacity() == {GPU: (4, 4), NIC: (2, 2)}, "both plugins")
        await gpu.stop()  # dies mid-ListAndWatch
        await until(lambda: m.capacity()[GPU] == (4, 0), "gpu unavailable")
        assert m.capacity()[NIC] == (2, 2) and not m.plugin_connected(GPU)
        got = await m.allocate(pod("n", ctr("app", nic=1)), ctr("app", nic=1))
        assert got.envs == {"STUB_NIC_DEVICES": "nic-0"}
        with pytest.raises(
            AdmissionError, match=r"requested number of devices unavailable for example\.com/gpu"
        ):
            await m.allocate(pod("g", ctr("app", gpu=1)), ctr("app", gpu=1))
        # After the grace period the resource is dropped and its capacity reported as zero.
        await until(lambda: m.capacity()[GPU] == (0, 0), "gpu removed after grace")
        # The plugin comes back and registers again.
        back = plugin(m)
        await back.start()
        await until(lambda: m.capacity()[GPU] == (4, 4), "gpu back")
        await back.stop()
        await nic.stop()
        await m.stop()

    run(scenario())


def test_plugin_re_registration_replaces_the_old_endpoint(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root)
        first = plugin(m, endpoint="gpu-a.sock")
        await first.start()
        await until(lambda: m.capacity().get(GPU) == (4, 4), "first plugin")
        second = plugin(m, endpoint="gpu-b.sock", devices=gpus(2))
        await second.start()
        await until(lambda: m.capacity()[GPU] == (2, 2), "second plugin's devices")
        # The replaced plugin going away does not make the resource unhealthy.
        await first.stop()
        await asyncio.sleep(0.2)
        assert m.capacity()[GPU] == (2, 2) and m.plugin_connected(GPU)
        await m.allocate(pod("p", ctr("app", gpu=1)), ctr("app", gpu=1))
        assert second.calls.allocate == [["gpu-0"]] and first.calls.allocate == []
        await second.stop()
        await m.stop()

    run(scenario())


def test_manager_restart_reloads_checkpoint_and_plugins_reregister(root: Path) -> None:
    async def scenario() -> None:
        m = await started(root)
        p = plugin(m)
        await p.start(watch_kubelet=True)
        await until(lambda: m.capacity().get(GPU) == (4, 4), "devices")
        held = await m.allocate(pod("keep", ctr("app", gpu=3)), ctr("app", gpu=3))
        doc = json.loads(m.checkpoint_path.read_text())
        [entry] = doc["Data"]["PodDeviceEntries"]
        assert set(entry) == {"PodUID", "ContainerName", "ResourceName", "DeviceIDs", "AllocResp"}
        assert entry["DeviceIDs"] == {"0": ["gpu-0", "gpu-1"], "1": ["gpu-2"]}
        assert sorted(doc["Data"]["RegisteredDevices"][GPU]) == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
        await m.stop()

        m2 = DevicePluginManager(root, 33)
        await m2.start()
        # Until the plugin re-registers, the resource is known but has no devices.
        assert m2.capacity().get(GPU) in {(0, 0), (4, 4)}
        await until(
            lambda: m2.capacity().get(GPU) == (4, 4), "plugin re-registered after kubelet.sock came back"
        )
        assert p.registrations == 2
        assert m2.container_devices("keep", "app") == [(GPU, ["gpu-0", "gpu-1"], 0), (GPU, ["gpu-2"], 1)]
        # The held devices stay held; the restarted container gets its answer from the checkpoint.
        again = await m2.allocate(pod("keep", ctr("app", gpu=3)), ctr("app", gpu=3))
        assert again.envs == held.envs and len(p.calls.allocate) == 1
        await m2.allocate(pod("new", ctr("app", gpu=1)), ctr("app", gpu=1))
        assert p.calls.allocate[-1] == ["gpu-3"]
        await p.stop()
        await m2.stop()

    run(scenario())


def test_corrupted_checkpoint_is_ignored(root: Path) -> None:
    async def scenario() -> None:
        m = DevicePluginManager(root, 33)
        m.socket_dir.mkdir(parents=True)
        m.checkpoint_path.write_text(
            '{"Data": {"PodDeviceEntries": [], "RegisteredDevices": {}}, "Checksum": 1}'
        )
        await m.start()
        assert m.capacity() == {}
        await m.stop()

    run(scenario())


def test_cdi_devices_follow_the_feature_gate(root: Path) -> None:
    def with_cdi(ids: list[str]) -> api.ContainerAllocateResponse:
        resp = api.ContainerAllocateResponse(envs={"X": "1"})
        resp.cdi_devices.add(name="example.com/gpu=" + ids[0])
        return resp

    async def scenario(minor: int) -> list[str]:
        m = await started(root, minor=minor)
        p = plugin(m, allocate_fn=with_cdi)
        await p.start()
        await until(lambda: m.capacity().get(GPU) == (4, 4), "devices")
        got = await m.allocate(pod(f"c{minor}", ctr("app", gpu=1)), ctr("app", gpu=1))
        await p.stop()
        await m.stop()
        return list(got.cdi_devices)  # type: ignore[attr-defined]

    assert run(scenario(29)) == ["example.com/gpu=gpu-0"]
    shutil.rmtree(root / "var")
    assert run(scenario(28)) == []


def test_extended_resource_names() -> None:
    assert is_extended_resource_name("nvidia.com/gpu")
    assert is_extended_resource_name("hami.io/vgpu-memory.percentage")
    for bad in (
        "gpu",
        "kubernetes.io/gpu",
        "example.kubernetes.io/gpu",
        "requests.example.com/gpu",
        "Example.com/gpu",
        "example.com/",
        "/gpu",
        "example.com/a/b",
        "example.com/-gpu",
    ):
        assert not is_extended_resource_name(bad), bad


def test_threaded_services_serve_the_pod_runtime(root: Path) -> None:
    # The pod runtime is threaded: it calls allocate through devices_api.run_allocate from its own thread.
    from testbed.node.devices.runner import NodeDeviceServices
    from testbed.node.devices_api import run_allocate

    pods: list[dict[str, Any]] = []
    svc = NodeDeviceServices(root, 33, active_pods=lambda: pods)
    svc.start()
    try:
        p = StubDevicePlugin(svc.manager.socket_dir, GPU, gpus(2))
        svc.call(p.start())

        async def advertised() -> None:
            await until(lambda: svc.manager.capacity().get(GPU) == (2, 2), "devices")

        svc.call(advertised())
        pods.append(pod("t", ctr("app", gpu=1)))
        got = run_allocate(svc.manager, pods[0], ctr("app", gpu=1))
        assert got.envs == {"STUB_GPU_DEVICES": "gpu-0"}
        assert svc.podresources.socket_path.exists()
        svc.call(p.stop())
    finally:
        svc.stop()
    assert not svc.manager.socket_path.exists() and not svc.podresources.socket_path.exists()
