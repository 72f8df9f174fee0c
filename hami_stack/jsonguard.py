"""Limits for JSON request bodies, checked before a parser sees them.

orjson and ``json`` recurse once per nesting level (orjson stops at a fixed 1024, ``json`` at the
interpreter's recursion limit, both after doing that work), so a 1 MiB body of ``[`` costs a deep
recursion or a ``RecursionError`` traceback. :func:`check_depth` bounds the nesting first, at C speed:
strings are cut out with one regular expression (their brackets do not nest), every byte that is not
a bracket is deleted, and the running depth is an ``accumulate`` over what is left.

API (shared by the extender and the admission webhook)::

    check_depth(body, limit=MAX_DEPTH)            # raises JsonLimitError naming the limit
    nesting_depth(body) -> int
    loads(body, *, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH)  # size + depth, then orjson.loads;
                                                  # raises JsonLimitError or ValueError (bad JSON)
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import orjson

MAX_DEPTH = 64
MAX_BYTES = 1 << 20

# a JSON string: quote, then runs of plain bytes or escapes, then quote (the "unrolled loop" form,
# linear and free of backtracking); an unterminated string is left in place, which only over-counts
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class JsonLimitError(ValueError):
    """A body over a size or nesting limit (answer 400 or 413 with this message)."""


def nesting_depth(body: bytes | str) -> int:
    """The deepest nesting of arrays and objects in ``body`` (0 for a scalar)."""
    data = body.encode() if isinstance(body, str) else bytes(body)
    if b'"' in data:
        data = _STRING.sub(b"", data)
    brackets = data.translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_depth(body: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`JsonLimitError` when ``body`` nests deeper than ``limit`` levels."""
    data = body.encode() if isinstance(body, str) else body
    # fast path: fewer opening brackets than the limit cannot nest deeper than it
    if data.count(b"[") + data.count(b"{") <= limit:
        return
    depth = nesting_depth(data)
    if depth > limit:
        raise JsonLimitError(f"JSON nesting depth {depth} exceeds the limit of {limit} levels")


def loads(body: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``body`` after checking its size and nesting; malformed JSON raises ``ValueError``."""
    size = len(body)
    if size > max_bytes:
        raise JsonLimitError(f"JSON body of {size} bytes exceeds the limit of {max_bytes} bytes")
    check_depth(body, max_depth)
    return orjson.loads(body)
