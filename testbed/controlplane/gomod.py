"""The build module for one Kubernetes release: a ``go.mod`` written from that release's own ``go.mod``.

``k8s.io/kubernetes`` points its staging modules (``k8s.io/api``, ``k8s.io/client-go``, ...) at paths
inside its own tree (``=> ./staging/src/k8s.io/api``), and replace directives of a dependency are ignored
by Go. So a module that builds the release's commands must say itself where each staging module comes
from: the published ``v0.<minor>.<patch>`` of the same release. Older releases also pinned many other
dependencies by replace directives; those are carried over as they are, since the versions are what
the release was tested with.

Nothing here touches the network or the file system: :func:`build_gomod` turns text into text, so the
generator is tested without a build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KUBERNETES = "k8s.io/kubernetes"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BUILD_MODULE = "hami-conformance.local/k8sbuild"

# The ``tool`` directive (Go 1.24) keeps the three commands in the build list without a Go file.
_MIN_MODULE_GO = (1, 24)

# Dependency minimums for older releases under a current Go toolchain: versions whose code no longer
# compiles or no longer runs correctly with Go 1.2x, raised to the first release that does.
# module -> minimum version; applied only where the release asks for less (see :func:`_raise_minimums`).
DEPENDENCY_MINIMUMS: dict[str, str] = {
    # reflect2 before 1.0.2 reads runtime internals that changed in Go 1.18 (crashes at start-up)
    "github.com/modern-go/reflect2": "v1.0.2",
    "github.com/json-iterator/go": "v1.1.12",
    # x/sys before 2022 has no build of its unix package for current toolchains' runtime linknames
    "golang.org/x/sys": "v0.6.0",
}

# Modules at vanity domains that no longer answer (the proxy refuses them), and where the same code is
# published now: module -> the module to take it from, at the same version.
SUBSTITUTES: dict[str, str] = {
    "vbom.ml/util": "github.com/fvbommel/util",
}

# Pull linkname restrictions (Go 1.23+) off for releases whose dependencies use push-less linknames.
LDFLAGS_CHECKLINKNAME_OFF = "-checklinkname=0"


class GoModError(ValueError):
    """The release's go.mod cannot be read (the message says what was expected)."""


@dataclass(frozen=True)
class Release:
    """``v1.<minor>.<patch>`` of Kubernetes."""

    minor: int
    patch: int

    @property
    def version(self) -> str:
        return f"v1.{self.minor}.{self.patch}"

    @property
    def staging_version(self) -> str:
        return f"v0.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> Release:
        m = re.fullmatch(r"v?1\.(\d+)\.(\d+)", text.strip())
        if not m:
            raise GoModError(f"not a Kubernetes release version: {text!r} (expected v1.<minor>.<patch>)")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass
class UpstreamGoMod:
    """What the generator needs from ``k8s.io/kubernetes``'s go.mod."""

    go: str  # the go directive, e.g. "1.24.0"
    godebug: list[str] = field(default_factory=list)  # "key=value" lines
    staging: list[str] = field(default_factory=list)  # modules replaced by ./staging paths
    pinned: dict[str, str] = field(default_factory=dict)  # other replaces: "mod[ ver]" -> "mod ver"
    requires: dict[str, str] = field(default_factory=dict)


_BLOCK = re.compile(r"^(\w+)\s*\(\s*$(.*?)^\)", re.M | re.S)
_LINE = re.compile(r"^(\w+)\s+([^(\s].*)$", re.M)


def _directives(text: str, name: str) -> list[str]:
    """The entries of every ``name`` directive, block or single line, comments removed."""
    text = re.sub(r"//.*", "", text)
    out: list[str] = []
    for m in _BLOCK.finditer(text):
        if m.group(1) == name:
            out += [ln.strip() for ln in m.group(2).splitlines() if ln.strip()]
    for m in _LINE.finditer(text):
        if m.group(1) == name:
            out.append(m.group(2).strip())
    return out


