"""Kubernetes resource quantities, as HAMi reads them.

HAMi reads every device resource with ``Quantity.AsInt64()``: the value counts only when it is an
exact integer (``"3000"``, ``"2k"``, ``"1Gi"``); anything fractional (``"500m"``, ``"1.5"``) or too
large for int64 does not. The apiserver already rejects non-integer extended resources, so this
small exact parser is enough; it does not need the full canonicalisation rules of the type.

:func:`parse_quantity` also keeps the suffix, because admission must tell ``1Gi`` (a byte count the
user meant as one GiB) from ``1024``: a binary suffix can only come from what the user typed, while
decimal suffixes are also what the apiserver writes for plain numbers (``2000`` is stored as
``2k``), so only the binary ones say "the user wrote a unit".

Inputs are bounded before any arithmetic: a string of more than :data:`MAX_TEXT` characters is not
a quantity, and exponents beyond +-:data:`MAX_EXPONENT` are not expanded (``1e999999999`` would
otherwise build a billion-digit integer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

_RE = re.compile(
    r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_INT64_MAX = 2**63 - 1
MAX_TEXT = 64
MAX_EXPONENT = 40  # 10**40 is past int64 already; larger exponents only matter as "too large"
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Quantity:
    """An exactly represented quantity and the suffix it was written with (``""``, ``k``, ``Gi``, ``e3``)."""

    value: Fraction
    suffix: str = ""

    @property
    def binary(self) -> bool:
        """Written with a power-of-two suffix (``Ki`` .. ``Ei``): the user typed a byte unit."""
        return self.suffix in _BINARY

    @property
    def is_integer(self) -> bool:
        return self.value.denominator == 1

    @property
    def int64(self) -> int | None:
        """The value as ``AsInt64`` gives it: an integer within int64, else None."""
        if not self.is_integer or not -_INT64_MAX - 1 <= self.value.numerator <= _INT64_MAX:
            return None
        return self.value.numerator


def parse_quantity(value: Any) -> Quantity | None:
    """A JSON number or quantity string as an exact :class:`Quantity`; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Quantity(Fraction(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return Quantity(Fraction(value))
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return None
    m = _RE.match(value)
    if not m:
        return None
    sign, number, exponent, suffix = m.groups()
    amount = Fraction(number)
    if exponent:
        power = int(exponent[1:])
        if amount != 0:
            # clamp: past +-MAX_EXPONENT the value is only ever "too large" or "not an integer"
            power = max(-MAX_EXPONENT, min(MAX_EXPONENT, power))
        amount *= Fraction(10) ** (power if amount != 0 else 0)
        suffix = exponent
    elif suffix in _DECIMAL:
        amount *= Fraction(10) ** _DECIMAL[suffix]
    elif suffix in _BINARY:
        amount *= 2 ** _BINARY[suffix]
    if sign == "-":
        amount = -amount
    return Quantity(amount, suffix or "")


def quantity_int(value: Any) -> int | None:
    """The exact integer a quantity denotes, or None when it is not one (or not a quantity at all)."""
    q = parse_quantity(value)
    return None if q is None else q.int64
