"""Handshake annotation values and the scheduler's 60-second health rule.

A device plugin proves it is alive by overwriting its handshake annotation with any value that
does not contain ``Requesting`` (HAMi plugins write ``Reported_<time>`` every 30 s). The scheduler
writes ``Requesting_<time>`` and, on its next pass, judges the node:

* value contains ``Requesting`` and the stamp is younger than 60 s, or has no ``_<stamp>`` or an
  unreadable one -> healthy, no write (HAMi cannot date it, so it waits);
* older, but the node's allocatable count resource is > 0 -> healthy, no write;
* otherwise -> unhealthy (the scheduler then drops the family's devices; HEAD removes the key,
  v2.4-v2.9 wrote ``Deleted_<time>``);
* any other value, or none -> healthy and "needs update": write a fresh ``Requesting_<now>``.

Stamps use Go's ``time.DateTime`` layout (``2006-01-02 15:04:05``) in local time. The Ascend
plugin writes ``2006.01.02 15:04:05`` and the old NVIDIA plugin ``Reported <Go time String()>``;
the scheduler never parses ``Reported`` stamps, so those are only recognised by prefix.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from .errors import ProtocolError
from .timefmt import format_datetime, parse_datetime

REQUESTING = "Requesting"
REPORTED = "Reported"
DELETED = "Deleted"
HEALTH_WINDOW = dt.timedelta(seconds=60)
ASCEND_LAYOUT = "%Y.%m.%d %H:%M:%S"


def requesting(now: dt.datetime) -> str:
    return f"{REQUESTING}_{format_datetime(now)}"


def reported(now: dt.datetime) -> str:
    return f"{REPORTED}_{format_datetime(now)}"


def deleted(now: dt.datetime) -> str:
    return f"{DELETED}_{format_datetime(now)}"


def reported_ascend(now: dt.datetime) -> str:
    if now.tzinfo is not None:
        now = now.astimezone().replace(tzinfo=None)
    return f"{REPORTED}_{now.strftime(ASCEND_LAYOUT)}"


class HandshakeKind(enum.Enum):
    MISSING = "missing"
    REQUESTING = "requesting"
    REPORTED = "reported"
    DELETED = "deleted"
    OTHER = "other"


@dataclass(frozen=True)
class Handshake:
    kind: HandshakeKind
    time: dt.datetime | None = None  # naive local time, when the stamp parses


def parse_handshake(value: str | None) -> Handshake:
    """Classify a handshake value; the stamp after the first ``_`` is parsed when it is in DateTime layout."""
    if value is None or value == "":
        return Handshake(HandshakeKind.MISSING)
    if REQUESTING in value:
        kind = HandshakeKind.REQUESTING
    elif value.startswith(DELETED):
        kind = HandshakeKind.DELETED
    elif value.startswith(REPORTED):
        kind = HandshakeKind.REPORTED
    else:
        kind = HandshakeKind.OTHER
    _, sep, stamp = value.partition("_")
    when = None
    if sep:
        try:
            when = parse_datetime(stamp)
        except ProtocolError:
            when = None
    return Handshake(kind, when)


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    needs_update: bool  # the caller writes requesting(now) and rebuilds its cache entry


def check_handshake(value: str | None, now: dt.datetime, allocatable_count: int) -> HealthResult:
    """The generic rule above. ``now`` may be aware or naive-local; ``allocatable_count`` is the
    node's allocatable quantity of the family's count resource."""
    hs = parse_handshake(value)
    if hs.kind is not HandshakeKind.REQUESTING:
        return HealthResult(True, True)
    local_now = now.astimezone().replace(tzinfo=None) if now.tzinfo is not None else now
    if hs.time is None or local_now - hs.time < HEALTH_WINDOW:
        return HealthResult(True, False)
    if allocatable_count > 0:
        return HealthResult(True, False)
    return HealthResult(False, False)


def check_nvidia(
    previous_allocatable: int | None,
    allocatable: int,
    register_changed: bool,
    generic: HealthResult,
) -> HealthResult:
    """NVIDIA's override: HEAD's plugin writes no handshake, so ``allocatable[nvidia.com/gpu]`` drives it.

    ``previous_allocatable`` is what the scheduler saw last pass (None on the first pass).
    """
    if previous_allocatable is not None and previous_allocatable > 0 and allocatable == 0:
        return HealthResult(False, False)
    if previous_allocatable is not None and previous_allocatable != allocatable:
        return HealthResult(True, True)
    if register_changed:
        return HealthResult(True, True)
    return generic
