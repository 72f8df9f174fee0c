"""Merge the bundles of a CI matrix (one per vendor x minor cell) into one matrix bundle.

``hami-conformance matrix merge BUNDLE... -o OUT`` (also ``python -m reports matrix merge``):

1. every input bundle must verify (manifest, statement, one verdict, signature with ``--key`` when
   given), all must be of one profile and profile version, and no vendor x minor cell may come
   twice; otherwise a :class:`MatrixError` names the bundle and nothing is written;
2. the cells' runs become one run (cases, attachments, the earliest start and latest finish, the
   union of what was filtered or interrupted), built into a bundle by :mod:`reports.bundle`, so
   the matrix bundle has the same layout as a cell's (heat map in ``matrix.svg`` and in
   ``summary.html``), is manifest-hashed, optionally signed, and verifies with ``verify``;
3. beside that, covered by the same manifest and statement: ``matrix.json`` (per cell: verdict,
   counts, source bundle digest, server version, sensitivity; per rule: pass rate across the cells
   where it ran; failures grouped by rule; flaky cases) and ``matrix.html`` (the same for people,
   with the heat map).

Flaky cases come from the run's retry (``conformance.retry``): a failed case whose message carries
:data:`FLAKY_NOTE` passed when re-run once. It stays failed in every count; the matrix names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from reports import bundle as bundle_mod
from reports import manifest, render
from reports import sensitivity as sens
from reports.model import CaseResult, Run, RunInputError, RunMetadata
from reports.summary import count, decide, matrix, worst
from reports.verify import verify

MATRIX_API = "hami-conformance/matrix/v1"
FLAKY_NOTE = "[flaky: failed, then passed when re-run once]"
STABLE_NOTE = "[failed again when re-run once]"


class MatrixError(RuntimeError):
    """Input that cannot be merged; the message names the bundle."""


@dataclass
class CellBundle:
    path: Path
    run: Run
    results: dict[str, Any]
    verdict: str
    digest: str  # SHA-256 of the bundle's MANIFEST.sha256: pins every file of the cell
    sensitivity: dict[str, Any] | None = None
    cells: list[tuple[str, str]] = field(default_factory=list)


def _load(path: Path, public_key: Path | None) -> CellBundle:
    result = verify(path, public_key=public_key)
    if not result.ok:
        raise MatrixError(f"{path}: does not verify: {'; '.join(result.errors[:3])}")
    try:
        raw = json.loads((path / "run.json").read_bytes())
        results = json.loads((path / "results.json").read_bytes())
        run = Run.from_dict(raw, base_dir=path)
    except (OSError, ValueError, RunInputError) as e:
        raise MatrixError(f"{path}: unreadable run: {e}") from None
    # the cases' attachments as the bundle holds them (run.json keeps the paths of the original run)
    held = {(c["vendor"], c["minor"], c["caseId"]): c.get("attachments") or [] for c in results["cases"]}
    for case in run.cases:
        case.attachments = [str(path / rel) for rel in held.get(case.key, [])]
    doc = None
    if (path / sens.FILE).is_file():
        doc = json.loads((path / sens.FILE).read_bytes())
    return CellBundle(
        path=path,
        run=run,
        results=results,
        verdict=result.verdict,
        digest=manifest.sha256_file(path / manifest.MANIFEST),
        sensitivity=doc,
        cells=sorted(matrix(run)),
    )


def check(bundles: Sequence[CellBundle]) -> None:
    """One profile and version; every cell once."""
    if not bundles:
        raise MatrixError("no bundle to merge")
    first = bundles[0].run.metadata
    seen: dict[tuple[str, str], Path] = {}
    for b in bundles:
        meta = b.run.metadata
        if (meta.profile, meta.profile_version) != (first.profile, first.profile_version):
            raise MatrixError(
                f"{b.path}: profile {meta.profile} {meta.profile_version} differs from "
                f"{first.profile} {first.profile_version} of {bundles[0].path}"
            )
        if not b.cells:
            raise MatrixError(f"{b.path}: holds no case, so no cell")
        for cell in b.cells:
            if cell in seen:
                raise MatrixError(f"{b.path}: cell {cell[0]} {cell[1]} is also in {seen[cell]}")
            seen[cell] = b.path


def _intersection(lists: Iterable[list[str] | None]) -> list[str] | None:
    sets = [set(x) for x in lists if x is not None]
    return sorted(set.intersection(*sets)) if sets else None


def merged_run(bundles: Sequence[CellBundle], run_id: str) -> Run:
    metas = [b.run.metadata for b in bundles]
    commits = sorted({m.project_commit for m in metas})
    selection: dict[str, Any] = {
        "filtered": any((m.selection or {}).get("filtered") for m in metas),
        "interrupted": any((m.selection or {}).get("interrupted") for m in metas),
        "reasons": [
            f"{b.path.parent.name}: {r}"
            for b in bundles
            for r in (b.run.metadata.selection or {}).get("reasons", [])
        ],
        "interruptedBy": "; ".join(
            str(s.get("interruptedBy")) for s in (m.selection or {} for m in metas) if s.get("interrupted")
        ),
        "cells": len(bundles),
    }
    finished = [m.finished for m in metas]
    meta = RunMetadata(
        run_id=run_id,
        project_commit=commits[0] if len(commits) == 1 else "mixed:" + ",".join(c[:12] for c in commits),
        started=min(m.started for m in metas),
        finished=None if None in finished else max(f for f in finished if f),
        tool_version=metas[0].tool_version,
        backend=metas[0].backend if len({m.backend for m in metas}) == 1 else "mixed",
        hami_namespace=metas[0].hami_namespace,
        chart_values=metas[0].chart_values,
        profile=metas[0].profile,
        profile_version=metas[0].profile_version,
        url=os.environ.get("HAMI_CONFORMANCE_RUN_URL", metas[0].url),
        product=metas[0].product,
        # rules every cell's profile required; each cell's own list is in matrix.json
        required_rules=_intersection(m.required_rules for m in metas),
        selection=selection,
        system_under_test=metas[0].system_under_test if len(commits) == 1 else {"commits": commits},
    )
    env = bundles[0].run.environment
    cases: list[CaseResult] = [c for b in bundles for c in b.run.cases]
    return Run(metadata=meta, environment=env, cases=cases, base_dir=None)


def is_flaky(case: CaseResult) -> bool:
    return case.outcome == "failed" and FLAKY_NOTE in case.message


def rule_stats(run: Run) -> list[dict[str, Any]]:
    """Per rule: in how many cells it ran (passed or failed) and in how many all its cases passed."""
    by_rule: dict[str, dict[tuple[str, str], list[CaseResult]]] = {}
    for c in run.cases:
        by_rule.setdefault(c.rule_id, {}).setdefault((c.vendor, c.minor), []).append(c)
    out = []
    for rule, cells in sorted(by_rule.items()):
        decided = {k: v for k, v in cells.items() if any(c.outcome in ("passed", "failed") for c in v)}
        passed = [k for k, v in decided.items() if all(c.outcome == "passed" for c in v)]
        failed = sorted(
            f"{v} {m}" for (v, m), cs in decided.items() if any(c.outcome == "failed" for c in cs)
        )
        first = next(iter(cells.values()))[0]
        out.append(
            {
                "rule": rule,
                "text": first.rule_text,
                "requirement": sorted({c.requirement for cs in cells.values() for c in cs}),
                "cells": len(cells),
                "cellsDecided": len(decided),
                "cellsPassed": len(passed),
                "passRate": round(len(passed) / len(decided), 4) if decided else None,
                "failedIn": failed,
                "flakyIn": sorted(
                    {f"{c.vendor} {c.minor}" for cs in cells.values() for c in cs if is_flaky(c)}
                ),
            }
        )
    return out


def failures_by_rule(run: Run, attachments: dict[tuple[str, str, str], list[str]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in run.cases:
        if c.outcome != "failed":
            continue
        out.setdefault(c.rule_id, []).append(
            {
                "cell": f"{c.vendor} {c.minor}",
                "case": c.case_id,
                "requirement": c.requirement,
                "flaky": is_flaky(c),
                "reproduced": STABLE_NOTE in c.message,
                "message": c.message,
                "attachments": attachments.get(c.key, []),
            }
        )
    return dict(sorted(out.items()))


def matrix_document(
    bundles: Sequence[CellBundle], run: Run, attachments: dict[tuple[str, str, str], list[str]]
) -> dict[str, Any]:
    cells = []
    for b in bundles:
        for vendor, minor in b.cells:
            in_cell = [c for c in b.run.cases if (c.vendor, c.minor) == (vendor, minor)]
            cells.append(
                {
                    "vendor": vendor,
                    "minor": minor,
                    "verdict": b.verdict,
                    "counts": count(in_cell).to_dict(),
                    "flaky": sum(is_flaky(c) for c in in_cell),
                    "bundle": b.path.parent.name + "/" + b.path.name,
                    "bundleManifestSha256": b.digest,
                    "runId": b.run.metadata.run_id,
                    "projectCommit": b.run.metadata.project_commit,
                    "serverVersion": str(b.run.environment.server_version.get("gitVersion", "")),
                    "requiredRules": b.run.metadata.required_rules,
                    "sensitivity": sens.summary(b.sensitivity) if b.sensitivity else None,
                }
            )
    decision = decide(run)
    return {
        "apiVersion": MATRIX_API,
        "profile": run.metadata.profile,
        "profileVersion": run.metadata.profile_version,
        "verdict": decision.verdict,
        "worstCellVerdict": worst(b.verdict for b in bundles),
        "cells": sorted(cells, key=lambda c: (c["vendor"], int(c["minor"].split(".")[1]))),
        "rules": rule_stats(run),
        "failuresByRule": failures_by_rule(run, attachments),
        "flakyCases": [c.test_name for c in run.cases if is_flaky(c)],
    }


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
    "td,th{border:1px solid #d0d7de;padding:.25em .5em;text-align:left}.bar{background:#e5534b;height:.8em}"
    ".ok{background:#2da44e;height:.8em}.flaky{color:#9a6700;font-weight:bold}"
)


def matrix_html(doc: dict[str, Any], run: Run) -> str:
    h = escape
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>HAMi conformance matrix</title>"
        f"<style>{_CSS}</style></head><body>",
        "<h1>HAMi conformance matrix</h1>",
        f'<p id="verdict">Verdict: <strong>{h(doc["verdict"])}</strong> (worst cell: '
        f'{h(doc["worstCellVerdict"])}); profile {h(doc["profile"])} {h(doc["profileVersion"])}; '
        f"{len(doc['cells'])} cell(s).</p>",
        '<h2 id="heatmap">Vendor x Kubernetes minor</h2>',
        render.heatmap_svg(run),
        '<h2 id="cells">Cells</h2><table><tr><th>cell</th><th>verdict</th><th>passed</th><th>failed</th>'
        "<th>unknown</th><th>skipped</th><th>flaky</th><th>server</th><th>sensitivity</th></tr>",
    ]
    for c in doc["cells"]:
        s = c["sensitivity"]
        shown = f"{s['caught']}/{s['faults']} ({s['sensitivity']:.0%})" if s else "not measured"
        k = c["counts"]
        parts.append(
            f'<tr class="cell"><td>{h(c["vendor"])} {h(c["minor"])}</td><td>{h(c["verdict"])}</td>'
            f"<td>{k['passed']}</td><td>{k['failed']}</td><td>{k['unknown']}</td><td>{k['skipped']}</td>"
            f"<td>{c['flaky']}</td><td>{h(c['serverVersion'])}</td><td>{h(shown)}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        '<h2 id="rules">Pass rate per rule across cells</h2><table><tr><th>rule</th><th>pass rate</th>'
        "<th></th><th>failed in</th><th>flaky in</th></tr>"
    )
    for r in sorted(doc["rules"], key=lambda r: (r["passRate"] is None, r["passRate"] or 0, r["rule"])):
        rate = r["passRate"]
        shown_rate = "–" if rate is None else f"{r['cellsPassed']}/{r['cellsDecided']} ({rate:.0%})"
        bar = (
            f'<div style="width:8em;display:flex"><div class="ok" style="width:{rate * 100:.0f}%"></div>'
            f'<div class="bar" style="width:{100 - rate * 100:.0f}%"></div></div>'
            if rate is not None
            else ""
        )
        parts.append(
            f'<tr class="rule"><td><code>{h(r["rule"])}</code></td>'
            f"<td>{shown_rate}</td>"
            f"<td>{bar}</td><td>{h(', '.join(r['failedIn']))}</td>"
            f'<td class="flaky">{h(", ".join(r["flakyIn"]))}</td></tr>'
        )
    parts.append("</table>")
    parts.append('<h2 id="failures">Failures by rule</h2>')
    if not doc["failuresByRule"]:
        parts.append("<p>None.</p>")
    for rule, items in doc["failuresByRule"].items():
        parts.append(f"<h3><code>{h(rule)}</code> ({len(items)})</h3><ul>")
        for f in items:
            tag = ' <span class="flaky">FLAKY</span>' if f["flaky"] else ""
            links = " ".join(f'<a href="{h(a)}">{h(a.rsplit("/", 1)[-1])}</a>' for a in f["attachments"])
            parts.append(
                f"<li>{h(f['cell'])}{tag}: <code>{h(f['case'])}</code>: {h(f['message'][:400])} {links}</li>"
            )
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def merge(
    bundle_dirs: Sequence[Path | str],
    out_dir: Path | str,
    *,
    signing_key: Path | None = None,
    public_key: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the matrix bundle of ``bundle_dirs`` at ``out_dir``; :class:`MatrixError` (nothing
    written) for input that does not verify, of mixed profiles or with a cell twice."""
    from reports import attest

    bundles = [_load(Path(p).absolute(), public_key) for p in bundle_dirs]
    check(bundles)
    stamp = min(b.run.metadata.started for b in bundles).replace(":", "").replace("-", "")
    digest = hashlib.sha256("".join(sorted(b.digest for b in bundles)).encode()).hexdigest()[:8]
    run = merged_run(bundles, run_id=f"matrix-{stamp}-{digest}")
    key = attest.load_private_key(signing_key) if signing_key is not None else None
    plan = bundle_mod.plan_attachments(run)
    attachments = {k: [rel for _src, rel in v] for k, v in plan.items()}
    doc = matrix_document(bundles, run, attachments)

    out = Path(out_dir).absolute()
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise MatrixError(f"{out}: exists and is not empty (overwrite it explicitly)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    try:
        # written first, so the bundle writer lists them in the manifest and the statement
        (tmp / "matrix.json").write_bytes(_json_bytes(doc))
        (tmp / "matrix.html").write_text(matrix_html(doc, run), encoding="utf-8")
        bundle_mod._write_bundle(run, tmp, plan, key, None)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "bundle")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return out
