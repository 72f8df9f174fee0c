"""Enflame DRS: admission with upstream's messages, profiles from enflame.com/gcu-drs-capacity, slices
counted per assignment (also after a cache rebuild), the pod annotations Enflame's plugin reads,
the plugin's node annotation and Allocate; upstream's example node and pod shapes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.hardware import STATE_ENV
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.base import AllocateInput
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.enflame import GcuFamily
from hami_stack.devices.enflame_drs import (
    ASSIGNED_CONTAINERS,
    CAPACITY_KEY,
    OVERCOMMIT_FAULT,
    DrsFamily,
)
from hami_stack.devices.registry import build_families
from hami_stack.protocol.errors import ProtocolError
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import capacity_node, pod, run_webhook
from tests.hami.extender_helpers import NV, make_pod

pytestmark = pytest.mark.enflame
DRS = "enflame.com/drs-gcu"
MEM = "enflame.com/gcu-memory"
CORE = "enflame.com/gcu-core"
SECTION = {
    "resourceNameGCU": "enflame.com/gcu",
    "resourceNameDRSGCU": DRS,
    "resourceNameGCUMemory": MEM,
    "resourceNameGCUCore": CORE,
}
# upstream's example node: one card of six slices and three profiles
EXAMPLE = (
    '{"devices":[{"index":"0","minor":"0","capacity":6}],'
    '"profiles":{"1g.6gb":"0","3g.20gb":"1","6g.40gb":"2"}}'
)
ALLOCATED = "hami.io/enflame-vgpu-devices-allocated"


def _node(value: str = EXAMPLE) -> dict[str, Any]:
    node = capacity_node("d", {DRS: "6"})
    node["metadata"]["annotations"][CAPACITY_KEY] = value
    return node


def _extender(value: str = EXAMPLE) -> tuple[Extender, DrsFamily]:
    fam = DrsFamily(SECTION)
    ext = Extender(None, [fam, NV], ExtenderOptions())
    node = _node(value)
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("d", "Enflame", fam.node_devices(node))
    return ext, fam


def _used(ext: Extender) -> int:
    snap = ext.cache.snapshot("d")
    assert snap is not None
    return sum(d.used for d in snap["Enflame"])


def test_the_enflame_section_enables_both_enflame_families() -> None:
    fams = build_families(parse_device_config({"nvidia": {}, "enflame": SECTION}))
    assert sorted(type(f).__name__ for f in fams if f.common_word != "NVIDIA") == ["DrsFamily", "GcuFamily"]
    assert {type(f) for f in fams} >= {GcuFamily, DrsFamily}


@pytest.mark.parametrize(
    "limits, text",
    [
        ({DRS: "0"}, f"{DRS} must be greater than 0"),
        ({DRS: "-2"}, f"{DRS} must be greater than 0"),
        ({MEM: "0"}, f"{MEM} must be greater than 0"),
        ({MEM: "8", CORE: "0"}, f"{CORE} must be in range (0,100]"),
        ({CORE: "150"}, f"{CORE} must be in range (0,100]"),
        ({MEM: "8Gi"}, f"{MEM} is a plain number"),
    ],
)
def test_admission_refuses_with_upstreams_messages(limits: dict[str, str], text: str) -> None:
    resp, _ = run_webhook(pod({"name": "c", "limits": limits}), [DrsFamily(SECTION)])
    assert not resp.allowed and text in resp.message


def test_admission_copies_limits_and_requests_both_ways() -> None:
    p = pod({"name": "a", "limits": {DRS: "3"}}, {"name": "b", "requests": {MEM: "10", CORE: "50"}})
    resp, out = run_webhook(p, [DrsFamily(SECTION)])
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"
    a, b = out["spec"]["containers"]
    assert a["resources"]["requests"][DRS] == "3"
    assert b["resources"]["limits"] == {MEM: "10", CORE: "50"}


def test_legacy_vgcu_name_counts_slices_when_the_drs_name_is_unset() -> None:
    fam = DrsFamily(
        {"resourceNameVGCU": "enflame.com/vgcu", "resourceNameVGCUPercentage": "enflame.com/vgcu-percentage"}
    )
    assert fam.count_resource == "enflame.com/vgcu"
    r = fam.container_request({"name": "c", "resources": {"limits": {"enflame.com/vgcu": "3"}}})
    assert r is not None and (r.nums, r.memreq) == (1, 3)
    assert DrsFamily({}).count_resource == DRS


def test_cards_from_the_capacity_annotation() -> None:
    fam = DrsFamily(SECTION)
    (card,) = fam.node_devices(_node())
    assert (card.id, card.index, card.count, card.devmem, card.devcore, card.type) == (
        "d-enflame-drs-0",
        0,
        6,
        40960,
        100,
        "Enflame",
    )
    health, _ = fam.check_health(_node(), dt.datetime.now(), None)
    assert health.healthy
    health, _ = fam.check_health(capacity_node("d", {DRS: "6"}), dt.datetime.now(), None)
    assert not health.healthy
    with pytest.raises(ProtocolError, match="capacity"):
        fam.node_devices(_node('{"devices":[{"index":"0","capacity":0}],"profiles":{"1g.6gb":"0"}}'))
    with pytest.raises(ProtocolError, match="no valid profile"):
        fam.node_devices(_node('{"devices":[{"index":"0","capacity":6}],"profiles":{"big":"0"}}'))


@pytest.mark.parametrize(
    "limits, profile",
    [
        ({DRS: "3"}, ("3g.20gb", 20480, 50)),
        ({DRS: "1"}, ("1g.6gb", 6144, 17)),
        ({MEM: "10"}, ("3g.20gb", 20480, 50)),  # GB
        ({MEM: "7000"}, ("3g.20gb", 20480, 50)),  # above twice 40: MiB, 7 GB
        ({CORE: "60"}, ("6g.40gb", 40960, 100)),
        ({MEM: "4", CORE: "10"}, ("1g.6gb", 6144, 17)),
    ],
)
def test_profile_choice(limits: dict[str, str], profile: tuple[str, int, int]) -> None:
    ext, fam = _extender()
    p = make_pod(limits)
    assert ext.filter(FilterArgs(p, None, ["d"]))["NodeNames"] == ["d"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    (cd,) = entry.devices["Enflame"][0]
    assert (cd.uuid, cd.usedmem, cd.usedcores) == ("d-enflame-drs-0", profile[1], profile[2])
    annotations = fam.pod_annotations(entry.devices["Enflame"], p)
    assigned = json.loads(annotations[ASSIGNED_CONTAINERS])
    assert assigned["c0"]["profileName"] == profile[0]


def test_no_profile_of_that_size_is_mode_not_fit() -> None:
    ext, _ = _extender()
    out = ext.filter(FilterArgs(make_pod({DRS: "2"}), None, ["d"]))
    assert out["NodeNames"] is None and "1/1 ModeNotFit" in out["FailedNodes"]["d"]


def test_slices_are_counted_per_assignment_and_exhaust_the_card() -> None:
    ext, _ = _extender()
    for _ in range(2):
        assert ext.filter(FilterArgs(make_pod({DRS: "3"}), None, ["d"]))["NodeNames"] == ["d"]
    assert _used(ext) == 6
    out = ext.filter(FilterArgs(make_pod({DRS: "1"}), None, ["d"]))
    assert out["NodeNames"] is None and "1/1 CardTimeSlicingExhausted" in out["FailedNodes"]["d"]


def test_a_profile_needs_all_its_slices_free() -> None:
    ext, _ = _extender()
    assert ext.filter(FilterArgs(make_pod({DRS: "1"}), None, ["d"]))["NodeNames"] == ["d"]
    assert ext.filter(FilterArgs(make_pod({DRS: "3"}), None, ["d"]))["NodeNames"] == ["d"]
    assert _used(ext) == 4  # 2 slices left: a 3-slice profile does not fit
    out = ext.filter(FilterArgs(make_pod({DRS: "3"}), None, ["d"]))
    assert out["NodeNames"] is None and "CardTimeSlicingExhausted" in out["FailedNodes"]["d"]


def test_upstreams_rounded_cores_refuse_the_sixth_single_slice() -> None:
    ext, _ = _extender()
    for _ in range(5):
        assert ext.filter(FilterArgs(make_pod({DRS: "1"}), None, ["d"]))["NodeNames"] == ["d"]
    out = ext.filter(FilterArgs(make_pod({DRS: "1"}), None, ["d"]))
    assert out["NodeNames"] is None and "CardInsufficientCore" in out["FailedNodes"]["d"]


def test_slices_survive_a_cache_rebuild_from_annotations() -> None:
    ext, fam = _extender()
    p = make_pod({DRS: "3"})
    assert ext.filter(FilterArgs(p, None, ["d"]))["NodeNames"] == ["d"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    p["metadata"]["annotations"].update(fam.pod_annotations(entry.devices["Enflame"], p))
    p["metadata"]["annotations"]["hami.io/vgpu-node"] = "d"
    p["spec"]["nodeName"] = "d"
    fresh, _ = _extender()
    fresh.cache.on_pod("ADDED", p)
    assert _used(fresh) == 3


def test_pod_annotations_for_enflames_plugin() -> None:
    ext, fam = _extender()
    p = make_pod({DRS: "3"}, init=({DRS: "1"},))
    assert ext.filter(FilterArgs(p, None, ["d"]))["NodeNames"] == ["d"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    out = fam.pod_annotations(entry.devices["Enflame"], p)
    assert out[ALLOCATED] == "d-enflame-drs-0,Enflame,6144,17:;d-enflame-drs-0,Enflame,20480,50:;"
    assert out["enflame.com/gcu-assigned"] == "false"
    assert int(out["enflame.com/gcu-assigned-time"]) > 0
    assert out["enflame.com/gcu-assigned-index"] == out["enflame.com/gcu-assigned-id"] == "0"
    assert out["enflame.com/gcu-assigned-minor"] == "0"
    assert out["enflame.com/gcu-request-size"] == "1"  # the first container with a device
    assert json.loads(out[ASSIGNED_CONTAINERS]) == {
        "i0": {"allocated": False, "request": 1, "profileID": "0", "profileName": "1g.6gb"},
        "c0": {"allocated": False, "request": 3, "profileID": "1", "profileName": "3g.20gb"},
    }


def test_overcommit_fault_hands_out_taken_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", OVERCOMMIT_FAULT)
    faults.reset_for_tests()
    try:
        ext, _ = _extender()
        for _ in range(3):
            assert ext.filter(FilterArgs(make_pod({DRS: "3"}), None, ["d"]))["NodeNames"] == ["d"]
        assert _used(ext) == 9
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


def test_plugin_writes_the_capacity_annotation_and_allocate_env(
    tmp_path: Path, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hw.create_state(family_hw, "enflame", "S60-DRS", 2, node_name="d")
    hw.create_state(tmp_path / "other", "enflame", "S60", 2, node_name="d")
    kube = FakeKube()
    spec = get("enflame-drs")
    fam = spec.make_family(SECTION)
    plugin = FamilyDevicePlugin(spec, FamilyOptions("d", family_hw), kube, fam)  # type: ignore[arg-type]
    plugin.refresh()
    value = kube.patches[-1]["metadata"]["annotations"][CAPACITY_KEY]
    assert json.loads(value) == {
        "devices": [{"index": "0", "minor": "0", "capacity": 6}, {"index": "1", "minor": "1", "capacity": 6}],
        "profiles": {"1g.6gb": "0", "3g.20gb": "1", "6g.40gb": "2"},
    }
    assert len(plugin.kubelet_devices()) == 12  # one kubelet device per slice
    # whole-GCU cards are not DRS cards: the DRS plugin leaves them to the GCU plugin
    other = FamilyDevicePlugin(
        spec,
        FamilyOptions("d", tmp_path / "other"),
        FakeKube(),
        spec.make_family(SECTION),  # type: ignore[arg-type]
    )
    # the driver library reads the node's hardware directory from the environment
    with monkeypatch.context() as m:
        m.setenv(STATE_ENV, str(tmp_path / "other"))
        other.refresh()
    assert other.kubelet_devices() == []
    gcu = get("enflame-gcu")
    whole = FamilyDevicePlugin(gcu, FamilyOptions("d", family_hw), FakeKube(), gcu.make_family(SECTION))  # type: ignore[arg-type]
    whole.refresh()
    assert whole.kubelet_devices() == []

    ext, drs = _extender(value)
    p = make_pod({DRS: "3"})
    assert ext.filter(FilterArgs(p, None, ["d"]))["NodeNames"] == ["d"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    annotations = drs.pod_annotations(entry.devices["Enflame"], p)
    (picked,) = entry.devices["Enflame"]
    assert fam.kubelet_device_count(picked, "c0", annotations) == 3
    env = fam.allocate_response(AllocateInput(picked, "u", "c0", pod_annotations=annotations)).envs
    index = str(picked[0].uuid.rsplit("-", 1)[-1])
    assert env == {
        "ENFLAME_VISIBLE_DEVICES": index,
        "ENFLAME_CONTAINER_SUB_CARD": "true",
        "ENFLAME_CONTAINER_USABLE_GLOBAL_MEM": "20",
        "ENFLAME_CONTAINER_USABLE_PROCESSOR": "12",  # half of the S60's 24 processors
    }


def test_one_process_runs_both_enflame_plugins_of_one_section() -> None:
    import argparse

    from hami_stack.device_plugin.families.__main__ import _families

    assert [s.name for s in _families("enflame-gcu,enflame-drs")] == ["enflame-gcu", "enflame-drs"]
    with pytest.raises(argparse.ArgumentTypeError, match="one device-config section"):
        _families("enflame-gcu,dcu")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown family 'nope'"):
        _families("enflame-drs,nope")


def test_a_mixed_node_has_whole_cards_first_and_drs_cards_after(tmp_path: Path) -> None:
    devices = hw.create_state(tmp_path, "enflame", "S60-MIXED", 4, node_name="m")
    assert [(d.index, d.drs_capacity) for d in devices] == [(0, 0), (1, 0), (2, 6), (3, 6)]
    rows = json.loads((tmp_path / "enflame" / "devices.json").read_text())
    assert "drs_capacity" not in rows[0] and rows[2]["drs_profiles"] == {
        "1g.6gb": "0",
        "3g.20gb": "1",
        "6g.40gb": "2",
    }
