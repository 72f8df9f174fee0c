"""The main job's one verdict: exit codes documented and derived from the bundle, --sensitivity
refused for another commit, and (on the testbed) a run filtered to one case is INCOMPLETE in the
table, the exit code, the bundle and verify, with the system under test identified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conformance.backends import Options
from conformance.cli import BAD_INPUT, ERROR, Cell, cell_verdict, exit_code
from conformance.recording import project_commit, working_tree
from testbed.clients import helm_path, helm_skip_reason

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_help_documents_every_exit_code() -> None:
    out = _cli("--help").stdout + _cli("run", "--help").stdout
    for line in ("0  PASSED", "1  FAILED", "2  INCOMPLETE", "3  WARNED", "4  bad input", "5  ERROR"):
        assert out.count(line) == 2, line
    assert "--sensitivity FILE" in out and "nvidia-scheduling-only" in out
    readme = (REPO / "README.md").read_text()
    for row in ("| 0 | PASSED |", "| 1 | FAILED |", "| 2 | INCOMPLETE |", "| 3 | WARNED |",
                "| 4 | bad input |", "| 5 | ERROR |"):
        assert row in readme, row


def _cell(tmp_path: Path, name: str, verdict: str | None, code: int) -> Cell:
    run_dir = tmp_path / name
    if verdict is not None:
        (run_dir / "bundle").mkdir(parents=True)
        (run_dir / "bundle" / "results.json").write_text(json.dumps({"verdict": verdict, "summary": {}}))
    return Cell("nvidia", "1.33", exit_code=code, run_dir=run_dir)


def test_the_exit_code_is_the_worst_cells_verdict(tmp_path: Path) -> None:
    passed, warned = _cell(tmp_path, "a", "PASSED", 0), _cell(tmp_path, "b", "WARNED", 3)
    incomplete, failed = _cell(tmp_path, "c", "INCOMPLETE", 2), _cell(tmp_path, "d", "FAILED", 1)
    bad, crashed = _cell(tmp_path, "e", None, 4), _cell(tmp_path, "f", None, 3)
    assert cell_verdict(warned) == "WARNED" and cell_verdict(bad) == BAD_INPUT
    assert cell_verdict(crashed) == ERROR  # no bundle and not bad input
    assert exit_code([passed]) == 0 and exit_code([passed, warned]) == 3
    assert exit_code([passed, warned, incomplete]) == 2 and exit_code([incomplete, failed]) == 1
    assert exit_code([passed, crashed]) == 5 and exit_code([crashed, failed]) == 1
    assert exit_code([bad]) == 4 and exit_code([bad, passed]) == 5


def _session(tmp_path: Path, args: list[str], *, keyword: str = "", markexpr: str = "",
             shouldfail: str | bool = False) -> SimpleNamespace:
    options = {"keyword": keyword, "markexpr": markexpr}
    config = SimpleNamespace(args=args, getoption=lambda name, default=None: options.get(name, default),
                             invocation_params=SimpleNamespace(dir=REPO))
    return SimpleNamespace(config=config, shouldstop=False, shouldfail=shouldfail, testsfailed=0)


@pytest.mark.parametrize(
    ("args", "kwargs", "exitstatus", "filtered", "interrupted", "why"),
    [
        (["conformance/suites"], {}, 0, False, False, ""),
        (["conformance/suites"], {"markexpr": "nvidia"}, 0, False, False, ""),  # the vendor's own marker
        ([str(REPO / "conformance" / "suites")], {"keyword": "fit"}, 0, True, False, "-k 'fit'"),
        (["conformance/suites"], {"markexpr": "scheduling"}, 0, True, False, "-m 'scheduling'"),
        (["conformance/suites/test_scheduling.py"], {}, 0, True, False, "only conformance/suites/test_sch"),
        (["conformance/suites::x"], {}, 0, True, False, "only conformance/suites::x"),
        (["conformance/suites"], {}, 2, False, True, "interrupted (Ctrl-C or SIGTERM)"),
        (["conformance/suites"], {"shouldfail": "stopping after 1 failures"}, 1, False, True,
         "stopped early: stopping after 1 failures"),
    ],
)
def test_selection_records_filters_and_interruptions(
    tmp_path: Path, args: list[str], kwargs: dict[str, Any], exitstatus: int, filtered: bool,
    interrupted: bool, why: str,
) -> None:
    from conformance.plugin import HarnessState, selection
    from conformance.profiles import load_profile

    state = HarnessState(Options(), load_profile("nvidia"))
    got = selection(_session(tmp_path, args, **kwargs), state, exitstatus)  # type: ignore[arg-type]
    assert (got["filtered"], got["interrupted"]) == (filtered, interrupted), got
    assert why in " ".join(got["reasons"]) + got["interruptedBy"]
    state.user_deselected = 3
    assert "3 case(s) deselected" in selection(_session(tmp_path, args), state, 0)["reasons"]  # type: ignore[arg-type]


def test_a_sensitivity_file_of_another_commit_is_refused_before_anything_runs(tmp_path: Path) -> None:
    doc = {"commit": "0" * 40, "faults": 0, "caught": 0, "sensitivity": 0.0, "rows": []}
    path = tmp_path / "sensitivity.json"
    path.write_text(json.dumps(doc))
    proc = _cli("run", "--k8s", "1.33", "--out", str(tmp_path / "out"), "--sensitivity", str(path))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "another commit than this run" in proc.stderr and not (tmp_path / "out").exists()
    # straight through pytest too: a usage error, exit 4, no bundle
    pytest_proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "conformance/suites", "--bundle-dir",
         str(tmp_path / "out2"), "--sensitivity", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert pytest_proc.returncode == 4 and "another commit" in pytest_proc.stderr
    assert not (tmp_path / "out2").exists()


def test_the_working_tree_is_described(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    git = ["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a"]
    (tmp_path / "hami_stack").mkdir()
    (tmp_path / "hami_stack" / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    clean = working_tree(tmp_path)
    assert clean["commit"] == project_commit(tmp_path)
    assert clean["dirty"] is False and clean["diffSha256"] == ""
    (tmp_path / "hami_stack" / "a.py").write_text("x = 2\n")
    modified = working_tree(tmp_path)
    assert modified["dirty"] is True and modified["dirtyFiles"] == ["hami_stack/a.py"]
    (tmp_path / "hami_stack" / "new.py").write_text("y = 1\n")  # untracked file of the stack
    untracked = working_tree(tmp_path)
    assert untracked["dirtyFiles"] == ["hami_stack/a.py", "hami_stack/new.py"]
    assert untracked["diffSha256"] != modified["diffSha256"]
    (tmp_path / "hami_stack" / "new.py").write_text("y = 2\n")  # the digest covers content
    assert working_tree(tmp_path)["diffSha256"] != untracked["diffSha256"]


@pytest.mark.helm
@pytest.mark.hardware
@pytest.mark.slow
@pytest.mark.skipif(helm_path() is None, reason=helm_skip_reason())
def test_a_run_filtered_to_one_case_is_incomplete_everywhere(tmp_path: Path) -> None:
    proc = _cli("run", "--k8s", "1.33", "--control-plane", "emulated", "--out", str(tmp_path / "out"), "--",
                "-k", "test_fit_and_bind", timeout=600)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "INCOMPLETE" in proc.stdout and "PASS" not in proc.stdout.replace("passed", "")
    (run_dir,) = list((tmp_path / "out").iterdir())
    results = json.loads((run_dir / "bundle" / "results.json").read_text())
    assert results["verdict"] == "INCOMPLETE" and results["summary"]["passed"] == 1
    decision = results["decision"]
    assert "ENF-CORE-1" in decision["requiredRulesNotRun"] and "MET-MON-1" in decision["requiredRulesNotRun"]
    selection = results["run"]["selection"]
    assert selection["filtered"] and selection["keyword"] == "test_fit_and_bind"
    assert "**Verdict: INCOMPLETE**" in (run_dir / "bundle" / "summary.md").read_text()
    sut = results["run"]["systemUnderTest"]
    assert sut["commit"] == project_commit(REPO) and isinstance(sut["dirty"], bool)
    assert len(sut["chartValuesSha256"]) == 64 and "*/hami:*" in sut["imageDigests"]
    assert len(sut["shimSha256"]) == 64 and sut["shimInstalled"]  # the libvgpu.so the nodes use
    assert sut["controlPlane"] == {"controlPlane": "emulated"}  # as asked
    verify = _cli("verify", str(run_dir / "bundle"))
    assert verify.returncode == 0 and "verdict INCOMPLETE" in verify.stdout, verify.stdout + verify.stderr


def test_an_interrupted_run_starts_no_further_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance import cli

    started: list[list[str]] = []

    def fake_cell(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        started.append(cmd)
        cli._INTERRUPTED.append(15)  # SIGTERM arrived while the first cell ran
        out = Path(cmd[cmd.index("--bundle-dir") + 1]) / "bundle"
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"verdict": "INCOMPLETE", "summary": {}}))
        return subprocess.CompletedProcess(cmd, 2, "", "")

    monkeypatch.setattr(cli, "_run_cell", fake_cell)
    monkeypatch.setattr(cli, "_INTERRUPTED", [])
    args = cli.parser().parse_args(["run", "--k8s", "1.32,1.33", "--out", str(tmp_path)])
    cells = cli.run_cells(args, ["1.32", "1.33"])
    assert len(started) == 1 and [c.verdict for c in cells] == ["INCOMPLETE", "INCOMPLETE"]
    assert cells[1].note == "not run: the run was interrupted" and cli.exit_code(cells) == 2


def test_a_cell_interrupted_before_its_bundle_is_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conformance import cli

    def fake_cell(cmd: list[str], **_kw: object) -> subprocess.CompletedProcess[str]:
        cli._INTERRUPTED.append(15)  # terminated while provisioning: no bundle
        return subprocess.CompletedProcess(cmd, 2, "", "KeyboardInterrupt")

    monkeypatch.setattr(cli, "_run_cell", fake_cell)
    monkeypatch.setattr(cli, "_INTERRUPTED", [])
    cells = cli.run_cells(cli.parser().parse_args(["run", "--out", str(tmp_path)]), ["1.33"])
    assert cells[0].verdict == "INCOMPLETE" and "interrupted" in cells[0].note and cli.exit_code(cells) == 2
