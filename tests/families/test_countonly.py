"""Vastai and Biren: count-only families (first device first, no health check), their JSON
registration by the plugin with a handshake, Allocate, and upstream's example pods."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.base import AllocateInput, DeviceUsage, FitContext
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.countonly import CountOnlyFamily, biren_family, vastai_family
from hami_stack.devices.registry import build_families
from hami_stack.protocol.handshake import check_handshake
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import pod, run_webhook
from tests.hami.extender_helpers import NV, make_pod

VA, BR = "vastaitech.com/va", "birentech.com/gpu"
SECTIONS = {"vastai": {"resourceCountName": VA}, "biren": {"resourceCountName": BR}}


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


def _registered(
    tmp_path: Path, vendor: str, model: str, node: str, count: int = 4
) -> tuple[CountOnlyFamily, dict[str, Any], FakeKube]:
    hw.create_state(tmp_path / "hw", vendor, model, count, node_name=node)
    kube = FakeKube()
    spec = get(vendor)
    plugin = FamilyDevicePlugin(
        spec, FamilyOptions(node, tmp_path / "hw"), kube, spec.make_family(SECTIONS[vendor])
    )  # type: ignore[arg-type]
    plugin.refresh()
    annotations: dict[str, str] = {}
    for body in kube.patches:
        annotations.update(body["metadata"]["annotations"])
    return plugin.family, {"metadata": {"name": node, "annotations": annotations}}, kube  # type: ignore[return-value]


def test_the_sections_build_the_count_only_families() -> None:
    fams = build_families(parse_device_config({"nvidia": {}, **SECTIONS}))
    assert [(f.common_word, type(f)) for f in fams if f.common_word != "NVIDIA"] == [
        ("Biren", CountOnlyFamily),
        ("Vastai", CountOnlyFamily),
    ]


@pytest.mark.vastai
def test_example_vastai_default_use_is_claimed_with_whole_memory_and_no_cores() -> None:
    resp, out = run_webhook(
        pod({"name": "c", "limits": {VA: "1"}}), build_families(parse_device_config(SECTIONS))
    )
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"
    r = vastai_family(SECTIONS["vastai"]).container_request(out["spec"]["containers"][0])
    assert r is not None and (r.nums, r.mem_percentage, r.coresreq) == (1, 100, 0)


@pytest.mark.biren
def test_example_biren_default_use_is_claimed() -> None:
    resp, out = run_webhook(
        pod({"name": "c", "limits": {BR: "1"}}), build_families(parse_device_config(SECTIONS))
    )
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"


@pytest.mark.vastai
def test_vastai_plugin_registration_placement_first_device_first_and_allocate(tmp_path: Path) -> None:
    fam, node, _ = _registered(tmp_path, "vastai", "VA1", "va-a")
    annotations = node["metadata"]["annotations"]
    assert check_handshake(annotations["hami.io/node-handshake-va"], dt.datetime.now(), 0).healthy
    devs = fam.node_devices(node)
    assert {(d.count, d.devmem, d.type) for d in devs} == {(1, 16384, "Vastai-VA1")}
    ext = Extender(None, [fam, NV], ExtenderOptions())
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("va-a", "Vastai", devs)
    p = make_pod({VA: "2"})
    assert ext.filter(FilterArgs(p, None, ["va-a"]))["NodeNames"] == ["va-a"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    picked = entry.devices["Vastai"][0]
    # upstream's loop runs forward: the first two devices (a walk from the end would take 3 and 2)
    assert [d.uuid for d in picked] == [devs[0].id, devs[1].id]
    assert {(d.usedmem, d.usedcores) for d in picked} == {(16384, 0)}
    assert fam.allocate_response(AllocateInput(picked, "u", "c")).envs == {
        "VASTAI_VISIBLE_DEVICES": f"{devs[0].id},{devs[1].id}"
    }
    # one slot per card: three more cards are not there
    out = ext.filter(FilterArgs(make_pod({VA: "3"}), None, ["va-a"]))
    assert out["NodeNames"] is None and "CardTimeSlicingExhausted" in out["FailedNodes"]["va-a"]


@pytest.mark.biren
def test_biren_takes_slots_only_and_gives_no_memory(tmp_path: Path) -> None:
    fam, node, _ = _registered(tmp_path, "biren", "BR104", "br-a", count=2)
    devs = [DeviceUsage.from_info(d) for d in fam.node_devices(node)]
    assert {(d.count, d.totalmem) for d in devs} == {(1, 32768)}
    r = fam.container_request({"resources": {"limits": {BR: "1"}}})
    assert r is not None
    devs[0].health = False  # upstream never looks at health
    fit = fam.fit(devs, r, FitContext({"metadata": {}}))
    assert fit.ok and [(d.uuid, d.usedmem, d.usedcores) for d in fit.devices] == [(devs[0].id, 0, 0)]
    nouse = FitContext({"metadata": {"annotations": {"birentech.com/nouse-gpuuuid": devs[0].id}}})
    assert fam.fit(devs, r, nouse).devices[0].uuid == devs[1].id
    devs[0].used = devs[1].used = 1
    full = fam.fit(devs, r, FitContext({"metadata": {}}))
    assert not full.ok and full.reason == "2/2 CardTimeSlicingExhausted"
    assert biren_family().allocate_response(AllocateInput(fit.devices, "u", "c")).envs == {
        "BIREN_VISIBLE_DEVICES": devs[0].id
    }


@pytest.mark.parametrize(
    ("vendor", "model", "key"),
    [("vastai", "VA1", "hami.io/node-va-register"), ("biren", "BR104", "hami.io/node-biren-register")],
)
def test_half_memory_fault_under_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor: str, model: str, key: str
) -> None:
    monkeypatch.setenv("HAMI_FAULTS", f"plugin-{vendor}-register-half-memory")
    faults.reset_for_tests()
    try:
        fam, node, _ = _registered(tmp_path, vendor, model, "n")
        assert key in node["metadata"]["annotations"]
        assert {d.devmem for d in fam.node_devices(node)} == {hw.lookup_model(vendor, model).memory_mib // 2}
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()
