"""Profiles, rule markers, outcome mapping, contract codecs, recording and the k3s pieces."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conformance import cases, contract, profiles
from conformance.backends import BackendError, BackendUnavailable, Options, check_minor, k3s
from conformance.recording import PROP, CaseIdentity, Recorder
from reports.model import Environment, RunMetadata
from reports.runio import RunWriter, read_cases

REPO = Path(__file__).resolve().parents[2]
SUITES = REPO / "conformance" / "suites"


def _other_vendors_suite(tree: ast.Module) -> bool:
    """A suite module whose ``pytestmark`` names a vendor other than NVIDIA (Ascend, Enflame DRS,
    MetaX sGPU): its rules are in that vendor's profile."""
    others = set(cases.VENDORS) - {"nvidia"}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            return any(isinstance(n, ast.Attribute) and n.attr in others for n in ast.walk(node.value))
    return False


def suite_rules() -> dict[str, str]:
    """rule id -> NVIDIA suite module, read from the @rule decorators without importing the suites
    (the suites of other vendors have their own profiles)."""
    out: dict[str, str] = {}
    for path in sorted(SUITES.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        if _other_vendors_suite(tree):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "rule":
                rule_id = node.args[0].value  # type: ignore[attr-defined]
                assert rule_id not in out, f"{rule_id} declared twice ({out.get(rule_id)} and {path.name})"
                out[rule_id] = path.name
    return out


def test_every_suite_rule_is_in_the_nvidia_profile_and_back() -> None:
    prof = profiles.load_profile("nvidia")
    rules = suite_rules()
    assert len(rules) >= 30
    assert set(rules) == set(prof.rules), set(rules) ^ set(prof.rules)
    capabilities = {name.removeprefix("test_").removesuffix(".py") for name in rules.values()}
    assert capabilities == set(cases.CAPABILITIES)


def test_profile_requirements_and_range() -> None:
    prof = profiles.load_profile("nvidia")
    assert prof.version == "1.6.0" and prof.minor_list()[0] == "1.18" and prof.minor_list()[-1] == "1.37"
    # the compute limiter and the monitor are part of the NVIDIA certification
    assert prof.requirement("ENF-CORE-1", "1.33") == "required"
    assert prof.requirement("MET-MON-1", "1.18") == "required"
    assert {"ENF-CORE-1", "MET-MON-1", "SCHED-FIT-1", "ADM-FORGE-10"} <= set(prof.required_rules("1.33"))
    assert prof.requirement("SCHED-FIT-1", "1.18") == "required"
    assert prof.requirement("SCHED-FIT-1", "1.17") == "not-applicable"
    assert prof.requirement("NOT-LISTED-1", "1.20") == "required"  # the default


def test_profile_errors(tmp_path: Path) -> None:
    known = r'unknown profile "nope": known profiles: ([a-z]+, )*nvidia, '
    with pytest.raises(profiles.ProfileError, match=known):
        profiles.load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: hami-conformance/profile/v1\nname: x\nversion: '1'\nvendor: nvidia\n"
        "minors: ['1.18', '1.33']\nrules: {A-1: mandatory}\n"
    )
    with pytest.raises(profiles.ProfileError, match=r'rules\.A-1: "mandatory" is not one of'):
        profiles.load_profile(str(bad))
    over = tmp_path / "over.yaml"
    over.write_text(
        "apiVersion: hami-conformance/profile/v1\nname: x\nversion: '2'\nvendor: nvidia\n"
        "minors: ['1.18', '1.33']\noverrides: [{minors: ['1.18', '1.21'], rules: {A-1: optional}}]\n"
    )
    prof = profiles.load_profile(str(over))
    assert prof.requirement("A-1", "1.20") == "optional" and prof.requirement("A-1", "1.22") == "required"


def test_scheduling_only_profile_marks_enforcement_and_monitor_not_applicable() -> None:
    full, narrow = profiles.load_profile("nvidia"), profiles.load_profile("nvidia-scheduling-only")
    assert narrow.name == "nvidia-scheduling-only" and narrow.vendor == "nvidia"
    assert narrow.version == f"1.0.0+nvidia.{full.version}"  # a change of the base shows
    assert narrow.minors == full.minors
    for rule_id in full.listed_rules():
        narrowed = rule_id.startswith(("ENF-", "MET-MON-"))
        want = "not-applicable" if narrowed else full.requirement(rule_id, "1.33")
        assert narrow.requirement(rule_id, "1.33") == want, rule_id
    # a rule added to the nvidia profile later is covered by the patterns too
    assert narrow.requirement("ENF-MEM-99", "1.25") == "not-applicable"
    assert narrow.requirement("MET-SCHED-1", "1.25") == "required"
    assert not [r for r in narrow.required_rules("1.33") if r.startswith(("ENF-", "MET-MON-"))]


