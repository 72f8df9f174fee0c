"""The build-module generator: text in, text out, no build and no network."""

from __future__ import annotations

import re

import pytest

from testbed.controlplane.gomod import (
    BUILD_MODULE,
    COMMANDS,
    GoModError,
    Release,
    build_gomod,
    ldflags,
    parse_upstream,
)

# The shape of k8s.io/kubernetes' go.mod in a recent release (module list shortened).
RECENT = """// generated
module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/modern-go/reflect2 v1.0.2
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-scheduler => ./staging/src/k8s.io/kube-scheduler
)
"""

# An older release: go 1.13, no godebug, every dependency pinned by replace, a dead vanity domain.
OLD = """module k8s.io/kubernetes

go 1.13

require (
\tgithub.com/json-iterator/go v1.1.8
\tgithub.com/modern-go/reflect2 v1.0.1
\tk8s.io/api v0.0.0
\tvbom.ml/util v0.0.0-20160121211510-db5cfe13f5cc
)

replace (
\tgithub.com/json-iterator/go => github.com/json-iterator/go v1.1.8
\tgithub.com/modern-go/reflect2 => github.com/modern-go/reflect2 v1.0.1
\tgolang.org/x/sys => golang.org/x/sys v0.0.0-20200201011859-915c9c3d4ccf // pinned
\tk8s.io/api => ./staging/src/k8s.io/api
\tvbom.ml/util => vbom.ml/util v0.0.0-20160121211510-db5cfe13f5cc
)
"""


def _block(text: str, name: str) -> list[str]:
    m = re.search(rf"^{name} \((.*?)^\)", text, re.M | re.S)
    assert m, f"no {name} block in:\n{text}"
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip()]


def test_staging_modules_are_replaced_by_the_releases_v0_versions():
    out = build_gomod(Release(33, 13), RECENT)
    assert f"module {BUILD_MODULE}" in out
    assert _block(out, "replace") == [
        "k8s.io/api => k8s.io/api v0.33.13",
        "k8s.io/client-go => k8s.io/client-go v0.33.13",
        "k8s.io/kube-scheduler => k8s.io/kube-scheduler v0.33.13",
    ]
    assert _block(out, "require") == ["k8s.io/kubernetes v1.33.13"]
    assert _block(out, "tool") == [f"k8s.io/kubernetes/cmd/{c}" for c in COMMANDS]
    # the release's GODEBUG defaults, and a go line new enough for the tool directive
    assert _block(out, "godebug") == ["default=go1.24"]
    assert re.search(r"^go 1\.24\.0$", out, re.M)


def test_old_releases_keep_their_pins_raise_minimums_and_substitute_dead_domains():
    out = build_gomod(Release(18, 19), OLD)
    rep = _block(out, "replace")
    assert "k8s.io/api => k8s.io/api v0.18.19" in rep
    # pinned below the Go 1.2x minimum: raised, in the replace as in the require
    assert "github.com/modern-go/reflect2 => github.com/modern-go/reflect2 v1.0.2" in rep
    assert "github.com/json-iterator/go => github.com/json-iterator/go v1.1.12" in rep
    assert "golang.org/x/sys => golang.org/x/sys v0.6.0" in rep
    assert "github.com/modern-go/reflect2 v1.0.2" in _block(out, "require")
    assert "vbom.ml/util => github.com/fvbommel/util v0.0.0-20160121211510-db5cfe13f5cc" in rep
    # an old go line: the module says 1.24 (tool directive), GODEBUG defaults stay the release's
    assert re.search(r"^go 1\.24$", out, re.M)
    assert _block(out, "godebug") == ["default=go1.13"]


def test_minimums_leave_newer_versions_alone():
    out = build_gomod(Release(33, 13), RECENT)
    assert "reflect2" not in out  # the release asks for v1.0.2 already: nothing added


def test_parse_errors_name_what_was_wrong():
    with pytest.raises(GoModError, match=r"not the go\.mod of k8s\.io/kubernetes"):
        parse_upstream(RECENT.replace("module k8s.io/kubernetes", "module example.com/other"))
    with pytest.raises(GoModError, match="no staging modules"):
        parse_upstream("module k8s.io/kubernetes\n\ngo 1.20\n")
    with pytest.raises(GoModError, match="no go directive"):
        parse_upstream("module k8s.io/kubernetes\n")
    with pytest.raises(GoModError, match="local path outside staging"):
        parse_upstream(RECENT.replace("replace (", "replace (\n\texample.com/x => ../x"))
    with pytest.raises(GoModError, match="not a Kubernetes release"):
        Release.parse("1.33")


def test_parse_reads_single_line_directives_and_ignores_comments():
    up = parse_upstream("module k8s.io/kubernetes\ngo 1.21\nreplace k8s.io/api => ./staging/src/k8s.io/api\n"
                        "// replace k8s.io/x => ./staging/src/k8s.io/x\n")
    assert up.go == "1.21" and up.staging == ["k8s.io/api"]


def test_ldflags_carry_the_release_version_for_both_version_packages():
    flags = ldflags(Release(33, 13), commit="abc123")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.33.13" in flags
        assert f"-X {pkg}.gitMinor=33" in flags
        assert f"-X {pkg}.gitCommit=abc123" in flags
    assert Release.parse("v1.18.19").staging_version == "v0.18.19"
