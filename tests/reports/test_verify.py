"""verify: a good bundle passes; tampering with any artifact fails with a message naming it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reports import attest, bundle
from reports.bundle import ENVELOPE, PUBLIC_KEY, STATEMENT
from reports.manifest import MANIFEST, render, sha256_file, walk
from reports.verify import verify


@pytest.fixture
def signed(run_dir: Path, tmp_path: Path, keypair: tuple[Path, Path]) -> Path:
    return bundle.build(run_dir, tmp_path / "bundle", signing_key=keypair[0])


def _attachment(root: Path) -> Path:
    return next(p for p in (root / "attachments").rglob("*") if p.is_file())


def _append(path: Path, text: str = "\n") -> None:
    with path.open("a") as f:
        f.write(text)


def test_good_bundle_verifies_with_given_and_bundled_key(signed: Path, keypair: tuple[Path, Path]) -> None:
    given = verify(signed, public_key=keypair[1])
    assert given.ok, given.report()
    assert given.signed and given.key_source == "given"
    assert given.files_checked == len(walk(signed)[0]) - 1  # all but the manifest itself
    bundled = verify(signed)
    assert bundled.ok and bundled.key_source == "bundled"
    assert any("--key" in w for w in bundled.warnings)


def test_unsigned_bundle_verifies_with_a_warning(run_dir: Path, tmp_path: Path) -> None:
    result = verify(bundle.build(run_dir, tmp_path / "u"))
    assert result.ok and not result.signed
    assert any("unsigned" in w for w in result.warnings)


def test_unsigned_bundle_fails_when_a_key_is_required(
    run_dir: Path, tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    result = verify(bundle.build(run_dir, tmp_path / "u"), public_key=keypair[1])
    assert not result.ok
    assert any(ENVELOPE in e and "unsigned" in e for e in result.errors)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda r: _append(r / "summary.md", "all green\n"), "summary.md: sha256 mismatch"),
        (lambda r: _append(r / "summary.html"), "summary.html: sha256 mismatch"),
        (
            lambda r: (r / "results.json").write_text(
                (r / "results.json").read_text().replace('"failed"', '"passed"')
            ),
            "results.json: sha256 mismatch",
        ),
        (lambda r: _append(_attachment(r), "x"), "/mem.json: sha256 mismatch"),
        (
            lambda r: _append(r / "self-assessment.yaml", "# edited\n"),
            "self-assessment.yaml: sha256 mismatch",
        ),
        (lambda r: _append(r / STATEMENT), f"{STATEMENT}: sha256 mismatch"),
        (lambda r: (r / "extra.txt").write_text("hi"), "extra.txt: unlisted file"),
        (lambda r: (r / "attachments" / "more.log").write_text("hi"), "attachments/more.log: unlisted file"),
        (lambda r: (r / "environment.json").unlink(), "environment.json: missing"),
        (lambda r: _attachment(r).unlink(), "/mem.json: missing"),
        (lambda r: (r / MANIFEST).unlink(), f"{MANIFEST}: missing"),
    ],
    ids=[
        "summary.md",
        "summary.html",
        "results.json",
        "attachment",
        "self-assessment",
        "statement",
        "extra-file",
        "extra-attachment",
        "deleted-file",
        "deleted-attachment",
        "deleted-manifest",
    ],
)
def test_tampering_is_caught_and_named(signed: Path, tamper: Callable[[Path], None], named: str) -> None:
    tamper(signed)
    result = verify(signed)
    assert not result.ok
    assert any(named in e for e in result.errors), result.errors


def test_edited_statement_breaks_the_signature(signed: Path, keypair: tuple[Path, Path]) -> None:
    stmt = json.loads((signed / STATEMENT).read_text())
    stmt["predicate"]["result"] = "PASSED"
    (signed / STATEMENT).write_text(json.dumps(stmt))
    result = verify(signed, public_key=keypair[1])
    assert any(f"{ENVELOPE}: signed payload differs from {STATEMENT}" in e for e in result.errors)
    assert any(f"{STATEMENT}: predicate result (PASSED) disagrees" in e for e in result.errors)


def test_tampered_signature_is_caught(signed: Path, keypair: tuple[Path, Path]) -> None:
    env = json.loads((signed / ENVELOPE).read_text())
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 0xFF
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    (signed / ENVELOPE).write_text(json.dumps(env))
    _reseal(signed)  # even with a manifest that matches, the signature itself must fail
    result = verify(signed, public_key=keypair[1])
    assert result.errors == [f"{ENVELOPE}: signature does not verify with the given public key"]


def test_wrong_public_key_fails(signed: Path, other_keypair: tuple[Path, Path]) -> None:
    result = verify(signed, public_key=other_keypair[1])
    assert result.errors == [f"{ENVELOPE}: signature does not verify with the given public key"]


def test_resealed_manifest_is_caught_by_the_statement(signed: Path) -> None:
    """Editing an artifact and rewriting the manifest to match still fails: subjects pin it."""
    _append(signed / "results.json")
    _reseal(signed)
    result = verify(signed)
    assert result.errors == [f"results.json: digest in {STATEMENT} differs from {MANIFEST}"]


def test_swapped_key_and_resigned_payload_fails_with_pinned_key(
    signed: Path, keypair: tuple[Path, Path], other_keypair: tuple[Path, Path]
) -> None:
    """Re-signing a bundle with another key fools only a check against the bundled key."""
    other = attest.load_private_key(other_keypair[0])
    envelope = attest.sign_envelope((signed / STATEMENT).read_bytes(), other)
    (signed / ENVELOPE).write_text(json.dumps(envelope))
    (signed / PUBLIC_KEY).write_bytes(other_keypair[1].read_bytes())
    _reseal(signed)
    assert verify(signed).ok  # integrity holds against the bundled key...
    pinned = verify(signed, public_key=keypair[1])
    assert not pinned.ok  # ...but not against the signer's real key
    assert pinned.errors == [f"{ENVELOPE}: signature does not verify with the given public key"]


def test_symlink_is_rejected(signed: Path) -> None:
    (signed / "link").symlink_to(signed / "summary.md")
    result = verify(signed)
    assert any("link: not a regular file" in e for e in result.errors)


def test_not_a_directory(tmp_path: Path) -> None:
    result = verify(tmp_path / "nope")
    assert not result.ok and "not a bundle directory" in result.errors[0]


def _reseal(root: Path) -> None:
    files = [f for f in walk(root)[0] if f != MANIFEST]
    (root / MANIFEST).write_text(render({f: sha256_file(root / f) for f in files}))
