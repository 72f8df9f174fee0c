"""Upstream HAMi releases and the Go module versions that name them.

HAMi's release tags are ``v2.x.y`` but its module path has no ``/v2`` suffix, so the Go tooling
refuses those tags as versions of ``github.com/Project-HAMi/HAMi``; a release is therefore
addressed by the pseudo-version of its tag's commit (``v0.0.0-<UTC commit time>-<12 hex>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

MODULE = "github.com/Project-HAMi/HAMi"
VERSION_PKG = MODULE + "/pkg"

_TAG = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class UnknownVersion(ValueError):
    """The version asked for is not a release we can name (exit 4)."""


@dataclass(frozen=True)
class Release:
    tag: str  # v2.10.0
    commit: str  # full commit hash of the tag
    committed: datetime  # the commit's committer time (UTC): the pseudo-version's time stamp

    @property
    def pseudo_version(self) -> str:
        return pseudo_version(self.commit, self.committed)

    @property
    def minor(self) -> str:
        """``v2.10`` (the bundles and the side-by-side report compare stacks of one minor)."""
        return ".".join(self.tag.split(".")[:2])


def pseudo_version(commit: str, committed: datetime) -> str:
    if not _COMMIT.match(commit):
        raise UnknownVersion(f"not a full commit hash: {commit!r}")
    stamp = committed.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return f"v0.0.0-{stamp}-{commit[:12]}"


# Releases whose commits were read from the upstream repository (tag -> commit, committer time).
# ``latest`` resolves to the newest row unless a git source (``--source``) names a newer tag.
KNOWN: dict[str, Release] = {
    "v2.10.0": Release(
        "v2.10.0",
        "4707fb02c91c545bc7343ce26dba4c32919f9a3e",
        datetime(2026, 8, 21, 6, 20, 39, tzinfo=UTC),
    ),
}


def tag_key(tag: str) -> tuple[int, int, int]:
    m = _TAG.match(tag)
    if not m:
        raise UnknownVersion(f"{tag!r} is not a release tag (expected vMAJOR.MINOR.PATCH or 'latest')")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def is_tag(text: str) -> bool:
    return bool(_TAG.match(text))


def newest_known() -> Release:
    return KNOWN[max(KNOWN, key=tag_key)]
