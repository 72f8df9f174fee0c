"""Tables from upstream pkg/device/devices_test.go: device selection by UUID and by type."""

# TestCheckUUID: (name, {"use"/"nouse": list}, device id, selected)
CHECK_UUID_CASES = [
    ("don't set GPUUseUUID and GPUNoUseUUID annotation", {}, "abc", True),
    ("use set GPUUseUUID don't set GPUNoUseUUID annotation,device match", {"use": "abc,123"}, "abc", True),
    (
        "use set GPUUseUUID don't set GPUNoUseUUID annotation,device don't match",
        {"use": "abc,123"},
        "1abc",
        False,
    ),
    ("use don't set GPUUseUUID set GPUNoUseUUID annotation,device match", {"nouse": "abc,123"}, "abc", False),
    (
        "use don't set GPUUseUUID set GPUNoUseUUID annotation,device  don't match",
        {"nouse": "abc,123"},
        "1abc",
        True,
    ),
    (
        "both GPUUseUUID and GPUNoUseUUID set, device in use list but also in nouse list",
        {"use": "abc,123", "nouse": "abc"},
        "abc",
        False,
    ),
    (
        "both GPUUseUUID and GPUNoUseUUID set, device in use list and not in nouse list",
        {"use": "abc,123", "nouse": "456"},
        "abc",
        True,
    ),
    ("use list with spaces around uuids, device matches after trim", {"use": " abc , 123 "}, "abc", True),
    ("empty GPUUseUUID annotation should not filter out any device", {"use": ""}, "abc", True),
    ("whitespace-only GPUUseUUID annotation should not filter out any device", {"use": "   "}, "abc", True),
    ("empty GPUNoUseUUID annotation should not exclude any device", {"nouse": ""}, "abc", True),
]
# TestCheckType: (name, {"use"/"nouse": list}, card type, selected)
CHECK_TYPE_CASES = [
    ("no annotation is no constraint", {}, "NVIDIA-A100", True),
    ("use list matches by substring", {"use": "A100,V100"}, "NVIDIA-A100", True),
    ("use list does not match", {"use": "V100"}, "NVIDIA-A100", False),
    ("nouse list matches excludes the device", {"nouse": "A100"}, "NVIDIA-A100", False),
    ("nouse list does not match keeps the device", {"nouse": "V100"}, "NVIDIA-A100", True),
    ("empty use value is no constraint", {"use": ""}, "NVIDIA-A100", True),
    ("whitespace-only nouse value excludes nothing", {"nouse": "   "}, "NVIDIA-A100", True),
    (
        "use satisfied and nouse matches still excludes",
        {"use": "A100", "nouse": "A100"},
        "NVIDIA-A100",
        False,
    ),
    ("nouse with trailing comma only excludes named type", {"nouse": "V100,"}, "NVIDIA-A100", True),
    ("nouse with leading comma only excludes named type", {"nouse": ",V100"}, "NVIDIA-A100", True),
    ("use with trailing comma matches named type only", {"use": "V100,"}, "NVIDIA-A100", False),
]
