"""The CI workflow: actionlint accepts it, its cells come from reports/matrix_plan.py only, and
every planned cell has its tox env.

actionlint is built from the Go module proxy at a pinned version into
``~/.cache/hami-conformance/bin`` (once; later runs reuse the binary). The test skips only when
neither that binary nor a Go toolchain is there.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reports import matrix_plan

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "conformance.yml"
ACTIONLINT_VERSION = "v1.7.7"
ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint"
BIN = Path.home() / ".cache" / "hami-conformance" / "bin"


def actionlint() -> Path:
    binary = BIN / "actionlint"
    stamp = BIN / "actionlint.version"
    if binary.is_file() and stamp.is_file() and stamp.read_text().strip() == ACTIONLINT_VERSION:
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if go is None:
        pytest.skip(
            f"actionlint {ACTIONLINT_VERSION} is not built in {BIN} and no Go toolchain is installed to "
            f"build it (go install {ACTIONLINT_MODULE}@{ACTIONLINT_VERSION})"
        )
    BIN.mkdir(parents=True, exist_ok=True)
    # nice: the build shares two cores with the rest of the suite
    proc = subprocess.run(
        ["nice", "-n", "10", go, "install", f"{ACTIONLINT_MODULE}@{ACTIONLINT_VERSION}"],
        env={**os.environ, "GOBIN": str(BIN), "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"building actionlint failed:\n{proc.stderr[-2000:]}"
    stamp.write_text(ACTIONLINT_VERSION + "\n")
    return binary


def test_actionlint_accepts_the_workflows() -> None:
    binary = actionlint()
    proc = subprocess.run(
        [str(binary), "-no-color", *map(str, sorted((REPO / ".github" / "workflows").glob("*.y*ml")))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    binary = actionlint()
    bad = WORKFLOW.read_text().replace("needs.plan.outputs.cells", "needs.plan.outputs.celz")
    (tmp_path / "c.yml").write_text(bad)
    proc = subprocess.run(
        [str(binary), "-no-color", str(tmp_path / "c.yml")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "celz" in proc.stdout


def test_cells_come_from_the_plan_only() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    cell = doc["jobs"]["cell"]
    assert cell["strategy"]["matrix"] == {"include": "${{ fromJSON(needs.plan.outputs.cells) }}"}
    assert not re.search(r"\b1\.(1[89]|2\d|3\d)\b", WORKFLOW.read_text()), "a minor is hard-coded"
    run = " ".join(step.get("run", "") for step in cell["steps"])
    assert 'tox -e "$TOXENV_NAME"' in run and "--json" in run
    uploads = [s for s in cell["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["if"] == "always()"  # a FAILED cell's bundle is still uploaded
    merge = " ".join(s.get("run", "") for s in doc["jobs"]["merge"]["steps"])
    assert "hami-conformance matrix merge" in merge and "hami-conformance matrix allure" in merge


def test_every_planned_cell_has_its_tox_env_and_adding_a_vendor_is_one_line() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "tox.ini")
    envs: set[str] = set()
    for section in parser.sections():
        if not section.startswith("testenv:"):
            continue
        name = section.removeprefix("testenv:")
        m = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", name)
        envs |= {f"{m[1]}{x}{m[3]}" for x in m[2].split(",")} if m else {name}
        commands = parser[section].get("commands", "")
        for env in list(envs):
            vendor, _, minor = env.partition("-")
            if section.startswith(f"testenv:{vendor}-") and re.fullmatch(r"1\.\d+", minor):
                # each cell env runs its own vendor and minor, nothing else
                assert f"{env}: hami-conformance run --vendor {vendor} --k8s {minor} " in commands
    planned = [c.toxenv for c in matrix_plan.cells()]
    assert planned[0] == "nvidia-1.18" and planned[-1] == "biren-1.35"
    assert {"nvidia-1.35", "ascend-1.18", "iluvatar-1.18", "amd-1.35"} <= set(planned)
    assert set(planned) <= envs, sorted(set(planned) - envs)
    more = matrix_plan.cells({**matrix_plan.VENDORS, "cambricon": (30, 33, ("ours", "upstream"))})
    assert [c.toxenv for c in more[-2:]] == ["cambricon-1.33", "cambricon-1.33-upstream"]


def test_the_plan_job_output_is_one_github_output_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert matrix_plan.main(["github"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("cells=") and "\n" not in line
    cells = json.loads(line.removeprefix("cells="))
    assert cells[0] == {"vendor": "nvidia", "minor": "1.18", "stack": "ours", "toxenv": "nvidia-1.18"}
    families = {"iluvatar", "mthreads", "metax", "kunlunxin", "enflame", "awsneuron", "amd"}
    families |= {"vastai", "biren"}
    assert len(cells) == len(matrix_plan.cells()) == 11 * 18  # nvidia, ascend and nine families, 1.18..1.35
    assert {c["vendor"] for c in cells} == {"nvidia", "ascend", *families}
    assert {c["stack"] for c in cells} == {"ours"}
    assert matrix_plan.main(["gitlab"]) == 4


def test_ci_runs_the_fidelity_corpus_on_the_newest_minor_both_control_planes_have() -> None:
    from testbed.apiserver.versions import MINORS as EMULATED

    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["fidelity"]
    steps = " ".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in job["steps"])
    assert "tox -e fidelity" in steps and "etcd-server" in steps and "actions/setup-go" in steps
    go = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/setup-go"))
    version_file = REPO / go["with"]["go-version-file"]
    local = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True,
                           env={**os.environ, "GOTOOLCHAIN": "local"}).stdout.strip()
    assert local.startswith("go" + version_file.read_text().strip())  # CI builds with the local toolchain
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "tox.ini")
    commands = parser["testenv:fidelity"]["commands"]
    built = re.search(r"testbed\.controlplane build 1\.(\d+)", commands)
    assert built and int(built.group(1)) == max(EMULATED), commands
    assert "tests/controlplane/test_real_e2e.py" in commands
    assert parser["testenv:fidelity"]["setenv"].replace(" ", "") == "HAMI_FIDELITY=1"
