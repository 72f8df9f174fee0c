"""Annotation and label keys of the HAMi protocol, and which of them the scheduler alone may write.

Node keys are written by device plugins (register, handshake) and the scheduler (lock); pod keys
are written by the scheduler's ``/filter`` and ``/bind`` and by the device plugin's ``Allocate``.
Vendor key tables follow the contract literally, irregular spellings included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# --- pod: scheduling decision and bind protocol ------------------------------------------------
VGPU_NODE: Final = "hami.io/vgpu-node"  # also written as a label with the same key
VGPU_TIME: Final = "hami.io/vgpu-time"  # unix seconds
BIND_PHASE: Final = "hami.io/bind-phase"
BIND_TIME: Final = "hami.io/bind-time"  # unix seconds
MIG_ALLOCATIONS: Final = "hami.io/vgpu-mig-allocations"

# --- node ---------------------------------------------------------------------------------------
NODE_LOCK: Final = "hami.io/mutex.lock"
CAMBRICON_LOCK: Final = "cambricon.com/dsmlu.lock"
DEVICE_CORDON: Final = "hami.io/device-cordon"  # comma-separated GPU UUIDs
NVIDIA_TOPOLOGY_SCORE: Final = "hami.io/node-nvidia-score"
VNPU_CORE_NODE: Final = "hami-vnpu-core"

# --- pod: policies and selection ----------------------------------------------------------------
NODE_SCHEDULER_POLICY: Final = "hami.io/node-scheduler-policy"
GPU_SCHEDULER_POLICY: Final = "hami.io/gpu-scheduler-policy"
DEVICE_SCORING_WEIGHTS: Final = "hami.io/device-scoring-weights"
NVIDIA_USE_GPUTYPE: Final = "nvidia.com/use-gputype"
NVIDIA_NOUSE_GPUTYPE: Final = "nvidia.com/nouse-gputype"
NVIDIA_USE_GPUUUID: Final = "nvidia.com/use-gpuuuid"
NVIDIA_NOUSE_GPUUUID: Final = "nvidia.com/nouse-gpuuuid"
NVIDIA_NUMA_BIND: Final = "nvidia.com/numa-bind"
NVIDIA_VGPU_MODE: Final = "nvidia.com/vgpu-mode"

# --- labels -------------------------------------------------------------------------------------
WEBHOOK_IGNORE_LABEL: Final = "hami.io/webhook"  # value "ignore" exempts a pod/namespace
SCHEDULER_ROLE_LABEL: Final = "hami.io/scheduler-role"  # leader | follower
POD_GROUP_LABEL: Final = "scheduling.x-k8s.io/pod-group"


@dataclass(frozen=True)
class VendorKeys:
    """The annotation keys of one family (empty string = the family has no such key)."""

    common_word: str
    register: str = ""
    handshake: str = ""
    to_allocate: str = ""
    allocated: str = ""
    use_type: str = ""
    nouse_type: str = ""
    use_uuid: str = ""
    nouse_uuid: str = ""


NVIDIA_KEYS: Final = VendorKeys(
    "NVIDIA",
    "hami.io/node-nvidia-register",
    "hami.io/node-handshake",
    "hami.io/vgpu-devices-to-allocate",
    "hami.io/vgpu-devices-allocated",
    NVIDIA_USE_GPUTYPE,
    NVIDIA_NOUSE_GPUTYPE,
    NVIDIA_USE_GPUUUID,
    NVIDIA_NOUSE_GPUUUID,
)

VENDOR_KEYS: Final[tuple[VendorKeys, ...]] = (
    NVIDIA_KEYS,
    VendorKeys(
        "MLU",
        "",
        "",
        "hami.io/cambricon-mlu-devices-to-allocate",
        "hami.io/cambricon-mlu-devices-allocated",
        "cambricon.com/use-mlutype",
        "cambricon.com/nouse-mlutype",
        "cambricon.com/use-gpuuuid",
        "cambricon.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "DCU",
        "hami.io/node-dcu-register",
        "hami.io/node-handshake-dcu",
        "hami.io/dcu-devices-to-allocate",
        "hami.io/dcu-devices-allocated",
        "hygon.com/use-dcutype",
        "hygon.com/nouse-dcutype",
        "hygon.com/use-gpuuuid",
        "hygon.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "XPU",
        "hami.io/node-register-xpu",
        "hami.io/node-handshake-xpu",
        "hami.io/xpu-devices-to-allocate",
        "hami.io/xpu-devices-allocated",
        use_uuid="hami.io/use-xpu-uuid",
        nouse_uuid="hami.io/no-use-xpu-uuid",
    ),
    VendorKeys(
        "kunlun",
        allocated="hami.io/kunlun-allocated",
        use_uuid="baidu.com/use-gpuuuid",
        nouse_uuid="baidu.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "Metax-GPU", "", "", "hami.io/metax-gpu-devices-to-allocate", "hami.io/metax-gpu-devices-allocated"
    ),
    VendorKeys(
        "Metax-SGPU",
        "metax-tech.com/node-gpu-devices",
        "",
        "hami.io/metax-sgpu-devices-to-allocate",
        "hami.io/metax-sgpu-devices-allocated",
        use_uuid="metax-tech.com/use-gpuuuid",
        nouse_uuid="metax-tech.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "GCU",
        "",
        "",
        "hami.io/enflame-gcu-devices-to-allocate",
        "hami.io/enflame-gcu-devices-allocated",
        use_uuid="enflame.com/use-gpuuuid",
        nouse_uuid="enflame.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "Enflame",
        "enflame.com/gcu-drs-capacity",
        "",
        "",
        "hami.io/enflame-vgpu-devices-allocated",
        use_uuid="enflame.com/use-gpuuuid",
        nouse_uuid="enflame.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "Mthreads",
        "",
        "",
        "hami.io/mthreads-vgpu-devices-to-allocate",
        "hami.io/mthreads-vgpu-devices-allocated",
        use_uuid="mthreads.ai/use-gpuuuid",
        nouse_uuid="mthreads.ai/nouse-gpuuuid",
    ),
    VendorKeys(
        "AMD",
        "hami.io/node-amd-register",
        "",
        "hami.io/amd-devices-to-allocate",
        "hami.io/amd-devices-allocated",
        "amd.com/use-gputype",
        "amd.com/nouse-gputype",
        "amd.com/use-gpu-uuid",
        "amd.com/nouse-gpu-uuid",
    ),
    VendorKeys(
        "Vastai",
        "hami.io/node-va-register",
        "hami.io/node-handshake-va",
        "hami.io/Vastai-devices-to-allocate",
        "hami.io/Vastai-devices-allocated",
        "vastaitech.com/use-va",
        "vastaitech.com/nouse-va",
        "vastaitech.com/use-gpuuuid",
        "vastaitech.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "Biren",
        "hami.io/node-biren-register",
        "hami.io/node-handshake-biren",
        "hami.io/Biren-devices-to-allocate",
        "hami.io/Biren-devices-allocated",
        "birentech.com/use-biren",
        "birentech.com/nouse-biren",
        "birentech.com/use-gpuuuid",
        "birentech.com/nouse-gpuuuid",
    ),
    VendorKeys(
        "AWSNeuron",
        allocated="hami.io/aws-neuron-devices-allocated",
        use_uuid="aws.amazon.com/use-neuron-uuid",
        nouse_uuid="aws.amazon.com/nouse-neuron-uuid",
    ),
)
VENDOR_KEYS_BY_CW: Final = {k.common_word: k for k in VENDOR_KEYS}


def iluvatar_keys(chip: str) -> VendorKeys:
    return VendorKeys(
        chip,
        f"hami.io/node-{chip}-register",
        f"hami.io/node-handshake-{chip}",
        f"hami.io/{chip}-devices-to-allocate",
        f"hami.io/{chip}-devices-allocated",
        use_uuid=f"hami.io/use-{chip}-uuid",
        nouse_uuid=f"hami.io/no-use-{chip}-uuid",
    )


def ascend_keys(common_word: str) -> VendorKeys:
    return VendorKeys(
        common_word,
        f"hami.io/node-register-{common_word}",
        f"hami.io/node-handshake-{common_word}",
        f"hami.io/{common_word}-devices-to-allocate",
        f"hami.io/{common_word}-devices-allocated",
        use_uuid=f"hami.io/use-{common_word}-uuid",
        nouse_uuid=f"hami.io/no-use-{common_word}-uuid",
    )


# Pod keys only the scheduler (filter/bind) or device plugin writes. A pod that arrives at admission
# already carrying one of these is forging a decision: the device plugin trusts them.
SCHEDULER_OWNED_POD_KEYS: Final = frozenset(
    {VGPU_NODE, VGPU_TIME, BIND_PHASE, BIND_TIME, MIG_ALLOCATIONS}
    | {k.to_allocate for k in VENDOR_KEYS if k.to_allocate}
    | {k.allocated for k in VENDOR_KEYS if k.allocated}
)


def is_scheduler_owned(key: str) -> bool:
    """True for pod annotation keys only HAMi components may set (chip-parametrised vendor keys included)."""
    if key in SCHEDULER_OWNED_POD_KEYS:
        return True
    return key.startswith("hami.io/") and (
        key.endswith("-devices-to-allocate") or key.endswith("-devices-allocated")
    )
