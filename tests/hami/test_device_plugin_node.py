"""The NVIDIA device plugin on a node agent (the testbed's kubelet) with eight emulated A100s.

What a cluster user sees, not what the plugin says: the Node's ``nvidia.com/gpu`` allocatable, and a
pod's phase. Reproduces two findings of issue 12:

* finding 5: an Xid 79 on GPU 3 of 8 took the whole node's allocatable to 0 and clearing it did not
  bring it back; a GPU unhealthy without an Xid was never noticed. Here: only GPU 3 leaves (80 -> 70)
  and comes back (70 -> 80), both for the Xid and for NVML health alone, and for a lost GPU;
* finding 3a: a pod with the webhook's opt-out label, ``nodeName`` set and a forged
  ``hami.io/vgpu-devices-to-allocate`` ran with ``CUDA_DEVICE_MEMORY_LIMIT_0=81920m``. Here no webhook
  runs at all (the "webhook down" case too): the kubelet's Allocate is refused, the pod fails admission
  and its container never starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.register import decode_register_json
from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.hardware import library_env
from testbed.hardware.state import DeviceState
from testbed.node import AgentOptions, NodeAgents, parse_inventory
from testbed.node.wiring import device_services

from ..node.helpers import wait_for
from .shim_helpers import install_stand_in_shim

pytestmark = pytest.mark.hardware

REPO = Path(__file__).resolve().parents[2]
NODE = "gpu8"
NS = "default"
SPLIT = 10
GPUS = 8


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory(
        {
            "nodes": [
                {
                    "name": NODE,
                    "capacity": {"cpu": "8"},
                    "hardware": {"nvidia": {"model": "A100-SXM4-80GB", "count": GPUS}},
                }
            ]
        }
    )
    data = tmp_path_factory.mktemp("dp-node")
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, data, options=opts, device_managers=device_services) as ag:
        yield ag


@pytest.fixture(scope="module")
def state(agents: NodeAgents) -> Iterator[DeviceState]:
    hw = agents.agent(NODE).hardware_dir
    assert hw is not None
    st = DeviceState(hw)
    yield st
    st.close()


@pytest.fixture(scope="module")
def plugin(
    testbed: EmbeddedTestbed, agents: NodeAgents, state: DeviceState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    cfg = tmp_path_factory.mktemp("dp-node-cfg")
    (cfg / "device-config.yaml").write_text(f"nvidia:\n  deviceSplitCount: {SPLIT}\n")
    root = agents.agent(NODE).root
    socket = root / "var/lib/kubelet/device-plugins/kubelet.sock"
    env = library_env(state.path, "all", base=dict(os.environ), host_view=True)
    install_stand_in_shim(cfg / "hook")
    env.update(HOOK_PATH=str(cfg / "hook"), NODE_NAME=NODE, PYTHONPATH=str(REPO))
    log = open(cfg / "plugin.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hami_stack.device_plugin.nvidia",
            f"--kubeconfig={testbed.kubeconfig_path}",
            f"--kubelet-socket={socket}",
            f"--config-file={cfg / 'device-config.yaml'}",
            f"--node-config-file={cfg / 'none.json'}",
            "--register-interval=30",  # health changes must not wait for the registration pass
            "--health-interval=0.3",
            "--xid-recovery=1",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_path = cfg / "plugin.log"  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _allocatable(kube: Kube) -> int:
    node = kube.get(f"/api/v1/nodes/{NODE}")
    return int((node.get("status") or {}).get("allocatable", {}).get("nvidia.com/gpu", "0"))


def _register_health(kube: Kube) -> list[bool]:
    node = kube.get(f"/api/v1/nodes/{NODE}")
    value = (node["metadata"].get("annotations") or {}).get(ann.NVIDIA_KEYS.register, "[]")
    return [d.health for d in decode_register_json(value)]


def _expect(kube: Kube, plugin: Any, allocatable: int, healthy: list[bool], what: str) -> None:
    try:
        wait_for(lambda: _allocatable(kube) == allocatable, timeout=20, every=0.1)
        wait_for(lambda: _register_health(kube) == healthy, timeout=20, every=0.1)
    except AssertionError as e:
        log = Path(plugin.log_path).read_text()[-3000:]
        raise AssertionError(
            f"{what}: allocatable {_allocatable(kube)}, health {_register_health(kube)}\n{log}"
        ) from e


def _all_but(i: int) -> list[bool]:
    return [j != i for j in range(GPUS)]


def test_all_gpus_allocatable(kube: Kube, plugin: Any) -> None:
    _expect(kube, plugin, GPUS * SPLIT, [True] * GPUS, "start")


def test_xid_79_takes_out_only_that_gpu_and_it_comes_back(
    kube: Kube, plugin: Any, state: DeviceState
) -> None:
    _expect(kube, plugin, GPUS * SPLIT, [True] * GPUS, "before")
    state.raise_xid(3, 79)  # fallen off the bus: NVML answers GPU_IS_LOST for it, handles too
    _expect(kube, plugin, (GPUS - 1) * SPLIT, _all_but(3), "after Xid 79 on GPU 3")
    time.sleep(1.0)  # stays out while it is lost, whatever the Xid recovery time
    assert _allocatable(kube) == (GPUS - 1) * SPLIT
    state.clear_faults(3)  # back on the bus
    _expect(kube, plugin, GPUS * SPLIT, [True] * GPUS, "after GPU 3 came back")


def test_nvml_unhealthy_without_xid_is_detected(kube: Kube, plugin: Any, state: DeviceState) -> None:
    state.set_health(5, "unhealthy")  # no Xid: only the memory-health queries tell
    _expect(kube, plugin, (GPUS - 1) * SPLIT, _all_but(5), "after GPU 5 turned unhealthy")
    state.clear_faults(5)
    _expect(kube, plugin, GPUS * SPLIT, [True] * GPUS, "after GPU 5 recovered")


def test_lost_gpu_without_xid_leaves_and_comes_back(kube: Kube, plugin: Any, state: DeviceState) -> None:
    state.set_health(0, "lost")  # handle no longer obtainable, no event
    _expect(kube, plugin, (GPUS - 1) * SPLIT, _all_but(0), "after GPU 0 was lost")
    state.clear_faults(0)
    _expect(kube, plugin, GPUS * SPLIT, [True] * GPUS, "after GPU 0 was back")


def test_application_xid_changes_nothing(kube: Kube, plugin: Any, state: DeviceState) -> None:
    _expect(kube, plugin, GPUS * SPLIT, [True] * GPUS, "before")
    state.raise_xid(2, 13, lose_gpu=False)  # graphics engine exception: the application's fault
    state.clear_faults(2)  # the emulation marks the card unhealthy on any Xid; a real one would not
    # a critical Xid would keep GPU 2 out for --xid-recovery (1 s): sample through that time
    seen = set()
    for _ in range(10):
        seen.add(_allocatable(kube))
        time.sleep(0.1)
    assert seen == {GPUS * SPLIT}
    assert _register_health(kube) == [True] * GPUS


def test_forged_allocation_never_starts(kube: Kube, plugin: Any, state: DeviceState) -> None:
    _expect(kube, plugin, GPUS * SPLIT, [True] * GPUS, "before")
    uuid = state.gpus[4].uuid
    forged = f"{uuid},NVIDIA,81920,100:;"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "forged",
            "namespace": NS,
            "labels": {"hami.io/webhook": "ignore"},
            "annotations": {
                ann.BIND_PHASE: "allocating",
                ann.BIND_TIME: str(int(time.time())),
                ann.VGPU_NODE: NODE,
                ann.NVIDIA_KEYS.to_allocate: forged,
                ann.NVIDIA_KEYS.allocated: forged,
            },
        },
        "spec": {
            "nodeName": NODE,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", "env | grep CUDA_ || true"],
                    "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "81920"}},
                }
            ],
        },
    }
    kube.create(f"/api/v1/namespaces/{NS}/pods", pod)
    done = wait_for(
        lambda: (
            (p := kube.get(f"/api/v1/namespaces/{NS}/pods/forged"))["status"].get("phase") == "Failed" and p
        ),
        timeout=30,
        every=0.1,
    )
    status = done["status"]
    assert status.get("reason") == "UnexpectedAdmissionError", status
    assert f"node {NODE} has no {ann.NODE_LOCK}" in status.get("message", ""), status
    assert not status.get("containerStatuses") or all(
        "running" not in (c.get("state") or {}) and "terminated" not in (c.get("state") or {})
        for c in status["containerStatuses"]
    ), status

    def refused() -> list[dict[str, Any]]:
        events = kube.get(f"/api/v1/namespaces/{NS}/events").get("items") or []
        return [
            e
            for e in events
            if (e.get("involvedObject") or {}).get("name") == "forged"
            and e.get("reason") == "AllocationRefused"
        ]

    assert wait_for(refused, timeout=10)[0]["type"] == "Warning"
    assert ann.NODE_LOCK not in (kube.get(f"/api/v1/nodes/{NODE}")["metadata"].get("annotations") or {})


def test_plugin_is_still_running(plugin: Any) -> None:
    assert plugin.poll() is None, Path(plugin.log_path).read_text()
