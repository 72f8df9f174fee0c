"""Registration: device plugins publish their devices the way HAMi's scheduler reads them."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, violated
from conformance.kube import gpu_nodes, registered_devices
from conformance.suites.common import NodeAnnotationWatch

pytestmark = [pytest.mark.nvidia, pytest.mark.registration]
HANDSHAKE_WINDOW_S = 60
HANDSHAKE_LAYOUT = "%Y-%m-%d %H:%M:%S"  # Go time.DateTime, local time
STALE_CERTAIN_S = 15 * 60  # below the smallest time-zone step: an age in [60 s, 15 min) is real


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
    "The register annotation is well formed: unique ids, positive count/devmem/devcore, NVIDIA type, "
    "indexes 0..n-1",
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


@rule(
    "REG-CAP-1", "Node capacity nvidia.com/gpu equals the sum of the healthy registered devices' split counts"
)
def test_capacity_matches_register(kube: Any) -> None:
    for node in gpu_nodes(kube):
        name = node["metadata"]["name"]
        devices = registered_devices(node)
        want = sum(d.count for d in devices if d.health)
        cap = C.parse_quantity_int(str(((node.get("status") or {}).get("capacity") or {}).get(C.GPU, "0")))
        assert cap == want, violated(
            "REG-CAP-1", f"{name}: capacity {C.GPU}={cap}, registered devices' counts sum to {want}"
        )


def _handshake_age(value: str) -> float | None:
    """Seconds since a ``Requesting_<local DateTime>`` stamp; None when the stamp does not parse."""
    stamp = value.split("_", 1)[-1]
    try:
        return (datetime.now() - datetime.strptime(stamp, HANDSHAKE_LAYOUT)).total_seconds()
    except ValueError:
        return None


@rule(
    "REG-HANDSHAKE-1",
    "Registration is alive: allocatable GPUs; the device plugin answers a Requesting_ handshake within 60 s",
)
def test_handshake_alive(kube: Any) -> None:
    nodes = gpu_nodes(kube)
    assert nodes, violated("REG-HANDSHAKE-1", f"no node carries {C.NVIDIA_REGISTER}")
    for node in nodes:
        name = node["metadata"]["name"]
        alloc = C.parse_quantity_int(
            str(((node.get("status") or {}).get("allocatable") or {}).get(C.GPU, "0"))
        )
        assert alloc > 0, violated(
            "REG-HANDSHAKE-1", f"{name}: allocatable {C.GPU} is {alloc}: scheduler marks it unhealthy"
        )
        value = (node["metadata"].get("annotations") or {}).get(C.NVIDIA_HANDSHAKE, "")
        assert not value.startswith("Deleted"), violated(
            "REG-HANDSHAKE-1", f"{name}: handshake {value!r}: the scheduler cleaned the node up"
        )
        if "Requesting" in value:
            # A request already pending must be younger than the window (the plugin still has time).
            # The stamp is the scheduler's local time: an age of whole hours may be a time zone apart
            # from this machine, so only a plainly stale stamp (up to 15 min) fails here; the active
            # check below catches the rest without reading any clock.
            age = _handshake_age(value)
            assert age is not None, violated(
                "REG-HANDSHAKE-1", f"{name}: handshake {value!r} has no parsable time"
            )
            assert not HANDSHAKE_WINDOW_S <= age < STALE_CERTAIN_S, violated(
                "REG-HANDSHAKE-1",
                f"{name}: handshake {value!r} unanswered for {age:.0f}s (window {HANDSHAKE_WINDOW_S}s)",
            )
    # Ask as the scheduler does and require an answer: a plugin that stopped reporting passes every
    # snapshot taken while the value happens to be its last answer, never this. The answer may last
    # only a moment (the scheduler asks again as soon as it sees it), so it is watched, not polled.
    watches: dict[str, NodeAnnotationWatch] = {}
    for node in nodes:
        name = node["metadata"]["name"]
        asked = f"Requesting_{datetime.now().strftime(HANDSHAKE_LAYOUT)}"
        written = kube.patch(
            f"/api/v1/nodes/{name}", {"metadata": {"annotations": {C.NVIDIA_HANDSHAKE: asked}}}, kind="merge"
        )
        watches[name] = NodeAnnotationWatch(
            kube, name, C.NVIDIA_HANDSHAKE, written["metadata"]["resourceVersion"]
        )

    def answered(values: list[str | None]) -> bool:
        return any(v and "Requesting" not in v and not v.startswith(("Deleted", "<watch")) for v in values)

    deadline = time.monotonic() + HANDSHAKE_WINDOW_S
    while time.monotonic() < deadline and not all(answered(w.values) for w in watches.values()):
        time.sleep(0.5)
    silent = {n: w.values for n, w in watches.items() if not answered(w.values)}
    assert not silent, violated(
        "REG-HANDSHAKE-1",
        f"no device-plugin answer within {HANDSHAKE_WINDOW_S}s to a Requesting_ handshake on "
        f"{sorted(silent)} (values seen since: {silent})",
    )
