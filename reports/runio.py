"""Reading and writing a run directory.

Layout written by the plugin while the suites run::

    RUN_DIR/run.header.json   metadata + environment, rewritten atomically when they change
    RUN_DIR/cases.jsonl       one case per line, appended as each case finishes
    RUN_DIR/run.json          the whole run; written atomically by ``finalise`` and only then

So a crash leaves a header and complete JSON lines (at worst one torn last line, which the loader
drops), never a ``run.json`` that parses but is missing cases.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reports.model import (
    API_VERSION,
    CaseResult,
    Environment,
    Run,
    RunInputError,
    RunMetadata,
    check_unique,
)

RUN_FILE = "run.json"
HEADER_FILE = "run.header.json"
CASES_FILE = "cases.jsonl"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename, so readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()


class RunWriter:
    """The plugin's side of the contract: header at start, one line per case, ``finalise`` at the end.

    Appends take an exclusive lock and write each line with one ``write`` call, so several
    processes (pytest-xdist workers, if they write directly) never interleave partial lines.
    """

    def __init__(self, run_dir: Path, metadata: RunMetadata, environment: Environment | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if (self.run_dir / RUN_FILE).exists():
            raise FileExistsError(f"{self.run_dir / RUN_FILE} exists: a finished run is never appended to")
        self.metadata = metadata
        self.environment = environment or Environment()
        self._write_header()

    def _write_header(self) -> None:
        header = {
            "apiVersion": API_VERSION,
            "metadata": self.metadata.to_dict(),
            "environment": self.environment.to_dict(),
        }
        atomic_write(self.run_dir / HEADER_FILE, dump_json(header))

    def set_environment(self, environment: Environment) -> None:
        self.environment = environment
        self._write_header()

    def append(self, case: CaseResult) -> None:
        # Round-trip through the validator so a plugin bug surfaces at the case, not at build time.
        CaseResult.from_dict(case.to_dict())
        line = (json.dumps(case.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.run_dir / CASES_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock

    def finalise(self, finished: str | None = None) -> Run:
        self.metadata.finished = finished or utc_now()
        self._write_header()
        run = _load_unfinished(self.run_dir)
        atomic_write(self.run_dir / RUN_FILE, dump_json(run.to_dict()))
        return run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunInputError(
            "", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", source=str(path)
        ) from None
    except UnicodeDecodeError:
        raise RunInputError("", "not valid UTF-8", source=str(path)) from None


def read_cases(path: Path) -> list[CaseResult]:
    """Parse ``cases.jsonl``; a last line without its newline was cut by a crash and is dropped."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the piece after the last newline is either empty or torn
    cases: list[CaseResult] = []
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunInputError(f"line {number}", f"not valid JSON: {e}", source=str(path)) from None
        try:
            cases.append(CaseResult.from_dict(obj))
        except RunInputError as err:
            raise err.under(f"line {number}").in_source(str(path)) from None
    return cases


def _load_unfinished(run_dir: Path) -> Run:
    header_path = run_dir / HEADER_FILE
    header = _read_json(header_path)
    if not isinstance(header, dict):
        raise RunInputError("", "must be a JSON object", source=str(header_path))
    cases = read_cases(run_dir / CASES_FILE)
    try:
        check_unique(cases)
        return Run.from_dict({**header, "cases": [c.to_dict() for c in cases]}, base_dir=run_dir)
    except RunInputError as e:
        raise e.in_source(f"{header_path} + {CASES_FILE}") from None


def load_run(run_dir: Path, *, allow_unfinished: bool = False) -> Run:
    """Load and validate a run directory; every problem is a ``RunInputError`` naming file and field.

    ``allow_unfinished`` builds from the header and the recorded cases of a run that never reached
    ``finalise`` (its metadata keeps ``finished: null`` and every report says it is incomplete).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunInputError("", "run directory not found", source=str(run_dir))
    path = run_dir / RUN_FILE
    if path.exists():
        raw = _read_json(path)
        try:
            return Run.from_dict(raw, base_dir=run_dir)
        except RunInputError as e:
            raise e.in_source(str(path)) from None
    if (run_dir / HEADER_FILE).exists():
        if allow_unfinished:
            return _load_unfinished(run_dir)
        raise RunInputError(
            "",
            f"not found: the run was never finalised ({HEADER_FILE} and {CASES_FILE} exist); "
            "allow an unfinished run to build a bundle marked incomplete",
            source=str(path),
        )
    raise RunInputError("", "not found", source=str(path))
