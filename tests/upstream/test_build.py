"""``python -m testbed.upstream build``: version resolution, exit 4 on bad input, atomic cache entries.

These use a throw-away git repository shaped like upstream (module path, the three ``cmd/`` packages)
with the module proxy switched off (``GOPROXY=off``: no network), so the git-source path is what
builds. The real release build is exercised by ``test_upstream_extender.py`` when it is cached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed.upstream import versions
from testbed.upstream.source import resolve

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    shutil.which("go") is None or shutil.which("git") is None, reason="needs the go and git commands"
)

STAMP = "2026-01-02T03:04:05Z"
MAIN_OK = "package main\n\nfunc main() {}\n"
MAIN_BROKEN = "package main\n\nfunc main() { undefinedCall() }\n"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
        env={**os.environ, "GIT_COMMITTER_DATE": STAMP, "GIT_AUTHOR_DATE": STAMP},
    )


def _fake_upstream(root: Path, scheduler_src: str = MAIN_OK) -> Path:
    repo = root / "hami.git"
    for pkg in ("cmd/scheduler", "cmd/device-plugin/nvidia", "cmd/vGPUmonitor"):
        (repo / pkg).mkdir(parents=True)
        (repo / pkg / "main.go").write_text(scheduler_src if pkg == "cmd/scheduler" else MAIN_OK)
    (repo / "go.mod").write_text(f"module {versions.MODULE}\n\ngo 1.22\n")
    (repo / "charts" / "hami").mkdir(parents=True)
    (repo / "charts" / "hami" / "Chart.yaml").write_text("name: hami\nversion: 2.99.0\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "release")
    _git(repo, "tag", "v2.99.0")
    return repo


def _run(args: list[str], cache: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HAMI_UPSTREAM_CACHE": str(cache),
        "GOPROXY": "off",
        "GOMODCACHE": str(tmp / "gomod"),
        "GOFLAGS": "-mod=mod",
    }
    env.pop("HAMI_UPSTREAM_SOURCE", None)
    return subprocess.run(
        [sys.executable, "-m", "testbed.upstream", *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def test_pseudo_version_of_the_release_commit() -> None:
    rel = versions.KNOWN["v2.10.0"]
    assert rel.pseudo_version == "v0.0.0-20260821062039-4707fb02c91c"
    # the stamp is the commit time in UTC whatever zone the time was given in
    from datetime import timedelta, timezone

    shifted = rel.committed.astimezone(timezone(timedelta(hours=8)))
    assert versions.pseudo_version(rel.commit, shifted) == rel.pseudo_version
    with pytest.raises(versions.UnknownVersion):
        versions.pseudo_version("4707fb02", rel.committed)


def test_unknown_version_exits_4_without_an_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = _run(["build", "v9.9.9"], cache, tmp_path)
    assert res.returncode == 4, res.stderr
    assert "unknown upstream HAMi version 'v9.9.9'" in res.stderr
    assert not cache.exists() or not [p for p in cache.iterdir() if not p.name.endswith(".lock")]
    res = _run(["build", "2.10"], cache, tmp_path)
    assert res.returncode == 4 and "unknown upstream HAMi version" in res.stderr


def test_git_source_resolves_tags_and_latest(tmp_path: Path) -> None:
    repo = _fake_upstream(tmp_path)
    rel = resolve("latest", repo)
    assert rel.tag == "v2.99.0" and len(rel.commit) == 40
    assert rel.committed == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert rel.pseudo_version == f"v0.0.0-20260102030405-{rel.commit[:12]}"
    with pytest.raises(versions.UnknownVersion, match=r"v2\.98\.0"):
        resolve("v2.98.0", repo)
    # a source whose tag of a known release is another commit is refused, not built
    _git(repo, "tag", "v2.10.0")
    with pytest.raises(versions.UnknownVersion, match="4707fb02c91c"):
        resolve("v2.10.0", repo)


def test_build_from_git_source_then_cached(tmp_path: Path) -> None:
    repo = _fake_upstream(tmp_path)
    cache = tmp_path / "cache"
    res = _run(["build", "latest", "--source", str(repo)], cache, tmp_path)
    assert res.returncode == 0, res.stderr
    entry = cache / "v2.99.0"
    assert res.stdout.strip() == str(entry)
    assert "module proxy refused" in res.stderr and "building vGPUmonitor (3/3" in res.stderr
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "git" and "GOPROXY=off" in manifest["source"]["proxy_error"]
    assert manifest["chart"] == str(entry / "src" / "charts" / "hami")
    assert (entry / "src" / "charts" / "hami" / "Chart.yaml").is_file()
    for name in ("scheduler", "nvidia-device-plugin", "vGPUmonitor"):
        assert os.access(entry / "bin" / name, os.X_OK)
        assert len(manifest["binaries"][name]) == 64
    assert "HAMi-core" in manifest["in_container_library"]
    again = _run(["build", "v2.99.0", "--source", str(repo)], cache, tmp_path)
    assert again.returncode == 0 and "cached:" in again.stderr
    shown = _run(["show", "v2.99.0", "--source", str(repo)], cache, tmp_path)
    assert json.loads(shown.stdout)["commit"] == manifest["commit"]


def test_build_failure_exits_4_and_leaves_no_entry(tmp_path: Path) -> None:
    repo = _fake_upstream(tmp_path, scheduler_src=MAIN_BROKEN)
    cache = tmp_path / "cache"
    res = _run(["build", "v2.99.0", "--source", str(repo)], cache, tmp_path)
    assert res.returncode == 4
    assert "go build ./cmd/scheduler (v2.99.0" in res.stderr and "undefinedCall" in res.stderr
    assert sorted(p.name for p in cache.iterdir()) == [".v2.99.0.lock"]
    assert _run(["show", "v2.99.0", "--source", str(repo)], cache, tmp_path).returncode == 4
