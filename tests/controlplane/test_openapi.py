"""The OpenAPI-definitions generator's parts that need no build: which packages it reads per release,
and the overlay it hands to ``go build``."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from testbed.controlplane import build as build_mod
from testbed.controlplane.gomod import Release
from testbed.controlplane.openapi import (
    GENERATED_FILE,
    OpenAPIError,
    excluded_modules,
    input_packages,
    overlay,
    same_violations,
    tagged,
)

# The kube-apiserver target's filter in build/root/Makefile.generated_files of 1.18-1.2x (shape only).
MAKEFILE_TEXT = """\
APIMACHINERY_DEFAULT_TAG_FILES := vendor/k8s.io/apimachinery/pkg/apis/meta/v1/%

KUBE_OPENAPI_TAG_FILES := $(filter-out vendor/k8s.io/code-generator/% vendor/k8s.io/sample-apiserver/%, $(A))
AGGREGATOR_OPENAPI_TAG_FILES := $(filter $(APIMACHINERY_DEFAULT_TAG_FILES) vendor/k8s.io/kube-aggregator/%, x)
"""


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_file_is_tagged_only_with_a_comment_tag_line_and_the_openapi_tag():
    assert tagged("// +k8s:openapi-gen=true\npackage v1\n")
    assert tagged("// +k8s:deepcopy-gen=package\n// +k8s:openapi-gen=false\npackage v1\n")
    assert tagged("//+k8s:deepcopy-gen=package\n\n// Foo x\n// +k8s:openapi-gen=true\ntype Foo struct{}\n")
    assert not tagged("// +k8s:deepcopy-gen=package\npackage v1\n")  # another generator only
    # the tag quoted inside a string, no comment tag line: the Makefile's first grep drops the file
    assert not tagged('package gen\nconst tag = "+k8s:openapi-gen=true"\n')
    assert not tagged("package v1\n")


def test_the_excluded_modules_come_from_the_release_makefile():
    assert excluded_modules(MAKEFILE_TEXT) == ["k8s.io/code-generator", "k8s.io/sample-apiserver"]
    later = MAKEFILE_TEXT.replace("vendor/k8s.io/sample-apiserver/%", "vendor/k8s.io/sample-apiserver/% "
                                  "vendor/k8s.io/kube-openapi/%")
    assert excluded_modules(later)[-1] == "k8s.io/kube-openapi"
    with pytest.raises(OpenAPIError, match="KUBE_OPENAPI_TAG_FILES"):
        excluded_modules("all:\n\techo nothing\n")
    with pytest.raises(OpenAPIError, match="unexpected filter pattern 'pkg/%'"):
        excluded_modules("KUBE_OPENAPI_TAG_FILES := $(filter-out pkg/%, $(ALL_K8S_TAG_FILES))\n")


def test_inputs_are_the_tagged_packages_of_the_tree_and_its_staging_modules(tmp_path: Path):
    k = tmp_path / "kubernetes"
    _write(k, "pkg/apis/abac/v0/doc.go", "// +k8s:openapi-gen=true\npackage v0\n")
    _write(k, "pkg/apis/core/doc.go", "// +k8s:deepcopy-gen=package\npackage core\n")
    _write(k, "pkg/apis/core/types.go", "package core\n")
    _write(k, "_output/local/x/doc.go", "// +k8s:openapi-gen=true\npackage x\n")  # build output: skipped
    _write(k, ".git/y/doc.go", "// +k8s:openapi-gen=true\npackage y\n")
    _write(k, "vendor/k8s.io/old/doc.go", "// +k8s:openapi-gen=true\npackage old\n")
    _write(k, "pkg/deep/_inner/doc.go", "// +k8s:openapi-gen=true\npackage inner\n")  # only top-level _ skips
    _write(k, "README.md", "// +k8s:openapi-gen=true\n")  # not Go
    api = tmp_path / "api"
    _write(api, "core/v1/doc.go", "// +k8s:openapi-gen=true\npackage v1\n")
    _write(api, "core/v1/types.go", "// +k8s:openapi-gen=true\npackage v1\n")  # one entry per package
    _write(api, "apps/v1/doc.go", "// +k8s:deepcopy-gen=package\n// +k8s:openapi-gen=true\npackage v1\n")
    _write(api, "_skipped_only_at_kubernetes_top/doc.go", "// +k8s:openapi-gen=true\npackage s\n")
    gen = tmp_path / "code-generator"
    _write(gen, "examples/v1/doc.go", "// +k8s:openapi-gen=true\npackage v1\n")
    inputs = input_packages(k, {"k8s.io/api": api, "k8s.io/code-generator": gen}, ["k8s.io/code-generator"])
    assert inputs == [
        "k8s.io/api/_skipped_only_at_kubernetes_top",
        "k8s.io/api/apps/v1",
        "k8s.io/api/core/v1",
        "k8s.io/kubernetes/pkg/apis/abac/v0",
        "k8s.io/kubernetes/pkg/deep/_inner",
    ]


def test_the_overlay_adds_the_generated_file_to_the_module_package(tmp_path: Path):
    target = "/cache/mod/k8s.io/kubernetes@v1.20.15/pkg/generated/openapi/" + GENERATED_FILE
    doc = overlay({target: tmp_path / GENERATED_FILE})
    assert doc == {"Replace": {target: str(tmp_path / GENERATED_FILE)}}
    assert json.loads(json.dumps(doc)) == doc  # what go build -overlay reads
    with pytest.raises(OpenAPIError, match="absolute"):
        overlay({"pkg/generated/openapi/" + GENERATED_FILE: tmp_path / "x.go"})
    with pytest.raises(OpenAPIError, match="absolute"):
        overlay({target: Path("relative.go")})



def test_the_api_rule_report_is_compared_with_the_releases_known_violations(tmp_path: Path):
    report, known = tmp_path / "report.txt", tmp_path / "known.list"
    report.write_text("API rule violation: names_match,k8s.io/api/core/v1,PodSpec,Foo\n")
    known.write_text("API rule violation: names_match,k8s.io/api/core/v1,PodSpec,Foo\n")
    assert same_violations(report, known) is True
    known.write_text("API rule violation: names_match,k8s.io/api/core/v1,PodSpec,Bar\n")
    assert same_violations(report, known) is False  # another set of types was read than upstream's
    assert same_violations(report, tmp_path / "absent.list") is None


def test_a_release_without_definitions_or_makefile_fails_the_build_and_leaves_no_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module that lacks both the generated file and the Makefile that says how to make it: the build
    stops with the reason before compiling, and the cache holds no entry of the release."""
    monkeypatch.setenv("HAMI_CONFORMANCE_CACHE", str(tmp_path / "cache"))
    kdir = tmp_path / "kubernetes"
    _write(kdir, "pkg/generated/openapi/doc.go", "package openapi\n")
    gomod = tmp_path / "kubernetes.mod"
    gomod.write_text("module k8s.io/kubernetes\n\ngo 1.15\n\n"
                     "replace k8s.io/api => ./staging/src/k8s.io/api\n")
    fake = tmp_path / "fakebin"
    fake.mkdir()
    go = fake / "go"
    # the go commands the build runs before compiling, answered from the files above; a compile fails
    go.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        '"env GOVERSION") echo go1.26.0 ;;\n'
        f'"mod download") echo \'{{"Path": "k8s.io/kubernetes", "Version": "v1.20.15", '
        f'"GoMod": "{gomod}", "Dir": "{kdir}"}}\' ;;\n'
        '"mod tidy") ;;\n'
        '*) echo "unexpected go $*" >&2; exit 1 ;;\n'
        "esac\n")
    go.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    with pytest.raises(build_mod.BuildError, match=re.escape(
            "lacks zz_generated.openapi.go and its build/root/Makefile.generated_files")):
        build_mod.build(Release(20, 15), out=io.StringIO())
    assert build_mod.load(Release(20, 15)) is None
    assert [p.name for p in (tmp_path / "cache" / "k8s").iterdir() if p.name != ".build.lock"] == []
