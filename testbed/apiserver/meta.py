"""Object metadata helpers shared by the registry and the built-in controllers."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

# The alphabet and length the real apiserver uses for generateName suffixes (no vowels, no 0/1/3).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def parse_time(ts: str) -> dt.datetime:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in ts else "%Y-%m-%dT%H:%M:%SZ"
    return dt.datetime.strptime(ts, fmt).replace(tzinfo=dt.UTC)


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(n))


def new_uid() -> str:
    return str(uuid.uuid4())


def api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def labels(obj: dict[str, Any] | None) -> dict[str, str]:
    if not obj:
        return {}
    return obj.get("metadata", {}).get("labels") or {}
