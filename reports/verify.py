"""Check a bundle: every byte accounted for, the statement agreeing with it, the signature valid.

Order of trust: the manifest pins every file; the statement's subjects must equal the manifest's
artifacts, so rewriting an artifact and the manifest together is still caught; the DSSE signature
pins the statement, so rewriting all three is caught when the bundle is signed. A bundle verified
with its own bundled key only proves integrity; pass the signer's key to prove origin.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports import attest, manifest
from reports import sensitivity as sens
from reports.bundle import ATTESTATION_FILES, ENVELOPE, PUBLIC_KEY, STATEMENT
from reports.model import Run, RunInputError
from reports.summary import decide


@dataclass
class VerifyResult:
    bundle: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files_checked: int = 0
    signed: bool = False
    key_source: str = ""  # "given", "bundled" or "" when no signature was checked
    verdict: str = ""  # the verdict recomputed from run.json, when it agrees everywhere

    @property
    def ok(self) -> bool:
        return not self.errors

    def report(self) -> str:
        lines = [f"{'OK' if self.ok else 'FAILED'}: {self.bundle}"]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.ok:
            how = f"signature verified with the {self.key_source} public key" if self.signed else "unsigned"
            lines.append(f"  {self.files_checked} files match the manifest; {how}")
            if self.verdict:
                lines.append(
                    f"  verdict {self.verdict}: run.json, results.json, summary.md and the statement agree"
                )
        return "\n".join(lines)


def _load_json(path: Path, result: VerifyResult) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        result.errors.append(f"{path.name}: cannot be read as JSON ({e})")
        return None


def _check_files(root: Path, result: VerifyResult) -> dict[str, str] | None:
    manifest_path = root / manifest.MANIFEST
    if not manifest_path.is_file():
        result.errors.append(f"{manifest.MANIFEST}: missing")
        return None
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        result.errors.append(f"{manifest.MANIFEST}: unreadable ({e})")
        return None
    entries, problems = manifest.parse(text)
    result.errors += problems
    files, odd = manifest.walk(root)
    result.errors += [f"{p}: not a regular file (links and special files are not allowed)" for p in odd]
    present = set(files) - {manifest.MANIFEST}
    for rel in sorted(present - set(entries)):
        result.errors.append(f"{rel}: unlisted file (not in {manifest.MANIFEST})")
    for rel, digest in sorted(entries.items()):
        if rel not in present:
            result.errors.append(f"{rel}: missing (listed in {manifest.MANIFEST})")
            continue
        actual = manifest.sha256_file(root / rel)
        result.files_checked += 1
        if actual != digest:
            result.errors.append(f"{rel}: sha256 mismatch (manifest {digest[:12]}…, file {actual[:12]}…)")
    return entries


def _check_statement(root: Path, entries: dict[str, str], result: VerifyResult) -> None:
    path = root / STATEMENT
    if not path.is_file():
        result.errors.append(f"{STATEMENT}: missing")
        return
    stmt = _load_json(path, result)
    if stmt is None:
        return
    if not isinstance(stmt, dict) or stmt.get("_type") != attest.STATEMENT_TYPE:
        result.errors.append(f"{STATEMENT}: _type is not {attest.STATEMENT_TYPE}")
        return
    if stmt.get("predicateType") != attest.PREDICATE_TYPE:
        result.errors.append(f"{STATEMENT}: predicateType is not {attest.PREDICATE_TYPE}")
    subjects: dict[str, str] = {}
    for s in stmt.get("subject") or []:
        if isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict):
            subjects[s["name"]] = str(s["digest"].get("sha256", ""))
        else:
            result.errors.append(f"{STATEMENT}: malformed subject {s!r}")
    artifacts = {k: v for k, v in entries.items() if k not in ATTESTATION_FILES}
    for name in sorted(set(subjects) - set(artifacts)):
        result.errors.append(f"{STATEMENT}: subject {name} is not in {manifest.MANIFEST}")
    for name in sorted(set(artifacts) - set(subjects)):
        result.errors.append(f"{name}: not a subject of {STATEMENT}")
    for name in sorted(set(subjects) & set(artifacts)):
        if subjects[name] != artifacts[name]:
            result.errors.append(f"{name}: digest in {STATEMENT} differs from {manifest.MANIFEST}")
    _check_predicate(root, stmt.get("predicate"), result)


def _check_predicate(root: Path, predicate: Any, result: VerifyResult) -> None:
    """The predicate must tell the same story as results.json (both are derived from one run)."""
    results_path = root / "results.json"
    if not isinstance(predicate, dict) or not results_path.is_file():
        return
    results = _load_json(results_path, result)
    if not isinstance(results, dict):
        return
    summary = results.get("summary") or {}
    pairs = [
        ("result", predicate.get("result"), results.get("verdict")),
        ("passedTests", len(predicate.get("passedTests") or []), summary.get("passed")),
        ("failedTests", len(predicate.get("failedTests") or []), summary.get("failed")),
    ]
    for label, in_statement, in_results in pairs:
        if in_statement != in_results:
            result.errors.append(
                f"{STATEMENT}: predicate {label} ({in_statement}) disagrees with results.json ({in_results})"
            )


def _check_verdict(root: Path, entries: dict[str, str], result: VerifyResult) -> None:
    """One verdict everywhere: recompute it from run.json with the function that made it, and
    hold results.json and summary.md to it; a referenced sensitivity.json must be in the bundle
    and of the run's commit."""
    if "run.json" not in entries or "results.json" not in entries:
        result.errors.append("run.json and results.json must both be in the bundle")
        return
    raw, results = _load_json(root / "run.json", result), _load_json(root / "results.json", result)
    if raw is None or not isinstance(results, dict):
        return
    try:
        run = Run.from_dict(raw)
    except RunInputError as e:
        result.errors.append(f"run.json: not a valid run ({e})")
        return
    decision = decide(run)
    if results.get("verdict") != decision.verdict:
        result.errors.append(
            f"results.json: verdict {results.get('verdict')} differs from {decision.verdict} "
            "recomputed from run.json"
        )
    md = root / "summary.md"
    stated = md.read_text(encoding="utf-8", errors="replace") if md.is_file() else ""
    if f"**Verdict: {decision.verdict}**" not in stated:
        result.errors.append(f"summary.md: does not state the verdict {decision.verdict}")
    ref = results.get("sensitivity")
    if ref is not None:
        name = ref.get("file", sens.FILE) if isinstance(ref, dict) else sens.FILE
        if name not in entries:
            result.errors.append(f"results.json references {name}, which is not in {manifest.MANIFEST}")
        else:
            doc = _load_json(root / name, result)
            try:
                sens.validate(doc, commit=run.metadata.project_commit)
            except RunInputError as e:
                result.errors.append(f"{name}: {e}")
    elif sens.FILE in entries:
        result.errors.append(f"{sens.FILE}: in the bundle but not referenced by results.json")
    if not result.errors:
        result.verdict = decision.verdict