def parse_upstream(text: str) -> UpstreamGoMod:
    gos = _directives(text, "go")
    if not gos:
        raise GoModError("no go directive in the k8s.io/kubernetes go.mod")
    if not re.search(rf"^module\s+{re.escape(KUBERNETES)}\s*$", text, re.M):
        raise GoModError(f"not the go.mod of {KUBERNETES} (its module line differs)")
    mod = UpstreamGoMod(go=gos[0])
    mod.godebug = _directives(text, "godebug")
    for entry in _directives(text, "require"):
        parts = entry.split()
        if len(parts) >= 2:
            mod.requires[parts[0]] = parts[1]
    for entry in _directives(text, "replace"):
        left, sep, right = entry.partition("=>")
        if not sep:
            raise GoModError(f"unreadable replace directive: {entry!r}")
        left, right = left.strip(), right.strip()
        target = right.split()
        if target and target[0].startswith("./staging/"):
            mod.staging.append(left.split()[0])
        elif target and target[0].startswith(("./", "../", "/")):
            raise GoModError(f"replace to a local path outside staging: {entry!r}")
        elif len(target) == 2:
            mod.pinned[left] = right
    if not mod.staging:
        raise GoModError("no staging modules (replace ... => ./staging/...) in the k8s.io/kubernetes go.mod")
    return mod


def _ver_key(v: str) -> tuple[int, ...]:
    m = re.match(r"v(\d+)\.(\d+)\.(\d+)", v)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def _go_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _raise_minimums(up: UpstreamGoMod) -> dict[str, str]:
    """Requirements to add: each :data:`DEPENDENCY_MINIMUMS` module the release needs at a lower version."""
    out = {}
    for module, minimum in DEPENDENCY_MINIMUMS.items():
        have = up.requires.get(module)
        pinned = next((v.split()[1] for k, v in up.pinned.items() if k.split()[0] == module), None)
        current = pinned or have
        if current is not None and _ver_key(current) < _ver_key(minimum):
            out[module] = minimum
    return out


def build_gomod(release: Release, upstream_text: str) -> str:
    """The go.mod of the build module for ``release``, from ``upstream_text`` (the release's own
    k8s.io/kubernetes go.mod)."""
    up = parse_upstream(upstream_text)
    minimums = _raise_minimums(up)
    go = up.go if _go_key(up.go) >= _MIN_MODULE_GO else "1.24"
    lines = [
        "// Written by testbed.controlplane.gomod: builds the control-plane commands of",
        f"// {KUBERNETES} {release.version} from the Go module proxy. Do not edit; regenerate.",
        f"module {BUILD_MODULE}",
        "",
        f"go {go}",
        "",
    ]
    # the release's GODEBUG defaults follow its own go line, not this module's
    debug = up.godebug or [f"default=go{'.'.join(up.go.split('.')[:2])}"]
    lines += ["godebug (", *(f"\t{d}" for d in debug), ")", ""]
    lines += ["require (", f"\t{KUBERNETES} {release.version}"]
    lines += [f"\t{m} {v}" for m, v in sorted(minimums.items())]
    lines += [")", "", "tool ("]
    lines += [f"\t{KUBERNETES}/cmd/{c}" for c in COMMANDS]
    lines += [")", "", "replace ("]
    lines += [f"\t{m} => {m} {release.staging_version}" for m in up.staging]
    substituted = set()
    for left, right in up.pinned.items():
        module = left.split()[0]
        if module in SUBSTITUTES:
            right = f"{SUBSTITUTES[module]} {right.split()[1]}"
            substituted.add(module)
        if module in minimums and _ver_key(right.split()[1]) < _ver_key(minimums[module]):
            right = f"{right.split()[0]} {minimums[module]}"
        lines.append(f"\t{left} => {right}")
    for module, version in up.requires.items():
        if module in SUBSTITUTES and module not in substituted:
            lines.append(f"\t{module} => {SUBSTITUTES[module]} {version}")
    lines += [")", ""]
    return "\n".join(lines)


def needs_checklinkname_off(release: Release) -> bool:
    """Releases whose dependencies pull runtime symbols by ``go:linkname`` that Go 1.23+ refuses
    by default."""
    return release.minor <= 30


def ldflags(release: Release, commit: str = "", build_date: str = "1970-01-01T00:00:00Z") -> str:
    """The linker flags: the release's version in the packages that report it (what ``/version`` and
    ``--version`` print), symbol tables stripped."""
    values = {
        "gitVersion": release.version,
        "gitMajor": "1",
        "gitMinor": str(release.minor),
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    if commit:
        values["gitCommit"] = commit
    flags = ["-s", "-w"]
    if needs_checklinkname_off(release):
        flags.append(LDFLAGS_CHECKLINKNAME_OFF)
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in values.items()]
    return " ".join(flags)
