"""The Ascend device plugin as a process over the emulated libdcmi.so, a fake kubelet and an EmbeddedTestbed.

Also the emulated driver alone: visibility, vNPU views, faults and vNPU creation, read through the
plugin's own ctypes binding in child processes (the loader path is fixed at process start).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from hami_stack.devices.ascend import DEFAULT_CHIPS
from hami_stack.protocol.nodelock import format_lock
from hami_stack.protocol.register import decode_register_json
from kubeclient.client import Kube
from kubeletapi import deviceplugin_v1beta1_pb2 as api
from kubeletapi import deviceplugin_v1beta1_pb2_grpc as api_grpc
from testbed.embedded import EmbeddedTestbed
from testbed.hardware.ascend import create_npu_state, npu_library_env
from tests.hami.test_device_plugin import FakeKubelet, wait_for

pytestmark = [pytest.mark.hardware, pytest.mark.ascend]

REPO = Path(__file__).resolve().parents[2]
NODE = "npu-node"
CW = "Ascend910B3"


def dcmi_view(state_dir: Path, visible: str | None, *, host: bool = False, spec: str | None = None) -> Any:
    code = (
        "import json; from hami_stack.device_plugin.ascend import dcmi\n"
        "ns = dcmi.discover()\n"
        "rows = [[n.phy_id, n.health, n.aicore, *dcmi.memory(n.card_id, n.device_id)] for n in ns]\n"
        "print(json.dumps(rows))"
    )
    env = npu_library_env(state_dir, visible, host_view=host, vnpu_spec=spec)
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_emulated_dcmi_visibility_vnpu_view_and_faults(tmp_path: Path) -> None:
    st = create_npu_state(tmp_path, {"chip": "910B3", "count": 4}, node_name="n")
    assert [d[0] for d in dcmi_view(tmp_path, None, host=True)] == [0, 1, 2, 3]
    assert dcmi_view(tmp_path, None) == []  # no ASCEND_VISIBLE_DEVICES, no host view: nothing
    # logic IDs follow the visible order; physical IDs stay the node's
    assert dcmi_view(tmp_path, "2,0") == [[2, 0, 20, 65536, 0], [0, 0, 20, 65536, 0]]
    # a container given a template sees the vNPU: its memory and AI cores
    assert dcmi_view(tmp_path, "1", spec="vir05_1c_16g") == [[1, 0, 5, 16384, 0]]
    assert dcmi_view(tmp_path, "1", spec="vir99") == []
    st.set_health(1, 2)
    st.lose(3)
    st.set_used_mib(0, 1234)
    assert dcmi_view(tmp_path, None, host=True) == [
        [0, 0, 20, 65536, 1234],
        [1, 2, 20, 65536, 0],
        [2, 0, 20, 65536, 0],
    ]


def test_emulated_dcmi_vnpu_create_destroy(tmp_path: Path) -> None:
    st = create_npu_state(tmp_path, {"chip": "310P3", "count": 2}, node_name="n")
    code = (
        "from hami_stack.device_plugin.ascend import dcmi\n"
        "a = dcmi.create_vnpu(1, 0, 'vir04'); b = dcmi.create_vnpu(1, 0, 'vir04')\n"
        "try:\n    dcmi.create_vnpu(1, 0, 'vir01')\nexcept dcmi.DcmiError as e:\n    print('full', e.code)\n"
        "dcmi.destroy_vnpu(1, 0, a); print(a, b)\n"
    )
    env = npu_library_env(tmp_path, None, host_view=True)
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.split("\n")
    assert lines[0] == "full -8020"  # 8 AI cores: two vir04 (4 each) fill the card
    a, b = (int(x) for x in lines[1].split())
    assert st.vnpus(1) == [(b, "vir04")] and a != b


# --- the plugin process ---------------------------------------------------------------------------


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
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("adp")
    out = {k: base / k for k in ("sock", "npus", "cfg", "hook")}
    for d in out.values():
        d.mkdir()
    return out


@pytest.fixture(scope="module")
def state(dirs: dict[str, Path]) -> Any:
    return create_npu_state(dirs["npus"], {"chip": "910B3", "count": 8}, node_name=NODE)


def _config_yaml() -> str:
    chips = []
    for c in DEFAULT_CHIPS:
        chips.append(
            {
                "chipName": c.chip_name,
                "commonWord": c.common_word,
                "resourceName": c.resource_name,
                "resourceMemoryName": c.resource_memory_name,
                "resourceCoreName": c.resource_core_name,
                "memoryAllocatable": c.memory_allocatable,
                "memoryCapacity": c.memory_capacity,
                "aiCore": c.ai_core,
                "templates": [{"name": t.name, "memory": t.memory, "aiCore": t.ai_core} for t in c.templates],
            }
        )
    return json.dumps({"vnpus": {"hamiVnpuCore": False, "configs": chips}})


@pytest.fixture(scope="module")
def plugin(
    testbed: EmbeddedTestbed, kube: Kube, state: Any, dirs: dict[str, Path]
) -> Iterator[tuple[subprocess.Popen[bytes], FakeKubelet]]:
    kubelet = FakeKubelet(dirs["sock"])
    kubelet.start()
    (dirs["cfg"] / "device-config.yaml").write_text(_config_yaml())
    env = npu_library_env(state.path, None, host_view=True)
    env.update(NODE_NAME=NODE, PYTHONPATH=str(REPO), HOOK_PATH=str(dirs["hook"]))
    log = open(dirs["cfg"] / "plugin.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hami_stack.device_plugin.ascend",
            f"--kubeconfig={testbed.kubeconfig_path}",
            f"--config_file={dirs['cfg'] / 'device-config.yaml'}",
            f"--socket-dir={dirs['sock']}",
            "--register-interval=1",
            "--health-interval=0.2",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: kubelet.requests or proc.poll() is not None, 30, "registration")
        if proc.poll() is not None:
            raise AssertionError((dirs["cfg"] / "plugin.log").read_text())
        yield proc, kubelet
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        kubelet.stop()


def _ann(kube: Kube) -> dict[str, str]:
    return kube.get(f"/api/v1/nodes/{NODE}")["metadata"].get("annotations") or {}


def _devices(dirs: dict[str, Path]) -> dict[str, str]:
    with grpc.insecure_channel(f"unix://{dirs['sock'] / f'hami-ascend-{CW}.sock'}") as ch:
        stream = api_grpc.DevicePluginStub(ch).ListAndWatch(api.Empty(), timeout=10)
        first = next(stream)
        stream.cancel()
    return {d.ID: d.health for d in first.devices}


def test_plugin_registers_and_annotates_the_node(
    plugin: Any, kube: Kube, state: Any, dirs: dict[str, Path]
) -> None:
    _, kubelet = plugin
    req = kubelet.requests[0]
    assert (req.resource_name, req.endpoint) == (f"huawei.com/{CW}", f"hami-ascend-{CW}.sock")
    a = wait_for(
        lambda: (v := _ann(kube)).get(f"hami.io/node-register-{CW}") and v, what="register annotation"
    )
    devs = decode_register_json(a[f"hami.io/node-register-{CW}"])
    assert [d.id for d in devs] == state.uuids
    assert [(d.index, d.count, d.devmem, d.devcore, d.type, d.custom_info) for d in devs[3:5]] == [
        (3, 4, 65536, 20, CW, {"NetworkID": 0}),
        (4, 4, 65536, 20, CW, {"NetworkID": 1}),
    ]
    assert (
        a[f"hami.io/node-handshake-{CW}"].startswith("Reported_") and "." in a[f"hami.io/node-handshake-{CW}"]
    )
    assert a["hami-vnpu-core"] == "false"
    ids = _devices(dirs)
    assert len(ids) == 32 and set(ids.values()) == {"Healthy"}


def test_health_fault_reaches_kubelet_and_annotation(
    plugin: Any, kube: Kube, state: Any, dirs: dict[str, Path]
) -> None:
    state.set_health(2, 3)
    try:
        wait_for(lambda: _devices(dirs)[f"{state.uuids[2]}-0"] == "Unhealthy", 10, "unhealthy device")
        reg = wait_for(
            lambda: not decode_register_json(_ann(kube)[f"hami.io/node-register-{CW}"])[2].health,
            10,
            "unhealthy in the register annotation",
        )
        assert reg
    finally:
        state.set_health(2, 0)
    wait_for(lambda: _devices(dirs)[f"{state.uuids[2]}-0"] == "Healthy", 10, "recovery")


def test_allocate_hard_mode_template(plugin: Any, kube: Kube, state: Any, dirs: dict[str, Path]) -> None:
    import datetime as dt

    uuid = state.uuids[5]
    value = f"{uuid},{CW},16384,0:;"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "npu-pod",
            "namespace": "default",
            "annotations": {
                f"hami.io/{CW}-devices-to-allocate": value,
                "hami.io/vgpu-node": NODE,
                "hami.io/bind-phase": "allocating",
                "hami.io/bind-time": str(int(time.time())),
            },
        },
        "spec": {
            "nodeName": NODE,
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "resources": {"limits": {f"huawei.com/{CW}": "1", f"huawei.com/{CW}-memory": "16384"}},
                }
            ],
        },
    }
    kube.create("/api/v1/namespaces/default/pods", pod)
    lock = format_lock(dt.datetime.now(dt.UTC), "default", "npu-pod")
    kube.patch(f"/api/v1/nodes/{NODE}", {"metadata": {"annotations": {"hami.io/mutex.lock": lock}}}, "merge")
    with grpc.insecure_channel(f"unix://{dirs['sock'] / f'hami-ascend-{CW}.sock'}") as ch:
        resp = api_grpc.DevicePluginStub(ch).Allocate(
            api.AllocateRequest(container_requests=[api.ContainerAllocateRequest(devices_ids=[f"{uuid}-0"])]),
            timeout=10,
        )
    envs = dict(resp.container_responses[0].envs)
    assert envs == {"ASCEND_VISIBLE_DEVICES": "5", "ASCEND_VNPU_SPECS": "vir05_1c_16g"}
    after = kube.get("/api/v1/namespaces/default/pods/npu-pod")["metadata"]["annotations"]
    assert after["hami.io/bind-phase"] == "success"
    assert "hami.io/mutex.lock" not in _ann(kube)
    assert os.environ.get("ASCEND_VISIBLE_DEVICES") is None  # the test process itself stays clean


def test_register_entries_and_hook_dir_in_hami_core_mode(tmp_path: Path) -> None:
    from hami_stack.device_plugin.ascend import dcmi
    from hami_stack.device_plugin.ascend.plugin import prepare_hook_dir, register_entries
    from hami_stack.devices.ascend import AscendFamily

    cfg = next(c for c in DEFAULT_CHIPS if c.common_word == "Ascend910C")
    npus = [
        dcmi.Npu(f"U{i}", i, i, i // 2, i % 2, "Ascend", "Ascend910", 20, 3 if i == 1 else 0)
        for i in range(6)
    ]
    soft = register_entries(AscendFamily(cfg), npus, True)
    hard = register_entries(AscendFamily(cfg), npus, False)
    assert [e.devcore for e in soft[:1] + hard[:1]] == [100, 20]
    assert [e.health for e in hard] == [True, False, True, True, True, True]
    assert {e.custom_info["NetworkID"] for e in hard} == {0}  # 910C: one HCCS network
    assert all(e.mode == "" and e.count == 4 and e.devmem == 65536 for e in hard)
    prepare_hook_dir(tmp_path / "hook")  # the limiter installed and preloaded: tests/ascend/test_limiter.py
    assert (tmp_path / "hook" / "ld.so.preload").read_text() == "/hami-vnpu-core/libvnpu.so\n"
    assert (tmp_path / "hook" / "containers").is_dir()
