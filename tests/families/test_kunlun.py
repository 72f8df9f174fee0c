"""Kunlunxin: whole XPUs from capacity and vXPU partitions from hami.io/node-register-xpu, both chosen
by the 8-card board's topology; memory rounding at admission, the fragmentation score, the vXPU
plugin's registration; upstream's example pods as its code treats them."""

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
from hami_stack.devices.kunlun import (
    DEVICE_IDX,
    NO_ROUNDING_FAULT,
    KunlunFamily,
    VxpuFamily,
    graph_select,
    round_memory,
    topology_score,
)
from hami_stack.devices.registry import build_families
from hami_stack.protocol.handshake import check_handshake
from hami_stack.protocol.register import DeviceInfo
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import capacity_node, pod, run_webhook
from tests.hami.extender_helpers import NV, make_pod

pytestmark = pytest.mark.kunlunxin
XPU, VXPU, VMEM = "kunlunxin.com/xpu", "kunlunxin.com/vxpu", "kunlunxin.com/vxpu-memory"
SECTION = {"resourceCountName": XPU, "resourceVCountName": VXPU, "resourceVMemoryName": VMEM}


def _families() -> list[Any]:
    return build_families(parse_device_config({"nvidia": {}, "kunlun": SECTION}))


def _board(used: tuple[int, ...] = ()) -> list[DeviceUsage]:
    devs = [
        DeviceUsage.from_info(d) for d in KunlunFamily(SECTION).node_devices(capacity_node("n", {XPU: "8"}))
    ]
    for d in devs:
        if d.index in used:
            d.used = 1
    return devs


def test_the_kunlun_section_enables_both_families() -> None:
    assert [f.common_word for f in _families()] == ["NVIDIA", "XPU", "kunlun"]


@pytest.mark.parametrize(
    ("used", "need", "want"),
    [
        ((), 1, [0]),  # no wing has exactly 1, 3 or 2 free: the first wing with all 4
        ((0, 1, 2), 1, [3]),  # the left wing has exactly one free card: fill the hole
        ((4,), 1, [5]),  # right wing has 3 free (odd order 1, 3): before the full left wing
        ((), 2, [0, 1]),
        ((1, 2, 5, 6), 2, [0, 3]),  # both wings have exactly two free: the left one
        ((1, 2, 3, 5, 6, 7), 2, [0, 4]),  # one free per wing: the cross pair 0-4
        ((), 4, [0, 1, 2, 3]),
        ((2, 3, 6, 7), 4, [0, 1, 4, 5]),  # no full wing: a linked quad
        ((), 8, list(range(8))),
        ((0,), 8, []),
        ((), 3, []),  # three cards is no shape upstream serves
    ],
)
def test_graph_select_follows_the_board(used: tuple[int, ...], need: int, want: list[int]) -> None:
    assert graph_select(_board(used), need, lambda d: d.used == 0) == want


def test_fragmentation_score() -> None:
    # bubbles: a wing with 4 cards in use counts 0, with 1 counts 2, otherwise 1 (an empty board 1)
    assert topology_score([], [0]) == 0  # 1 -> 2 + 1: grows by two
    assert topology_score([0, 1, 2], [0, 1, 2, 3]) == 3000  # 1 + 1 -> 0 + 1: the left wing closes
    assert topology_score([0], [0, 1]) == 3000  # 2 + 1 -> 1 + 1
    assert topology_score([0, 1], [0, 1, 2]) == 2000  # unchanged
    assert topology_score([0, 1, 2, 3], [0, 1, 2, 3, 4]) == 1000  # 0 + 1 -> 0 + 2: grows by one
    assert topology_score([], [0, 4]) == 1000  # 1 -> 4: any other change


# --- whole XPU ------------------------------------------------------------------------------------


