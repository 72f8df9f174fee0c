"""HAMi's public contract as the suites read it: names, annotation keys and the two encodings.

Written from the protocol notes, independently of ``hami_stack`` (the suites must not trust the
implementation they certify), and tolerant of what upstream HAMi writes in its supported versions
(register annotation in JSON since v2.8, CSV before).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DEFAULT_SCHEDULER_NAME = "hami-scheduler"
DEFAULT_NAMESPACE = "hami-system"

# NVIDIA resources (chart defaults; configurable in HAMi, so a profile may rename them)
GPU = "nvidia.com/gpu"
GPUMEM = "nvidia.com/gpumem"
GPUMEM_PCT = "nvidia.com/gpumem-percentage"
GPUCORES = "nvidia.com/gpucores"
PRIORITY = "nvidia.com/priority"

# node annotations
NVIDIA_REGISTER = "hami.io/node-nvidia-register"
NVIDIA_HANDSHAKE = "hami.io/node-handshake"
DEVICE_CORDON = "hami.io/device-cordon"
NODE_LOCK = "hami.io/mutex.lock"

# pod annotations and labels
VGPU_NODE = "hami.io/vgpu-node"
VGPU_TIME = "hami.io/vgpu-time"
NVIDIA_TO_ALLOCATE = "hami.io/vgpu-devices-to-allocate"
NVIDIA_ALLOCATED = "hami.io/vgpu-devices-allocated"
BIND_PHASE = "hami.io/bind-phase"
BIND_TIME = "hami.io/bind-time"
NODE_POLICY = "hami.io/node-scheduler-policy"
GPU_POLICY = "hami.io/gpu-scheduler-policy"
USE_GPUTYPE = "nvidia.com/use-gputype"
NOUSE_GPUTYPE = "nvidia.com/nouse-gputype"
USE_GPUUUID = "nvidia.com/use-gpuuuid"
NOUSE_GPUUUID = "nvidia.com/nouse-gpuuuid"
WEBHOOK_IGNORE_LABEL = "hami.io/webhook"

# events
FILTERING_FAILED = "FilteringFailed"
FILTERING_SUCCEED = "FilteringSucceed"
BINDING_SUCCEED = "BindingSucceed"

# the webhook's denial texts
DENY_PRIVILEGED = "is privileged"
DENY_NODE_ASSIGNED = "pod has node assigned"
DENY_QUOTA = "exceeding resource quota"

# How each vendor family shows up on a node: register annotations it writes, capacity it adds.
VENDOR_SIGNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "nvidia": ((NVIDIA_REGISTER,), (GPU,)),
    "ascend": (("hami.io/node-register-Ascend",), ("huawei.com/Ascend",)),
    "cambricon": ((), ("cambricon.com/vmlu", "cambricon.com/mlu")),
    "hygon": (("hami.io/node-dcu-register",), ("hygon.com/dcunum",)),
    "iluvatar": (("-register",), ("iluvatar.ai/",)),
    "mthreads": ((), ("mthreads.com/vgpu",)),
    "metax": (("metax-tech.com/node-gpu-devices",), ("metax-tech.com/gpu", "metax-tech.com/sgpu")),
    "enflame": (("enflame.com/gcu-drs-capacity",), ("enflame.com/gcu", "enflame.com/drs-gcu")),
    "kunlunxin": (("hami.io/node-register-xpu",), ("kunlunxin.com/xpu", "kunlunxin.com/vxpu")),
    "vastai": (("hami.io/node-va-register",), ("vastaitech.com/va",)),
    "biren": (("hami.io/node-biren-register",), ("birentech.com/gpu",)),
    "awsneuron": ((), ("aws.amazon.com/neuron",)),
    "amd": (("hami.io/node-amd-register",), ("amd.com/gpu",)),
}


@dataclass(frozen=True)
class RegisteredDevice:
    id: str
    index: int
    count: int
    devmem: int
    devcore: int
    type: str
    numa: int
    health: bool
    mode: str


class ContractError(ValueError):
    """A value does not follow the contract; the message says which part and why."""


def _int(obj: dict[str, object], key: str, where: str) -> int:
    value = obj.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{where}.{key}: {value!r} is not an integer")
    return value


def parse_register(value: str) -> list[RegisteredDevice]:
    """Decode ``hami.io/node-nvidia-register``: a JSON array (v2.8+) or the legacy CSV form."""
    text = value.strip()
    if text.startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ContractError(f"not valid JSON: {e.msg} at column {e.colno}") from None
        out = []
        for i, d in enumerate(raw):
            where = f"[{i}]"
            if not isinstance(d, dict):
                raise ContractError(f"{where}: not an object")
            health = d.get("health", False)  # omitempty: absent means false
            if not isinstance(health, bool):
                raise ContractError(f"{where}.health: {health!r} is not a boolean")
            ident = d.get("id")
            if not isinstance(ident, str) or not ident:
                raise ContractError(f"{where}.id: missing")
            out.append(
                RegisteredDevice(
                    id=ident,
                    index=_int(d, "index", where),
                    count=_int(d, "count", where),
                    devmem=_int(d, "devmem", where),
                    devcore=_int(d, "devcore", where),
                    type=str(d.get("type", "")),
                    numa=_int(d, "numa", where),
                    health=health,
                    mode=str(d.get("mode", "")),
                )
            )
        return out
    if ":" not in text:
        raise ContractError("neither a JSON array nor CSV devices ending with ':'")
    out = []
    for i, seg in enumerate(s for s in text.split(":") if s):
        f = seg.split(",")
        if len(f) not in (7, 9):
            raise ContractError(f"device {i}: {len(f)} fields, want 7 or 9")
        try:
            out.append(
                RegisteredDevice(
                    id=f[0],
                    count=int(f[1]),
                    devmem=int(f[2]),
                    devcore=int(f[3]),
                    type=f[4],
                    numa=int(f[5]),
                    health=f[6].lower() == "true",
                    index=int(f[7]) if len(f) == 9 else 0,
                    mode=f[8] if len(f) == 9 else "hami-core",
                )
            )
        except ValueError as e:
            raise ContractError(f"device {i}: {e}") from None
    return out


@dataclass(frozen=True)
class AssignedDevice:
    uuid: str
    vendor_word: str
    mem_mib: int
    cores: int


def decode_assignment(value: str) -> list[list[AssignedDevice]]:
    """Decode a devices-allocated annotation: one segment per container (init first), ``;`` ends each.

    The trailing empty piece after the last ``;`` is not a container and is dropped here.
    """
    segments = value.split(";")
    if segments and segments[-1] == "":
        segments = segments[:-1]
    out: list[list[AssignedDevice]] = []
    for ci, seg in enumerate(segments):
        devices = []
        for part in seg.split(":"):
            if "," not in part:
                continue
            f = part.split(",")
            if len(f) < 4:
                raise ContractError(f"container {ci}: device entry {part!r} has {len(f)} fields, want 4")
            try:
                devices.append(AssignedDevice(f[0], f[1], int(f[2]), int(f[3])))
            except ValueError:
                raise ContractError(
                    f"container {ci}: device entry {part!r}: memory/cores not integers"
                ) from None
        out.append(devices)
    return out


def parse_quantity_int(value: str) -> int:
    """Integer quantities as extended resources use them ("4", "20"); "1k" style suffixes too."""
    suffixes = {"k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for s, mul in sorted(suffixes.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(s):
            return int(value[: -len(s)]) * mul
    return int(value)


def vendors_on_node(node: dict[str, object]) -> set[str]:
    """Vendor families a node shows signs of (register annotations or non-zero capacity)."""
    meta = node.get("metadata") or {}
    annotations: dict[str, str] = (meta.get("annotations") if isinstance(meta, dict) else None) or {}
    status = node.get("status") or {}
    capacity: dict[str, str] = (status.get("capacity") if isinstance(status, dict) else None) or {}
    found = set()
    for vendor, (keys, resources) in VENDOR_SIGNS.items():
        if vendor == "iluvatar":
            if any(
                k.startswith("hami.io/node-") and k.endswith("-register") and "-MR-" in k for k in annotations
            ):
                found.add(vendor)
        elif any(any(k.startswith(p) for p in keys) for k in annotations):
            found.add(vendor)
        for name, qty in capacity.items():
            if any(name.startswith(r) for r in resources):
                try:
                    if parse_quantity_int(str(qty)) > 0:
                        found.add(vendor)
                except ValueError:
                    continue
    return found
