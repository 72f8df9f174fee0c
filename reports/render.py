"""Human views of a run: ``summary.md``, ``summary.html`` and the matrix heat map (SVG, drawn here).

No plotting or templating dependency: the SVG is a grid of rectangles, the HTML is assembled from
escaped fragments, and the page is self-contained (inline CSS and SVG) so it survives being mailed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from html import escape
from typing import Any

from reports.model import AI_REQUIREMENTS, CaseResult, Run
from reports.summary import Counts, Decision, ai_cases, ai_status, anchor, count, decide, matrix

COLOURS = {
    "failed": "#d1242f",
    "unknown": "#d4a72c",
    "passed": "#2da44e",
    "skipped": "#8c959f",
    "empty": "#ffffff",
}
CELL_W, CELL_H, LEFT, TOP, LEGEND_W = 76, 42, 104, 34, 82


def _cell_text(c: Counts) -> str:
    """'passed/decided' where decided excludes skipped cases, e.g. 12/14."""
    return f"{c.passed}/{c.total - c.skipped}" if c.total else "–"


def _cell_detail(c: Counts) -> str:
    return f"{c.passed} passed, {c.failed} failed, {c.unknown} unknown, {c.skipped} skipped"


def heatmap_svg(run: Run) -> str:
    """Vendors down, minors across; each cell coloured by its worst outcome."""
    vendors, minors, cells = run.vendors, run.minors, matrix(run)
    width = LEFT + max(CELL_W * max(len(minors), 1), LEGEND_W * 4) + 10  # the legend must fit too
    height = TOP + CELL_H * max(len(vendors), 1) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img" '
        'aria-label="vendor by Kubernetes minor outcome matrix">',
    ]
    for j, minor in enumerate(minors):
        x = LEFT + j * CELL_W + CELL_W / 2
        parts.append(f'<text x="{x:.0f}" y="{TOP - 10}" text-anchor="middle">{escape(minor)}</text>')
    for i, vendor in enumerate(vendors):
        y = TOP + i * CELL_H
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + CELL_H / 2 + 4:.0f}" text-anchor="end">{escape(vendor)}</text>'
        )
        for j, minor in enumerate(minors):
            c = cells.get((vendor, minor), Counts())
            x = LEFT + j * CELL_W
            fill = COLOURS[c.status]
            ink = "#000" if c.status in ("unknown", "empty") else "#fff"
            parts.append(
                f"<g><title>{escape(vendor)} {escape(minor)}: {escape(_cell_detail(c))}</title>"
                f'<rect x="{x + 1}" y="{y + 1}" width="{CELL_W - 2}" height="{CELL_H - 2}" rx="3" '
                f'fill="{fill}" stroke="#d0d7de"/>'
                f'<text x="{x + CELL_W / 2:.0f}" y="{y + CELL_H / 2 + 4:.0f}" text-anchor="middle" '
                f'fill="{ink}">{escape(_cell_text(c))}</text></g>'
            )
    ly = TOP + CELL_H * max(len(vendors), 1) + 16
    lx = LEFT
    for outcome in ("passed", "failed", "unknown", "skipped"):
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{COLOURS[outcome]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{ly + 10}">{outcome}</text>')
        lx += LEGEND_W
    parts.append("</svg>")
    return "".join(parts)


# --- shared facts ------------------------------------------------------------------------------


def _env_facts(run: Run) -> list[tuple[str, str]]:
    env, meta = run.environment, run.metadata
    sv = env.server_version
    devices_by_type = Counter(f"{d.vendor} {d.type}".strip() for d in env.devices)
    drivers = sorted({f"{d.vendor} {d.version}" for d in env.drivers})
    kubelets = sorted(set(env.kubelet_versions.values()))
    return [
        ("Run", meta.run_id),
        ("Started / finished", f"{meta.started} / {meta.finished or 'never (incomplete run)'}"),
        ("Project commit", meta.project_commit),
        *_sut_facts(run),
        ("Tool version", meta.tool_version),
        ("Cluster backend", meta.backend),
        ("HAMi namespace", meta.hami_namespace),
        ("Profile", f"{meta.profile} {meta.profile_version}".strip() or "-"),
        ("Server version", str(sv.get("gitVersion", "-"))),
        ("Nodes", str(len(env.nodes))),
        ("Kubelet versions", ", ".join(kubelets) or "-"),
        ("Devices", ", ".join(f"{n} x {t}" for t, n in sorted(devices_by_type.items())) or "-"),
        ("Drivers", ", ".join(drivers) or "-"),
    ]


def _sut_facts(run: Run) -> list[tuple[str, str]]:
    """What exactly was tested: a modified checkout is named as such, with a digest of the change."""
    sut = run.metadata.system_under_test or {}
    if not sut:
        return [("Working tree", "not recorded")]
    if sut.get("dirty"):
        files = sut.get("dirtyFiles") or []
        tree = (f"MODIFIED: uncommitted changes, diff sha256 {sut.get('diffSha256', '?')}"
                + (f" ({len(files)} file(s): {', '.join(map(str, files[:10]))}"
                   + (", ..." if len(files) > 10 else "") + ")" if files else ""))
    else:
        tree = "clean (exactly the commit)"
    out = [("Working tree", tree)]
    if sut.get("chartValuesSha256"):
        out.append(("Chart values sha256 (effective)", str(sut["chartValuesSha256"])))
    for image, digest in sorted((sut.get("imageDigests") or {}).items()):
        out.append((f"Image {image}", f"sha256 {digest}"))
    if sut.get("shimSha256"):
        out.append(("Shim libvgpu.so sha256", str(sut["shimSha256"])))
    for image, image_id in sorted((sut.get("runningImages") or {}).items()):
        out.append((f"Running image {image}", str(image_id) or "(no image ID reported)"))
    return out


def _verdict_line(decision: Decision) -> str:
    return "; ".join(decision.reasons)


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _not_passed(run: Run, outcome: str) -> list[CaseResult]:
    return [c for c in run.cases if c.outcome == outcome]


# --- Markdown ----------------------------------------------------------------------------------


def summary_markdown(
    run: Run,
    *,
    attachments: dict[tuple[str, str, str], list[str]],
    sensitivity: Mapping[str, Any] | None = None,
) -> str:
    totals = count(run.cases)
    cells = matrix(run)
    decision = decide(run)
    out = [
        "# HAMi conformance report",
        "",
        f"**Verdict: {decision.verdict}**"
        + ("" if run.metadata.complete else " (the run did not finish; results are incomplete)"),
        "",
        f"Why: {_md(_verdict_line(decision))}.",
        "",
        f"{totals.total} cases: {totals.passed} passed, {totals.failed} failed, "
        f"{totals.unknown} unknown (could not apply), {totals.skipped} skipped.",
        "",
        "## Vendor x Kubernetes minor",
        "",
        "Each cell: passed/failed/unknown/skipped. Heat map: `matrix.svg`.",
        "",
        "| vendor | " + " | ".join(run.minors) + " |",
        "|---|" + "---|" * len(run.minors),
    ]
    for vendor in run.vendors:
        row = []
        for minor in run.minors:
            c = cells.get((vendor, minor))
            row.append(f"{c.passed}/{c.failed}/{c.unknown}/{c.skipped}" if c else "–")
        out.append(f"| {vendor} | " + " | ".join(row) + " |")
    out += ["", "## Failures", ""]
    failures = _not_passed(run, "failed")
    if failures:
        out += ["| vendor | minor | rule | requirement | case | message |", "|---|---|---|---|---|---|"]
        for c in failures:
            out.append(
                f"| {c.vendor} | {c.minor} | `{c.rule_id}` {_md(c.rule_text)} | {c.requirement} | "
                f"`{_md(c.case_id)}` | {_md(c.message)} |"
            )
    else:
        out.append("None.")
    out += ["", "## Required rules that did not run", ""]
    out += [f"- `{r}`" for r in decision.not_run] or ["None."]
    out += ["", "## Unknown (could not apply)", ""]
    unknowns = _not_passed(run, "unknown")
    if unknowns:
        for c in unknowns:
            out.append(f"- {c.vendor} {c.minor} `{c.rule_id}` `{_md(c.case_id)}`: {_md(c.message)}")
    else:
        out.append("None.")
    out += ["", "## CNCF AI conformance requirements", "", "| requirement | status | note |", "|---|---|---|"]
    mapped = ai_cases(run)
    for req in AI_REQUIREMENTS:
        status, note = ai_status(mapped[req])
        out.append(f"| `{req}` | {status} | {_md(note)} |")
    out += ["", "Details: `self-assessment.yaml`.", ""]
    if sensitivity is not None:
        out += _sensitivity_markdown(sensitivity)
    out += ["## Environment", ""]
    out += [f"- **{_md(k).replace('*', chr(92) + '*')}**: {_md(v)}" for k, v in _env_facts(run)]
    if run.environment.nodes:
        out += ["", "| node | kubelet | capacity |", "|---|---|---|"]
        for n in run.environment.nodes:
            cap = ", ".join(f"{k}={v}" for k, v in sorted(n.capacity.items()))
            out.append(f"| {_md(n.name)} | {_md(n.kubelet_version or '-')} | {_md(cap)} |")
    attached = sum(len(v) for v in attachments.values())
    out += ["", f"Attachments: {attached} file(s) under `attachments/`; per case in `results.json`.", ""]
    return "\n".join(out)


def _sensitivity_markdown(doc: Mapping[str, Any]) -> list[str]:
    out = [
        "## Sensitivity of the suites (self-test)",
        "",
        f"Score **{float(doc['sensitivity']):.3f}**: {doc['caught']} of {doc['faults']} deliberate faults "
        f"turned into a FAILED verdict by an expected rule, at commit `{doc['commit']}`. "
        "Details: `sensitivity.json`.",
        "",
        "| fault | expected rules | failed cases | verdict | caught by right rule |",
        "|---|---|---|---|---|",
    ]
    for row in doc.get("rows") or []:
        caught = "yes" if row["caught_by_expected_rule"] else f"no: {row.get('reason') or '-'}"
        out.append(
            f"| `{_md(row['fault'])}` | {_md(', '.join(row['expected_rules']))} | "
            f"{_md(', '.join(row['failed_cases'])) or '-'} | {_md(row['verdict'])} | {_md(caught)} |"
        )
    return [*out, ""]


def _sensitivity_html(doc: Mapping[str, Any]) -> str:
    rows = [
        '<h2 id="sensitivity">Sensitivity of the suites (self-test)</h2>',
        f"<p>Score <strong>{float(doc['sensitivity']):.3f}</strong>: {_h(str(doc['caught']))} of "
        f"{_h(str(doc['faults']))} deliberate faults turned into a FAILED verdict by an expected rule, "
        f'at commit <code>{_h(str(doc["commit"]))}</code>. Details: <a href="sensitivity.json">'
        "sensitivity.json</a>.</p>",
        "<table><tr><th>fault</th><th>expected rules</th><th>failed cases</th><th>verdict</th>"
        "<th>caught by right rule</th></tr>",
    ]
    for row in doc.get("rows") or []:
        caught = "yes" if row["caught_by_expected_rule"] else f"no: {row.get('reason') or '-'}"
        rows.append(
            f"<tr><td><code>{_h(row['fault'])}</code></td><td>{_h(', '.join(row['expected_rules']))}</td>"
            f"<td>{_h(', '.join(row['failed_cases']))}</td><td>{_h(row['verdict'])}</td>"
            f"<td>{_h(caught)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328;max-width:1200px}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}code{font-size:90%}
.verdict{font-size:1.4rem;font-weight:bold;padding:.4rem .8rem;border-radius:6px;display:inline-block}
.PASSED{background:#dafbe1}.WARNED{background:#fff8c5}.FAILED{background:#ffebe9}
.INCOMPLETE{background:#ddf4ff}
td.failed{background:#ffebe9}td.unknown{background:#fff8c5}td.passed{background:#dafbe1}td.skipped{background:#f6f8fa}
"""


