"""Tables from upstream pkg/device/nvidia/device_test.go: one container's NVIDIA request."""

# TestGenerateResourceRequests: (name, limits, requests, (nums, type, memreq, mem %, cores) or None)
REQUEST_CASES = [
    ("gpu count only — defaults to 100% memory", {"nvidia.com/gpu": "1"}, {}, (1, "NVIDIA", 0, 100, 0)),
    (
        "gpu count + explicit memory",
        {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "4096"},
        {},
        (2, "NVIDIA", 4096, 101, 0),
    ),
    (
        "gpu count + memory percentage",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50"},
        {},
        (1, "NVIDIA", 0, 50, 0),
    ),
    (
        "gpu count + memory percentage above 100 — clamped to 100",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "150"},
        {},
        (1, "NVIDIA", 0, 100, 0),
    ),
    (
        "gpu count + memory percentage beyond int32 range — clamped to 100 without wrapping",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": str((1 << 32) + 50)},
        {},
        (1, "NVIDIA", 0, 100, 0),
    ),
    (
        "gpu count + memory percentage equal to sentinel 101 — clamped to 100",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "101"},
        {},
        (1, "NVIDIA", 0, 100, 0),
    ),
    (
        "gpu count + explicit cores",
        {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "50"},
        {},
        (1, "NVIDIA", 0, 100, 50),
    ),
    ("no gpu resource — returns empty request", {}, {}, None),
    (
        "gpu in Requests (not Limits) — falls back to Requests",
        {},
        {"nvidia.com/gpu": "1"},
        (1, "NVIDIA", 0, 100, 0),
    ),
    (
        "gpu count + memory percentage of 0 — treated as unset",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "0"},
        {},
        (1, "NVIDIA", 0, 100, 0),
    ),
    (
        "memory percentage of 0 in Requests — treated as unset",
        {},
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "0"},
        (1, "NVIDIA", 0, 100, 0),
    ),
    (
        "negative memory percentage — treated as unset",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "-1"},
        {},
        (1, "NVIDIA", 0, 100, 0),
    ),
    (
        "memory percentage of 0 + explicit memory — explicit memory wins",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2000", "nvidia.com/gpumem-percentage": "0"},
        {},
        (1, "NVIDIA", 2000, 101, 0),
    ),
    (
        "byte-scale memory quantity that overflows int32 is rejected",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "16Gi"},
        {},
        None,
    ),
    (
        "decimal-form memory request is rejected, not treated as zero",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "16.0Gi"},
        {},
        None,
    ),
]
