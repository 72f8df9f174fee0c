"""Upstream handshake and NVIDIA health vectors (pkg/device/devices_test.go Test_CheckHealth,
pkg/device/nvidia/device_test.go TestCheckHealth)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from hami_stack.devices.base import HealthState
from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.handshake import HealthResult, check_handshake
from hami_stack.protocol.register import DeviceInfo, encode_register_json

NOW = dt.datetime.now().replace(microsecond=0)


@pytest.mark.parametrize(
    "value, allocatable, want",
    [
        ("Requesting_2128-12-02 00:00:00", 0, HealthResult(True, False)),
        ("Requesting", 0, HealthResult(True, False)),  # no stamp
        ("Requesting_not-a-timestamp", 0, HealthResult(True, False)),  # unreadable stamp
        ("Unknown", 0, HealthResult(True, True)),  # not Requesting: stamp a fresh request
        ("Requesting_2024-01-02 00:00:00", 0, HealthResult(False, False)),  # expired, nothing allocatable
        ("Requesting_2024-01-02 00:00:00", 8, HealthResult(True, False)),  # expired, plugin still serving
    ],
)
def test_check_health(value: str, allocatable: int, want: HealthResult) -> None:
    assert check_handshake(value, NOW, allocatable) == want


def _register(healthy: bool) -> str:
    return encode_register_json([DeviceInfo("GPU-0", 10, 8192, 100, "NVIDIA-A100", health=healthy)])


PAST = (NOW - dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
FRESH = NOW.strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(
    "current, reported, handshake, cached, register, want",
    [
        (0, 0, f"Requesting_{FRESH}", None, None, HealthResult(True, False)),
        (0, 0, f"Requesting_{PAST}", None, None, HealthResult(False, False)),
        (4, 4, f"Requesting_{PAST}", _register(True), _register(False), HealthResult(True, True)),
        (4, 4, f"Requesting_{PAST}", _register(True), _register(True), HealthResult(True, False)),
        (4, 4, f"Requesting_{PAST}", _register(True), None, HealthResult(True, True)),
    ],
    # stable ids: the stamps hold the collection time, and pytest-xdist workers must collect the same ids
    ids=["fresh-request", "expired-request", "register-changed", "register-same", "no-register"],
)
def test_nvidia_check_health(
    current: int, reported: int, handshake: str, cached: str | None, register: str | None, want: HealthResult
) -> None:
    annotations = {ann.NVIDIA_KEYS.handshake: handshake}
    if register is not None:
        annotations[ann.NVIDIA_KEYS.register] = register
    node: dict[str, Any] = {
        "metadata": {"name": "test-node", "annotations": annotations},
        "status": {"allocatable": {"nvidia.com/gpu": str(current)} if current else {}},
    }
    previous = HealthState(reported, cached) if reported or cached else None
    got, _ = NvidiaFamily().check_health(node, NOW, previous)
    assert got == want
