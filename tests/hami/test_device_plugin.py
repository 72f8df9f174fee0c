"""The NVIDIA device plugin as a process: emulated NVML, a fake kubelet written here, an EmbeddedTestbed.

The plugin runs as ``python -m hami_stack.device_plugin.nvidia`` with the emulated driver libraries
(``testbed.hardware.library_env``), registers with the fake kubelet's ``Registration`` service, streams
virtual devices, writes the node annotations and answers Allocate from the pod annotations.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.nodelock import format_lock
from hami_stack.protocol.register import decode_register_json
from kubeclient.client import Kube
from kubeletapi import deviceplugin_v1beta1_pb2 as api
from kubeletapi import deviceplugin_v1beta1_pb2_grpc as api_grpc
from testbed.embedded import EmbeddedTestbed
from testbed.hardware import create_state, library_env

from .shim_helpers import install_stand_in_shim

pytestmark = pytest.mark.hardware

REPO = Path(__file__).resolve().parents[2]
NODE = "dp-node"
NS = "default"


def wait_for(fn: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class FakeKubelet(api_grpc.RegistrationServicer):
    """Just the Registration service of a kubelet."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self.requests: list[api.RegisterRequest] = []
        self.server: grpc.Server | None = None

    def Register(self, request: api.RegisterRequest, context: Any) -> api.Empty:
        self.requests.append(request)
        return api.Empty()

    def start(self) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_grpc.add_RegistrationServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix://{self.socket_dir / 'kubelet.sock'}")
        self.server.start()

    def restart(self) -> None:
        """What a kubelet restart looks like to plugins: every socket goes, kubelet.sock comes back."""
        assert self.server is not None
        self.server.stop(None).wait()
        for p in self.socket_dir.glob("*.sock"):
            p.unlink()
        self.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(None).wait()


@pytest.fixture(scope="module")
def testbed() -> Iterator[EmbeddedTestbed]:
    with EmbeddedTestbed(33) as tb:
        yield tb


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    k = Kube.from_config(str(testbed.kubeconfig_path))
    k.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    return k


@pytest.fixture(scope="module")
def env_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dp")
    dirs = {k: base / k for k in ("sock", "hook", "gpus", "cfg")}
    for d in dirs.values():
        d.mkdir()
    install_stand_in_shim(dirs["hook"])
    return dirs


@pytest.fixture(scope="module")
def state(env_dirs: dict[str, Path]) -> Any:
    st = create_state(
        env_dirs["gpus"], {"model": "A100-SXM4-80GB", "count": 2, "numa": [0, 1]}, node_name=NODE
    )
    yield st
    st.close()


@pytest.fixture(scope="module")
def kubelet(env_dirs: dict[str, Path]) -> Iterator[FakeKubelet]:
    k = FakeKubelet(env_dirs["sock"])
    k.start()
    yield k
    k.stop()


@pytest.fixture(scope="module")
def plugin(
    testbed: EmbeddedTestbed, kube: Kube, kubelet: FakeKubelet, state: Any, env_dirs: dict[str, Path]
) -> Iterator[subprocess.Popen[bytes]]:
    cfg = env_dirs["cfg"]
    (cfg / "device-config.yaml").write_text("nvidia:\n  deviceSplitCount: 4\n  deviceMemoryScaling: 1\n")
    (cfg / "config.json").write_text(json.dumps({"nodeconfig": [{"name": "other", "devicesplitcount": 7}]}))
    env = library_env(state.path, "all", base=dict(os.environ))
    env.update(HOOK_PATH=str(env_dirs["hook"]), NODE_NAME=NODE, PYTHONPATH=str(REPO))
    log = open(cfg / "plugin.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hami_stack.device_plugin.nvidia",
            f"--kubeconfig={testbed.kubeconfig_path}",
            f"--kubelet-socket={env_dirs['sock'] / 'kubelet.sock'}",
            f"--config-file={cfg / 'device-config.yaml'}",
            f"--node-config-file={cfg / 'config.json'}",
            "--register-interval=1",
            "--health-interval=0.2",
            "--xid-recovery=0.5",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: kubelet.requests or proc.poll() is not None, 30, "registration")
        if proc.poll() is not None:
            raise AssertionError((cfg / "plugin.log").read_text())
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def stub(plugin: subprocess.Popen[bytes], env_dirs: dict[str, Path]) -> Iterator[api_grpc.DevicePluginStub]:
    with grpc.insecure_channel(f"unix://{env_dirs['sock'] / 'nvidia-gpu.sock'}") as ch:
        yield api_grpc.DevicePluginStub(ch)


