"""The profiles of the table-driven families list exactly their rows' rules, and every family fault
names rules its vendor's profile requires (so the self-test can catch it)."""

from __future__ import annotations

import pytest

from conformance import profiles
from conformance.suites import test_family_vendors as suite
from hami_stack.faults.catalogue import CATALOGUE


def _rules(v: suite.Vendor) -> set[str]:
    out = {f"{v.rule}-ADM-SCHED-1", f"{v.rule}-REG-1", f"{v.rule}-SCHED-FIT-1"}
    out |= {f"{v.rule}-{d.suffix}" for d in v.denials}
    if v.rewrites:
        out.add(f"{v.rule}-ADM-REWRITE-1")
    return out


@pytest.mark.parametrize("v", suite.VENDORS, ids=lambda v: v.vendor)
def test_profile_lists_exactly_the_rows_rules(v: suite.Vendor) -> None:
    prof = profiles.load_profile(v.vendor)
    assert prof.vendor == v.vendor
    assert set(prof.rules) == _rules(v)
    assert all(prof.requirement(r, "1.33") == "required" for r in prof.rules)


@pytest.mark.parametrize("v", suite.VENDORS, ids=lambda v: v.vendor)
def test_each_family_has_a_fault_its_profile_can_catch(v: suite.Vendor) -> None:
    faults = [f for f in CATALOGUE if f.vendor == v.vendor]
    assert faults, f"no fault for {v.vendor}"
    for f in faults:
        assert set(f.expected_rules) <= _rules(v), f
