"""Which vendors' suites a cell runs: ``nvidia``, a comma list ``nvidia,ascend`` or ``all``.

``all`` is every vendor with a profile of its own (``conformance/profiles/<vendor>.yaml`` whose
``vendor`` is that name), so a family that gains a profile joins ``--vendor all`` with no code here.
Several vendors in one cell share one cluster (an inventory with nodes of each); each case keeps its
own vendor, so the bundle's vendor x minor table shows one row per vendor.
"""

from __future__ import annotations

from conformance import cases, profiles

SEPARATOR = ","


class VendorError(ValueError):
    """A vendor selection naming an unknown vendor (the message lists the known ones)."""


def profiled_vendors() -> list[str]:
    """Vendors (in ``cases.VENDORS`` order) that have a default profile named after them."""
    out = []
    for vendor in cases.VENDORS:
        try:
            if profiles.load_profile(vendor).vendor == vendor:
                out.append(vendor)
        except profiles.ProfileError:
            continue
    return out


def parse_vendors(text: str) -> list[str]:
    """``nvidia`` | ``nvidia,ascend`` | ``all`` -> vendors in ``cases.VENDORS`` order, no repeats."""
    text = text.strip()
    if text == "all":
        return profiled_vendors()
    names = [p.strip() for p in text.split(SEPARATOR) if p.strip()]
    if not names:
        raise VendorError("--vendor: give a vendor (nvidia), a comma list (nvidia,ascend) or all")
    unknown = [n for n in names if n not in cases.VENDORS]
    if unknown:
        raise VendorError(
            f"--vendor: unknown vendor {unknown[0]!r} (known: {', '.join(cases.VENDORS)}, or all)"
        )
    return [v for v in cases.VENDORS if v in names]


def label(vendors: list[str]) -> str:
    """One name for a selection, safe in file names: ``nvidia`` or ``nvidia+ascend``."""
    return "+".join(vendors)