def _node(kube: Kube) -> dict[str, Any]:
    return kube.get(f"/api/v1/nodes/{NODE}")


def _node_ann(kube: Kube) -> dict[str, str]:
    return _node(kube)["metadata"].get("annotations") or {}


def _first_list(stub: api_grpc.DevicePluginStub) -> api.ListAndWatchResponse:
    stream = stub.ListAndWatch(api.Empty(), timeout=10)
    first = next(stream)
    stream.cancel()
    return first


def test_registers_with_the_kubelet(plugin: Any, kubelet: FakeKubelet) -> None:
    req = kubelet.requests[0]
    assert (req.version, req.endpoint, req.resource_name) == ("v1beta1", "nvidia-gpu.sock", "nvidia.com/gpu")
    assert req.options.get_preferred_allocation_available


def test_list_and_watch_advertises_split_virtual_devices(stub: Any, state: Any) -> None:
    resp = _first_list(stub)
    ids = sorted(d.ID for d in resp.devices)
    want = sorted(f"{g.uuid}-{i}" for g in state.gpus for i in range(4))  # deviceSplitCount 4 from the file
    assert ids == want
    assert {d.health for d in resp.devices} == {"Healthy"}
    assert stub.GetDevicePluginOptions(api.Empty()).get_preferred_allocation_available


def test_node_register_annotation_and_handshake(plugin: Any, kube: Kube, state: Any) -> None:
    a = wait_for(
        lambda: (v := _node_ann(kube)).get(ann.NVIDIA_KEYS.register) and v, what="register annotation"
    )
    devices = decode_register_json(a[ann.NVIDIA_KEYS.register])
    assert [d.id for d in devices] == [g.uuid for g in state.gpus]
    d1 = devices[1]
    assert (d1.count, d1.devmem, d1.devcore, d1.type, d1.index, d1.numa, d1.health, d1.mode) == (
        4,
        81920,
        100,
        "NVIDIA A100-SXM4-80GB",
        1,
        1,
        True,
        "hami-core",  # NVML name starts with NVIDIA
    )
    assert a[ann.NVIDIA_KEYS.handshake].startswith("Reported_")
    # the scheduler's Requesting_ is overwritten on the next pass
    kube.patch(
        f"/api/v1/nodes/{NODE}",
        {"metadata": {"annotations": {ann.NVIDIA_KEYS.handshake: "Requesting_x"}}},
        "merge",
    )
    wait_for(lambda: _node_ann(kube)[ann.NVIDIA_KEYS.handshake].startswith("Reported_"), what="handshake")


def _bound_pod(kube: Kube, name: str, to_allocate: str, *, lock: bool = True) -> dict[str, Any]:
    now = int(time.time())
    meta = {
        "name": name,
        "namespace": NS,
        "annotations": {
            ann.BIND_PHASE: "allocating",
            ann.BIND_TIME: str(now),
            ann.VGPU_NODE: NODE,
            ann.NVIDIA_KEYS.to_allocate: to_allocate,
            ann.NVIDIA_KEYS.allocated: to_allocate,
        },
    }
    spec = {
        "nodeName": NODE,
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [
            {"name": "main", "image": "busybox", "env": [{"name": "CUDA_DISABLE_CONTROL", "value": "false"}]},
            {
                "name": "nocontrol",
                "image": "busybox",
                "env": [{"name": "CUDA_DISABLE_CONTROL", "value": "true"}],
            },
        ],
    }
    pod = kube.create(
        f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    )
    if lock:
        value = format_lock(dt.datetime.now(dt.UTC), NS, name)
        kube.patch(f"/api/v1/nodes/{NODE}", {"metadata": {"annotations": {ann.NODE_LOCK: value}}}, "merge")
    return pod


