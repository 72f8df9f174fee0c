"""resource.Quantity vectors: parse, serialized form, arithmetic, rounding, errors."""

from __future__ import annotations

import pytest

from testbed.k8s.quantity import REGEX_ERROR, SUFFIX_ERROR, Quantity, parse_quantity


@pytest.mark.parametrize(("text", "shown"), [
    ("100m", "100m"),
    ("1000m", "1"),
    ("0.5", "500m"),
    ("0.1", "100m"),
    ("1.5", "1500m"),
    ("1.5Gi", "1536Mi"),
    ("1Gi", "1Gi"),
    ("8Gi", "8Gi"),
    ("0.5Ki", "512"),
    ("1024", "1024"),
    ("2e3", "2e3"),
    ("1e2", "100"),
    ("12e-1", "1200e-3"),
    ("1k", "1k"),
    ("1M", "1M"),
    ("3000m", "3"),
    ("0", "0"),
    ("0m", "0"),
    ("1n", "1n"),
    ("0.0000000001", "1n"),
    ("-1", "-1"),
    ("1E", "1E"),
])
def test_parse_and_serialize(text: str, shown: str) -> None:
    assert str(parse_quantity(text)) == shown


@pytest.mark.parametrize(("text", "milli", "value"), [
    ("100m", 100, 1),
    ("1.5", 1500, 2),
    ("1Gi", 1073741824000, 1073741824),
    ("1n", 1, 1),
    ("-1.5", -1500, -2),
    ("2e3", 2000000, 2000),
])
def test_milli_value_and_value_round_up(text: str, milli: int, value: int) -> None:
    q = parse_quantity(text)
    assert q.milli_value() == milli
    assert q.value() == value


@pytest.mark.parametrize(("text", "message"), [
    ("", REGEX_ERROR),
    ("abc", REGEX_ERROR),
    ("1x", REGEX_ERROR),
    ("1.2.3", REGEX_ERROR),
    ("1ki", SUFFIX_ERROR),
    ("1K", SUFFIX_ERROR),
    ("1e", SUFFIX_ERROR),
])
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_quantity(text)
    assert str(exc.value) == message


def test_regex_message_is_the_real_one() -> None:
    assert REGEX_ERROR == (
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )


def test_compare() -> None:
    assert parse_quantity("1") == parse_quantity("1000m")
    assert parse_quantity("1Ki") > parse_quantity("1k")
    assert parse_quantity("500m") < parse_quantity("1")
    assert parse_quantity("1Gi").cmp(parse_quantity("1073741824")) == 0
    assert hash(parse_quantity("1")) == hash(parse_quantity("1000m"))


def test_add_and_subtract_keep_left_format() -> None:
    assert str(parse_quantity("1") + parse_quantity("500m")) == "1500m"
    assert str(parse_quantity("2Gi") - parse_quantity("512Mi")) == "1536Mi"
    # a zero left operand takes the right operand's format
    assert str(parse_quantity("0") + parse_quantity("1Gi")) == "1Gi"
    assert str(parse_quantity("1") - parse_quantity("2")) == "-1"
    assert str(-parse_quantity("250m")) == "-250m"


def test_constructors() -> None:
    assert str(Quantity.from_int(3)) == "3"
    assert str(Quantity.from_milli(1500)) == "1500m"
    assert Quantity.from_int(0).is_zero()
    assert parse_quantity("2").is_integer()
    assert not parse_quantity("2.5").is_integer()
