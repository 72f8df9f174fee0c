"""Build the certification bundle of one run.

Layout (every file is listed in ``MANIFEST.sha256``; every file but the attestation files is an
in-toto subject)::

    summary.md  summary.html  matrix.svg       human views
    results.json  environment.json  run.json   machine views; run.json is the validated input
    self-assessment.yaml                        CNCF AI conformance checklist, filled in
    sensitivity.json                            the self-test's score at this commit, when given
    attachments/<vendor>/<minor>/<case>/<file>  probe JSON, pod events, component logs
    statement.intoto.json                       in-toto Statement v1, test-result predicate
    statement.intoto.dsse.json  signing-key.pub.pem   only when a signing key is given
    MANIFEST.sha256

The bundle is assembled in a temporary sibling directory and renamed into place, so ``out_dir``
either holds a complete bundle or is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reports import attest, manifest, render, selfassess
from reports import sensitivity as sens
from reports.model import Run, RunInputError
from reports.runio import load_run
from reports.summary import ai_requirements_of, count, decide, matrix

STATEMENT = "statement.intoto.json"
ENVELOPE = "statement.intoto.dsse.json"
PUBLIC_KEY = "signing-key.pub.pem"
ATTESTATION_FILES = (STATEMENT, ENVELOPE, PUBLIC_KEY)
RESULTS_API = "hami-conformance/results/v1"
ENVIRONMENT_API = "hami-conformance/environment/v1"

CaseKey = tuple[str, str, str]


class BundleError(RuntimeError):
    """The output location cannot take a bundle (exists, not writable)."""


def _safe(name: str, limit: int = 80) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned[:limit] or "file"


def plan_attachments(run: Run) -> dict[CaseKey, list[tuple[Path, str]]]:
    """Source file and bundle path of every attachment; fails before anything is written."""
    plan: dict[CaseKey, list[tuple[Path, str]]] = {}
    for i, case in enumerate(run.cases):
        case_dir = (
            f"attachments/{case.vendor}/{case.minor}/"
            f"{_safe(case.case_id, 60)}-{hashlib.sha256(case.case_id.encode()).hexdigest()[:8]}"
        )
        used: set[str] = set()
        entries: list[tuple[Path, str]] = []
        for j, raw in enumerate(case.attachments):
            src = Path(raw)
            if not src.is_absolute():
                if run.base_dir is None:
                    raise RunInputError(
                        f"cases[{i}].attachments[{j}]",
                        f'Invalid value: "{raw}": relative path but the run has no directory',
                    )
                src = run.base_dir / src
            if not src.is_file():
                raise RunInputError(
                    f"cases[{i}].attachments[{j}]", f'Not found: "{raw}" is not a readable file'
                )
            name = _safe(src.name)
            stem, dot, ext = name.rpartition(".")
            candidate, n = name, 1
            while candidate in used:
                n += 1
                candidate = f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}"
            used.add(candidate)
            entries.append((src, f"{case_dir}/{candidate}"))
        if entries:
            plan[case.key] = entries
    return plan


def results_document(
    run: Run, attachments: dict[CaseKey, list[str]], sensitivity: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    meta = run.metadata
    cells = matrix(run)
    decision = decide(run)
    doc = {
        "apiVersion": RESULTS_API,
        "run": {
            "runId": meta.run_id,
            "started": meta.started,
            "finished": meta.finished,
            "complete": meta.complete,
            "projectCommit": meta.project_commit,
            "toolVersion": meta.tool_version,
            "backend": meta.backend,
            "profile": meta.profile,
            "profileVersion": meta.profile_version,
            "requiredRules": meta.required_rules,
            "selection": meta.selection,
            "systemUnderTest": meta.system_under_test,
        },
        "verdict": decision.verdict,
        "decision": decision.to_dict(),
        "summary": count(run.cases).to_dict(),
        "matrix": [
            {"vendor": v, "minor": m, **cells[(v, m)].to_dict()}
            for v in run.vendors
            for m in run.minors
            if (v, m) in cells
        ],
        "cases": [
            {
                "name": c.test_name,
                "vendor": c.vendor,
                "minor": c.minor,
                "capability": c.capability,
                "caseId": c.case_id,
                "ruleId": c.rule_id,
                "ruleText": c.rule_text,
                "requirement": c.requirement,
                "outcome": c.outcome,
                "durationSeconds": c.duration_s,
                "message": c.message,
                "attachments": attachments.get(c.key, []),
                "aiRequirements": list(ai_requirements_of(c)),
            }
            for c in run.cases
        ],
    }
    if sensitivity is not None:
        doc["sensitivity"] = sens.summary(sensitivity)
    return doc


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def _write_bundle(
    run: Run,
    root: Path,
    plan: dict[CaseKey, list[tuple[Path, str]]],
    key: Ed25519PrivateKey | None,
    sensitivity: Mapping[str, Any] | None = None,
) -> None:
    attachments: dict[CaseKey, list[str]] = {}
    for case_key, entries in plan.items():
        for src, rel in entries:
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            attachments.setdefault(case_key, []).append(rel)

    meta = run.metadata
    env_doc = {
        "apiVersion": ENVIRONMENT_API,
        "projectCommit": meta.project_commit,
        "toolVersion": meta.tool_version,
        "backend": meta.backend,
        "hamiNamespace": meta.hami_namespace,
        "chartValues": meta.chart_values,
        "systemUnderTest": meta.system_under_test,
        **run.environment.to_dict(),
    }
    files: dict[str, bytes] = {
        "run.json": _json(run.to_dict()),
        "environment.json": _json(env_doc),
        "results.json": _json(results_document(run, attachments, sensitivity)),
        "matrix.svg": (render.heatmap_svg(run) + "\n").encode(),
        "summary.md": render.summary_markdown(run, attachments=attachments, sensitivity=sensitivity).encode(),
        "summary.html": render.summary_html(run, attachments=attachments, sensitivity=sensitivity).encode(),
        "self-assessment.yaml": selfassess.render(run, attachments=attachments).encode(),
    }
    if sensitivity is not None:
        files[sens.FILE] = _json(sensitivity)
    for name, data in files.items():
        (root / name).write_bytes(data)

    subjects = {rel: manifest.sha256_file(root / rel) for rel in manifest.walk(root)[0]}
    statement = attest.statement(
        run,
        subjects,
        environment_digest=subjects["environment.json"],
        sensitivity=sens.summary(sensitivity) if sensitivity is not None else None,
    )
    payload = _json(statement)
    (root / STATEMENT).write_bytes(payload)
    if key is not None:
        (root / ENVELOPE).write_bytes(_json(attest.sign_envelope(payload, key)))
        (root / PUBLIC_KEY).write_bytes(attest.public_pem(key.public_key()))

    entries = {rel: manifest.sha256_file(root / rel) for rel in manifest.walk(root)[0]}
    (root / manifest.MANIFEST).write_text(manifest.render(entries), encoding="utf-8")


def build(
    run: Run | Path | str,
    out_dir: Path | str,
    *,
    signing_key: Path | None = None,
    overwrite: bool = False,
    allow_unfinished: bool = False,
    sensitivity: Mapping[str, Any] | None = None,
) -> Path:
    """Write the bundle of ``run`` (a ``Run`` or a run directory) at ``out_dir`` and return its path.

    ``sensitivity`` (the self-test's document, see :mod:`reports.sensitivity`) is checked against
    the run's commit and written as ``sensitivity.json``, covered like every other artifact.

    Raises ``RunInputError`` for bad input (a sensitivity document included),
    ``attest.KeyFileError`` for an unusable key and ``BundleError`` when ``out_dir`` is taken; in
    every case nothing is left at ``out_dir``.
    """
    if not isinstance(run, Run):
        run = load_run(Path(run), allow_unfinished=allow_unfinished)
    key = attest.load_private_key(signing_key) if signing_key is not None else None
    plan = plan_attachments(run)
    checked = None
    if sensitivity is not None:
        checked = sens.validate(sensitivity, commit=run.metadata.project_commit)

    out = Path(out_dir).absolute()
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out}: exists and is not empty (overwrite it explicitly)")
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a directory")
    created = _make_parents(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        _write_bundle(run, tmp, plan, key, checked)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a bundle is meant to be shared
        if out.exists() and any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "bundle")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)  # onto a missing or empty directory: atomic on POSIX
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return out


def _make_parents(parent: Path) -> list[Path]:
    """mkdir -p, returning what was created (outermost first) so a failed build can undo it."""
    missing: list[Path] = []
    p = parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    missing.reverse()
    for d in missing:
        d.mkdir()
    return missing