def _pod_ann(kube: Kube, name: str) -> dict[str, str]:
    return kube.get(f"/api/v1/namespaces/{NS}/pods/{name}")["metadata"]["annotations"]


def test_allocate_answers_from_the_pod_and_finishes_the_bind(
    stub: Any, kube: Kube, state: Any, env_dirs: dict[str, Path]
) -> None:
    a, b = state.gpus[0].uuid, state.gpus[1].uuid
    pod = _bound_pod(kube, "alloc-ok", f";{a},NVIDIA,3000,30:;{a},NVIDIA,1000,0:{b},NVIDIA,2000,0:;")
    hook = env_dirs["hook"]

    first = stub.Allocate(api.AllocateRequest(container_requests=[{"devices_ids": [f"{a}-0"]}]), timeout=10)
    r = first.container_responses[0]
    assert r.envs["NVIDIA_VISIBLE_DEVICES"] == a
    assert r.envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert r.envs["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert r.envs["CUDA_DEVICE_MEMORY_SHARED_CACHE"].startswith(f"{hook}/vgpu/")
    assert r.envs["CUDA_DEVICE_MEMORY_SHARED_CACHE"].endswith(".cache")
    mounts = {m.container_path: (m.host_path, m.read_only) for m in r.mounts}
    container_dir = hook / "vgpu" / "containers" / f"{pod['metadata']['uid']}_main"
    assert mounts["/etc/ld.so.preload"] == (f"{hook}/vgpu/ld.so.preload", True)
    assert mounts[f"{hook}/vgpu/libvgpu.so"] == (f"{hook}/vgpu/libvgpu.so", True)
    assert mounts[f"{hook}/vgpu"] == (str(container_dir), False)
    assert container_dir.is_dir() and (container_dir.stat().st_mode & 0o777) == 0o777
    # one container of two done: the slot is emptied, the bind is still allocating, the lock stays
    pa = _pod_ann(kube, "alloc-ok")
    assert pa[ann.NVIDIA_KEYS.to_allocate] == f";;{a},NVIDIA,1000,0:{b},NVIDIA,2000,0:;;"  # HAMi's form
    assert pa[ann.BIND_PHASE] == "allocating"
    assert ann.NODE_LOCK in _node_ann(kube)

    second = stub.Allocate(
        api.AllocateRequest(container_requests=[{"devices_ids": [f"{a}-1", f"{b}-0"]}]), timeout=10
    )
    r2 = second.container_responses[0]
    assert r2.envs["NVIDIA_VISIBLE_DEVICES"] == f"{a},{b}"
    assert (r2.envs["CUDA_DEVICE_MEMORY_LIMIT_0"], r2.envs["CUDA_DEVICE_MEMORY_LIMIT_1"]) == (
        "1000m",
        "2000m",
    )
    assert "/etc/ld.so.preload" not in {m.container_path for m in r2.mounts}  # CUDA_DISABLE_CONTROL=true
    pa = _pod_ann(kube, "alloc-ok")
    # HAMi keeps the piece after the final ";" on every rewrite, so each Allocate adds one
    assert pa[ann.NVIDIA_KEYS.to_allocate] == ";;;;;"
    assert pa[ann.BIND_PHASE] == "success"
    assert ann.NODE_LOCK not in _node_ann(kube)

    # a kubelet that restarted before checkpointing asks again: the same answer, from the plugin's own
    # record (the pod's annotations are spent), once per container
    again = stub.Allocate(api.AllocateRequest(container_requests=[{"devices_ids": [f"{a}-2"]}]), timeout=10)
    r3 = again.container_responses[0]
    assert (r3.envs["NVIDIA_VISIBLE_DEVICES"], r3.envs["CUDA_DEVICE_MEMORY_LIMIT_0"]) == (a, "3000m")
    assert r3.envs["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert ann.NODE_LOCK not in _node_ann(kube)
    assert "no recorded container allocation" in _refused(stub, [f"{a}-3"])
    _delete_pod(kube, "alloc-ok")


def test_allocate_device_count_mismatch_fails_the_bind(stub: Any, kube: Kube, state: Any) -> None:
    a = state.gpus[0].uuid
    _bound_pod(kube, "alloc-mismatch", f"{a},NVIDIA,3000,0:;")
    with pytest.raises(grpc.RpcError) as err:
        stub.Allocate(
            api.AllocateRequest(container_requests=[{"devices_ids": [f"{a}-0", f"{a}-1"]}]), timeout=10
        )
    assert err.value.details() == "device number not matched"
    assert _pod_ann(kube, "alloc-mismatch")[ann.BIND_PHASE] == "failed"
    assert ann.NODE_LOCK not in _node_ann(kube)


def test_allocate_without_a_binding_pod(stub: Any, kube: Kube, state: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Allocate(
            api.AllocateRequest(container_requests=[{"devices_ids": [f"{state.gpus[0].uuid}-0"]}]), timeout=10
        )
    assert err.value.details().startswith(f"no binding pod found on node {NODE}: ")
    assert ann.NODE_LOCK in err.value.details()


def _forged_pod(kube: Kube, name: str, to_allocate: str | None) -> dict[str, Any]:
    """A tenant's pod: the webhook's opt-out label, ``nodeName`` set directly, and (unless None) every
    annotation of a bound pod written by the tenant itself."""
    annotations = {}
    if to_allocate is not None:
        annotations = {
            ann.BIND_PHASE: "allocating",
            ann.BIND_TIME: str(int(time.time())),
            ann.VGPU_NODE: NODE,
            ann.NVIDIA_KEYS.to_allocate: to_allocate,
            ann.NVIDIA_KEYS.allocated: to_allocate,
        }
    meta = {
        "name": name,
        "namespace": NS,
        "labels": {"hami.io/webhook": "ignore"},
        "annotations": annotations,
    }
    limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "81920"}
    spec = {
        "nodeName": NODE,
        "containers": [{"name": "main", "image": "busybox", "resources": {"limits": limits}}],
    }
    return kube.create(
        f"/api/v1/namespaces/{NS}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    )


def _delete_pod(kube: Kube, name: str) -> None:
    kube.delete(f"/api/v1/namespaces/{NS}/pods/{name}", gracePeriodSeconds=0)


def _set_lock(kube: Kube, value: str | None) -> None:
    kube.patch(f"/api/v1/nodes/{NODE}", {"metadata": {"annotations": {ann.NODE_LOCK: value}}}, "merge")


def _warnings(kube: Kube, pod: str, reason: str) -> list[dict[str, Any]]:
    items = kube.get(f"/api/v1/namespaces/{NS}/events").get("items") or []
    return [
        e
        for e in items
        if (e.get("involvedObject") or {}).get("name") == pod
        and e.get("reason") == reason
        and e.get("type") == "Warning"
    ]


def _refused(stub: Any, ids: list[str]) -> str:
    with pytest.raises(grpc.RpcError) as err:
        stub.Allocate(api.AllocateRequest(container_requests=[{"devices_ids": ids}]), timeout=10)
    return str(err.value.details())


def test_forged_allocation_with_the_opt_out_label_gets_no_devices(stub: Any, kube: Kube, state: Any) -> None:
    # finding 3a: webhook opt-out label, nodeName, forged to-allocate for a whole 80 GiB GPU; no lock
    a = state.gpus[0].uuid
    _forged_pod(kube, "forged", f"{a},NVIDIA,81920,0:;")
    details = _refused(stub, [f"{a}-0"])
    assert details == (
        f"no binding pod found on node {NODE}: node {NODE} has no {ann.NODE_LOCK}: "
        "the HAMi scheduler bound no pod here"
    )
    # nothing written for the forged pod: it is neither finished nor given a lock
    assert _pod_ann(kube, "forged")[ann.NVIDIA_KEYS.to_allocate] == f"{a},NVIDIA,81920,0:;"
    assert ann.NODE_LOCK not in _node_ann(kube)
    ev = wait_for(lambda: _warnings(kube, "forged", "AllocationRefused"), what="Warning event on the pod")
    assert "devices not handed out" in ev[0]["message"] and ann.NODE_LOCK in ev[0]["message"]
    _delete_pod(kube, "forged")


def test_a_pod_placed_beside_the_lock_holder_cannot_take_its_allocation(
    stub: Any, kube: Kube, state: Any
) -> None:
    # the kubelet does not say which pod an Allocate is for: while a pod the scheduler never placed
    # waits on the node, the holder's allocation is not handed out (it could go to that pod)
    b = state.gpus[1].uuid
    _bound_pod(kube, "holder", f"{b},NVIDIA,1000,0:;")
    _forged_pod(kube, "sneaky", None)  # no annotations at all: only nodeName and a GPU request
    details = _refused(stub, [f"{b}-0"])
    assert f"pod(s) {NS}/sneaky also wait for it" in details and f"lock holder {NS}/holder" in details
    # the holder is untouched: its allocation is still pending and the node still locked for it
    assert _pod_ann(kube, "holder")[ann.BIND_PHASE] == "allocating"
    assert _node_ann(kube)[ann.NODE_LOCK].endswith(f",{NS},holder")
    wait_for(lambda: _warnings(kube, "sneaky", "AllocationRefused"), what="Warning event on the other pod")
    _delete_pod(kube, "sneaky")
    resp = stub.Allocate(api.AllocateRequest(container_requests=[{"devices_ids": [f"{b}-0"]}]), timeout=10)
    assert resp.container_responses[0].envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "1000m"
    assert _pod_ann(kube, "holder")[ann.BIND_PHASE] == "success"
    assert ann.NODE_LOCK not in _node_ann(kube)
    _delete_pod(kube, "holder")  # served and never admitted (no kubelet here): a repeat would go to it


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("expired", "expired"),
        ("legacy", "names no pod"),
        ("other-node", "has hami.io/vgpu-node='elsewhere'"),
        ("not-allocating", "has hami.io/bind-phase='success', not 'allocating'"),
        ("no-bind-time", "has no hami.io/bind-time"),
        ("gone", "does not exist"),
    ],
)
def test_the_lock_must_vouch_for_a_live_allocating_holder(
    stub: Any, kube: Kube, state: Any, case: str, expect: str
) -> None:
    a = state.gpus[0].uuid
    name = f"vouch-{case}"
    _bound_pod(kube, name, f"{a},NVIDIA,1000,0:;")
    now = dt.datetime.now(dt.UTC)
    if case == "expired":
        _set_lock(kube, format_lock(now - dt.timedelta(minutes=6), NS, name))
    elif case == "legacy":
        _set_lock(kube, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    elif case == "gone":
        _delete_pod(kube, name)
    else:
        change = {
            "other-node": {ann.VGPU_NODE: "elsewhere"},
            "not-allocating": {ann.BIND_PHASE: "success"},
            "no-bind-time": {ann.BIND_TIME: None},
        }[case]
        kube.patch(f"/api/v1/namespaces/{NS}/pods/{name}", {"metadata": {"annotations": change}}, "merge")
    details = _refused(stub, [f"{a}-0"])
    assert details.startswith(f"no binding pod found on node {NODE}: ") and expect in details, details
    assert ann.NODE_LOCK in _node_ann(kube)  # a refusal releases nothing
    _set_lock(kube, None)
    if case != "gone":
        _delete_pod(kube, name)


def test_allocate_serves_the_scheduled_gpu_whatever_ids_the_kubelet_picked(
    stub: Any, kube: Kube, state: Any
) -> None:
    a, b = state.gpus[0].uuid, state.gpus[1].uuid
    _bound_pod(kube, "other-ids", f"{a},NVIDIA,1000,0:;")
    resp = stub.Allocate(api.AllocateRequest(container_requests=[{"devices_ids": [f"{b}-1"]}]), timeout=10)
    envs = resp.container_responses[0].envs
    assert (envs["NVIDIA_VISIBLE_DEVICES"], envs["CUDA_DEVICE_MEMORY_LIMIT_0"]) == (a, "1000m")
    assert _pod_ann(kube, "other-ids")[ann.BIND_PHASE] == "success"
    assert ann.NODE_LOCK not in _node_ann(kube)
    _delete_pod(kube, "other-ids")


def test_failed_allocate_of_the_holder_releases_the_lock_with_an_event(
    stub: Any, kube: Kube, state: Any
) -> None:
    a = state.gpus[0].uuid
    _bound_pod(kube, "too-few", f"{a},NVIDIA,1000,0:;")
    assert _refused(stub, [f"{a}-0", f"{a}-1"]) == "device number not matched"
    assert _pod_ann(kube, "too-few")[ann.BIND_PHASE] == "failed"
    assert ann.NODE_LOCK not in _node_ann(kube)
    ev = wait_for(lambda: _warnings(kube, "too-few", "AllocationFailed"), what="Warning event on the holder")
    assert ev[0]["message"] == f"Allocate on node {NODE} failed: device number not matched"


def test_preferred_allocation_steers_to_the_scheduled_gpu(stub: Any, kube: Kube, state: Any) -> None:
    a, b = state.gpus[0].uuid, state.gpus[1].uuid
    _bound_pod(kube, "prefer", f"{b},NVIDIA,1000,0:;")
    available = [f"{a}-0", f"{a}-1", f"{b}-2", f"{b}-3"]
    resp = stub.GetPreferredAllocation(
        api.PreferredAllocationRequest(
            container_requests=[{"available_deviceIDs": available, "allocation_size": 1}]
        ),
        timeout=10,
    )
    assert list(resp.container_responses[0].deviceIDs) == [f"{b}-2"]
    # clean up: let the pod's Allocate finish so later tests see no pending pod
    stub.Allocate(api.AllocateRequest(container_requests=[{"devices_ids": [f"{b}-2"]}]), timeout=10)


def test_reregisters_after_a_kubelet_restart(plugin: Any, kubelet: FakeKubelet) -> None:
    before = len(kubelet.requests)
    kubelet.restart()
    wait_for(lambda: len(kubelet.requests) > before, what="re-registration")
    assert kubelet.requests[-1].endpoint == "nvidia-gpu.sock"


def _health_by_gpu(resp: api.ListAndWatchResponse) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in resp.devices:
        out.setdefault(d.ID.rsplit("-", 1)[0], set()).add(d.health)
    return out


def test_xid_marks_the_gpu_unhealthy_until_it_recovers(
    stub: Any, kube: Kube, state: Any, env_dirs: dict[str, Path]
) -> None:
    target, other = state.gpus[1].uuid, state.gpus[0].uuid
    stream = stub.ListAndWatch(api.Empty(), timeout=30)
    assert {d.health for d in next(stream).devices} == {"Healthy"}
    state.raise_xid(1, 48)  # double-bit ECC: a device error, not an application one
    for resp in stream:
        seen = _health_by_gpu(resp)
        if seen[target] == {"Unhealthy"}:
            break
    assert seen[other] == {"Healthy"}

    def register_health() -> list[bool]:
        return [d.health for d in decode_register_json(_node_ann(kube)[ann.NVIDIA_KEYS.register])]

    wait_for(lambda: register_health() == [True, False], what="unhealthy GPU in the register annotation")
    state.clear_faults(1)  # the card is repaired: the health poll sees it well after --xid-recovery
    for resp in stream:
        if _health_by_gpu(resp)[target] == {"Healthy"}:
            break
    stream.cancel()
    wait_for(lambda: register_health() == [True, True], what="healthy GPU in the register annotation")


def test_plugin_is_still_running(plugin: subprocess.Popen[bytes], env_dirs: dict[str, Path]) -> None:
    assert plugin.poll() is None, (env_dirs["cfg"] / "plugin.log").read_text()
