"""Build ``cmd/kubelet`` of a release into its own cache entry, beside the control plane's.

The control-plane entry (``k8s/v1.<minor>.<patch>/``) is left as it is: its manifest names three
commands and :func:`testbed.controlplane.build.load` checks exactly those. The kubelet gets
``kubelet/v1.<minor>.<patch>/`` with ``bin/kubelet``, ``module/`` (go.mod, go.sum) and
``manifest.json``. The build module is the control plane's generated go.mod (the same staging
replaces, so the kubelet and the apiserver come from the same module versions) with ``cmd/kubelet``
as its one tool; ``go mod tidy`` then adds what only the kubelet imports (cadvisor, runc's libcontainer,
the CRI client). It shares the GOCACHE and module cache and the build lock of the control-plane builds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from testbed.controlplane.build import (
    NEWER_TOOLCHAIN,
    BuildError,
    _go_env,
    _go_key,
    _progress_build,
    _run,
    _sha256,
    build_lock,
    fill_entry,
    local_go_version,
    newest_entry,
    upstream_gomod,
)
from testbed.controlplane.gomod import KUBERNETES, Release, build_gomod, ldflags
from testbed.controlplane.releases import cache_root

COMMAND = "kubelet"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BuiltKubelet:
    release: Release
    path: Path
    manifest: dict[str, Any]

    @property
    def binary(self) -> Path:
        return self.path / "bin" / COMMAND


def kubelet_cache() -> Path:
    return cache_root() / "kubelet"


def entry_path(release: Release) -> Path:
    return kubelet_cache() / release.version


def load(release: Release) -> BuiltKubelet | None:
    path = entry_path(release)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not (path / "bin" / COMMAND).is_file():
        return None
    return BuiltKubelet(release, path, manifest)


def find(minor: int) -> BuiltKubelet | None:
    """The newest built kubelet of ``minor`` (no network)."""
    return newest_entry(kubelet_cache(), minor, load)


def kubelet_gomod(control_plane_gomod: str) -> str:
    """The control plane's build go.mod with ``cmd/kubelet`` as the only tool (text to text).

    Only the ``tool`` block changes; ``go mod tidy`` afterwards resolves the kubelet's own imports."""
    out, n = re.subn(r"^tool \($.*?^\)$", f"tool (\n\t{KUBERNETES}/cmd/{COMMAND}\n)", control_plane_gomod,
                     count=1, flags=re.M | re.S)
    if n != 1:
        raise BuildError("the control plane's build go.mod has no tool block to replace")
    return out.replace("builds the control-plane commands of", "builds the kubelet of", 1)


def build(release: Release, *, parallel: int | None = 1, force: bool = False, out: TextIO = sys.stdout,
          timeout: float = 4 * 3600) -> BuiltKubelet:
    """Build the kubelet of ``release`` (a no-op when its entry is complete, unless ``force``)."""

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    with build_lock(out):
        have = load(release)
        if have is not None and not force:
            say(f"{release.version}: kubelet already built in {have.path}")
            return have
        final = entry_path(release)
        manifest = fill_entry(final, lambda tmp: _build_into(release, tmp, parallel, say, timeout))
        say(f"{release.version}: kubelet built in {manifest['buildSeconds']:.0f}s -> {final}")
        return BuiltKubelet(release, final, manifest)


def _build_into(release: Release, tmp: Path, parallel: int | None, say: Any,
                timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    env = _go_env("local")
    module = tmp / "module"
    say(f"{release.version}: fetching {KUBERNETES}@{release.version} go.mod")
    text, info = upstream_gomod(release, env, module, say)
    upstream_go = re.search(r"^go\s+(\S+)", text, re.M)
    toolchain = "local"
    if upstream_go and _go_key(upstream_go.group(1)) > _go_key(local_go_version()):
        toolchain = NEWER_TOOLCHAIN
        env = _go_env(toolchain)
    # the control plane's resolved go.sum, when built, saves tidy most lookups (same module versions)
    cp_sum = cache_root() / "k8s" / release.version / "module" / "go.sum"
    if cp_sum.is_file():
        shutil.copyfile(cp_sum, module / "go.sum")
    (module / "go.mod").write_text(kubelet_gomod(build_gomod(release, text)))
    say(f"{release.version}: resolving the kubelet's modules (go mod tidy)")
    _run(["go", "mod", "tidy"], module, env, "go mod tidy", 3600, say)
    pkg = f"{KUBERNETES}/cmd/{COMMAND}"
    deps = _run(["go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg],
                module, env, "go list -deps", 1800).split()
    say(f"{release.version}: compiling {len(deps)} packages for the kubelet "
        f"(-p {parallel or os.cpu_count()})")
    try:
        published = json.loads(Path(info["Info"]).read_text()).get("Time", "")
    except (KeyError, OSError, ValueError):
        published = ""
    flags = ldflags(release, commit=(info.get("Origin") or {}).get("Hash", ""),
                    build_date=published or "1970-01-01T00:00:00Z")
    cmd = ["go", "build", "-v", "-trimpath", "-ldflags", flags, "-o", str(tmp / "bin") + "/"]
    if parallel:
        cmd[2:2] = ["-p", str(parallel)]
    compiled = _progress_build([*cmd, pkg], module, env, len(deps), say, timeout)
    binary = tmp / "bin" / COMMAND
    ver = _run([str(binary), "--version"], module, env, "kubelet --version", 60).strip()
    if release.version not in ver:
        raise BuildError(f"kubelet reports {ver!r}, not {release.version}")
    manifest = {
        "version": release.version,
        "minor": release.minor,
        "go": _run(["go", "env", "GOVERSION"], module, env, "go env GOVERSION", 600).strip(),
        "toolchain": toolchain,
        "ldflags": flags,
        "parallel": parallel or os.cpu_count(),
        "packages": len(deps),
        "compiledPackages": compiled,
        "binaries": {COMMAND: {"size": binary.stat().st_size, "sha256": _sha256(binary), "version": ver}},
        "goSumSha256": _sha256(module / "go.sum"),
        "buildSeconds": round(time.monotonic() - t0, 1),
        "builtAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
