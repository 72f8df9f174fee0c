"""Where upstream HAMi's source comes from: the Go module proxy first, else a git repository.

The module proxy is the intended source (``go mod download`` of the release's pseudo-version; the
zip it unpacks under the module cache also holds the Helm chart, ``charts/hami``). Where the proxy
refuses the module, a git repository of upstream given with ``--source`` (a clone or a bare
mirror) can stand in: the tag's commit is exported with ``git archive`` into the cache entry, and
the manifest records both the proxy's refusal and the commit the tree came from.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .versions import KNOWN, MODULE, Release, UnknownVersion, is_tag, newest_known, tag_key


class SourceUnavailable(RuntimeError):
    """Neither the module proxy nor a given git repository yields the release's tree (exit 4)."""


@dataclass(frozen=True)
class Source:
    kind: str  # "module-proxy" or "git"
    origin: str  # module@version, or git-dir@commit
    root: Path  # the source tree (go.mod at its top)
    proxy_error: str = ""  # the proxy's answer when it refused (kind "git")


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise UnknownVersion(f"git {' '.join(args)} in {repo}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()


def resolve(version: str, git_source: Path | None) -> Release:
    """``v2.10.0`` or ``latest`` -> the release (tag, commit, commit time)."""
    if git_source is None:
        if version == "latest":
            return newest_known()
        if version in KNOWN:
            return KNOWN[version]
        known = ", ".join(sorted(KNOWN, key=tag_key))
        raise UnknownVersion(
            f"unknown upstream HAMi version {version!r}: known releases are {known} and 'latest'; "
            "another tag needs --source GIT_DIR (a repository of Project-HAMi/HAMi)"
        )
    if not (git_source / "HEAD").exists() and not (git_source / ".git").exists():
        raise UnknownVersion(f"--source {git_source}: not a git repository")
    if version == "latest":
        tags = [t for t in _git(git_source, "tag", "--list", "v*").split() if is_tag(t)]
        if not tags:
            raise UnknownVersion(f"--source {git_source}: no vMAJOR.MINOR.PATCH tags")
        version = max(tags, key=tag_key)
    elif not is_tag(version):
        raise UnknownVersion(f"{version!r} is not a release tag (expected vMAJOR.MINOR.PATCH or 'latest')")
    commit = _git(git_source, "rev-parse", "--verify", "--quiet", f"refs/tags/{version}^{{commit}}")
    stamp = int(_git(git_source, "log", "-1", "--format=%ct", commit))
    rel = Release(version, commit, datetime.fromtimestamp(stamp, UTC))
    known = KNOWN.get(version)
    if known is not None and known.commit != commit:
        raise UnknownVersion(
            f"--source {git_source}: tag {version} is commit {commit}, but the release is {known.commit}"
        )
    return rel


def from_proxy(rel: Release, env: dict[str, str]) -> tuple[Path | None, str]:
    """``go mod download`` of the release: (unpacked module dir, "") or (None, the proxy's error)."""
    ref = f"{MODULE}@{rel.pseudo_version}"
    out = subprocess.run(
        ["go", "mod", "download", "-json", ref], capture_output=True, text=True, env=env, cwd="/"
    )
    try:
        info = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        info = {}
    err = str(info.get("Error") or "")
    if out.returncode != 0 or err or not info.get("Dir"):
        return None, err or out.stderr.strip() or f"go mod download {ref} exited {out.returncode}"
    return Path(info["Dir"]), ""


def export_git(git_source: Path, rel: Release, dest: Path) -> None:
    """The tag's tree into ``dest`` (``git archive``; no .git, like a module zip)."""
    data = subprocess.run(
        ["git", "-C", str(git_source), "archive", "--format=tar", rel.commit], capture_output=True
    )
    if data.returncode != 0:
        raise SourceUnavailable(f"git archive {rel.commit} in {git_source}: {data.stderr.decode().strip()}")
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data.stdout)) as tar:
        tar.extractall(dest, filter="data")


def obtain(rel: Release, git_source: Path | None, dest: Path, env: dict[str, str]) -> Source:
    """The release's tree: from the proxy, else exported from ``git_source`` into ``dest``."""
    mod_dir, proxy_error = from_proxy(rel, env)
    if mod_dir is not None:
        return Source("module-proxy", f"{MODULE}@{rel.pseudo_version}", mod_dir)
    if git_source is None:
        raise SourceUnavailable(
            f"the Go module proxy does not serve {MODULE}@{rel.pseudo_version} ({rel.tag}): {proxy_error}; "
            "pass --source GIT_DIR (a repository of Project-HAMi/HAMi) to build from its tag instead"
        )
    export_git(git_source, rel, dest)
    first = (dest / "go.mod").read_text().splitlines()[0] if (dest / "go.mod").exists() else ""
    if first.strip() != f"module {MODULE}":
        raise SourceUnavailable(f"{git_source}@{rel.commit}: go.mod does not declare module {MODULE}")
    return Source("git", f"{os.path.abspath(git_source)}@{rel.commit}", dest, proxy_error)
