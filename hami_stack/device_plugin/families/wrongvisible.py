"""Fault ``plugin-<vendor>-wrong-visible``: Allocate names a neighbour of each device it was asked for.

The scheduler's assignment and the kubelet's device IDs stay right; only the visibility variable the
container gets (every ``*_VISIBLE_DEVICES`` of the answer) points at the next device of the node, by
UUID or by index as the family writes it. A container then works on a device another pod may hold,
which is what a family's ALLOC rule must catch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from . import hardware as hw

VISIBLE_SUFFIX = "_VISIBLE_DEVICES"


def shift(value: str, devices: Sequence[hw.Device]) -> str:
    """Each UUID or index of ``value`` replaced by the next device's (wrapping); others kept."""
    if len(devices) < 2:
        return value
    by_uuid = {d.uuid: i for i, d in enumerate(devices)}
    out = []
    for key in value.split(","):
        if key in by_uuid:
            out.append(devices[(by_uuid[key] + 1) % len(devices)].uuid)
        elif key.isdigit():
            out.append(str((int(key) + 1) % len(devices)))
        else:
            out.append(key)
    return ",".join(out)


def install(family: Any, devices: Callable[[], Sequence[hw.Device]]) -> None:
    """Wrap ``family.allocate_response`` so its visibility variables name the wrong devices."""
    right = family.allocate_response

    def wrong(req: Any) -> Any:
        out = right(req)
        for key, value in list(out.envs.items()):
            if key.endswith(VISIBLE_SUFFIX):
                out.envs[key] = shift(value, devices())
        return out

    family.allocate_response = wrong
