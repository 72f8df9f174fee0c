"""AMD: admission with upstream's texts, requests from limits, JSON registration with compute units,
fit by memory and the percentage of CUs, type/UUID selection, Allocate; upstream's example pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.amd import CORES_UNCHECKED_FAULT, AmdFamily
from hami_stack.devices.base import AllocateInput, DeviceUsage, FitContext
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.registry import build_families
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import pod, run_webhook
from tests.hami.extender_helpers import NV, make_pod

pytestmark = pytest.mark.amd
GPU, MEM, CORES = "amd.com/gpu", "amd.com/gpumem", "amd.com/gpucores"
SECTION = {"resourceCountName": GPU, "resourceMemoryName": MEM, "resourceCoreName": CORES}


def _families() -> list[Any]:
    return build_families(parse_device_config({"nvidia": {}, "amd": SECTION}))


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


def _registered(tmp_path: Path, count: int = 4) -> tuple[AmdFamily, dict[str, Any], FakeKube]:
    hw.create_state(tmp_path / "hw", "amd", "MI300X", count, node_name="amd-a")
    kube = FakeKube()
    spec = get("amd")
    plugin = FamilyDevicePlugin(
        spec, FamilyOptions("amd-a", tmp_path / "hw"), kube, spec.make_family(SECTION)
    )  # type: ignore[arg-type]
    plugin.refresh()
    annotations = kube.patches[-1]["metadata"]["annotations"]
    return plugin.family, {"metadata": {"name": "amd-a", "annotations": annotations}}, kube  # type: ignore[return-value]


def test_examples_default_use_memory_and_cores_are_claimed() -> None:
    for limits in ({GPU: "1"}, {GPU: "1", MEM: "4096"}, {GPU: "1", MEM: "4096", CORES: "25"}):
        resp, out = run_webhook(pod({"name": "rocm", "limits": limits}), _families())
        assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler", limits


@pytest.mark.parametrize(
    ("limits", "text"),
    [
        ({GPU: "1", CORES: "150"}, "amd.com/gpucores must be an integer percentage between 1 and 100"),
        ({GPU: "1", CORES: "0"}, "amd.com/gpucores must be an integer percentage between 1 and 100"),
        ({GPU: "0"}, "amd.com/gpu must be a positive integer"),
    ],
)
def test_refusals_carry_upstreams_text_and_the_container(limits: dict[str, str], text: str) -> None:
    resp, _ = run_webhook(pod({"name": "rocm", "limits": limits}), _families())
    assert not resp.allowed and text in resp.message and "rocm" in resp.message


def test_cores_unchecked_fault_admits_150_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", CORES_UNCHECKED_FAULT)
    faults.reset_for_tests()
    try:
        resp, _ = run_webhook(pod({"name": "rocm", "limits": {GPU: "1", CORES: "150"}}), _families())
        assert resp.allowed
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


def test_requests_read_limits_only() -> None:
    fam = AmdFamily(SECTION)
    r = fam.container_request({"resources": {"limits": {GPU: "2", MEM: "4096", CORES: "25"}}})
    assert r is not None and (r.nums, r.memreq, r.coresreq) == (2, 4096, 25)
    whole = fam.container_request({"resources": {"limits": {GPU: "1"}}})
    assert whole is not None and (whole.memreq, whole.coresreq) == (0, 100)
    assert fam.container_request({"resources": {"requests": {GPU: "1"}}}) is None


@pytest.mark.usefixtures("family_hw")
def test_plugin_registers_compute_units_and_the_scheduler_gives_a_share_of_them(tmp_path: Path) -> None:
    fam, node, _ = _registered(tmp_path)
    devs = fam.node_devices(node)
    assert {(d.count, d.devmem, d.devcore, d.type) for d in devs} == {(1, 196608, 304, "AMD-MI300X")}
    assert "hami.io/node-handshake-amd" not in node["metadata"]["annotations"]  # no handshake upstream
    ext = Extender(None, [fam, NV], ExtenderOptions())
    ext.cache.on_node("ADDED", {**node, "status": {"capacity": {GPU: "4"}, "allocatable": {GPU: "4"}}})
    ext.cache.set_node_family("amd-a", "AMD", devs)
    p = make_pod({GPU: "1", MEM: "4096", CORES: "25"})
    assert ext.filter(FilterArgs(p, None, ["amd-a"]))["NodeNames"] == ["amd-a"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    (d,) = entry.devices["AMD"][0]
    assert (d.usedmem, d.usedcores) == (4096, 76)  # 25 % of 304 CUs
    assert fam.allocate_response(AllocateInput([d], "u", "c")).envs == {
        "ROCR_VISIBLE_DEVICES": d.uuid,
        "AMD_GPU_MEMORY_LIMIT_MIB": "4096",
        "AMD_GPU_COMPUTE_UNITS": "76",
    }


@pytest.mark.usefixtures("family_hw")
def test_type_and_uuid_selection_and_whole_card_requests(tmp_path: Path) -> None:
    fam, node, _ = _registered(tmp_path, count=2)
    devs = [DeviceUsage.from_info(d) for d in fam.node_devices(node)]
    whole = fam.container_request({"resources": {"limits": {GPU: "1"}}})
    assert whole is not None
    fit = fam.fit(devs, whole, FitContext({"metadata": {}}))
    assert fit.ok and (fit.devices[0].usedmem, fit.devices[0].usedcores) == (196608, 304)
    not_mi300 = FitContext({"metadata": {"annotations": {"amd.com/nouse-gputype": "mi300"}}})
    refused = fam.fit(devs, whole, not_mi300)
    assert not refused.ok and refused.reason == "2/2 CardTypeMismatch"
    pinned = FitContext({"metadata": {"annotations": {"amd.com/use-gpu-uuid": devs[0].id}}})
    assert fam.fit(devs, whole, pinned).devices[0].uuid == devs[0].id
    devs[1].health = False
    sick = fam.fit(
        devs, whole, FitContext({"metadata": {"annotations": {"amd.com/use-gpu-uuid": devs[1].id}}})
    )
    assert not sick.ok and "CardNotHealth" in sick.reason
