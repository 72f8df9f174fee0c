"""Cambricon MLU: capacity-derived cards, request units, DSMLU annotations, placement by the extender."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hami_stack.devices.base import AllocateInput
from hami_stack.devices.cambricon import DSMLU_ASSIGNED, DSMLU_PROFILE, CambriconFamily
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.registry import build_families
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from tests.hami.extender_helpers import NV, add_node, gpus, make_pod

pytestmark = pytest.mark.cambricon
VCORE, VMEM = "cambricon.com/mlu.smlu.vcore", "cambricon.com/mlu.smlu.vmemory"


def _node(name: str = "mlu-a", cards: int = 4, mem_units_per_card: int = 96) -> dict[str, object]:
    cap = {
        "cambricon.com/vmlu": str(cards * 100),
        VCORE: str(cards * 100),
        VMEM: str(cards * mem_units_per_card),
    }
    return {"metadata": {"name": name, "annotations": {}}, "status": {"capacity": cap, "allocatable": cap}}


def test_cards_come_from_capacity() -> None:
    fam = CambriconFamily()
    devs = fam.node_devices(_node())
    assert [d.id for d in devs] == [f"mlu-a-cambricon-mlu-{i}" for i in range(4)]
    assert {(d.count, d.devmem, d.devcore, d.type) for d in devs} == {(100, 96 * 256, 100, "MLU")}
    assert fam.node_devices({"metadata": {"name": "x"}, "status": {"capacity": {}}}) == []
    health, state = fam.check_health(_node(), dt.datetime.now(), None)
    assert health.healthy and health.needs_update
    assert not fam.check_health(_node(), dt.datetime.now(), state)[0].needs_update


def test_request_units_and_defaults() -> None:
    fam = CambriconFamily()
    r = fam.container_request({"resources": {"limits": {"cambricon.com/vmlu": "1", VMEM: "4"}}})
    assert r is not None and (r.memreq, r.coresreq) == (1024, 100)
    whole = fam.container_request({"resources": {"limits": {"cambricon.com/vmlu": "1", VCORE: "30"}}})
    assert whole is not None and whole.memory_on(24576) == 24576 and whole.coresreq == 30


def test_registry_enables_mlu_from_its_section() -> None:
    fams = build_families(parse_device_config({"cambricon": {"resourceCountName": "cambricon.com/vmlu"}}))
    assert [type(f) for f in fams] == [CambriconFamily]


def test_filter_places_on_mlu_node_and_writes_the_dsmlu_profile() -> None:
    fam = CambriconFamily()
    ext = Extender(None, [fam, NV], ExtenderOptions())
    add_node(ext.cache, "gpu-a", gpus("gpu-a"))
    node = _node()
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("mlu-a", "MLU", fam.node_devices(node))
    pod = make_pod({"cambricon.com/vmlu": "1", VMEM: "8", VCORE: "20"})
    out = ext.filter(FilterArgs(pod, None, ["gpu-a", "mlu-a"]))
    assert out["NodeNames"] == ["mlu-a"], out
    entry = ext.cache.pod(pod["metadata"]["uid"])
    assert entry is not None
    picked = [d for ctr in entry.devices["MLU"] for d in ctr]
    annotations = fam.pod_annotations(entry.devices["MLU"])
    idx = int(picked[0].uuid.rsplit("-", 1)[-1])
    assert annotations[DSMLU_PROFILE] == f"{idx}_20_8" and annotations[DSMLU_ASSIGNED] == "false"
    assert "hami.io/cambricon-mlu-devices-allocated" in annotations
    # more memory than a card has: HAMi's reason
    big = make_pod({"cambricon.com/vmlu": "1", VMEM: "97"})
    out = ext.filter(FilterArgs(big, None, ["mlu-a"]))
    assert out["NodeNames"] is None and "CardInsufficientMemory" in out["FailedNodes"]["mlu-a"]


def test_allocate_names_the_card_and_memory() -> None:
    alloc = CambriconFamily().allocate_response(
        AllocateInput([ContainerDevice("n-cambricon-mlu-2", "MLU", 2048, 20)], "u", "c")
    )
    assert (
        alloc.envs["CAMBRICON_SPLIT_VISIBLE_DEVICES"] == "2" and alloc.envs["CAMBRICON_SPLIT_MEMS"] == "2048"
    )


def test_capacity_plugin_advertises_what_the_scheduler_turns_into_cards(family_hw: Path) -> None:
    from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions, extra_devices
    from hami_stack.device_plugin.families.specs import get
    from testbed.hardware import families as hw

    hw.create_state(family_hw, "cambricon", "MLU370-X8", 2, node_name="mlu-a")
    spec = get("mlu")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("mlu-a", family_hw), None, spec.make_family({}))  # type: ignore[arg-type]
    plugin.refresh()  # capacity family: no node patch (kube None would fail)
    cores = len(extra_devices(spec, "cores", plugin.devices))
    mem = len(extra_devices(spec, "memory_units", plugin.devices))
    assert (len(plugin.kubelet_devices()), cores, mem) == (200, 200, 2 * 96)
    node = _node("mlu-a", cards=2)
    node["status"]["capacity"].update({VCORE: str(cores), VMEM: str(mem)})  # type: ignore[index]
    assert [d.devmem for d in plugin.family.node_devices(node)] == [24576, 24576]


def test_half_memory_capacity_fault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hami_stack import faults
    from hami_stack.device_plugin.families import hardware
    from hami_stack.device_plugin.families.plugin import extra_devices
    from hami_stack.device_plugin.families.specs import get
    from testbed.hardware import families as hw

    hw.create_state(tmp_path, "cambricon", "MLU370-X8", 1)
    monkeypatch.setenv("HAMI_FAULTS", "plugin-cambricon-capacity-half-memory")
    faults.reset_for_tests()
    try:
        assert len(extra_devices(get("mlu"), "memory_units", hardware.read(tmp_path, "cambricon"))) == 48
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()
