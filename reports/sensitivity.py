"""The self-test's sensitivity document, as a certification bundle carries it (``sensitivity.json``).

``hami-conformance selftest`` runs the suites against a catalogue of deliberately broken stacks and
scores how many faults an expected rule turned into a FAILED verdict. A bundle that carries the
score states how discriminating its suites were at that commit, so the document is checked here
before it is written: it must be internally consistent (the score is what its rows say) and belong
to the run's commit. Shape::

    {"commit": str, "faults": int, "caught": int, "sensitivity": float,
     "rows": [{"fault": str, "component": str, "expected_rules": [str], "failed_cases": [str],
               "verdict": str, "caught_by_expected_rule": bool, "reason": str}]}

Extra members are kept as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reports.model import RunInputError

FILE = "sensitivity.json"
ROW_STRINGS = ("fault", "component", "verdict", "reason")
ROW_LISTS = ("expected_rules", "failed_cases")
ROUNDING = 5e-4  # the score may be rounded (to 3 or 4 places), never moved further than that


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RunInputError(f"sensitivity.{key}", f"Invalid value: {value!r}: must be an integer >= 0")
    return value


def _row(raw: Any, i: int) -> dict[str, Any]:
    where = f"sensitivity.rows[{i}]"
    if not isinstance(raw, dict):
        raise RunInputError(where, "Invalid value: must be an object")
    for key in ROW_STRINGS:
        if not isinstance(raw.get(key), str):
            raise RunInputError(f"{where}.{key}", f"Invalid value: {raw.get(key)!r}: must be a string")
    if not raw["fault"]:
        raise RunInputError(f"{where}.fault", "Required value")
    for key in ROW_LISTS:
        value = raw.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RunInputError(f"{where}.{key}", f"Invalid value: {value!r}: must be a list of strings")
    if not isinstance(raw.get("caught_by_expected_rule"), bool):
        raise RunInputError(f"{where}.caught_by_expected_rule", "Invalid value: must be a boolean")
    return dict(raw)


def validate(doc: Any, *, commit: str | None = None) -> dict[str, Any]:
    """The document, checked; ``RunInputError`` naming the field otherwise.

    The score cannot overstate: ``faults`` is the number of rows, ``caught`` the rows caught by an
    expected rule, ``sensitivity`` = caught / faults (up to rounding). With ``commit``, the
    document must be of it.
    """
    if not isinstance(doc, Mapping):
        raise RunInputError("sensitivity", "Invalid value: must be an object")
    if not isinstance(doc.get("commit"), str) or not doc["commit"]:
        raise RunInputError("sensitivity.commit", "Required value: the commit the self-test ran at")
    faults, caught = _int(doc, "faults"), _int(doc, "caught")
    score = doc.get("sensitivity")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise RunInputError(
            "sensitivity.sensitivity", f"Invalid value: {score!r}: must be a number in [0, 1]"
        )
    raw_rows = doc.get("rows")
    if not isinstance(raw_rows, list):
        raise RunInputError("sensitivity.rows", "Invalid value: must be a list")
    rows = [_row(r, i) for i, r in enumerate(raw_rows)]
    if faults != len(rows):
        raise RunInputError(
            "sensitivity.faults", f"Invalid value: {faults}: the document has {len(rows)} rows"
        )
    really = sum(1 for r in rows if r["caught_by_expected_rule"])
    if caught != really:
        raise RunInputError(
            "sensitivity.caught", f"Invalid value: {caught}: {really} rows are caught by an expected rule"
        )
    want = caught / faults if faults else 0.0
    if abs(float(score) - want) > ROUNDING:
        raise RunInputError("sensitivity.sensitivity", f"Invalid value: {score}: caught/faults is {want:.6f}")
    if commit is not None and doc["commit"] != commit:
        raise RunInputError(
            "sensitivity.commit",
            f'Invalid value: "{doc["commit"]}": the self-test ran at another commit than this run ({commit})',
        )
    return {**doc, "rows": rows}


def load(path: Path | str, *, commit: str | None = None) -> dict[str, Any]:
    """Read and validate a sensitivity file (``hami-conformance run --sensitivity FILE``)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise RunInputError("", f"cannot read: {e.strerror}", source=str(p)) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RunInputError("", f"not valid JSON: {e}", source=str(p)) from None
    try:
        return validate(raw, commit=commit)
    except RunInputError as e:
        raise e.in_source(str(p)) from None


def summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What results.json and the in-toto predicate say about it (the file itself is a subject)."""
    return {
        "file": FILE,
        "commit": doc["commit"],
        "faults": doc["faults"],
        "caught": doc["caught"],
        "sensitivity": doc["sensitivity"],
    }
