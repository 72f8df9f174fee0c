"""Build upstream HAMi's binaries, cached per version.

Cache entry: ``$HAMI_UPSTREAM_CACHE`` (default ``~/.cache/hami-conformance/upstream-hami``)
``/<tag>/`` with ``bin/{scheduler,nvidia-device-plugin,vGPUmonitor}`` (the command names upstream's
chart runs), ``src/`` (only when the tree came from a git repository; a module-proxy tree stays in
the module cache) and ``manifest.json`` (written last: release, source, Go version, binary
digests, chart path). The Go build and module caches are shared under
``~/.cache/hami-conformance/go/``. An entry is built in a ``.<tag>.partial-*`` directory and renamed
into place only when complete, under a per-version lock, so a failed or interrupted build leaves
no entry and two builders do not race.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import source as src
from .versions import VERSION_PKG, Release

# binary name (upstream's chart runs it by this name) -> package inside the module
BINARIES: dict[str, str] = {
    "scheduler": "./cmd/scheduler",
    "nvidia-device-plugin": "./cmd/device-plugin/nvidia",
    "vGPUmonitor": "./cmd/vGPUmonitor",
}
MANIFEST = "manifest.json"


class BuildFailed(RuntimeError):
    """A binary did not build (exit 4); the message carries the compiler's last lines."""


def cache_root() -> Path:
    env = os.environ.get("HAMI_UPSTREAM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hami-conformance" / "upstream-hami"


def go_cache_root() -> Path:
    return Path.home() / ".cache" / "hami-conformance" / "go"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    go = go_cache_root()
    env.setdefault("GOMODCACHE", str(go / "mod"))
    env.setdefault("GOCACHE", str(go / "build"))
    env["GOFLAGS"] = "-buildvcs=false"
    env["GOTOOLCHAIN"] = env.get("GOTOOLCHAIN", "local")
    # go-nvml and the monitor link against C (dlopen of libnvidia-ml.so.1 at run time)
    env["CGO_ENABLED"] = "1"
    return env


@dataclass(frozen=True)
class Built:
    tag: str
    path: Path  # the cache entry
    manifest: dict[str, Any]

    def binary(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def chart(self) -> Path:
        return Path(self.manifest["chart"])


def installed(tag: str) -> Built | None:
    """The complete cache entry of a tag, or None (a partial directory is never an entry)."""
    entry = cache_root() / tag
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not all((entry / "bin" / b).is_file() for b in BINARIES):
        return None
    return Built(tag, entry, manifest)


@contextmanager
def _locked(root: Path, tag: str) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{tag}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _progress(tag: str, t0: float, msg: str) -> None:
    print(f"[upstream-hami {tag} +{time.monotonic() - t0:5.1f}s] {msg}", file=sys.stderr, flush=True)


def _go_build(tree: Path, rel: Release, name: str, pkg: str, out: Path, env: dict[str, str]) -> None:
    ldflags = " ".join(
        [
            f"-X {VERSION_PKG}/version.version={rel.tag}",
            f"-X {VERSION_PKG}/device-plugin/nvidiadevice/nvinternal/info.version={rel.tag}",
            f"-X {VERSION_PKG}/version.revision={rel.commit[:12]}",
        ]
    )
    cmd = ["nice", "-n", "10", "go", "build", "-ldflags", ldflags, "-o", str(out / name), pkg]
    res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        raise BuildFailed(f"go build {pkg} ({rel.tag}, {tree}) exited {res.returncode}:\n{tail}")


def build(version: str, git_source: Path | None = None, *, force: bool = False) -> Built:
    """Resolve, fetch and build ``version`` (``vX.Y.Z`` or ``latest``); cached unless ``force``."""
    t0 = time.monotonic()
    rel = src.resolve(version, git_source)
    _progress(rel.tag, t0, f"release {rel.tag}: commit {rel.commit}, module version {rel.pseudo_version}")
    root = cache_root()
    with _locked(root, rel.tag):
        done = installed(rel.tag)
        if done is not None and not force:
            _progress(rel.tag, t0, f"cached: {done.path}")
            return done
        partial = root / f".{rel.tag}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            env = go_env()
            _progress(rel.tag, t0, "fetching the source (Go module proxy first)")
            tree = src.obtain(rel, git_source, partial / "src", env)
            if tree.proxy_error:
                _progress(rel.tag, t0, f"module proxy refused: {tree.proxy_error.splitlines()[0]}")
            _progress(rel.tag, t0, f"source: {tree.kind} {tree.origin}")
            _progress(rel.tag, t0, "downloading dependencies (go mod download)")
            dl = subprocess.run(
                ["go", "mod", "download"], cwd=tree.root, env=env, capture_output=True, text=True
            )
            if dl.returncode != 0:
                raise BuildFailed(f"go mod download in {tree.root}: {dl.stderr.strip()[-2000:]}")
            (partial / "bin").mkdir()
            for i, (name, pkg) in enumerate(BINARIES.items(), 1):
                _progress(rel.tag, t0, f"building {name} ({i}/{len(BINARIES)}: {pkg})")
                _go_build(tree.root, rel, name, pkg, partial / "bin", env)
            go_version = subprocess.run(["go", "version"], capture_output=True, text=True, env=env).stdout
            go_version = go_version.strip()
            final = root / rel.tag
            tree_root = final / "src" if tree.kind == "git" else tree.root
            manifest = {
                "module": src.MODULE,
                "tag": rel.tag,
                "commit": rel.commit,
                "pseudo_version": rel.pseudo_version,
                "source": {"kind": tree.kind, "origin": tree.origin, "proxy_error": tree.proxy_error},
                "tree": str(tree_root),
                "chart": str(tree_root / "charts" / "hami"),
                "go": go_version,
                "built_seconds": round(time.monotonic() - t0, 1),
                "binaries": {b: _sha256(partial / "bin" / b) for b in BINARIES},
                "in_container_library": "HAMi-core is a git submodule no registry serves: "
                "hami_stack's enforcer shim stands in for it",
            }
            (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            if final.exists():  # a forced rebuild replaces the entry only now that the new one is whole
                shutil.rmtree(final)
            os.rename(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    _progress(rel.tag, t0, f"built: {final}")
    built = installed(rel.tag)
    assert built is not None
    return built
