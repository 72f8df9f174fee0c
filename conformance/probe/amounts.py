"""The amount part shared by the probe's operation grammars (``--op`` and ``--npu-op``): ``MIB`` or
``MIBxN`` (N allocations of MIB MiB each)."""

from __future__ import annotations


def parse_amount(flag: str, text: str, amount: str, *, single: bool = False) -> tuple[int, int]:
    """``(mib, count)`` of ``amount``; ValueError names the flag and its value. ``single``: the
    operation takes one allocation only (a process of its own), so a count other than 1 is refused."""
    mib_s, _, count_s = amount.partition("x")
    try:
        mib, count = int(mib_s), int(count_s or "1")
    except ValueError:
        raise ValueError(f"{flag} {text!r}: MiB and count must be integers") from None
    if mib <= 0 or count <= 0 or (single and count != 1):
        raise ValueError(f"{flag} {text!r}: MiB and count must be positive (one allocation per process)")
    return mib, count
