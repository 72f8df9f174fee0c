"""AWS Neuron: devices and core masks from capacity, whole-device and NeuronCore requests, contiguous
multi-device picks, the Neuron plugin's annotations, the capacity plugin; upstream's example pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions, extra_devices
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.awsneuron import (
    ASSIGNED_IDS,
    CORES_NOT_CLAIMED_FAULT,
    INSTANCE_TYPE_LABEL,
    RESOURCE_TYPE,
    AwsNeuronFamily,
    low_free_mask,
)
from hami_stack.devices.base import AllocateInput, DeviceUsage, FitContext
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.registry import build_families
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import capacity_node, pod, run_webhook
from tests.hami.extender_helpers import NV, make_pod

pytestmark = pytest.mark.awsneuron
DEV, CORE = "aws.amazon.com/neuron", "aws.amazon.com/neuroncore"
SECTION = {"resourceCountName": DEV, "resourceCoreName": CORE}


def _node(
    name: str = "trn", devices: int = 8, cores: int = 2, itype: str = "trn1.32xlarge"
) -> dict[str, Any]:
    node = capacity_node(name, {DEV: str(devices), CORE: str(devices * cores)})
    node["metadata"]["labels"] = {INSTANCE_TYPE_LABEL: itype}
    return node


def _usage(fam: AwsNeuronFamily, node: dict[str, Any], used: tuple[int, ...] = ()) -> list[DeviceUsage]:
    devs = [DeviceUsage.from_info(d) for d in fam.node_devices(node)]
    for d in devs:
        if d.index in used:
            d.used, d.usedcores = 1, d.totalcore
    return devs


def test_devices_and_core_masks_from_capacity() -> None:
    fam = AwsNeuronFamily(SECTION)
    two = fam.node_devices(_node(devices=2))
    assert [(d.id, d.count, d.devmem, d.devcore) for d in two] == [
        ("trn-AWSNeuron-0", 2, 0, 3),
        ("trn-AWSNeuron-1", 2, 0, 3),
    ]
    four = AwsNeuronFamily(SECTION).node_devices(_node("inf", devices=4, cores=4, itype="inf1.6xlarge"))
    assert {d.devcore for d in four} == {15}
    assert build_families(parse_device_config({"awsneuron": SECTION}))[0].common_word == "AWSNeuron"


def test_examples_allocate_dev_and_core_are_claimed() -> None:
    fams = build_families(parse_device_config({"awsneuron": SECTION}))
    for limits in ({DEV: "1"}, {CORE: "1"}):
        resp, out = run_webhook(pod({"name": "c", "limits": limits}), fams)
        assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler", limits


def test_requests() -> None:
    fam = AwsNeuronFamily(SECTION)
    fam.node_devices(_node())
    whole = fam.container_request({"resources": {"limits": {DEV: "2"}}})
    one_core = fam.container_request({"resources": {"limits": {CORE: "1"}}})
    four_cores = fam.container_request({"resources": {"limits": {CORE: "4"}}})
    assert whole is not None and (whole.nums, whole.coresreq) == (2, 2)
    assert one_core is not None and (one_core.nums, one_core.coresreq) == (1, 1)
    assert four_cores is not None and (four_cores.nums, four_cores.coresreq) == (2, 2)
    three = AwsNeuronFamily(SECTION)
    three.node_devices(_node("inf", devices=4, cores=4))
    assert three.container_request({"resources": {"limits": {CORE: "6"}}}) is None  # neither part nor whole
    assert low_free_mask(0b01, 1, 2) == 0b10 and low_free_mask(0b0011, 2, 4) == 0b1100


def test_cores_of_one_device_are_shared_and_counted_by_mask() -> None:
    fam = AwsNeuronFamily(SECTION)
    devs = _usage(fam, _node(devices=1))
    ctx = FitContext({"metadata": {}})
    req = fam.container_request({"resources": {"limits": {CORE: "1"}}})
    assert req is not None
    first = fam.fit(devs, req, ctx)
    assert first.ok and first.devices[0].usedcores == 0b01
    devs[0].used, devs[0].usedcores = 1, 0b01
    second = fam.fit(devs, req, ctx)
    assert second.ok and second.devices[0].usedcores == 0b10
    devs[0].used, devs[0].usedcores = 2, 0b11
    full = fam.fit(devs, req, ctx)
    assert not full.ok and "CardTimeSlicingExhausted" in full.reason


@pytest.mark.parametrize(
    ("itype", "used", "need", "want"),
    [
        ("trn1.32xlarge", (), 4, [0, 1, 2, 3]),
        ("trn1.32xlarge", (1,), 4, [4, 5, 6, 7]),  # aligned blocks of four
        ("trn1.32xlarge", (), 3, []),  # not a block size off Inferentia
        ("inf2.48xlarge", (0,), 3, [1, 2, 3]),  # Inferentia rings: any start
    ],
)
def test_several_devices_are_contiguous(
    itype: str, used: tuple[int, ...], need: int, want: list[int]
) -> None:
    fam = AwsNeuronFamily(SECTION)
    devs = _usage(fam, _node(itype=itype), used)
    req = fam.container_request({"resources": {"limits": {DEV: str(need)}}})
    assert req is not None
    result = fam.fit(devs, req, FitContext({"metadata": {}}))
    got = [int(d.uuid.rsplit("-", 1)[1]) for d in result.devices]
    assert got == want and result.ok == bool(want)
    if not want:
        assert result.reason == "1/1 NumaNotFit"


def test_filter_writes_the_neuron_plugins_annotations_and_allocate_names_cores() -> None:
    fam = AwsNeuronFamily(SECTION)
    ext = Extender(None, [fam, NV], ExtenderOptions())
    node = _node(devices=2)
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("trn", "AWSNeuron", fam.node_devices(node))
    p = make_pod({CORE: "1"})
    assert ext.filter(FilterArgs(p, None, ["trn"]))["NodeNames"] == ["trn"]
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    annotations = fam.pod_annotations(entry.devices["AWSNeuron"], p)
    (d,) = entry.devices["AWSNeuron"][0]
    index = int(d.uuid.rsplit("-", 1)[1])
    assert annotations[ASSIGNED_IDS] == str(2 * index) and annotations[RESOURCE_TYPE] == CORE
    assert (
        annotations["NEURON_ALLOCATED"] == "false" and annotations["aws.amazon.com/predicate-node"] == "trn"
    )
    assert annotations["hami.io/aws-neuron-devices-allocated"] == f"{d.uuid},AWSNeuron,0,1:;"
    whole = make_pod({DEV: "1"})
    assert ext.filter(FilterArgs(whole, None, ["trn"]))["NodeNames"] == ["trn"]
    wentry = ext.cache.pod(whole["metadata"]["uid"])
    assert wentry is not None
    wa = fam.pod_annotations(wentry.devices["AWSNeuron"], whole)
    (wd,) = wentry.devices["AWSNeuron"][0]
    assert wa[ASSIGNED_IDS] == wd.uuid.rsplit("-", 1)[1] and RESOURCE_TYPE not in wa
    assert fam.allocate_response(AllocateInput([wd], "u", "c")).envs == {
        "AWS_NEURON_VISIBLE_DEVICES": wd.uuid.rsplit("-", 1)[1],
        "NEURON_RT_VISIBLE_CORES": ",".join(str(2 * int(wd.uuid.rsplit("-", 1)[1]) + b) for b in range(2)),
    }


def test_cores_not_claimed_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", CORES_NOT_CLAIMED_FAULT)
    faults.reset_for_tests()
    try:
        _, out = run_webhook(
            pod({"name": "c", "limits": {CORE: "1"}}),
            build_families(parse_device_config({"awsneuron": SECTION})),
        )
        assert "schedulerName" not in out["spec"]
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


def test_capacity_plugin_advertises_devices_and_two_cores_each(tmp_path: Path) -> None:
    hw.create_state(tmp_path / "hw", "awsneuron", "Trainium", 4, node_name="trn")
    spec = get("awsneuron")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("trn", tmp_path / "hw"), None, spec.make_family(SECTION))  # type: ignore[arg-type]
    plugin.refresh()
    assert len(plugin.kubelet_devices()) == 4 and len(extra_devices(spec, "cores", plugin.devices)) == 8


def test_allocate_refuses_a_device_id_that_names_no_neuron_device() -> None:
    """A device ID that is not ``<node>-AWSNeuron-<index>`` (a corrupted or hand-written assignment)
    is refused, not read as device 0: the container would otherwise get another tenant's device."""
    from hami_stack.protocol.assignment import ContainerDevice
    from hami_stack.protocol.errors import ProtocolError

    fam = AwsNeuronFamily()
    one = [ContainerDevice("trn-AWSNeuron-3", "AWSNeuron", 0, 3)]
    ok = fam.allocate_response(AllocateInput(one, "u", "c"))
    assert ok.envs == {"AWS_NEURON_VISIBLE_DEVICES": "3", "NEURON_RT_VISIBLE_CORES": "6,7"}
    for bad in ("garbage", "trn-AWSNeuron-", "trn-AWSNeuron-x1"):
        with pytest.raises(ProtocolError, match="AWSNeuron"):
            fam.allocate_response(AllocateInput([ContainerDevice(bad, "AWSNeuron", 0, 3)], "u", "c"))
