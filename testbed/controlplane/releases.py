"""Which patch release of each minor the Go module proxy serves, and where builds are cached.

The proxy's version list for ``k8s.io/kubernetes`` is not complete (it names only versions someone has
fetched through it), while single versions are answered on request, some with "not available". So the
latest patch of a minor is found by asking for each patch in turn (``<proxy>/k8s.io/kubernetes/@v/
v1.<minor>.<patch>.info``) and taking the highest that is served together with its staging modules'
``v0.<minor>.<patch>``. Answers are kept in ``releases.json`` of the cache, so later runs (and machines
without the network) need no lookup.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .gomod import Release

MINORS = tuple(range(18, 38))  # 1.18 .. the newest minor published when this was written
_MAX_PATCH = 40


def cache_root() -> Path:
    """``~/.cache/hami-conformance`` (``HAMI_CONFORMANCE_CACHE`` overrides, for tests)."""
    env = os.environ.get("HAMI_CONFORMANCE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hami-conformance"


def k8s_cache() -> Path:
    return cache_root() / "k8s"


def go_dirs() -> tuple[Path, Path]:
    """The shared GOCACHE and GOMODCACHE of every build."""
    base = cache_root() / "go"
    return base / "cache", base / "mod"


def proxy_url() -> str:
    """The first proxy of ``go env GOPROXY`` (``https://proxy.golang.org`` when go says nothing usable)."""
    value = os.environ.get("GOPROXY", "")
    if not value:
        try:
            value = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True,
                                   timeout=30, check=False).stdout.strip()
        except OSError:
            value = ""
    for entry in value.replace("|", ",").split(","):
        if entry.startswith(("http://", "https://")):
            return entry.rstrip("/")
    return "https://proxy.golang.org"


def served(module: str, version: str, proxy: str | None = None, timeout: float = 20) -> bool:
    """Whether the proxy serves ``module@version`` (its ``.info`` answers 200)."""
    url = f"{proxy or proxy_url()}/{module}/@v/{version}.info"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError:
        return False


def _fetch(url: str, timeout: float = 30) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError:
        return None


def _zip_served(module: str, version: str, proxy: str) -> bool:
    req = urllib.request.Request(f"{proxy}/{module}/@v/{version}.zip", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError:
        return False


def _sumdb_known(module: str, version: str, proxy: str) -> bool:
    """Whether the checksum database (through the proxy, as go asks it) knows ``module@version``: go
    refuses a module it cannot verify ("verifying module: ... 404 Not Found"), and the proxy serves
    some archives whose checksum lookup it does not answer. Its "not found" is sometimes transient
    (the same lookup answers on the next try), so only four refusals in a row count."""
    for attempt in range(4):
        try:
            with urllib.request.urlopen(f"{proxy}/sumdb/sum.golang.org/lookup/{module}@{version}",
                                        timeout=30) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError:
            time.sleep(2 ** attempt)
    return False


def _verifies() -> bool:
    """Whether go checks modules against sum.golang.org here (GOSUMDB not off, no GONOSUMDB/GOPRIVATE
    that could exempt k8s.io)."""
    env = {k: os.environ.get(k, "") for k in ("GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOFLAGS")}
    if env["GOSUMDB"] == "off" or "insecure" in env["GOFLAGS"]:
        return False
    return not any("k8s.io" in env[k] for k in ("GONOSUMDB", "GOPRIVATE"))


# staging modules no control-plane command imports: their absence does not matter
_UNUSED_STAGING = ("k8s.io/sample-", "k8s.io/code-generator")


def complete(rel: Release, proxy: str) -> str:
    """Why the proxy cannot give everything ``rel`` needs ("" when it can): the k8s.io/kubernetes
    source and each staging module's ``v0.<minor>.<patch>`` source archive (the proxy answers some
    versions' ``.info`` but refuses their ``.zip``), each verifiable in the checksum database."""
    from .gomod import GoModError, parse_upstream

    text = _fetch(f"{proxy}/k8s.io/kubernetes/@v/{rel.version}.mod")
    if text is None:
        return f"k8s.io/kubernetes@{rel.version}: go.mod not served"
    try:
        staging = parse_upstream(text).staging
    except GoModError as e:
        return str(e)
    needed = [("k8s.io/kubernetes", rel.version)] + [
        (m, rel.staging_version) for m in staging if not m.startswith(_UNUSED_STAGING)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ok = list(pool.map(lambda mv: _zip_served(mv[0], mv[1], proxy), needed))
    missing = [f"{m}@{v}" for (m, v), good in zip(needed, ok, strict=True) if not good]
    if missing:
        return f"not served by the proxy: {', '.join(missing)}"
    if not _verifies():
        return ""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ok = list(pool.map(lambda mv: _sumdb_known(mv[0], mv[1], proxy), needed))
    unknown = [f"{m}@{v}" for (m, v), good in zip(needed, ok, strict=True) if not good]
    return f"not in the checksum database: {', '.join(unknown)}" if unknown else ""


def _saved() -> dict[str, str]:
    try:
        return dict(json.loads((k8s_cache() / "releases.json").read_text()))
    except (OSError, ValueError):
        return {}


def _save(found: dict[str, str]) -> None:
    path = k8s_cache() / "releases.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {**_saved(), **found}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    ordered = dict(sorted(merged.items(), key=lambda kv: int(kv[0].split(".")[1])))
    tmp.write_text(json.dumps(ordered, indent=1))
    tmp.replace(path)


def latest(minors: list[int], refresh: bool = False) -> dict[int, Release | None]:
    """The latest served patch of each minor (None: the proxy serves no release of it)."""
    saved = {} if refresh else _saved()
    out: dict[int, Release | None] = {}
    todo = []
    for m in minors:
        if f"1.{m}" in saved:
            out[m] = Release.parse(saved[f"1.{m}"])
        else:
            todo.append(m)
    if not todo:
        return out
    proxy = proxy_url()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futs = {(m, p): pool.submit(served, "k8s.io/kubernetes", f"v1.{m}.{p}", proxy)
                for m in todo for p in range(_MAX_PATCH)}
        found: dict[str, str] = {}
        for m in todo:
            patches = sorted((p for p in range(_MAX_PATCH) if futs[(m, p)].result()), reverse=True)
            rel = None
            for p in patches:  # the staging modules must be served at the same patch
                why = complete(Release(m, p), proxy)
                if not why:
                    rel = Release(m, p)
                    break
                print(f"v1.{m}.{p} skipped: {why}", file=sys.stderr, flush=True)
            out[m] = rel
            if rel is not None:
                found[f"1.{m}"] = rel.version
    _save(found)
    return out