def test_whole_cards_from_capacity_and_the_filter_annotations() -> None:
    fam = KunlunFamily(SECTION)
    devs = fam.node_devices(capacity_node("x", {XPU: "8"}))
    assert [(d.id, d.count, d.devmem, d.numa) for d in devs][3:5] == [
        ("x-kunlun-3", 100, 98304, 0),
        ("x-kunlun-4", 100, 98304, 1),
    ]
    ext = Extender(None, [fam, NV], ExtenderOptions())
    node = capacity_node("x", {XPU: "8"})
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("x", "kunlun", fam.node_devices(node))
    p = make_pod({XPU: "2"})
    assert ext.filter(FilterArgs(p, None, ["x"]))["NodeNames"] == ["x"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    picked = entry.devices["kunlun"][0]
    assert [d.uuid for d in picked] == ["x-kunlun-0", "x-kunlun-1"]
    assert {(d.usedmem, d.usedcores) for d in picked} == {(98304, 100)}
    annotations = fam.pod_annotations(entry.devices["kunlun"])
    assert annotations[DEVICE_IDX] == "0,1"
    assert (
        annotations["hami.io/kunlun-allocated"] == "x-kunlun-0,kunlun,98304,100:x-kunlun-1,kunlun,98304,100:;"
    )
    # three cards fit no board shape: NumaNotFit, as upstream
    out = ext.filter(FilterArgs(make_pod({XPU: "3"}), None, ["x"]))
    assert out["NodeNames"] is None and "NumaNotFit" in out["FailedNodes"]["x"]
    assert fam.allocate_response(AllocateInput(picked, "u", "c")).envs == {"XPU_VISIBLE_DEVICES": "0,1"}


def test_example_with_xpu_memory_is_a_whole_card_request() -> None:
    # examples/kunlunxin/default_use.yaml asks kunlunxin.com/xpu with a xpu-memory HAMi does not read
    resp, out = run_webhook(
        pod({"name": "c", "limits": {XPU: "1", "kunlunxin.com/xpu-memory": "24576"}}), _families()
    )
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"
    r = KunlunFamily(SECTION).container_request(out["spec"]["containers"][0])
    assert r is not None and (r.nums, r.mem_percentage) == (1, 100)


# --- vXPU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("asked", "got"), [(1, 24576), (24576, 24576), (24577, 49152), (60000, 98304)])
def test_memory_rounds_up_to_a_partition(asked: int, got: int) -> None:
    assert round_memory(asked) == got


def test_example_default_use_keeps_its_partition_and_others_are_rounded() -> None:
    _, out = run_webhook(pod({"name": "c", "limits": {VXPU: "1", VMEM: "24576"}}), _families())
    assert out["spec"]["containers"][0]["resources"]["limits"][VMEM] == "24576"
    _, out = run_webhook(pod({"name": "c", "limits": {VXPU: "1", VMEM: "30000"}}), _families())
    res = out["spec"]["containers"][0]["resources"]
    assert res["limits"][VMEM] == "49152" and res["requests"][VMEM] == "49152"


def test_example_allocate_exclusive_takes_the_whole_card() -> None:
    resp, out = run_webhook(pod({"name": "c", "limits": {VXPU: "1"}}), _families())
    assert resp.allowed and VMEM not in out["spec"]["containers"][0]["resources"]["limits"]
    r = VxpuFamily(SECTION).container_request(out["spec"]["containers"][0])
    assert r is not None and (r.memreq, r.coresreq) == (98304, 100)


def test_no_rounding_fault_keeps_the_asked_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", NO_ROUNDING_FAULT)
    faults.reset_for_tests()
    try:
        _, out = run_webhook(pod({"name": "c", "limits": {VXPU: "1", VMEM: "30000"}}), _families())
        assert out["spec"]["containers"][0]["resources"]["limits"][VMEM] == "30000"
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


def _vxpu_devices(n: int = 8) -> list[DeviceUsage]:
    return [
        DeviceUsage.from_info(
            DeviceInfo(id=f"XPU-{i}", index=i, count=4, devmem=98304, devcore=100, type="XPU-P800")
        )
        for i in range(n)
    ]


def test_a_card_is_split_into_equal_partitions_only() -> None:
    fam = VxpuFamily(SECTION)
    devs = _vxpu_devices()
    for d in devs:  # every card already holds one 24576 MiB partition
        d.used, d.usedmem, d.usedcores = 1, 24576, 25
    ctx = FitContext({"metadata": {}})
    small = fam.container_request({"resources": {"limits": {VXPU: "1", VMEM: "20000"}}})
    big = fam.container_request({"resources": {"limits": {VXPU: "1", VMEM: "40000"}}})
    assert small is not None and big is not None
    fit = fam.fit(devs, small, ctx)
    assert fit.ok and [(d.usedmem, d.usedcores) for d in fit.devices] == [(24576, 25)]
    refused = fam.fit(devs, big, ctx)
    assert not refused.ok and refused.reason == "1/1 NumaNotFit"


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


def test_vxpu_plugin_registers_json_with_a_handshake_and_the_scheduler_places_on_it(family_hw: Path) -> None:
    hw.create_state(family_hw, "kunlunxin", "P800", 8, node_name="xpu-a")
    kube = FakeKube()
    spec = get("kunlun-vxpu")
    plugin = FamilyDevicePlugin(
        spec, FamilyOptions("xpu-a", family_hw), kube, spec.make_family(SECTION)
    )  # type: ignore[arg-type]
    plugin.refresh()
    annotations = kube.patches[-1]["metadata"]["annotations"]
    assert check_handshake(annotations["hami.io/node-handshake-xpu"], dt.datetime.now(), 0).healthy
    node = {"metadata": {"name": "xpu-a", "annotations": annotations}}
    fam = plugin.family
    devs = fam.node_devices(node)
    assert {(d.count, d.devmem, d.type) for d in devs} == {(4, 98304, "XPU-P800")} and len(devs) == 8
    ext = Extender(None, [fam, NV], ExtenderOptions())
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("xpu-a", "XPU", devs)
    p = make_pod({VXPU: "1", VMEM: "24576"})
    assert ext.filter(FilterArgs(p, None, ["xpu-a"]))["NodeNames"] == ["xpu-a"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    (d,) = entry.devices["XPU"][0]
    assert (d.usedmem, d.usedcores) == (24576, 25)
    assert (
        fam.pod_annotations(entry.devices["XPU"])["hami.io/xpu-devices-allocated"]
        == f"{d.uuid},XPU,24576,25:;"
    )
    assert fam.allocate_response(AllocateInput([d], "u", "c")).envs == {
        "XPU_VISIBLE_DEVICES": d.uuid,
        "XPU_VMEMORY_MIB": "24576",
    }
