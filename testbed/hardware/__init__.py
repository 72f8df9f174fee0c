"""Emulated NVIDIA hardware at the driver-library level.

Our own ``libnvidia-ml.so.1`` and ``libcuda.so.1`` (C, under ``src/``) read a per-node state directory
(``state.py``); ``build.py`` compiles them on first use and prepares a process environment the way the
NVIDIA container toolkit would; ``probe.py`` exercises either the emulated or a real driver.
"""

from testbed.hardware.build import ensure_built, library_env
from testbed.hardware.state import (
    MODELS,
    DeviceState,
    GpuInfo,
    GpuUsage,
    NodeInventory,
    build_inventory,
    create_state,
)

__all__ = [
    "MODELS",
    "DeviceState",
    "GpuInfo",
    "GpuUsage",
    "NodeInventory",
    "build_inventory",
    "create_state",
    "ensure_built",
    "library_env",
]
