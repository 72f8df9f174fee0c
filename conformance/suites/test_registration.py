"""Registration: device plugins publish their devices the way HAMi's scheduler reads them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import gpu_nodes, registered_devices

pytestmark = [pytest.mark.nvidia, pytest.mark.registration]
HANDSHAKE_WINDOW_S = 60


def _gpu_capacity_nodes(kube: Any) -> list[dict[str, Any]]:
    out = []
    for n in kube.get("/api/v1/nodes").get("items") or []:
        cap = (n.get("status") or {}).get("capacity") or {}
        if C.parse_quantity_int(str(cap.get(C.GPU, "0"))) > 0:
            out.append(n)
    return out


@rule("REG-ANNOT-1", "Every node with nvidia.com/gpu capacity carries hami.io/node-nvidia-register")
def test_register_annotation_present(kube: Any) -> None:
    nodes = _gpu_capacity_nodes(kube)
    assert nodes, violated("REG-ANNOT-1", f"no node advertises {C.GPU} capacity")
    missing = [
        n["metadata"]["name"]
        for n in nodes
        if C.NVIDIA_REGISTER not in (n["metadata"].get("annotations") or {})
    ]
    assert not missing, violated(
        "REG-ANNOT-1", f"nodes with {C.GPU} capacity but no {C.NVIDIA_REGISTER}: {missing}"
    )


@rule(
    "REG-ANNOT-2",
    "The register annotation is well formed: unique ids, positive count/devmem/devcore, NVIDIA type",
)
def test_register_annotation_well_formed(kube: Any) -> None:
    nodes = gpu_nodes(kube)
    assert nodes, violated("REG-ANNOT-2", f"no node carries {C.NVIDIA_REGISTER}")
    for node in nodes:
        name = node["metadata"]["name"]
        try:
            devices = registered_devices(node)
        except C.ContractError as e:
            pytest.fail(violated("REG-ANNOT-2", f"{name}: {C.NVIDIA_REGISTER} does not decode: {e}"))
        assert devices, violated("REG-ANNOT-2", f"{name}: {C.NVIDIA_REGISTER} lists no device")
        ids = [d.id for d in devices]
        assert len(set(ids)) == len(ids), violated("REG-ANNOT-2", f"{name}: duplicate device ids {ids}")
        for d in devices:
            assert d.count > 0 and d.devmem > 0 and d.devcore > 0, violated(
                "REG-ANNOT-2",
                f"{name}: device {d.id} has count={d.count} devmem={d.devmem} devcore={d.devcore}",
            )
            assert "nvidia" in d.type.lower(), violated(
                "REG-ANNOT-2",
                f"{name}: device {d.id} type {d.type!r} does not contain NVIDIA (type matching)",
            )
        assert sorted(d.index for d in devices) == list(range(len(devices))), violated(
            "REG-ANNOT-2", f"{name}: device indexes {[d.index for d in devices]} are not 0..n-1"
        )


@rule("REG-CAP-1", "Node capacity nvidia.com/gpu equals the sum of the registered devices' split counts")
def test_capacity_matches_register(kube: Any) -> None:
    for node in gpu_nodes(kube):
        name = node["metadata"]["name"]
        devices = registered_devices(node)
        want = sum(d.count for d in devices if d.health)
        cap = C.parse_quantity_int(str(((node.get("status") or {}).get("capacity") or {}).get(C.GPU, "0")))
        assert cap == want, violated(
            "REG-CAP-1", f"{name}: capacity {C.GPU}={cap}, registered devices' counts sum to {want}"
        )


@rule("REG-HANDSHAKE-1", "Registration is alive: allocatable GPUs and no stale Requesting_ handshake")
def test_handshake_alive(kube: Any) -> None:
    for node in gpu_nodes(kube):
        name = node["metadata"]["name"]
        alloc = C.parse_quantity_int(
            str(((node.get("status") or {}).get("allocatable") or {}).get(C.GPU, "0"))
        )
        assert alloc > 0, violated(
            "REG-HANDSHAKE-1", f"{name}: allocatable {C.GPU} is {alloc}: scheduler marks it unhealthy"
        )
        value = (node["metadata"].get("annotations") or {}).get(C.NVIDIA_HANDSHAKE, "")
        if value.startswith("Deleted"):
            pytest.fail(
                violated("REG-HANDSHAKE-1", f"{name}: handshake {value!r}: the scheduler cleaned the node up")
            )
        if "Requesting" in value:
            stamp = value.split("_", 1)[-1]
            try:
                age = (datetime.now() - datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")).total_seconds()
            except ValueError:
                pytest.fail(violated("REG-HANDSHAKE-1", f"{name}: handshake {value!r} has no parsable time"))
            # an old Requesting_ is tolerated only while allocatable > 0 (checked above)
            assert age < HANDSHAKE_WINDOW_S or alloc > 0, violated(
                "REG-HANDSHAKE-1", f"{name}: handshake {value!r} unanswered for {age:.0f}s"
            )