def test_profile_extends_and_patterns(tmp_path: Path) -> None:
    loop = tmp_path / "loop.yaml"
    loop.write_text("apiVersion: hami-conformance/profile/v1\nname: loop\nversion: '1'\nextends: ../x\n")
    with pytest.raises(profiles.ProfileError, match="extends: must name a profile"):
        profiles.load_profile(str(loop))
    pat = tmp_path / "pat.yaml"
    pat.write_text(
        "apiVersion: hami-conformance/profile/v1\nname: p\nversion: '1'\nvendor: nvidia\n"
        "minors: ['1.18', '1.33']\n"
        "rules: {'SCHED-*': optional, 'SCHED-FIT-*': not-applicable, SCHED-FIT-1: required}\n"
    )
    prof = profiles.load_profile(str(pat))
    assert prof.requirement("SCHED-FIT-1", "1.20") == "required"  # exact wins
    assert prof.requirement("SCHED-FIT-2", "1.20") == "not-applicable"  # longest pattern wins
    assert prof.requirement("SCHED-TYPE-1", "1.20") == "optional"
    assert prof.required_rules("1.20") == ["SCHED-FIT-1"]


@pytest.mark.parametrize(
    ("phases", "skip", "want"),
    [
        ({"setup": "passed", "call": "passed", "teardown": "passed"}, "", "passed"),
        ({"setup": "passed", "call": "failed", "teardown": "passed"}, "", "failed"),
        ({"setup": "failed", "teardown": "passed"}, "", "failed"),
        ({"setup": "passed", "call": "passed", "teardown": "failed"}, "", "failed"),
        (
            {"setup": "passed", "call": "skipped", "teardown": "passed"},
            "could not apply: no metrics",
            "unknown",
        ),
        ({"setup": "skipped", "teardown": "passed"}, "not applicable in profile", "skipped"),
        ({"setup": "passed", "teardown": "passed"}, "", "failed"),  # no call phase: never passed
    ],
)
def test_outcome_mapping(phases: dict[str, str], skip: str, want: str) -> None:
    assert cases.map_outcome(phases, skip) == want


def test_rule_decorator_validates() -> None:
    with pytest.raises(ValueError, match="must look like"):
        cases.rule("bad id", "text")
    with pytest.raises(ValueError, match="one non-empty line"):
        cases.rule("A-1", "two\nlines")
    with pytest.raises(ValueError, match="unknown AI conformance requirement"):
        cases.rule("A-1", "t", ai=("gpu_magic",))
    with pytest.raises(ValueError, match="needs a reason"):
        cases.unknown(" ")
    with pytest.raises(pytest.skip.Exception, match=r"^could not apply: no engine$"):
        cases.unknown("no engine")


def test_register_and_assignment_codecs() -> None:
    js = (
        '[{"id":"GPU-a","count":10,"devmem":81920,"devcore":100,"type":"NVIDIA-A100-SXM4-80GB",'
        '"health":true,"mode":"hami-core"},{"id":"GPU-b","index":1,"count":10,"devmem":81920,"devcore":100,'
        '"type":"NVIDIA-A100-SXM4-80GB","numa":1}]'
    )
    devs = contract.parse_register(js)
    assert [(d.id, d.index, d.numa, d.health) for d in devs] == [
        ("GPU-a", 0, 0, True),
        ("GPU-b", 1, 1, False),
    ]
    csv = (
        "GPU-0,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,0,true,0,hami-core:"
        "GPU-1,10,32768,100,NVIDIA-T,0,false:"
    )
    assert [(d.id, d.health, d.mode) for d in contract.parse_register(csv)] == [
        ("GPU-0", True, "hami-core"),
        ("GPU-1", False, "hami-core"),
    ]
    with pytest.raises(contract.ContractError, match="6 fields"):
        contract.parse_register("a,1,2,3,4,5:")
    with pytest.raises(contract.ContractError, match=r"\[0\].count"):
        contract.parse_register('[{"id":"x","count":"10"}]')
    segs = contract.decode_assignment(";GPU-A,NVIDIA,1000,0:GPU-B,NVIDIA,1000,30:;")
    assert [[(d.uuid, d.mem_mib, d.cores) for d in s] for s in segs] == [
        [],
        [("GPU-A", 1000, 0), ("GPU-B", 1000, 30)],
    ]
    with pytest.raises(contract.ContractError, match="want 4"):
        contract.decode_assignment("GPU-A,NVIDIA,1000:;")


def test_vendor_discovery_from_annotations_and_capacity() -> None:
    node: dict[str, Any] = {
        "metadata": {"annotations": {contract.NVIDIA_REGISTER: "[]"}},
        "status": {"capacity": {"cambricon.com/vmlu": "4", "hygon.com/dcunum": "0"}},
    }
    assert contract.vendors_on_node(node) == {"nvidia", "cambricon"}


def test_minor_checks() -> None:
    assert check_minor("v1.25.3") == "1.25" and check_minor("1.18") == "1.18"
    assert check_minor("v1.36.5") == "1.36"  # only a real control plane has it
    with pytest.raises(
        BackendError,
        match=r'unknown Kubernetes minor "1\.38": supported minors are 1\.18 to 1\.35, and 1\.36, 1\.37 on',
    ):
        check_minor("1.38")