def _check_signature(root: Path, public_key: Path | None, result: VerifyResult) -> None:
    envelope_path = root / ENVELOPE
    if not envelope_path.is_file():
        if public_key is not None:
            result.errors.append(f"{ENVELOPE}: missing, but a public key was given (the bundle is unsigned)")
        else:
            result.warnings.append("bundle is unsigned: integrity only, no proof of origin")
        return
    result.signed = True
    envelope = _load_json(envelope_path, result)
    if envelope is None:
        return
    try:
        payload_type, payload = attest.envelope_payload(envelope)
    except ValueError as e:
        result.errors.append(f"{ENVELOPE}: malformed envelope ({e})")
        return
    if payload_type != attest.PAYLOAD_TYPE:
        result.errors.append(f"{ENVELOPE}: payloadType is {payload_type!r}, expected {attest.PAYLOAD_TYPE}")
    statement_path = root / STATEMENT
    if statement_path.is_file() and payload != statement_path.read_bytes():
        result.errors.append(f"{ENVELOPE}: signed payload differs from {STATEMENT}")
    if public_key is not None:
        key_path, result.key_source = Path(public_key), "given"
    else:
        key_path, result.key_source = root / PUBLIC_KEY, "bundled"
        result.warnings.append("signature checked with the bundled key: pass --key to pin the signer")
    try:
        key = attest.load_public_key(key_path)
    except attest.KeyFileError as e:
        result.errors.append(f"signature: {e}")
        return
    if not attest.verify_envelope(envelope, key):
        result.errors.append(f"{ENVELOPE}: signature does not verify with the {result.key_source} public key")


def verify(bundle_dir: Path | str, *, public_key: Path | None = None) -> VerifyResult:
    root = Path(bundle_dir)
    result = VerifyResult(bundle=root)
    if not root.is_dir():
        result.errors.append(f"{root}: not a bundle directory")
        return result
    entries = _check_files(root, result)
    if entries is not None:
        _check_statement(root, entries, result)
        _check_verdict(root, entries, result)
    _check_signature(root, public_key, result)
    return result
