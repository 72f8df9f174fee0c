"""The pieces of ``bench/hami_scheduling.py`` that decide what its pods/s figure means.

The inventory must load with the testbed's own (strict) loader, register each simulated node as the
HAMi device plugin would, and keep the chart's pods off the simulated nodes. The device-plugin
stand-in must do what Allocate does at its end, and nothing for a pod that is not its to answer.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.handshake import REPORTED, requesting
from hami_stack.protocol.register import decode_register_json
from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.node.inventory import load_inventory

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import hami_scheduling as hs  # noqa: E402


def test_the_inventory_registers_each_simulated_node_and_fences_it_off(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text(yaml.safe_dump(hs.inventory(3)))
    nodes = load_inventory(path)
    executed = [n for n in nodes if not n.simulated]
    sims = [n for n in nodes if n.simulated]
    assert [n.name for n in executed] == ["gpu-node-1"] and len(sims) == 3
    ids = set()
    for n in sims:
        devices = decode_register_json(n.annotations[ann.NVIDIA_KEYS.register])
        assert len(devices) == hs.GPUS and all(d.count == hs.SLOTS for d in devices)
        ids |= {d.id for d in devices}
        assert n.capacity["nvidia.com/gpu"] == str(hs.GPUS * hs.SLOTS)
        assert n.annotations[ann.NVIDIA_KEYS.handshake].startswith(REPORTED)
        assert {"key": hs.SIM_LABEL, "value": "true", "effect": "NoSchedule"} in n.taints
    assert len(ids) == 3 * hs.GPUS  # every GPU a UUID of its own: the extender counts usage by device
    pod = hs.gpu_pod(0)["spec"]
    assert pod["nodeSelector"] == {hs.SIM_LABEL: "true"}
    assert pod["tolerations"][0]["key"] == hs.SIM_LABEL


@pytest.fixture()
def kube(tmp_path: Path):  # type: ignore[no-untyped-def]
    with EmbeddedTestbed(33, data_dir=tmp_path / "api") as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        k.create("/api/v1/namespaces", {"metadata": {"name": hs.NAMESPACE}})
        yield k
        k.close()


def _until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def test_the_stand_in_answers_handshakes_and_ends_allocation_like_the_plugin(kube: Kube) -> None:
    import datetime as dt

    lock = f"2026-12-03T07:00:00Z,{hs.NAMESPACE},g1"
    kube.create("/api/v1/nodes", {"metadata": {
        "name": "sim-0000", "labels": {hs.SIM_LABEL: "true"},
        "annotations": {ann.NVIDIA_KEYS.handshake: requesting(dt.datetime.now(dt.UTC)),
                        ann.NODE_LOCK: lock}}})
    kube.create("/api/v1/nodes", {"metadata": {"name": "other", "annotations": {ann.NODE_LOCK: "x,y,z"}}})
    stand_in = hs.PluginStandIn(kube, kube).start()
    try:
        # handshake: Requesting -> Reported on a simulated node
        _until(lambda: kube.get("/api/v1/nodes/sim-0000")["metadata"]["annotations"][
            ann.NVIDIA_KEYS.handshake].startswith(REPORTED))
        # a pod not yet allocating is left alone; the lock holder's turn to allocating ends its allocation
        body = hs.gpu_pod(1)
        body["spec"]["nodeName"] = "sim-0000"
        kube.create(f"/api/v1/namespaces/{hs.NAMESPACE}/pods", body)
        time.sleep(0.5)
        assert stand_in.allocated == 0
        assert kube.get("/api/v1/nodes/sim-0000")["metadata"]["annotations"].get(ann.NODE_LOCK) == lock
        kube.patch(f"/api/v1/namespaces/{hs.NAMESPACE}/pods/g1",
                   {"metadata": {"annotations": {ann.BIND_PHASE: "allocating"}}}, "merge")
        _until(lambda: stand_in.allocated == 1)
        pod = kube.get(f"/api/v1/namespaces/{hs.NAMESPACE}/pods/g1")
        assert pod["metadata"]["annotations"][ann.BIND_PHASE] == "success"
        assert ann.NODE_LOCK not in (kube.get("/api/v1/nodes/sim-0000")["metadata"].get("annotations") or {})
        # another pod's lock is not released: the stand-in keeps the plugin's holder check
        body = hs.gpu_pod(2)
        body["spec"]["nodeName"] = "other"
        body["metadata"]["annotations"] = {ann.BIND_PHASE: "allocating"}
        kube.create(f"/api/v1/namespaces/{hs.NAMESPACE}/pods", body)
        _until(lambda: stand_in.allocated == 2)
        assert kube.get("/api/v1/nodes/other")["metadata"]["annotations"][ann.NODE_LOCK] == "x,y,z"
        assert stand_in.errors == []
    finally:
        stand_in.stop()