def test_k3s_pieces_without_an_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sorted(k3s.K3S_IMAGES, key=lambda m: int(m.split(".")[1])) == [f"1.{n}" for n in range(18, 34)]
    for minor, image in k3s.K3S_IMAGES.items():
        assert image.startswith(f"rancher/k3s:v{minor}.") and "+" not in image
    assert k3s.upstream_version("rancher/k3s:v1.31.2-k3s1") == "v1.31.2"
    values = k3s.helm_values("1.31")
    assert values["scheduler"]["kubeScheduler"]["image"]["tag"] == "v1.31.2"
    assert values["devicePlugin"]["extraVolumes"][0]["hostPath"]["path"] == k3s.EMU_HOST_DIR
    assert "--disable=traefik" in k3s.server_command("1.20")
    assert k3s.import_commands(["/tmp/a.tar"]) == [["ctr", "-n", "k8s.io", "images", "import", "/tmp/a.tar"]]
    ctx = k3s.probe_build_context(tmp_path / "ctx")
    files = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    assert (
        "Dockerfile" in files
        and "conformance/probe/run.py" in files
        and "conformance/probe/driver.py" in files
    )
    for line in (ctx / "Dockerfile").read_text().splitlines():  # every COPY source exists in the context
        if line.startswith("COPY "):
            src = line.split()[1]
            assert list(ctx.glob(src)), src
    import tarfile

    with tarfile.open(k3s.context_tar(ctx, tmp_path / "ctx.tgz")) as tar:
        assert "conformance/probe/cli.py" in tar.getnames()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    ok, reason = k3s.engine_available()
    assert not ok and ("testcontainers" in reason or "no container engine" in reason)
    with pytest.raises(BackendUnavailable):
        k3s.K3sBackend().provision(Options(cluster="k3s", k8s_version="1.30"))


def _report(nodeid: str, when: str, outcome: str, props: list[Any], longrepr: Any = None) -> Any:
    return SimpleNamespace(
        nodeid=nodeid,
        when=when,
        outcome=outcome,
        user_properties=props,
        duration=0.5,
        longrepr=longrepr,
        longreprtext=str(longrepr or ""),
    )


def test_recorder_writes_cases_and_never_passes_unknown(tmp_path: Path) -> None:
    meta = RunMetadata(
        run_id="r1",
        project_commit="abc",
        started="2026-01-01T00:00:00Z",
        tool_version="0.1.0",
        backend="testbed",
        hami_namespace="hami-system",
    )
    writer = RunWriter(tmp_path / "run", meta, Environment())
    rec = Recorder(writer)
    ident = CaseIdentity("nvidia", "1.33", "metrics", "MET-MON-1", "Monitor metrics", "optional").__dict__
    props = [(PROP, ident)]
    for when in ("setup", "call", "teardown"):
        outcome = "skipped" if when == "call" else "passed"
        longrepr = ("f.py", 1, "Skipped: could not apply: no endpoint") if when == "call" else None
        rec.on_report(_report("s::t_unknown", when, outcome, props, longrepr))
    failed = SimpleNamespace(reprcrash=SimpleNamespace(message="AssertionError: [MET-MON-1] no series"))
    for when in ("setup", "call", "teardown"):
        rec.on_report(
            _report(
                "s::t_failed",
                when,
                "failed" if when == "call" else "passed",
                props,
                failed if when == "call" else None,
            )
        )
    assert rec.on_report(_report("plain::t", "teardown", "passed", [])) is None  # not a conformance case
    got = read_cases(tmp_path / "run" / "cases.jsonl")
    assert [(c.case_id, c.outcome) for c in got] == [("s::t_unknown", "unknown"), ("s::t_failed", "failed")]
    assert got[0].message == "could not apply: no endpoint" and "[MET-MON-1]" in got[1].message
    run = writer.finalise()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["cases"][0]["outcome"] == "unknown"
    assert run.cases[0].duration_s == 1.5


def test_a_testbed_reached_by_its_kubeconfig_names_its_control_plane(tmp_path: Path) -> None:
    from conformance.backends.testbed import testbed_control_plane

    data = tmp_path / "data"
    data.mkdir()
    kubeconfig = data / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    assert testbed_control_plane(str(kubeconfig)) is None  # no state.json: an existing cluster
    (data / "state.json").write_text(json.dumps({"kubeconfig": str(kubeconfig), "pid": 1}))
    assert testbed_control_plane(str(kubeconfig)) == {"controlPlane": "emulated"}
    other = tmp_path / "elsewhere.kubeconfig"
    other.write_text("apiVersion: v1\n")
    assert testbed_control_plane(str(other)) is None
    copied = data / "copy-of-kubeconfig"  # a state.json that names another file says nothing of this one
    copied.write_text("apiVersion: v1\n")
    assert testbed_control_plane(str(copied)) is None
    real = {"kubeconfig": str(kubeconfig), "controlPlane": "real", "etcd": {"version": "3.4.23"},
            "binaries": {"kube-apiserver": {"version": "Kubernetes v1.35.8"}}, "pid": 1}
    (data / "state.json").write_text(json.dumps(real))
    expected = {k: real[k] for k in ("controlPlane", "binaries", "etcd")}
    assert testbed_control_plane(str(kubeconfig)) == expected
