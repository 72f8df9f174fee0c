"""Cards that a node's advertised capacity stands for.

Some vendors' plugins (Cambricon, Moore Threads, MetaX) write no register annotation and only
advertise capacity. HAMi then synthesises card ``i`` of a node as ``<node><infix><i>``, and reads the
card index back from that id when it writes the vendor's pod annotations or when a plugin sets its
visibility variable.
"""

from __future__ import annotations

from ..protocol.errors import ProtocolError
from ..protocol.handshake import HealthResult
from ..protocol.register import DeviceInfo
from .base import DeviceFamily, HealthState, Obj, node_quantity


def card_index(device_id: str, infix: str) -> int:
    """Card ``i`` of ``<node><infix><i>``. Any other id is refused: reading it as card 0 would hand a
    container a card nobody assigned it (the ids reach Allocate through pod annotations)."""
    _, found, tail = device_id.rpartition(infix)
    if not found or not tail.isdigit():
        raise ProtocolError(f"device ID {device_id!r} is not <node>{infix}<index>")
    return int(tail)


def split_cards(
    node: Obj, family: DeviceFamily, infix: str, cores_per_card: int, memory_unit_mib: int, slots: int = 100
) -> list[DeviceInfo]:
    """The family's cards: one per ``cores_per_card`` cores of its core resource the node advertises
    (a partial last one counts too).

    The advertised memory resource, in units of ``memory_unit_mib``, is spread evenly over the cores.
    Each card has ``slots`` slots and ``cores_per_card`` cores, and is healthy.
    """
    cores = node_quantity(node, "capacity", family.core_resource)
    if cores <= 0:
        return []
    memory = node_quantity(node, "capacity", family.memory_resource)
    name = (node.get("metadata") or {}).get("name", "")
    devmem = memory * memory_unit_mib * cores_per_card // cores
    return [
        DeviceInfo(
            id=f"{name}{infix}{i}",
            index=i,
            count=slots,
            devmem=devmem,
            devcore=cores_per_card,
            type=family.common_word,
            health=True,
        )
        for i in range((cores + cores_per_card - 1) // cores_per_card)
    ]


def always_healthy(
    node: Obj, core_resource: str, previous: HealthState | None
) -> tuple[HealthResult, HealthState]:
    """Always healthy, as upstream has it for split cards. The cards are rebuilt when the vendor's
    advertised capacity changes: its cores, or its memory, which the kubelet adds a moment after the
    cores (each extended resource registers on its own), so a node seen in between must not keep
    cards without memory."""
    domain = core_resource.partition("/")[0] + "/"
    capacity = (node.get("status") or {}).get("capacity") or {}
    advertised = ",".join(f"{k}={v}" for k, v in sorted(capacity.items()) if k.startswith(domain))
    state = HealthState(node_quantity(node, "capacity", core_resource), advertised)
    return HealthResult(True, previous is None or previous != state), state


def capacity_health(
    node: Obj, resource: str, previous: HealthState | None
) -> tuple[HealthResult, HealthState]:
    """Healthy while the node advertises some ``resource`` (the vendor's plugin runs and sees cards).
    The devices are rebuilt when the advertised count changes."""
    capacity = node_quantity(node, "capacity", resource)
    state = HealthState(capacity, None)
    return HealthResult(capacity > 0, previous is None or previous != state), state
