"""Enflame whole GCUs: cards from capacity, requests of whole cards, never shared, the capacity
plugin and Allocate; upstream's example pod as its code treats it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.base import AllocateInput
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.enflame import SHARED_FAULT, GcuFamily
from hami_stack.devices.registry import build_families
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import capacity_node, pod, run_webhook
from tests.hami.extender_helpers import NV, make_pod

pytestmark = pytest.mark.enflame
GCU = "enflame.com/gcu"
SECTION = {"resourceNameGCU": GCU, "resourceNameDRSGCU": "enflame.com/drs-gcu"}


def _extender(cards: int = 2) -> tuple[Extender, GcuFamily]:
    fam = GcuFamily(SECTION)
    ext = Extender(None, [fam, NV], ExtenderOptions())
    node = capacity_node("g", {GCU: str(cards)})
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("g", "GCU", fam.node_devices(node))
    return ext, fam


def test_the_enflame_section_enables_the_gcu_family() -> None:
    fams = build_families(parse_device_config({"nvidia": {}, "enflame": SECTION}))
    assert GcuFamily in [type(f) for f in fams if f.common_word != "NVIDIA"]


def test_example_gcu_use_is_claimed_and_asks_whole_cards() -> None:
    resp, out = run_webhook(
        pod({"name": "c", "limits": {GCU: "1"}}), build_families(parse_device_config({"enflame": SECTION}))
    )
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"
    r = GcuFamily(SECTION).container_request(out["spec"]["containers"][0])
    assert r is not None and (r.nums, r.memreq, r.coresreq) == (1, 100, 100)


def test_cards_from_capacity_and_a_card_is_never_shared() -> None:
    fam = GcuFamily(SECTION)
    devs = fam.node_devices(capacity_node("g", {GCU: "2"}))
    assert [(d.id, d.count, d.devmem, d.devcore) for d in devs] == [
        ("g-GCU-0", 1, 100, 100),
        ("g-GCU-1", 1, 100, 100),
    ]
    health, _ = fam.check_health(capacity_node("g", {GCU: "0"}), dt.datetime.now(), None)
    assert not health.healthy
    ext, fam = _extender()
    a = make_pod({GCU: "2"})
    assert ext.filter(FilterArgs(a, None, ["g"]))["NodeNames"] == ["g"]
    entry = ext.cache.pod(a["metadata"]["uid"])
    assert entry is not None
    picked = entry.devices["GCU"][0]
    assert [(d.usedmem, d.usedcores) for d in picked] == [(100, 100), (100, 100)]
    annotations = fam.pod_annotations(entry.devices["GCU"])
    assert (
        annotations["hami.io/enflame-gcu-devices-allocated"]
        == annotations["hami.io/enflame-gcu-devices-to-allocate"]
    )
    out = ext.filter(FilterArgs(make_pod({GCU: "1"}), None, ["g"]))
    assert out["NodeNames"] is None and "ExclusiveDeviceAllocateConflict" in out["FailedNodes"]["g"]
    assert fam.allocate_response(AllocateInput(picked, "u", "c")).envs == {"ENFLAME_VISIBLE_DEVICES": "1,0"}


def test_shared_fault_hands_out_a_held_card(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", SHARED_FAULT)
    faults.reset_for_tests()
    try:
        ext, _ = _extender()
        assert ext.filter(FilterArgs(make_pod({GCU: "2"}), None, ["g"]))["NodeNames"] == ["g"]
        assert ext.filter(FilterArgs(make_pod({GCU: "1"}), None, ["g"]))["NodeNames"] == ["g"]
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


def test_capacity_plugin_advertises_one_kubelet_device_per_gcu_and_patches_nothing(family_hw: Path) -> None:
    hw.create_state(family_hw, "enflame", "S60", 4, node_name="g")
    kube = FakeKube()
    spec = get("enflame-gcu")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("g", family_hw), kube, spec.make_family(SECTION))  # type: ignore[arg-type]
    plugin.refresh()
    assert kube.patches == [] and len(plugin.kubelet_devices()) == 4
