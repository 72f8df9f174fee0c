"""hami_stack.jsonguard: nesting depth counted outside strings, limits checked before parsing."""

from __future__ import annotations

import time

import pytest

from hami_stack import jsonguard


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"5", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not nest
        (b'["\\"[[[", [[]]]', 3),  # nor after an escaped quote
        ("[[\u00e9]]", 2),
    ],
)
def test_nesting_depth(body: bytes | str, depth: int) -> None:
    assert jsonguard.nesting_depth(body) == depth


def test_limits_are_checked_before_parsing_and_name_the_limit() -> None:
    assert jsonguard.loads(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(jsonguard.JsonLimitError) as deep:
        jsonguard.loads(b"[" * 65 + b"]" * 65)
    assert str(deep.value) == "JSON nesting depth 65 exceeds the limit of 64 levels"
    with pytest.raises(jsonguard.JsonLimitError, match="JSON body of 11 bytes exceeds the limit of 10 bytes"):
        jsonguard.loads(b"[1,2,3,4,5]", max_bytes=10)
    with pytest.raises(ValueError):
        jsonguard.loads(b"{not json")
    jsonguard.check_depth(b"[[1]]", limit=2)
    with pytest.raises(jsonguard.JsonLimitError):
        jsonguard.check_depth(b"[[[1]]]", limit=2)


def test_a_megabyte_of_brackets_is_refused_quickly() -> None:
    body = b"[" * (1 << 20)
    start = time.perf_counter()
    with pytest.raises(jsonguard.JsonLimitError):
        jsonguard.loads(body, max_bytes=2 << 20)
    assert time.perf_counter() - start < 2.0  # no recursion, no parse: a bracket scan at C speed
