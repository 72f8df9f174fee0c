"""Device assignments in pod annotations (``hami.io/vgpu-devices-to-allocate`` and friends).

Grammar, per vendor annotation:

* device entry: ``<uuid>,<common word>,<usedmem MiB>,<usedcores %>`` followed by ``:``;
* container segment: its entries concatenated, then ``;``;
* pod: one segment per container, **all init containers first, then app containers**, with an
  empty segment (just ``;``) for every container that got nothing from this vendor.

Example: ``;GPU-A,NVIDIA,1000,0:;`` is "first container nothing, second container 1000 MiB of GPU-A".

Decoding keeps empty segments so positions survive, including the empty piece after the final
``;`` (HAMi's decoder does the same), so ``decode_pod_devices(encode_pod_devices(x))`` is ``x``
plus one trailing empty container; :func:`decode_pod_devices` with ``trim_trailing=True`` drops it.
Any malformed entry rejects the whole value (:class:`ProtocolError`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ProtocolError

DEVICE_SEPARATOR = ":"  # ends each device entry of one container
CONTAINER_SEPARATOR = ";"  # ends each container segment of one pod
MISSING_FIELDS_ERROR = "pod annotation format error, missing fields, do not use nodeName in task spec"


@dataclass(frozen=True)
class ContainerDevice:
    """One device given to one container: which device, and how much of it."""

    uuid: str
    type: str  # the family's common word, e.g. NVIDIA
    usedmem: int  # MiB, percentages already resolved
    usedcores: int  # percent of the device, after the clamp to 100

    def encode(self) -> str:
        for name, text in (("uuid", self.uuid), ("type", self.type)):
            if not text or any(c in text for c in ",:;"):
                raise ProtocolError(
                    f"assignment field {name!r} must be non-empty without ',', ':' or ';': {text!r}"
                )
        return f"{self.uuid},{self.type},{self.usedmem},{self.usedcores}{DEVICE_SEPARATOR}"


ContainerDevices = list[ContainerDevice]
PodDevices = list[ContainerDevices]  # one entry per container, init containers first


def encode_container_devices(devices: Sequence[ContainerDevice]) -> str:
    return "".join(d.encode() for d in devices)


def encode_pod_devices(pod: Sequence[Sequence[ContainerDevice]]) -> str:
    return "".join(encode_container_devices(c) + CONTAINER_SEPARATOR for c in pod)


_GO_INT32 = re.compile(r"[+-]?[0-9]+")


def _int(entry: str, name: str, text: str) -> int:
    """Go's ``strconv.ParseInt(text, 10, 32)``: optional sign and decimal digits, within int32."""
    if _GO_INT32.fullmatch(text) and -(2**31) <= int(text) < 2**31:
        return int(text)
    raise ProtocolError(f"assignment entry {entry!r}: {name} must be a 32-bit integer, got {text!r}")


def decode_container_devices(segment: str) -> ContainerDevices:
    devices = []
    for entry in segment.split(DEVICE_SEPARATOR):
        if not entry:
            continue
        if "," not in entry:
            raise ProtocolError(f"assignment entry {entry!r} is not '<uuid>,<type>,<mem>,<cores>'")
        fields = entry.split(",")
        if len(fields) < 4:
            raise ProtocolError(MISSING_FIELDS_ERROR)
        if not fields[0] or not fields[1]:
            raise ProtocolError(f"assignment entry {entry!r}: uuid and type must be non-empty")
        devices.append(
            ContainerDevice(
                fields[0], fields[1], _int(entry, "usedmem", fields[2]), _int(entry, "usedcores", fields[3])
            )
        )
    return devices


def decode_pod_devices(value: str, *, trim_trailing: bool = False) -> PodDevices:
    segments = value.split(CONTAINER_SEPARATOR)
    if trim_trailing and len(segments) > 1 and segments[-1] == "":
        segments = segments[:-1]
    return [decode_container_devices(s) for s in segments]


def pop_first_nonempty(pod: PodDevices) -> tuple[int, ContainerDevices, PodDevices]:
    """(position, devices) of the first non-empty segment, and the pod with that segment emptied.

    Raises :class:`ProtocolError` when every segment is empty.
    """
    for i, devices in enumerate(pod):
        if devices:
            rest = [list(c) for c in pod]
            rest[i] = []
            return i, list(devices), rest
    raise ProtocolError("no container with devices left in the assignment annotation")


def has_devices(value: str, common_words: Sequence[str]) -> bool:
    """Whether an assignment value still names any of ``common_words`` (the plugin's "all done" test)."""
    return any(cw in value for cw in common_words)
