"""Build kube-apiserver, kube-controller-manager and kube-scheduler of a release into the cache.

One cache entry per release: ``~/.cache/hami-conformance/k8s/v1.<minor>.<patch>/`` with ``bin/`` (the
three commands), ``module/`` (the generated go.mod and the go.sum it resolved: the module checksums the
binaries were built from) and ``manifest.json`` (versions, sizes, digests, toolchain, build time). An
entry exists only complete: it is built in a temporary directory beside it and renamed into place, so
a failed or interrupted build leaves nothing that looks like a build. One builder at a time
(``k8s/.build.lock``); a second waits and says for whom.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from .gomod import (
    COMMANDS,
    KUBERNETES,
    LDFLAGS_CHECKLINKNAME_OFF,
    Release,
    build_gomod,
    ldflags,
    needs_checklinkname_off,
    parse_upstream,
)
from .openapi import OpenAPIError
from .openapi import generate as generate_openapi
from .releases import go_dirs, k8s_cache, proxy_url

MANIFEST = "manifest.json"
# The only other toolchain the proxy serves; used when a release's go line is newer than the local go.
NEWER_TOOLCHAIN = "go1.27.3"


class BuildError(Exception):
    """A build that did not produce the three commands (the message carries the go tool's error)."""


@dataclass(frozen=True)
class Built:
    release: Release
    path: Path
    manifest: dict[str, Any]

    def binary(self, command: str) -> Path:
        return self.path / "bin" / command


E = TypeVar("E")  # a cache entry type (the control plane's Built, the kubelet's BuiltKubelet)


def entry_path(release: Release) -> Path:
    return k8s_cache() / release.version


def load(release: Release) -> Built | None:
    """The complete cache entry of ``release``, if it was built."""
    path = entry_path(release)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not all((path / "bin" / c).is_file() for c in COMMANDS):
        return None
    return Built(release, path, manifest)


def find(minor: int) -> Built | None:
    """The newest built release of ``minor`` in the cache (no network)."""
    return newest_entry(k8s_cache(), minor, load)


def newest_entry(root: Path, minor: int, load_one: Callable[[Release], E | None]) -> E | None:
    """The complete entry (``load_one`` says which are) of the highest patch of ``minor`` under ``root``."""
    best: tuple[int, E] | None = None
    if not root.is_dir():
        return None
    for d in root.iterdir():
        m = re.fullmatch(rf"v1\.{minor}\.(\d+)", d.name)
        if not m:
            continue
        b = load_one(Release(minor, int(m.group(1))))
        if b is not None and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), b)
    return best[1] if best else None


@contextlib.contextmanager
def build_lock(out: TextIO) -> Iterator[None]:
    root = k8s_cache()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            print(f"waiting for the build lock {root / '.build.lock'} (held by {holder})",
                  file=out, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go_env(toolchain: str) -> dict[str, str]:
    gocache, gomodcache = go_dirs()
    gocache.mkdir(parents=True, exist_ok=True)
    gomodcache.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "GOCACHE": str(gocache), "GOMODCACHE": str(gomodcache),
            "CGO_ENABLED": "0", "GOTOOLCHAIN": toolchain, "GOPROXY": os.environ.get("GOPROXY", proxy_url()),
            "GOWORK": "off"}


# a fetch the proxy or the checksum database refused in passing: the same request answers on a later
# try (seen: "verifying go.mod: ... sumdb/sum.golang.org/lookup/k8s.io/cloud-provider@v0.22.16: 404
# Not Found" that answered 200 a second later)
TRANSIENT_FETCH = re.compile(
    r"reading https?://\S+: (404 Not Found|410 Gone|5\d\d [A-Za-z ]+)"
    r"|connection reset|i/o timeout|TLS handshake timeout")
