"""The testbed's Ascend parts: inventories with NPUs, and the Ascend runtime's environment injection."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.hardware.ascend import create_npu_state
from testbed.node import toolkit
from testbed.node.inventory import InventoryError, load_inventory

pytestmark = pytest.mark.ascend

REPO = Path(__file__).resolve().parents[2]


def test_inventories_with_ascend_nodes_load() -> None:
    nodes = load_inventory(REPO / "inventories/emulated/two-nodes-ascend.yaml")
    assert [(n.name, n.hardware["ascend"]["chip"], n.hardware["ascend"]["count"]) for n in nodes] == [
        ("npu-node-1", "910B3", 8),
        ("npu-node-2", "Ascend910", 8),  # 910C is the chip DCMI calls Ascend910
        ("npu-node-3", "910B4", 4),
    ]
    mixed = {n.name: n for n in load_inventory(REPO / "inventories/emulated/mixed-nvidia-ascend.yaml")}
    assert set(mixed["gpu-node-1"].hardware) == {"nvidia"} and set(mixed["npu-node-1"].hardware) == {"ascend"}
    assert len(mixed) == 5 and mixed["npu-node-3"].hardware["ascend"]["device_share"] is True


def test_bad_ascend_inventory_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yaml"
    bad.write_text("nodes:\n  - name: n\n    hardware:\n      ascend: {chip: 999X, count: 2}\n")
    with pytest.raises(InventoryError, match=r"hardware.ascend.chip: unknown Ascend chip '999X'"):
        load_inventory(bad)
    bad.write_text("nodes:\n  - name: n\n    hardware:\n      ascend: {chip: 910B3, count: 65}\n")
    with pytest.raises(InventoryError, match=r"hardware\.ascend\.count"):
        load_inventory(bad)
    bad.write_text("nodes:\n  - name: n\n    hardware:\n      ascend: {chip: 910C, device_share: 'yes'}\n")
    with pytest.raises(InventoryError, match=r"hardware\.ascend\.device_share: must be true or false"):
        load_inventory(bad)


def test_runtime_injects_the_driver_only_for_npu_containers(tmp_path: Path) -> None:
    root = tmp_path / "node"
    create_npu_state(root / "hardware" / "ascend", {"chip": "910B3", "count": 2}, node_name="n")
    state = toolkit.ascend_state_dir(root)
    assert state is not None and toolkit.ascend_state_dir(tmp_path / "other") is None
    plain = toolkit.inject_ascend({"PATH": "/bin"}, state)
    assert plain == {"PATH": "/bin"}
    ctr = toolkit.inject_ascend({"ASCEND_VISIBLE_DEVICES": "1", "ASCEND_VNPU_SPECS": "vir05_1c_16g"}, state)
    assert ctr["HAMI_EMU_NPU_STATE_DIR"] == str(state.resolve())
    assert ctr["ASCEND_VISIBLE_DEVICES"] == "1" and ctr["ASCEND_VNPU_SPECS"] == "vir05_1c_16g"
    assert (Path(ctr["LD_LIBRARY_PATH"].split(":")[0]) / "libdcmi.so").is_file()
    host = toolkit.inject_ascend({"ASCEND_VISIBLE_DEVICES": "all"}, state)
    assert host["HAMI_EMU_NPU_ALL"] == "1" and "ASCEND_VISIBLE_DEVICES" not in host


def test_backend_enables_ascend_for_npu_inventories_and_waits_for_their_registration() -> None:
    from conformance.backends import testbed as tb

    inv = REPO / "inventories/emulated/two-nodes-ascend.yaml"
    soft = [
        "devices.ascend.nodeConfig[0].name=npu-node-3",
        "devices.ascend.nodeConfig[0].hamiVnpuMode=hami-core",
    ]
    assert tb.vendor_chart_set(inv, ["x=1"]) == ["x=1", "devices.ascend.enabled=true", *soft]
    assert tb.vendor_chart_set(inv, ["devices.ascend.enabled=false", "devices.ascend.nodeConfig=null"]) == [
        "devices.ascend.enabled=false", "devices.ascend.nodeConfig=null"
    ]
    assert tb.vendor_chart_set(REPO / "inventories/emulated/two-nodes-a100.yaml", []) == []
    node = {
        "metadata": {"annotations": {"hami.io/node-register-Ascend910B3": "[]"}},
        "status": {"capacity": {"huawei.com/Ascend910B3": "32"}},
    }
    assert tb._registered(node)
    node["status"]["capacity"]["huawei.com/Ascend910B3"] = "0"
    assert not tb._registered(node)
    assert not tb._registered({"metadata": {"annotations": {}}, "status": {}})
