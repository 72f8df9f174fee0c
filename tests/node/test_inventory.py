from __future__ import annotations

from pathlib import Path

import pytest

from testbed.node.inventory import InventoryError, load_inventory, node_address, parse_inventory

ROOT = Path(__file__).resolve().parents[2]


def test_example_inventories_load() -> None:
    two = load_inventory(ROOT / "inventories/emulated/two-nodes-a100.yaml")
    assert [n.name for n in two] == ["gpu-node-1", "gpu-node-2"]
    assert two[0].hardware["nvidia"]["count"] == 4
    assert two[0].hardware["nvidia"]["model"] == "A100-SXM4-80GB"
    assert two[1].labels["gpu"] == "on" and two[1].labels["nvidia.com/gpu.present"] == "true"
    scale = load_inventory(ROOT / "inventories/emulated/scale-1000-simulated.yaml")
    assert len(scale) == 1000 and scale[999].name == "sim-0999" and scale[0].simulated
    assert len({node_address(n.index) for n in scale}) == 1000


def test_capacity_reserved_and_taints() -> None:
    (n,) = parse_inventory(
        {
            "nodes": [
                {
                    "name": "a",
                    "capacity": {"cpu": "8", "memory": "16Gi"},
                    "reserved": {"cpu": "500m"},
                    "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}],
                }
            ]
        }
    )
    assert n.capacity["cpu"] == "8" and n.allocatable()["cpu"] == "7500m"
    assert n.taints == [{"key": "k", "value": "v", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    ("doc", "field", "fragment"),
    [
        ({"nodes": [{"name": "a", "colour": "red"}]}, "colour", "unknown field"),
        ({"nodes": [{"name": "a", "hardware": {"nvidia": {"count": -1}}}]}, "hardware.nvidia.count", ">= 0"),
        (
            {"nodes": [{"name": "a", "hardware": {"nvidia": {"model": "GTX-9000"}}}]},
            "hardware.nvidia.model",
            "unknown GPU model",
        ),
        ({"nodes": [{"name": "a", "capacity": {"memory": "lots"}}]}, "capacity.memory", "bad quantity"),
        ({"nodes": [{"name": "a", "mode": "imagined"}]}, "mode", "executed"),
        (
            {"nodes": [{"name": "a", "hardware": {"nvidia": {"count": 2, "numa": [0]}}}]},
            "hardware.nvidia.numa",
            "one",
        ),
        ({"nodes": [{"name": "A_b"}]}, "name", "RFC 1123"),
        ({"nodes": [{"name": "a", "hardware": {"qpu": {}}}]}, "qpu", "unknown field"),
        (
            {"nodes": [{"name": "a", "taints": [{"key": "k", "effect": "Sometimes"}]}]},
            "taints[0].effect",
            "one of",
        ),
    ],
)
def test_bad_inventories_name_file_node_and_field(doc: dict, field: str, fragment: str) -> None:
    with pytest.raises(InventoryError) as ei:
        parse_inventory(doc, "inv.yaml")
    msg = str(ei.value)
    assert msg.startswith("inv.yaml: node 'a") or msg.startswith("inv.yaml: node 'A_b'")
    assert field in msg and fragment in msg


def test_duplicate_and_pattern_errors(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="duplicate node name"):
        parse_inventory({"nodes": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(InventoryError, match="must contain"):
        parse_inventory({"nodes": [{"namePattern": "x", "count": 2}]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [ {name: a\n")
    with pytest.raises(InventoryError, match=str(bad)):
        load_inventory(bad)