RETRIES = (5.0, 15.0, 30.0)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], what: str, timeout: float,
         say: Callable[[str], None] | None = None) -> str:
    """Run a go command; one that fetches modules is retried (``RETRIES``) when it failed only on a
    refused fetch, saying so through ``say``."""
    for attempt in range(len(RETRIES) + 1):
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                               check=False)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{what} did not finish within {timeout:.0f}s: {' '.join(cmd)}") from None
        if p.returncode == 0:
            return p.stdout
        err = (p.stderr or p.stdout).strip()
        refused = TRANSIENT_FETCH.search(err)
        if say is None or attempt == len(RETRIES) or refused is None:
            raise BuildError(f"{what} failed (exit {p.returncode}):\n{err[-6000:]}")
        say(f"  {what}: a fetch was refused ({refused.group(0)[:160]}); retrying in {RETRIES[attempt]:.0f}s")
        time.sleep(RETRIES[attempt])
    raise AssertionError("unreachable")


def local_go_version() -> str:
    try:
        return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, timeout=30,
                              check=True, env={**os.environ, "GOTOOLCHAIN": "local"}).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"no usable go toolchain on PATH: {e}") from e


def _go_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def upstream_gomod(release: Release, env: dict[str, str], cwd: Path,
                   say: Callable[[str], None] | None = None) -> tuple[str, dict[str, Any]]:
    """The release's go.mod text and its module info, through ``go mod download`` (the ordinary client)."""
    out = _run(["go", "mod", "download", "-json", f"{KUBERNETES}@{release.version}"], cwd, env,
               f"go mod download {KUBERNETES}@{release.version}", 1800, say)
    info = json.loads(out)
    if info.get("Error"):
        raise BuildError(f"{KUBERNETES}@{release.version}: {info['Error']}")
    return Path(info["GoMod"]).read_text(), info


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _progress_build(cmd: list[str], cwd: Path, env: dict[str, str], total: int,
                    say: Callable[[str], None], timeout: float) -> int:
    """Run ``go build -v``, turning its package lines into progress; returns how many packages were
    compiled (not taken from the build cache)."""
    start = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as p:
        assert p.stdout is not None
        shown = 0.0
        done = 0
        for line in p.stdout:
            lines.append(line.rstrip())
            if re.fullmatch(r"[\w.\-/~]+", line.strip()):
                done += 1
            now = time.monotonic()
            if now - shown > 10:
                say(f"  compiling: {done}/{total} packages not in the build cache done, "
                    f"{now - start:.0f}s ({line.strip()[:80]})")
                shown = now
            if now - start > timeout:
                p.kill()
                raise BuildError(f"go build did not finish within {timeout:.0f}s")
        rc = p.wait()
    if rc != 0:
        errors = [ln for ln in lines if not re.fullmatch(r"[\w.\-/~]+", ln.strip())]
        raise BuildError(f"go build failed (exit {rc}):\n" + "\n".join(errors[-80:]))
    return done


def build(release: Release, *, parallel: int | None = None, force: bool = False,
          out: TextIO = sys.stdout, timeout: float = 4 * 3600) -> Built:
    """Build ``release`` into its cache entry (a no-op when the entry is complete, unless ``force``)."""

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    with build_lock(out):
        have = load(release)
        if have is not None and not force:
            say(f"{release.version}: already built in {have.path}")
            return have
        final = entry_path(release)
        built = fill_entry(final, lambda tmp: _build_into(release, tmp, parallel, say, timeout))
        say(f"{release.version}: built in {built['buildSeconds']:.0f}s -> {final}")
        return Built(release, final, built)


