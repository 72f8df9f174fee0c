"""The seams of ../shared/ARCHITECTURE.md, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _offenders(package: str, forbidden: set[str], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(allowed):
            continue
        hit = _imports(path) & forbidden
        if hit:
            bad.append(f"{rel}: {sorted(hit)}")
    return bad


def test_the_stack_never_knows_it_is_emulated():
    # hami_stack/images/testbed_catalog.py is the chart's image map FOR the testbed, kept with the images
    assert _offenders("hami_stack", {"testbed", "conformance"},
                      allowed=("hami_stack/images/testbed_",)) == []


def test_suites_reach_backends_only_through_their_fixtures():
    assert _offenders("conformance", {"testbed", "hami_stack"}, allowed=("conformance/backends/",)) == []


def test_the_testbed_does_not_depend_on_the_stack_or_the_suites():
    assert _offenders("testbed", {"hami_stack", "conformance"}) == []


def test_shared_libraries_depend_on_neither_side():
    for pkg in ("kubeclient", "kubeletapi"):
        assert _offenders(pkg, {"testbed", "hami_stack", "conformance"}) == []
