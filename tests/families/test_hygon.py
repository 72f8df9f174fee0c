"""Hygon DCU end to end in process: emulated hardware files -> generic plugin registration ->
extender placement -> Allocate answer; plus admission and the DCU fault."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families import hardware
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.base import AllocateInput
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.hygon import VDEV_MOUNT, HygonFamily
from hami_stack.devices.registry import build_families
from hami_stack.protocol.handshake import check_handshake
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.hami.extender_helpers import NV, add_node, gpus, make_pod

pytestmark = pytest.mark.hygon
REGISTER = "hami.io/node-dcu-register"
HANDSHAKE = "hami.io/node-handshake-dcu"


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append((path, body))
        return body


def _plugin(tmp_path: Path, node: str = "dcu-a", count: int = 4) -> tuple[FamilyDevicePlugin, FakeKube]:
    hw.create_state(tmp_path / "hw", "hygon", "Z100L", count, node_name=node)
    kube = FakeKube()
    spec = get("dcu")
    plugin = FamilyDevicePlugin(spec, FamilyOptions(node, tmp_path / "hw"), kube, spec.make_family({}))  # type: ignore[arg-type]
    return plugin, kube


def _node(name: str, kube: FakeKube) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    for _, body in kube.patches:
        annotations.update(body["metadata"]["annotations"])
    return {"metadata": {"name": name, "annotations": annotations}}


def test_registry_builds_the_hygon_family_from_its_section() -> None:
    fams = build_families(parse_device_config({"hygon": {"resourceCountName": "hygon.com/dcunum"}}))
    assert [type(f) for f in fams] == [HygonFamily]
    assert (
        build_families(parse_device_config({"biren": {"resourceCountName": "birentech.com/gpu"}}))[
            0
        ].common_word
        == "Biren"
    )


def test_admission_refuses_zero_dcus_and_byte_memory() -> None:
    fam = HygonFamily()
    ok = {"name": "c", "resources": {"limits": {"hygon.com/dcunum": "1", "hygon.com/dcumem": "2000"}}}
    assert fam.admission_problem(ok) is None
    zero = {"name": "c", "resources": {"limits": {"hygon.com/dcunum": "0"}}}
    assert "between 1 and" in (fam.admission_problem(zero) or "")
    gib = {"name": "c", "resources": {"limits": {"hygon.com/dcunum": "1", "hygon.com/dcumem": "2Gi"}}}
    assert "write 2048 for 2Gi" in (fam.admission_problem(gib) or "")
    cores = {"name": "c", "resources": {"limits": {"hygon.com/dcunum": "1", "hygon.com/dcucores": "150"}}}
    assert "between 0 and 100" in (fam.admission_problem(cores) or "")


@pytest.mark.usefixtures("family_hw")
def test_plugin_registers_csv_devices_and_a_handshake_the_scheduler_accepts(tmp_path: Path) -> None:
    plugin, kube = _plugin(tmp_path)
    plugin.refresh()
    node = _node("dcu-a", kube)
    ann = node["metadata"]["annotations"]
    assert ann[HANDSHAKE].startswith("Reported_")
    assert check_handshake(ann[HANDSHAKE], dt.datetime.now(), 0).healthy
    devs = plugin.family.node_devices(node)
    assert [(d.count, d.devmem, d.devcore, d.type) for d in devs] == [(4, 32768, 100, "DCU-Z100L")] * 4
    assert [d.numa for d in devs] == [0, 0, 1, 1]
    assert len(plugin.kubelet_devices()) == 16
    # an unchanged register is not patched again; the handshake is
    plugin.refresh()
    assert REGISTER not in kube.patches[-1][1]["metadata"]["annotations"]


@pytest.mark.usefixtures("family_hw")
def test_an_unhealthy_dcu_is_registered_unhealthy_and_not_chosen(tmp_path: Path) -> None:
    plugin, kube = _plugin(tmp_path, count=2)
    hw.set_health(tmp_path / "hw", "hygon", 1, False)
    plugin.refresh()
    devs = plugin.family.node_devices(_node("dcu-a", kube))
    assert [d.health for d in devs] == [True, False]
    assert [d.healthy for d in plugin.kubelet_devices()] == [True] * 4 + [False] * 4


@pytest.mark.usefixtures("family_hw")
def test_scheduler_places_on_registered_dcus_and_allocate_limits_the_partial_device(tmp_path: Path) -> None:
    plugin, kube = _plugin(tmp_path)
    plugin.refresh()
    fam = plugin.family
    ext = Extender(None, [fam, NV], ExtenderOptions())
    add_node(ext.cache, "gpu-a", gpus("gpu-a"))
    node = _node("dcu-a", kube)
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("dcu-a", "DCU", fam.node_devices(node))
    pod = make_pod({"hygon.com/dcunum": "1", "hygon.com/dcumem": "8192", "hygon.com/dcucores": "50"})
    out = ext.filter(FilterArgs(pod, None, ["gpu-a", "dcu-a"]))
    assert out["NodeNames"] == ["dcu-a"], out
    entry = ext.cache.pod(pod["metadata"]["uid"])
    assert entry is not None
    picked = [d for ctr in entry.devices["DCU"] for d in ctr]
    assert len(picked) == 1 and picked[0].usedmem == 8192 and picked[0].usedcores == 50
    # too much memory: refused with HAMi's reason
    big = make_pod({"hygon.com/dcunum": "1", "hygon.com/dcumem": "40000"})
    out = ext.filter(FilterArgs(big, None, ["dcu-a"]))
    assert out["NodeNames"] is None and "CardInsufficientMemory" in out["FailedNodes"]["dcu-a"]
    # Allocate: devices, visibility, and the vdev config of the partial device
    alloc = fam.allocate_response(AllocateInput(picked, "uid-1", "c0", hook_path=str(tmp_path / "hook")))
    idx = next(d.index for d in plugin.devices if d.uuid == picked[0].uuid)
    assert alloc.envs["DCU_VISIBLE_DEVICES"] == picked[0].uuid
    assert {d.container_path for d in alloc.devices} >= {
        "/dev/kfd",
        f"/dev/dri/card{idx}",
        f"/dev/dri/renderD{128 + idx}",
    }
    vdev = [m for m in alloc.mounts if m.container_path == VDEV_MOUNT]
    assert len(vdev) == 1
    text = (Path(vdev[0].host_path) / "vdev0.conf").read_text()
    assert "mem: 8192 MiB" in text and "cu_count: 30" in text and f"device_id: {idx}" in text


@pytest.mark.usefixtures("family_hw")
def test_a_whole_dcu_gets_no_vdev_config(tmp_path: Path) -> None:
    plugin, _ = _plugin(tmp_path, count=1)
    plugin.refresh()
    from hami_stack.protocol.assignment import ContainerDevice

    d = ContainerDevice(plugin.devices[0].uuid, "DCU", 32768, 100)
    alloc = plugin.family.allocate_response(AllocateInput([d], "u", "c", hook_path=str(tmp_path)))
    assert not [m for m in alloc.mounts if m.container_path == VDEV_MOUNT]


@pytest.mark.usefixtures("family_hw")
def test_half_memory_fault_under_registers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", "plugin-hygon-register-half-memory")
    faults.reset_for_tests()
    try:
        plugin, kube = _plugin(tmp_path, count=1)
        plugin.refresh()
        assert plugin.family.node_devices(_node("dcu-a", kube))[0].devmem == 16384
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


def test_hardware_reader_names_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "hygon").mkdir()
    (tmp_path / "hygon" / "devices.json").write_text("{not json")
    with pytest.raises(hardware.HardwareError, match=r"devices\.json"):
        hardware.read(tmp_path, "hygon")
    assert hardware.read(tmp_path, "nothing") == []


def _suite_rules(vendor: str) -> set[str]:
    """The rule ids test_family_cases.py gives the vendor's parameters (from their pytest marks)."""
    from conformance.suites import test_family_cases as suite

    out = set()
    for fn in vars(suite).values():
        for mark in getattr(fn, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            for param in mark.args[1]:
                marks = getattr(param, "marks", ())
                if any(m.name == vendor for m in marks):
                    out |= {m.args[0] for m in marks if m.name == "rule"}
    return out


def test_the_hygon_profile_lists_exactly_the_family_suite_rules() -> None:
    from conformance import profiles

    prof = profiles.load_profile("hygon")
    assert set(prof.rules) == _suite_rules("hygon")
    assert {"DCU-ADM-1", "DCU-REG-1", "DCU-ALLOC-1"} <= set(prof.rules)
    assert prof.requirement("DCU-ADM-1", "1.33") == "required"


def test_the_cambricon_profile_lists_exactly_the_family_suite_rules() -> None:
    from conformance import profiles

    prof = profiles.load_profile("cambricon")
    assert set(prof.rules) == _suite_rules("cambricon")
    assert {"MLU-REG-1", "MLU-ADM-SCHED-1", "MLU-SCHED-FIT-1", "MLU-ALLOC-1"} <= set(prof.rules)


@pytest.mark.usefixtures("family_hw")
def test_allocate_refuses_a_dcu_the_node_does_not_have(tmp_path: Path) -> None:
    """A DCU the driver does not list on this node (another node's, or a malformed ID) is refused, not
    mapped to card 0: the container would get a device nobody assigned it."""
    from hami_stack.protocol.assignment import ContainerDevice
    from hami_stack.protocol.errors import ProtocolError

    plugin, _ = _plugin(tmp_path, count=1)
    plugin.refresh()
    for bad in ("DCU-garbage", "DCU-7"):
        d = ContainerDevice(bad, "DCU", 32768, 100)
        with pytest.raises(ProtocolError, match=bad):
            plugin.family.allocate_response(AllocateInput([d], "u", "c", hook_path=str(tmp_path)))