def fill_entry(final: Path, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build into a fresh temporary directory beside ``final`` (with ``module/`` and ``bin/``), then put
    it in ``final``'s place: a failed build leaves no half-written entry. Returns what ``fill`` returns
    (the manifest). The caller holds the build lock, so leftovers of a killed builder are removed."""
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    for stale in [tmp, *root.glob(f".tmp-{final.name}-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    (tmp / "module").mkdir(parents=True)
    (tmp / "bin").mkdir()
    try:
        manifest = fill(tmp)
        if final.exists():
            old = root / f".old-{final.name}-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_into(release: Release, tmp: Path, parallel: int | None, say: Callable[[str], None],
                timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    local = local_go_version()
    env = _go_env("local")
    module = tmp / "module"
    say(f"{release.version}: fetching {KUBERNETES}@{release.version} go.mod")
    text, info = upstream_gomod(release, env, module, say)
    upstream_go = re.search(r"^go\s+(\S+)", text, re.M)
    toolchain = "local"
    if upstream_go and _go_key(upstream_go.group(1)) > _go_key(local):
        toolchain = NEWER_TOOLCHAIN
        env = _go_env(toolchain)
        say(f"{release.version}: needs go {upstream_go.group(1)} > local {local}; using {toolchain}")
    (module / "go.mod").write_text(build_gomod(release, text))
    say(f"{release.version}: resolving modules (go mod tidy)")
    _run(["go", "mod", "tidy"], module, env, "go mod tidy", 3600, say)
    # releases whose module lacks pkg/generated/openapi's definitions get them generated into the
    # entry and compiled through an overlay; `-mod=mod` lets go record the modules the generated file
    # imports beyond what tidy saw (the resolved go.mod/go.sum stay in the entry as the record)
    gen_env = {**env, "GOFLAGS": f"{env.get('GOFLAGS', '')} -mod=mod".strip()}
    try:
        generated = generate_openapi(
            module, release, parse_upstream(text).staging, tmp / "generated", gen_env, _run, say,
            ldflags=LDFLAGS_CHECKLINKNAME_OFF if needs_checklinkname_off(release) else "")
    except OpenAPIError as e:
        raise BuildError(f"generating the OpenAPI definitions: {e}") from e
    if generated is not None:
        env = gen_env
        say(f"{release.version}: {generated.file.name} generated by {generated.openapi_gen} from "
            f"{len(generated.inputs)} packages in {generated.seconds:.0f}s (overlay {generated.overlay})")
    pkgs = [f"{KUBERNETES}/cmd/{c}" for c in COMMANDS]
    overlay_flag = [f"-overlay={generated.overlay}"] if generated is not None else []
    deps = _run(["go", "list", "-deps", *overlay_flag, "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}",
                 *pkgs],
                module, env, "go list -deps", 1800).split()
    say(f"{release.version}: compiling {len(deps)} packages (-p {parallel or os.cpu_count()})")
    gover = _run(["go", "env", "GOVERSION"], module, env, "go env GOVERSION", 600).strip()
    try:  # the release's publication time stands in for the build date (reproducible binaries)
        published = json.loads(Path(info["Info"]).read_text()).get("Time", "")
    except (KeyError, OSError, ValueError):
        published = ""
    flags = ldflags(release, commit=(info.get("Origin") or {}).get("Hash", ""),
                    build_date=published or "1970-01-01T00:00:00Z")
    cmd = ["go", "build", "-v", "-trimpath", *overlay_flag, "-ldflags", flags, "-o", str(tmp / "bin") + "/"]
    if parallel:
        cmd[2:2] = ["-p", str(parallel)]
    compiled = _progress_build([*cmd, *pkgs], module, env, len(deps), say, timeout)
    binaries = {}
    for c in COMMANDS:
        path = tmp / "bin" / c
        ver = _run([str(path), "--version"], module, env, f"{c} --version", 60).strip()
        if release.version not in ver:
            raise BuildError(f"{c} reports {ver!r}, not {release.version} "
                             "(the version ldflags did not apply)")
        binaries[c] = {"size": path.stat().st_size, "sha256": _sha256(path), "version": ver}
    gosum = module / "go.sum"
    sums = [ln for ln in gosum.read_text().splitlines() if ln.startswith(f"{KUBERNETES} {release.version} ")]
    manifest = {
        "version": release.version,
        "minor": release.minor,
        "go": gover,
        "toolchain": toolchain,
        "ldflags": flags,
        "parallel": parallel or os.cpu_count(),
        "packages": len(deps),
        # how many were compiled rather than taken from the shared build cache: a cold build compiles
        # (nearly) all of them, and only then is buildSeconds the cold build time
        "compiledPackages": compiled,
        "binaries": binaries,
        "goSumSha256": _sha256(gosum),
        "kubernetesModuleSum": sums[0].split()[-1] if sums else "",
        # the OpenAPI definitions this build generated (None: the module has them)
        "openapi": None if generated is None else {
            "generator": generated.openapi_gen, "packages": len(generated.inputs),
            "seconds": generated.seconds, "sha256": _sha256(generated.file),
            "violationsMatchRelease": generated.violations_match_release},
        "buildSeconds": round(time.monotonic() - t0, 1),
        "builtAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
