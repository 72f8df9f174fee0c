"""Exact ``resource.Quantity``: parsing, the canonical string form, comparison and arithmetic.

A quantity is held as an integer number of nano-units, which is exact for everything the real type
can hold: parsing rounds every non-zero value up to the next nano (as the apiserver does) and caps
the magnitude at 2^63-1 units.

The string form follows the apiserver's serializer: a string that was already canonical when parsed
is written back unchanged ("100m", "1Gi", "2e3"); anything else is rewritten in canonical form
("1000m" -> "1", "0.5" -> "500m", "1.5Gi" -> "1536Mi"). The rule for "already canonical" is the
real parser's fast path, reproduced below.
"""

from __future__ import annotations

import functools
from typing import Final

DECIMAL_SI: Final = "DecimalSI"
BINARY_SI: Final = "BinarySI"
DECIMAL_EXPONENT: Final = "DecimalExponent"

REGEX_ERROR: Final = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
NUMERIC_ERROR: Final = "unable to parse numeric part of quantity"
SUFFIX_ERROR: Final = "unable to parse quantity's suffix"

_NANO: Final = 10**9
_MAX_UNITS: Final = 2**63 - 1
_MAX_INT64: Final = 2**63 - 1
_MAX_NANOS: Final = _MAX_UNITS * _NANO

# suffix -> (base, exponent, format)
_DEC_SUFFIXES: Final = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BIN_SUFFIXES: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DEC_BY_EXP: Final = {v: k for k, v in _DEC_SUFFIXES.items()}
_BIN_BY_EXP: Final = {v: k for k, v in _BIN_SUFFIXES.items()}
_SUFFIX_CHARS: Final = frozenset("eEinumkKMGTP")


def _split(text: str) -> tuple[bool, str, str, str]:
    """Split into (positive, numerator digits, denominator digits, suffix) like the real parser."""
    positive = True
    pos, end = 0, len(text)
    if pos < end and text[0] in "+-":
        positive = text[0] == "+"
        pos += 1
    while pos < end and text[pos] == "0":
        pos += 1
    if pos >= end:
        return positive, "0", "", ""
    start = pos
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos].isdigit() and text[pos].isascii():
            pos += 1
        denom = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    if pos != end:
        raise ValueError(REGEX_ERROR)
    return positive, num, denom, text[suffix_start:]


