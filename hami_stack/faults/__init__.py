"""Deliberate faults, for proving that the conformance suites catch a broken stack.

The catalogue (:mod:`.catalogue`) names every fault; this module is the runtime switch. A stack process
reads ``HAMI_FAULTS`` (comma-separated names) from its *own* environment once, the first time any
component asks (each component asks while it starts, so an unknown name stops the process at once).
The chart sets ``HAMI_FAULTS`` on the stack's containers from ``faultInjection.faults``; nothing a
workload sets reaches these processes, and the in-container shim never reads this variable (its faults
are a separate build, see :mod:`hami_stack.enforcer.build`).

Two older switches stay for compatibility (chart values ``webhookSkipsSchedulerName`` and
``memoryLimitSkewMiB``):

- ``HAMI_FAULT_WEBHOOK_SKIP_SCHEDULER_NAME=true`` = fault ``webhook-skip-scheduler-name``;
- ``HAMI_FAULT_MEMORY_LIMIT_SKEW_MIB=N``: Allocate answers ``CUDA_DEVICE_MEMORY_LIMIT_<i>`` N MiB off
  (fault ``plugin-memory-limit-skew`` is the same with N = 512).
"""

from __future__ import annotations

import os
import sys

from ..protocol.hamicore import MEMORY_LIMIT_ENV_PREFIX
from .catalogue import CATALOGUE, NAMES, SHIM, Fault

ENV = "HAMI_FAULTS"
WEBHOOK_SKIP_SCHEDULER_NAME = "HAMI_FAULT_WEBHOOK_SKIP_SCHEDULER_NAME"
MEMORY_LIMIT_SKEW_MIB = "HAMI_FAULT_MEMORY_LIMIT_SKEW_MIB"
DEFAULT_SKEW_MIB = 512

__all__ = ["CATALOGUE", "ENV", "Fault", "FaultError", "active", "on", "parse", "shim_faults"]


class FaultError(ValueError):
    """``HAMI_FAULTS`` names a fault this stack does not know."""


def parse(text: str) -> frozenset[str]:
    """Names in ``text`` (comma or space separated); FaultError names the unknown ones."""
    names = frozenset(p.strip() for p in text.replace(" ", ",").split(",") if p.strip())
    unknown = sorted(names - NAMES)
    if unknown:
        raise FaultError(
            f"{ENV} names unknown fault(s) {', '.join(unknown)}; known: python -m hami_stack.faults list"
        )
    return names


_ACTIVE: frozenset[str] | None = None


def active() -> frozenset[str]:
    """The faults switched on for this process (read once; raises FaultError on unknown names)."""
    global _ACTIVE
    if _ACTIVE is None:
        names = parse(os.environ.get(ENV, ""))
        if names:
            print(f"hami-stack: DELIBERATE FAULTS ON: {', '.join(sorted(names))}",
                  file=sys.stderr, flush=True)
        _ACTIVE = names
    return _ACTIVE


def on(name: str) -> bool:
    """Whether fault ``name`` is switched on (a typo in a hook is a bug: it must name a catalogue entry)."""
    if name not in NAMES:
        raise FaultError(f"hook asks for fault {name!r}, which is not in the catalogue")
    return name in active()


def reset_for_tests() -> None:
    """Forget the cached switch (tests only: a real process reads it once)."""
    global _ACTIVE
    _ACTIVE = None


def shim_faults() -> frozenset[str]:
    """The active faults that select a fault build of the shim."""
    from .catalogue import BY_NAME

    return frozenset(n for n in active() if BY_NAME[n].kind == SHIM)


def webhook_skips_scheduler_name() -> bool:
    legacy = os.environ.get(WEBHOOK_SKIP_SCHEDULER_NAME, "").lower() in ("1", "true", "yes")
    return legacy or on("webhook-skip-scheduler-name")


def memory_limit_skew_mib() -> int:
    try:
        legacy = int(os.environ.get(MEMORY_LIMIT_SKEW_MIB, "0") or 0)
    except ValueError:
        legacy = 0
    return legacy or (DEFAULT_SKEW_MIB if on("plugin-memory-limit-skew") else 0)


def skew_memory_limits(envs: dict[str, str], skew_mib: int) -> None:
    """Shift every ``CUDA_DEVICE_MEMORY_LIMIT_<i>=<n>m`` by ``skew_mib`` (in place)."""
    if not skew_mib:
        return
    for key, value in list(envs.items()):
        if key.startswith(MEMORY_LIMIT_ENV_PREFIX) and value.endswith("m") and value[:-1].isdigit():
            envs[key] = f"{max(int(value[:-1]) + skew_mib, 0)}m"
