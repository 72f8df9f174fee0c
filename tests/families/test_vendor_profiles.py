"""The profiles of the table-driven families list exactly their rows' rules, and every family fault
names rules its vendor's profile requires (so the self-test can catch it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conformance import profiles
from conformance.suites import test_family_vendors as suite
from hami_stack.faults.catalogue import CATALOGUE

REPO = Path(__file__).resolve().parents[2]

VENDORS = sorted({v.vendor for v in suite.VENDORS})
# a vendor's rules from a suite module of its own (Enflame DRS, MetaX sGPU app classes and QoS)
OWN_SUITE_PREFIX = {"enflame": "ENFLAME-DRS-", "metax": "METAX-SGPU-"}
# where those rules' cases live
OWN_SUITE_CASES = {
    "enflame": "conformance/suites/test_enflame_drs.py::test_drs_",
    "metax": "conformance/suites/test_metax_sgpu.py::test_",
}


def _rules(vendor: str) -> set[str]:
    out: set[str] = set()
    for v in suite.VENDORS:
        if v.vendor != vendor:
            continue
        out.add(f"{v.rule}-ADM-SCHED-1")
        if not v.admission_only:
            out |= {f"{v.rule}-REG-1", f"{v.rule}-SCHED-FIT-1", f"{v.rule}-ALLOC-1"}
        out |= {f"{v.rule}-{d.suffix}" for d in v.denials}
        if v.rewrites:
            out.add(f"{v.rule}-ADM-REWRITE-1")
        if v.link_zones:
            out.add(f"{v.rule}-SCHED-TOPO-1")
        if v.exclusive:
            out.add(f"{v.rule}-SCHED-EXCL-1")
    if vendor in OWN_SUITE_PREFIX:
        from conformance.selftest import rule_cases

        out |= {r for r in rule_cases() if r.startswith(OWN_SUITE_PREFIX[vendor])}
    return out


@pytest.mark.parametrize("vendor", VENDORS)
def test_profile_lists_exactly_the_rows_rules(vendor: str) -> None:
    prof = profiles.load_profile(vendor)
    assert prof.vendor == vendor
    assert set(prof.rules) == _rules(vendor)
    assert all(prof.requirement(r, "1.33") == "required" for r in prof.rules)


@pytest.mark.parametrize("vendor", VENDORS)
def test_each_family_has_a_fault_its_profile_can_catch(vendor: str) -> None:
    faults = [f for f in CATALOGUE if f.vendor == vendor]
    assert faults, f"no fault for {vendor}"
    for f in faults:
        assert set(f.expected_rules) <= _rules(vendor), f


def test_rule_ids_are_unique_across_rows() -> None:
    seen: list[str] = []
    for vendor in VENDORS:
        seen += sorted(_rules(vendor))
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("resource", "vendor"),
    [
        ("mthreads.com/vgpu", "mthreads"),
        ("metax-tech.com/sgpu", "metax"),
        ("kunlunxin.com/vxpu", "kunlunxin"),
        ("vastaitech.com/va", "vastai"),
        ("birentech.com/gpu", "biren"),
        ("iluvatar.ai/BI-V150-vgpu", "iluvatar"),
        ("enflame.com/gcu", "enflame"),
        ("aws.amazon.com/neuroncore", "awsneuron"),
        ("amd.com/gpu", "amd"),
    ],
)
def test_a_pod_of_a_disabled_family_is_told_the_family_is_not_enabled(resource: str, vendor: str) -> None:
    from hami_stack.devices.config import parse_device_config
    from hami_stack.devices.registry import build_families
    from tests.families.famhelpers import pod, run_webhook

    resp, out = run_webhook(
        pod({"name": "c", "limits": {resource: "1"}}), build_families(parse_device_config({"nvidia": {}}))
    )
    assert resp.allowed and "schedulerName" not in out["spec"]
    assert (
        len(resp.warnings) == 1
        and f"the {vendor} family" in resp.warnings[0]
        and "not enabled" in resp.warnings[0]
    )
    # the warning names the chart value a user sets, which exists in the chart
    key = resp.warnings[0].split("chart value devices.", 1)[1].split(".enabled", 1)[0]
    values = yaml.safe_load((REPO / "hami_stack" / "chart" / "values.yaml").read_text())
    assert "enabled" in values["devices"][key], key


def test_the_selftest_finds_a_case_for_every_rule_and_fault() -> None:
    from conformance.selftest import rule_cases

    cases = rule_cases()
    for vendor in VENDORS:
        for rule_id in _rules(vendor):
            (nodeid,) = cases[rule_id]
            if rule_id.startswith(OWN_SUITE_PREFIX.get(vendor, "-")):
                assert nodeid.startswith(OWN_SUITE_CASES[vendor])
                continue
            assert (
                nodeid.startswith("conformance/suites/test_family_vendors.py::test_vendor_")
                and rule_id in nodeid
            )
    for f in CATALOGUE:
        if f.vendor in VENDORS:
            assert all(cases.get(r) for r in f.expected_rules), f
