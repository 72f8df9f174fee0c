"""Build native code on first use, once per source version, safely under parallel callers.

The testbed's emulated driver libraries and the stack's enforcement shim are C built by the project
itself. Both land in ``<repo>/.cache/<name>/<source hash>/`` (or the user cache when the checkout is
read-only, or a directory named by an environment variable): a changed source gives a new hash and
so a fresh build, and concurrent callers (pytest-xdist workers, node agents) serialise on a lock file
instead of racing the compiler.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent
_BUILT: dict[tuple[str, str], Path] = {}


class BuildError(RuntimeError):
    pass


def source_hash(inputs: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(inputs):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_dir(name: str, digest: str, env_override: str) -> Path:
    override = os.environ.get(env_override)
    if override:
        return Path(override)
    # a checkout builds next to itself; an installed, read-only package builds in the user cache
    root = REPO / ".cache" if os.access(REPO, os.W_OK) else Path.home() / ".cache" / "hami-conformance"
    return root / name / digest


def cached_build(name: str, inputs: Iterable[Path], products: Sequence[str], build: Callable[[Path], None],
                 *, env_override: str) -> Path:
    """The directory holding ``products``, running ``build(out_dir)`` unless a build of these exact
    inputs is already complete there."""
    digest = source_hash(inputs)
    cached = _BUILT.get((name, digest))
    if cached is not None:
        return cached
    out = build_dir(name, digest, env_override)

    def complete() -> bool:
        stamp = out / ".source-hash"
        return stamp.exists() and stamp.read_text() == digest and all((out / p).exists() for p in products)
    if not complete():
        out.mkdir(parents=True, exist_ok=True)
        with open(out / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not complete():
                build(out)
                (out / ".source-hash").write_text(digest)
    _BUILT[(name, digest)] = out
    return out