def _interpret(suffix: str) -> tuple[int, int, str]:
    """(base, exponent, format) of a suffix, or ValueError."""
    if suffix in _DEC_SUFFIXES:
        return 10, _DEC_SUFFIXES[suffix], DECIMAL_SI
    if suffix in _BIN_SUFFIXES:
        return 2, _BIN_SUFFIXES[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        body = suffix[1:]
        digits = body[1:] if body[:1] in "+-" else body
        if digits.isdigit() and digits.isascii():
            return 10, int(body), DECIMAL_EXPONENT
    raise ValueError(SUFFIX_ERROR)


def _keeps_text(num: str, denom: str, base: int, exponent: int, fmt: str) -> bool:
    """Whether the real parser keeps the input string as the serialized form (its int64 fast path)."""
    if fmt == BINARY_SI:
        if exponent < 0 or denom:
            return False
        precision = 15 - len(num) - int(exponent * 3 / 10) - 1
        if precision < 0:
            return False
        value = int(num)
        if value * (1 << exponent) > _MAX_INT64:
            return False
        return exponent % 10 == 0 and (value & 0x07) != 0
    precision = 18 - (len(num) + len(denom))
    scale = exponent - len(denom)
    if precision < 0 or scale < -9:
        return False
    shifted = num + denom
    if int(shifted) > _MAX_INT64:
        return False
    return scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"


def _remove_factors(value: int, base: int) -> tuple[int, int]:
    negative = value < 0
    value = abs(value)
    times = 0
    while value >= base and value % base == 0:
        value //= base
        times += 1
    return (-value if negative else value), times


def _ceil_div_away(value: int, divisor: int) -> int:
    """value / divisor rounded away from zero (the real ScaledValue rounding)."""
    q, r = divmod(abs(value), divisor)
    if r:
        q += 1
    return -q if value < 0 else q


@functools.total_ordering
class Quantity:
    """An immutable Kubernetes quantity."""

    __slots__ = ("_nanos", "_text", "format")

    def __init__(self, nanos: int = 0, format: str = DECIMAL_SI, *, _text: str = "") -> None:
        self._nanos = nanos
        self.format = format
        self._text = _text

    # ---- construction
    @classmethod
    def parse(cls, text: str) -> Quantity:
        if not isinstance(text, str) or not text:
            raise ValueError(REGEX_ERROR)
        if text == "0":
            return cls(0, DECIMAL_SI, _text="0")
        positive, num, denom, suffix = _split(text)
        base, exponent, fmt = _interpret(suffix)
        keep = _keeps_text(num, denom, base, exponent, fmt)
        # exact value in nano units, then rounded up in magnitude to a whole nano
        digits = int(num + denom)
        if base == 10:
            power = exponent - len(denom) + 9
            nanos = digits * 10**power if power >= 0 else _ceil_div_away(digits, 10**-power)
        else:
            nanos = _ceil_div_away(digits * (1 << exponent) * _NANO, 10 ** len(denom))
        nanos = min(nanos, _MAX_NANOS)
        if fmt == BINARY_SI and 0 < nanos < _NANO:
            fmt = DECIMAL_SI
        if not positive:
            nanos = -nanos
        return cls(nanos, fmt, _text=text if keep else "")

    @classmethod
    def from_int(cls, value: int, format: str = DECIMAL_SI) -> Quantity:
        return cls(value * _NANO, format)

    @classmethod
    def from_milli(cls, value: int, format: str = DECIMAL_SI) -> Quantity:
        return cls(value * 10**6, format)

    # ---- accessors
    @property
    def nanos(self) -> int:
        return self._nanos

    def is_zero(self) -> bool:
        return self._nanos == 0

    def sign(self) -> int:
        return (self._nanos > 0) - (self._nanos < 0)

    def milli_value(self) -> int:
        return _ceil_div_away(self._nanos, 10**6)

    def value(self) -> int:
        return _ceil_div_away(self._nanos, _NANO)

    def is_integer(self) -> bool:
        return self._nanos % _NANO == 0

    # ---- arithmetic (format follows the left operand unless it is zero, as in the real type)
    def _result_format(self, other: Quantity) -> str:
        return other.format if self._nanos == 0 else self.format

    def __add__(self, other: Quantity) -> Quantity:
        return Quantity(self._nanos + other._nanos, self._result_format(other))

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity(self._nanos - other._nanos, self._result_format(other))

    def __neg__(self) -> Quantity:
        return Quantity(-self._nanos, self.format)

    def cmp(self, other: Quantity) -> int:
        return (self._nanos > other._nanos) - (self._nanos < other._nanos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self._nanos == other._nanos

    def __lt__(self, other: Quantity) -> bool:
        return self._nanos < other._nanos

    def __hash__(self) -> int:
        return hash(self._nanos)

    # ---- formatting
    def canonical(self) -> str:
        n = self._nanos
        if n == 0:
            return "0"
        fmt = self.format
        if fmt == BINARY_SI:
            if -1024 * _NANO < n < 1024 * _NANO or n % _NANO:
                fmt = DECIMAL_SI
            else:
                amount, times = _remove_factors(n // _NANO if n > 0 else -(-n // _NANO), 1024)
                return f"{amount}{_BIN_BY_EXP.get(times * 10, '')}"
        mantissa, exp = _remove_factors(n, 10)
        exp -= 9
        while exp % 3:
            mantissa *= 10
            exp -= 1
        if fmt == DECIMAL_EXPONENT:
            return f"{mantissa}" if exp == 0 else f"{mantissa}e{exp}"
        return f"{mantissa}{_DEC_BY_EXP[exp]}"

    def __str__(self) -> str:
        return self._text or self.canonical()

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r})"


def parse_quantity(text: str) -> Quantity:
    """Parse a quantity string; ValueError carries the real apiserver message."""
    return Quantity.parse(text)


def must_parse(text: str) -> Quantity:
    return Quantity.parse(text)


ZERO: Final = Quantity(0)
