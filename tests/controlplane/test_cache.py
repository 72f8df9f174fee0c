"""The build cache and the `testbed up --control-plane` decision, without building anything.

A fake ``go`` on PATH stands in for the toolchain where a test needs one to fail.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.controlplane import build as build_mod
from testbed.controlplane.gomod import COMMANDS, Release
from testbed.controlplane.hook import RealControlPlaneError, decide

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HAMI_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TESTBED_CONTROL_PLANE", raising=False)
    return tmp_path / "cache" / "k8s"


def _fake_entry(cache: Path, version: str, binaries: tuple[str, ...] = COMMANDS) -> Path:
    d = cache / version
    (d / "bin").mkdir(parents=True)
    for c in binaries:
        (d / "bin" / c).write_text("#!/bin/sh\n")
    (d / "manifest.json").write_text(json.dumps({"version": version, "binaries": {}}))
    return d


def test_find_takes_the_newest_complete_entry_of_the_minor(cache: Path):
    _fake_entry(cache, "v1.33.6")
    _fake_entry(cache, "v1.33.13")
    _fake_entry(cache, "v1.33.20", binaries=("kube-apiserver",))  # incomplete: not a build
    _fake_entry(cache, "v1.32.99")
    found = build_mod.find(33)
    assert found is not None and found.release == Release(33, 13)
    assert build_mod.find(31) is None


def test_real_without_a_build_names_the_minor_and_the_command(cache: Path):
    with pytest.raises(RealControlPlaneError) as e:
        decide("1.33", "real")
    assert e.value.code == 4
    assert "1.33" in str(e.value) and "python -m testbed.controlplane build 1.33" in str(e.value)
    assert decide("1.33", "auto") == ("emulated", None)
    assert decide("1.33", "emulated") == ("emulated", None)
    _fake_entry(cache, "v1.33.13")
    mode, built = decide("1.33", "auto")
    assert mode == "real" and built.release == Release(33, 13)


def test_testbed_up_real_without_a_build_exits_4_and_starts_nothing(cache: Path, tmp_path: Path):
    data = tmp_path / "data"
    p = subprocess.run([sys.executable, "-m", "testbed", "up", "--k8s", "1.31", "--control-plane", "real",
                        "--data-dir", str(data), "--port", "0"],
                       capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ})
    assert p.returncode == 4, p.stderr
    assert "1.31" in p.stderr and "python -m testbed.controlplane build 1.31" in p.stderr
    assert not data.exists()


def test_a_real_only_minor_on_the_emulated_control_plane_says_how_to_run_it(cache: Path, tmp_path: Path):
    data = tmp_path / "data"
    p = subprocess.run([sys.executable, "-m", "testbed", "up", "--k8s", "1.36", "--control-plane", "auto",
                        "--data-dir", str(data), "--port", "0"],
                       capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ})
    assert p.returncode == 2, p.stderr
    assert "1.36 has no emulated control plane" in p.stderr
    assert "python -m testbed.controlplane build 1.36" in p.stderr and "--control-plane real" in p.stderr
    assert not data.exists()
    p = subprocess.run([sys.executable, "-m", "testbed", "up", "--k8s", "1.99", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ})
    assert p.returncode == 2 and 'unknown Kubernetes minor "1.99"' in p.stderr, p.stderr


def test_the_harness_accepts_exactly_the_minors_only_the_real_control_plane_has():
    from conformance.backends import MINORS, REAL_ONLY_MINORS
    from testbed.apiserver.versions import MINORS as EMULATED
    from testbed.controlplane.releases import MINORS as REAL

    assert tuple(f"1.{m}" for m in EMULATED) == MINORS
    assert tuple(f"1.{m}" for m in REAL if m not in EMULATED) == REAL_ONLY_MINORS


def test_a_failed_build_shows_the_go_error_and_leaves_no_entry(cache: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    go = fake / "go"
    # `go env GOVERSION` answers; everything else fails the way the proxy refuses a module
    go.write_text('#!/bin/sh\nif [ "$1" = env ]; then echo go1.26.0; exit 0; fi\n'
                  'echo "go: k8s.io/kubernetes@v1.33.13: reading proxy: 403 Forbidden" >&2\nexit 1\n')
    go.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(build_mod.BuildError, match="403 Forbidden"):
        build_mod.build(Release(33, 13), out=io.StringIO())
    assert build_mod.load(Release(33, 13)) is None
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".build.lock")] == []


def test_a_refused_fetch_is_retried_and_a_lasting_error_is_not(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(build_mod, "RETRIES", (0.0, 0.0, 0.0))
    fake = tmp_path / "go"
    # the checksum database refuses the first lookup and answers the second, as seen on v0.22.16
    fake.write_text(
        '#!/bin/sh\nn=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n+1)) > "$0.count"\n'
        'if [ "$n" = 0 ]; then echo "go: verifying go.mod: reading https://proxy.golang.org/sumdb/'
        'sum.golang.org/lookup/k8s.io/cloud-provider@v0.22.16: 404 Not Found" >&2; exit 1; fi\n'
        'echo tidy-ok\n')
    fake.chmod(0o755)
    said: list[str] = []
    out = build_mod._run([str(fake)], tmp_path, dict(os.environ), "go mod tidy", 30, said.append)
    assert out == "tidy-ok\n"
    assert Path(f"{fake}.count").read_text().strip() == "2"
    assert len(said) == 1 and "404 Not Found" in said[0] and "retrying" in said[0]
    # a compile error is no refused fetch: it fails at once, showing go's text
    bad = tmp_path / "bad"
    bad.write_text('#!/bin/sh\necho "x.go:1: undefined: Foo" >&2\nexit 2\n')
    bad.chmod(0o755)
    said.clear()
    with pytest.raises(build_mod.BuildError, match="undefined: Foo"):
        build_mod._run([str(bad)], tmp_path, dict(os.environ), "go build", 30, said.append)
    assert said == []
    # a refusal that lasts fails after the retries, with the last error
    always = tmp_path / "always"
    always.write_text('#!/bin/sh\necho "reading https://proxy.golang.org/x/@v/v1.zip: 404 Not Found" >&2\n'
                      'exit 1\n')
    always.chmod(0o755)
    with pytest.raises(build_mod.BuildError, match="404 Not Found"):
        build_mod._run([str(always)], tmp_path, dict(os.environ), "go mod tidy", 30, said.append)
    assert len(said) == len(build_mod.RETRIES)
