"""The device manager's checkpoint, ``device-plugins/kubelet_internal_checkpoint``.

The file has the kubelet's shape: ``{"Data": {"PodDeviceEntries": [...], "RegisteredDevices": {...}},
"Checksum": N}``; each entry holds PodUID, ContainerName, ResourceName, DeviceIDs (per NUMA node from
1.20, a flat list before) and AllocResp (the serialized ContainerAllocateResponse, base64 as Go encodes
[]byte). The kubelet's checksum hashes Go's in-memory struct and cannot be reproduced outside Go, so
ours is an FNV-32a over the canonical JSON of ``Data``; a mismatch is reported like the kubelet does
and the file is ignored.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

CHECKPOINT_NAME = "kubelet_internal_checkpoint"
NO_TOPOLOGY = -1  # the NUMA key the kubelet uses for devices without topology


class CheckpointCorrupted(Exception):
    pass


@dataclass
class Entry:
    pod_uid: str
    container: str
    resource: str
    device_ids: dict[int, list[str]]  # NUMA node -> device IDs
    alloc_resp: bytes = b""


@dataclass
class CheckpointData:
    entries: list[Entry] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def encode(data: CheckpointData, *, numa_keys: bool = True) -> bytes:
    """The file body; ``numa_keys=False`` writes the pre-1.20 (v1) flat DeviceIDs list."""
    entries = []
    for e in data.entries:
        if numa_keys:
            ids: object = {str(k): list(v) for k, v in sorted(e.device_ids.items())}
        else:
            ids = sorted({d for v in e.device_ids.values() for d in v})
        entries.append(
            {
                "PodUID": e.pod_uid,
                "ContainerName": e.container,
                "ResourceName": e.resource,
                "DeviceIDs": ids,
                "AllocResp": base64.b64encode(e.alloc_resp).decode(),
            }
        )
    body = {
        "PodDeviceEntries": entries,
        "RegisteredDevices": {k: list(v) for k, v in data.registered.items()},
    }
    return json.dumps({"Data": body, "Checksum": _fnv32a(_canonical(body))}).encode()


def decode(blob: bytes) -> CheckpointData:
    try:
        doc = json.loads(blob)
        body = doc["Data"]
        checksum = doc.get("Checksum")
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointCorrupted(f"checkpoint is corrupted: {err}") from err
    if checksum != _fnv32a(_canonical(body)):
        raise CheckpointCorrupted("checkpoint is corrupted")
    out = CheckpointData(
        registered={k: list(v or []) for k, v in (body.get("RegisteredDevices") or {}).items()}
    )
    for raw in body.get("PodDeviceEntries") or []:
        ids = raw.get("DeviceIDs")
        per_numa = (
            {int(k): list(v) for k, v in ids.items()}
            if isinstance(ids, dict)
            else {NO_TOPOLOGY: list(ids or [])}
        )
        out.entries.append(
            Entry(
                pod_uid=raw["PodUID"],
                container=raw["ContainerName"],
                resource=raw["ResourceName"],
                device_ids=per_numa,
                alloc_resp=base64.b64decode(raw.get("AllocResp") or ""),
            )
        )
    return out


def write(path: Path, data: CheckpointData, *, numa_keys: bool = True) -> None:
    # Write-then-rename so a crash never leaves half a checkpoint behind.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(encode(data, numa_keys=numa_keys))
    os.replace(tmp, path)


def read(path: Path) -> CheckpointData | None:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode(blob)
