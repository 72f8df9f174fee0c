"""The probe's result line: how it is written and how a test finds it again in a container log.

The probe prints its document as ONE line of compact JSON whose first member is the marker::

    {"marker":"HAMI-PROBE-RESULT","digest":"<16 hex>","probe":{"version":"1",...},"env":{...},...}

Why one line with a marker: a container log interleaves stdout and stderr line by line (the shim,
the driver and Python may all write to stderr), so an indented document can be cut apart by
unrelated lines; a compact line is never cut by the log pipeline, and the marker lets the reader
find it after any amount of junk, even junk written on the same line just before it. The line is
still plain JSON, so ``json.loads(stdout)`` keeps working for callers that run the probe directly.
``digest`` (SHA-256 prefix of the rest of the line, as written) lets the reader rejoin a line that
a log pipeline did cut, with other lines in between, and know it rebuilt the very document printed.

:func:`find_result` also accepts the older indented document (no marker) when nothing was
interleaved into it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

MARKER = "HAMI-PROBE-RESULT"
MARKER_KEY = "marker"
DIGEST_KEY = "digest"
PREFIX = f'{{"{MARKER_KEY}":"{MARKER}"'  # how every result line starts (compact separators)
MAX_CONTINUATION_LINES = 64  # a result cut by the log pipeline is rejoined from at most this many lines
MAX_REJOIN_ATTEMPTS = 4096  # bound on the search over which of those lines belong to the result

_DECODER = json.JSONDecoder()


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(_compact(body).encode()).hexdigest()[:16]


def result_line(doc: dict[str, Any]) -> str:
    """The document as the probe prints it: the marker and digest first, compact, no newline inside."""
    body = {k: v for k, v in doc.items() if k not in (MARKER_KEY, DIGEST_KEY)}
    return _compact({MARKER_KEY: MARKER, DIGEST_KEY: _digest(body), **body})


def _intact(doc: dict[str, Any]) -> bool:
    """The decoded document is the one printed: its digest matches (documents without one pass)."""
    digest = doc.get(DIGEST_KEY)
    if digest is None:
        return True
    body = {k: v for k, v in doc.items() if k not in (MARKER_KEY, DIGEST_KEY)}
    return digest == _digest(body)


def _decode_at(text: str, start: int) -> dict[str, Any] | None:
    try:
        doc, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _still_a_prefix(text: str) -> bool:
    """Could more text complete ``text`` into a JSON document? (it fails only at its end)."""
    try:
        _DECODER.raw_decode(text)
    except json.JSONDecodeError as e:
        return e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
    return True


def _rejoin(lines: list[str]) -> dict[str, Any] | None:
    """A result line the log pipeline cut (long lines become partial lines, and another stream's
    lines may land between the pieces): find which following lines continue it. Depth-first,
    taking a line before leaving it out, pruning any text that can no longer become JSON; only a
    document whose digest matches is accepted, so junk glued inside a string is never believed."""
    rest = lines[1 : 1 + MAX_CONTINUATION_LINES]
    budget = [MAX_REJOIN_ATTEMPTS]

    def search(candidate: str, i: int) -> dict[str, Any] | None:
        if i >= len(rest) or budget[0] <= 0:
            return None
        budget[0] -= 1
        joined = candidate + rest[i]
        doc = _decode_at(joined, 0)
        if doc is not None and _intact(doc):
            return doc
        if doc is None and _still_a_prefix(joined):
            found = search(joined, i + 1)
            if found is not None:
                return found
        return search(candidate, i + 1)

    return search(lines[0], 0)


def find_result(text: str) -> dict[str, Any] | None:
    """The probe document in a container log, whatever else the container wrote; None if absent.

    Returned without the marker and digest members: the document as the probe built it. The last
    marked result that decodes wins (a probe prints one; a restarted container may print
    again). Without any marker, an unmarked document with a ``probe`` member is accepted (older
    probes printed indented JSON).
    """
    starts = []
    at = text.find(PREFIX)
    while at >= 0:
        starts.append(at)
        at = text.find(PREFIX, at + 1)
    for start in reversed(starts):
        doc = _decode_at(text, start)
        if doc is None or not _intact(doc):
            rest = text[start:].split("\n")
            doc = _rejoin([line.rstrip("\r") for line in rest])
        if doc is not None and "probe" in doc:
            return {k: v for k, v in doc.items() if k not in (MARKER_KEY, DIGEST_KEY)}
    return _legacy(text) if not starts else None


def _legacy(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    while start >= 0:
        doc = _decode_at(text, start)
        if doc is not None and "probe" in doc:
            return doc
        start = text.find("{", start + 1)
    return None