def _h(text: str) -> str:
    return escape(text, quote=True)


def _cases_table(cases: list[CaseResult], attachments: dict[tuple[str, str, str], list[str]]) -> str:
    rows = [
        "<table><tr><th>vendor</th><th>minor</th><th>rule</th><th>requirement</th><th>case</th>"
        "<th>message</th><th>evidence</th></tr>"
    ]
    for c in cases:
        links = " ".join(
            f'<a href="{_h(p)}">{_h(p.rsplit("/", 1)[-1])}</a>' for p in attachments.get(c.key, [])
        )
        rows.append(
            f'<tr id="{anchor(c)}"><td>{_h(c.vendor)}</td><td>{_h(c.minor)}</td>'
            f"<td><code>{_h(c.rule_id)}</code> {_h(c.rule_text)}</td><td>{_h(c.requirement)}</td>"
            f"<td><code>{_h(c.case_id)}</code></td><td>{_h(c.message)}</td><td>{links}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def summary_html(
    run: Run,
    *,
    attachments: dict[tuple[str, str, str], list[str]],
    sensitivity: Mapping[str, Any] | None = None,
) -> str:
    totals = count(run.cases)
    cells = matrix(run)
    decision = decide(run)
    result = decision.verdict
    body = [
        "<h1>HAMi conformance report</h1>",
        f'<p><span class="verdict {result}">{result}</span>',
        "" if run.metadata.complete else " <strong>The run did not finish; results are incomplete.</strong>",
        "</p>",
        f'<p class="why">Why: {_h(_verdict_line(decision))}.</p>',
        f"<p>{totals.total} cases: {totals.passed} passed, {totals.failed} failed, "
        f"{totals.unknown} unknown (could not apply), {totals.skipped} skipped.</p>",
        '<h2 id="matrix">Vendor x Kubernetes minor</h2>',
        heatmap_svg(run),
        "<p>Each cell: passed/failed/unknown/skipped.</p>",
        "<table><tr><th>vendor</th>" + "".join(f"<th>{_h(m)}</th>" for m in run.minors) + "</tr>",
    ]
    for vendor in run.vendors:
        row = [f"<tr><th>{_h(vendor)}</th>"]
        for minor in run.minors:
            c = cells.get((vendor, minor))
            if c is None:
                row.append("<td>–</td>")
            else:
                row.append(f'<td class="{c.status}">{c.passed}/{c.failed}/{c.unknown}/{c.skipped}</td>')
        body.append("".join(row) + "</tr>")
    body.append("</table>")
    failures, unknowns = _not_passed(run, "failed"), _not_passed(run, "unknown")
    body.append('<h2 id="failures">Failures</h2>')
    body.append(_cases_table(failures, attachments) if failures else "<p>None.</p>")
    body.append('<h2 id="not-run">Required rules that did not run</h2>')
    body.append(
        "<ul>" + "".join(f"<li><code>{_h(r)}</code></li>" for r in decision.not_run) + "</ul>"
        if decision.not_run
        else "<p>None.</p>"
    )
    body.append('<h2 id="unknown">Unknown (could not apply)</h2>')
    body.append(_cases_table(unknowns, attachments) if unknowns else "<p>None.</p>")
    body.append('<h2 id="ai-conformance">CNCF AI conformance requirements</h2>')
    body.append("<table><tr><th>requirement</th><th>status</th><th>note</th><th>cases</th></tr>")
    mapped = ai_cases(run)
    for req in AI_REQUIREMENTS:
        status, note = ai_status(mapped[req])
        links = ", ".join(
            f'<a href="#{anchor(c)}">{_h(c.rule_id)}</a>'
            for c in mapped[req]
            if c.outcome in ("failed", "unknown")
        )
        body.append(
            f'<tr id="ai-{req}"><td><code>{req}</code></td><td>{_h(status)}</td><td>{_h(note)}</td>'
            f"<td>{links}</td></tr>"
        )
    body.append('</table><p>Details: <a href="self-assessment.yaml">self-assessment.yaml</a>.</p>')
    if sensitivity is not None:
        body.append(_sensitivity_html(sensitivity))
    body.append('<h2 id="environment">Environment</h2><table>')
    body += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in _env_facts(run)]
    body.append('</table><p>Full capture: <a href="environment.json">environment.json</a>.</p>')
    if run.environment.nodes:
        body.append("<table><tr><th>node</th><th>kubelet</th><th>capacity</th><th>allocatable</th></tr>")
        for n in run.environment.nodes:
            cap = ", ".join(f"{k}={v}" for k, v in sorted(n.capacity.items()))
            alloc = ", ".join(f"{k}={v}" for k, v in sorted(n.allocatable.items()))
            body.append(
                f"<tr><td>{_h(n.name)}</td><td>{_h(n.kubelet_version or '-')}</td><td>{_h(cap)}</td>"
                f"<td>{_h(alloc)}</td></tr>"
            )
        body.append("</table>")
    body.append('<h2 id="cases">All cases</h2>')
    body.append(_all_cases_html(run, attachments))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>HAMi conformance report {_h(run.metadata.run_id)}</title><style>{_CSS}</style></head>"
        "<body>" + "\n".join(body) + "</body></html>\n"
    )


def _all_cases_html(run: Run, attachments: dict[tuple[str, str, str], list[str]]) -> str:
    rows = [
        "<table><tr><th>vendor</th><th>minor</th><th>capability</th><th>rule</th><th>case</th>"
        "<th>outcome</th><th>seconds</th></tr>"
    ]
    for c in run.cases:
        # Failures and unknowns already own the anchor in their own tables.
        ident = "" if c.outcome in ("failed", "unknown") else f' id="{anchor(c)}"'
        rows.append(
            f"<tr{ident}><td>{_h(c.vendor)}</td><td>{_h(c.minor)}</td><td>{_h(c.capability)}</td>"
            f"<td><code>{_h(c.rule_id)}</code></td><td><code>{_h(c.case_id)}</code></td>"
            f'<td class="{c.outcome}">{c.outcome}</td><td>{c.duration_s:.2f}</td></tr>'
        )
    rows.append("</table>")
    return "".join(rows)
