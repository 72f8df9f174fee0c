"""Integer values of Kubernetes resource quantities, as HAMi reads them.

HAMi reads every device resource with ``Quantity.AsInt64()``: the value counts only when it is an
exact integer (``"3000"``, ``"2k"``, ``"1Gi"``); anything fractional (``"500m"``, ``"1.5"``) or too
large for int64 does not. The apiserver already rejects non-integer extended resources, so this
small exact parser is enough; it does not need the full canonicalisation rules of the type.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

_RE = re.compile(
    r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_INT64_MAX = 2**63 - 1


def quantity_int(value: Any) -> int | None:
    """The exact integer a quantity denotes, or None when it is not one (or not a quantity at all)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None
    if not isinstance(value, str):
        return None
    m = _RE.match(value.strip())
    if not m:
        return None
    sign, number, exponent, suffix = m.groups()
    amount = Fraction(number)
    if exponent:
        amount *= Fraction(10) ** int(exponent[1:])
    elif suffix in _DECIMAL:
        amount *= Fraction(10) ** _DECIMAL[suffix]
    elif suffix in _BINARY:
        amount *= 2 ** _BINARY[suffix]
    if sign == "-":
        amount = -amount
    if amount.denominator != 1 or not -_INT64_MAX - 1 <= amount.numerator <= _INT64_MAX:
        return None
    return amount.numerator
