"""``MANIFEST.sha256`` in the format ``sha256sum`` writes and ``sha256sum -c`` checks.

Bundle paths are restricted to a safe character set when the bundle is built, so the escaped
form sha256sum uses for backslashes and newlines never arises; the parser rejects it, and any
path that could leave the bundle.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath

MANIFEST = "MANIFEST.sha256"
_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render(entries: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))


def parse(text: str) -> tuple[dict[str, str], list[str]]:
    """(entries, problems). Problems name the line; a bad line never aborts the rest."""
    entries: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            problems.append(f"{MANIFEST}: line {number}: not a sha256sum line")
            continue
        digest, name = m.groups()
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or name.startswith("./") or "\\" in name:
            problems.append(f"{MANIFEST}: line {number}: path {name!r} is not a plain relative path")
            continue
        if name in entries:
            problems.append(f"{MANIFEST}: line {number}: {name} listed twice")
            continue
        entries[name] = digest
    return entries, problems


def walk(root: Path) -> tuple[list[str], list[str]]:
    """(regular files, other entries) under ``root`` as sorted POSIX paths relative to it."""
    files: list[str] = []
    odd: list[str] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            odd.append(rel)
        elif path.is_file():
            files.append(rel)
        elif not path.is_dir():
            odd.append(rel)
    return files, odd
