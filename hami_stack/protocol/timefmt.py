"""Go's time and duration text forms, as they appear in HAMi annotations and messages."""

from __future__ import annotations

import datetime as dt
import re

from .errors import ProtocolError

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
DATETIME_LAYOUT = "%Y-%m-%d %H:%M:%S"  # Go time.DateTime, "2006-01-02 15:04:05"


def format_rfc3339(t: dt.datetime) -> str:
    """Go ``time.RFC3339``: whole seconds, ``Z`` for UTC, else the numeric offset."""
    if t.tzinfo is None:
        t = t.astimezone()
    text = t.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_rfc3339(text: str) -> dt.datetime:
    if not _RFC3339.match(text):
        raise ProtocolError(f"time {text!r} is not RFC3339 (2006-01-02T15:04:05Z07:00)")
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ProtocolError(f"time {text!r} is not a valid RFC3339 time: {e}") from None


def format_datetime(t: dt.datetime) -> str:
    """Go ``time.DateTime`` in local time (HAMi's handshake stamps carry no zone)."""
    if t.tzinfo is not None:
        t = t.astimezone().replace(tzinfo=None)
    return t.strftime(DATETIME_LAYOUT)


def parse_datetime(text: str) -> dt.datetime:
    """A naive local time in Go ``time.DateTime`` layout; exact, no extra characters."""
    try:
        return dt.datetime.strptime(text, DATETIME_LAYOUT)
    except ValueError:
        raise ProtocolError(f"time {text!r} is not in layout 2006-01-02 15:04:05") from None


def go_duration(d: dt.timedelta) -> str:
    """Go's ``Duration.String()`` for whole seconds: ``5m0s``, ``28s``, ``1h0m0s``, ``0s``."""
    total = int(d.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"
