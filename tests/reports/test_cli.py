"""``python -m reports``: exit codes and messages of build, verify and keygen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reports.cli import main
from reports.runio import RUN_FILE


def test_keygen_build_verify(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "keys" / "ed25519.pem"
    assert main(["keygen", str(key)]) == 0
    pub = tmp_path / "keys" / "ed25519.pub.pem"
    assert pub.exists() and key.stat().st_mode & 0o077 == 0  # private key readable by owner only
    assert main(["keygen", str(key)]) == 4  # never overwrites a key
    out = tmp_path / "bundle"
    assert main(["build", str(run_dir), "--out", str(out), "--key", str(key)]) == 0
    assert main(["verify", str(out), "--key", str(pub)]) == 0
    assert "OK:" in capsys.readouterr().out
    (out / "summary.md").write_text("tampered")
    assert main(["verify", str(out), "--key", str(pub)]) == 1
    assert "summary.md: sha256 mismatch" in capsys.readouterr().err


def test_bad_input_exits_4_and_writes_nothing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads((run_dir / RUN_FILE).read_text())
    doc["cases"][1]["capability"] = "teleport"
    (run_dir / RUN_FILE).write_text(json.dumps(doc))
    out = tmp_path / "bundle"
    assert main(["build", str(run_dir), "--out", str(out)]) == 4
    err = capsys.readouterr().err
    assert 'cases[1].capability: Unsupported value: "teleport"' in err
    assert "no bundle was written" in err
    assert not out.exists()


def test_usage_error_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["build"])
    assert exc.value.code == 4
    assert "--out" in capsys.readouterr().err


def test_module_entry_point(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    proc = subprocess.run(
        [sys.executable, "-m", "reports", "build", str(run_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "MANIFEST.sha256").is_file()


def test_build_carries_a_sensitivity_file_of_the_runs_commit(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    commit = json.loads((run_dir / RUN_FILE).read_text())["metadata"]["projectCommit"]
    doc = {"commit": commit, "faults": 1, "caught": 1, "sensitivity": 1.0, "rows": [
        {"fault": "f", "component": "shim", "expected_rules": ["ENF-MEM-2"], "failed_cases": ["t"],
         "verdict": "FAILED", "caught_by_expected_rule": True, "reason": ""}]}
    good = tmp_path / "s.json"
    good.write_text(json.dumps(doc))
    assert main(["build", str(run_dir), "--out", str(tmp_path / "b"), "--sensitivity", str(good)]) == 0
    assert json.loads((tmp_path / "b" / "sensitivity.json").read_text()) == doc
    assert main(["verify", str(tmp_path / "b")]) == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**doc, "commit": "f" * 40}))
    capsys.readouterr()
    assert main(["build", str(run_dir), "--out", str(tmp_path / "c"), "--sensitivity", str(other)]) == 4
    assert "another commit than this run" in capsys.readouterr().err and not (tmp_path / "c").exists()
