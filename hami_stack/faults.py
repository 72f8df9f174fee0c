"""Deliberate faults, for proving that the conformance suites catch a broken stack.

Both are off unless their environment variable is set (the chart sets them from
``faultInjection.*`` values, which default to off). Each breaks exactly one contract rule:

- ``HAMI_FAULT_WEBHOOK_SKIP_SCHEDULER_NAME=true``: the webhook leaves ``spec.schedulerName``
  alone, breaking "device pods go to the HAMi scheduler" (admission).
- ``HAMI_FAULT_MEMORY_LIMIT_SKEW_MIB=N``: Allocate answers ``CUDA_DEVICE_MEMORY_LIMIT_<i>`` N MiB
  off, breaking "a container's memory limit is what it asked for" (allocation, enforcement).
"""

from __future__ import annotations

import os

from .protocol.hamicore import MEMORY_LIMIT_ENV_PREFIX

WEBHOOK_SKIP_SCHEDULER_NAME = "HAMI_FAULT_WEBHOOK_SKIP_SCHEDULER_NAME"
MEMORY_LIMIT_SKEW_MIB = "HAMI_FAULT_MEMORY_LIMIT_SKEW_MIB"


def webhook_skips_scheduler_name() -> bool:
    return os.environ.get(WEBHOOK_SKIP_SCHEDULER_NAME, "").lower() in ("1", "true", "yes")


def memory_limit_skew_mib() -> int:
    try:
        return int(os.environ.get(MEMORY_LIMIT_SKEW_MIB, "0") or 0)
    except ValueError:
        return 0


def skew_memory_limits(envs: dict[str, str], skew_mib: int) -> None:
    """Shift every ``CUDA_DEVICE_MEMORY_LIMIT_<i>=<n>m`` by ``skew_mib`` (in place)."""
    if not skew_mib:
        return
    for key, value in list(envs.items()):
        if key.startswith(MEMORY_LIMIT_ENV_PREFIX) and value.endswith("m") and value[:-1].isdigit():
            envs[key] = f"{max(int(value[:-1]) + skew_mib, 0)}m"
