"""Per-minor facts of the version profiles, spot-checked against the reference tables."""

from __future__ import annotations

import pytest

from testbed.apiserver import resources
from testbed.apiserver.versions import MINORS, UnknownMinor, profile


def test_minors_cover_1_18_to_1_35() -> None:
    assert (MINORS[0], MINORS[-1], len(MINORS)) == (18, 35, 18)


@pytest.mark.parametrize("spelling", [33, "33", "1.33", "v1.33", "1.33.2", "v1.33.13"])
def test_every_spelling_gives_the_same_cached_profile(spelling: int | str) -> None:
    assert profile(spelling) is profile(33)
    assert profile(spelling).minor == 33


@pytest.mark.parametrize(("given", "shown"), [(17, "1.17"), ("1.17", "1.17"), ("1.36.0", "1.36"),
                                              ("2.33", "2.33"), ("latest", "latest")])
def test_unknown_minor_message(given: int | str, shown: str) -> None:
    with pytest.raises(UnknownMinor) as err:
        profile(given)
    assert str(err.value) == f'unknown Kubernetes minor "{shown}": supported minors are 1.18 to 1.35'
    assert isinstance(err.value, ValueError)


def test_git_versions_are_latest_patches() -> None:
    assert profile(18).git_version == "v1.18.20"
    assert profile(24).git_version == "v1.24.17"
    assert profile(33).git_version == "v1.33.13"


def test_webhook_configuration_versions() -> None:
    assert profile(18).serves("admissionregistration.k8s.io", "v1beta1")
    assert profile(21).serves("admissionregistration.k8s.io", "v1beta1")
    assert not profile(22).serves("admissionregistration.k8s.io", "v1beta1")
    assert not profile(28).serves("admissionregistration.k8s.io", "v1beta1")  # re-added but off
    assert profile(21).webhook_config_versions == ("v1", "v1beta1")
    assert profile(22).webhook_config_versions == ("v1",)
    assert all(profile(m).admission_review_versions == ("v1", "v1beta1") for m in MINORS)


@pytest.mark.parametrize(("minor", "versions"), [(18, ["v1beta1"]), (20, ["v1beta1"]),
                                                 (21, ["v1", "v1beta1"]), (24, ["v1", "v1beta1"]),
                                                 (25, ["v1"]), (33, ["v1"])])
def test_cronjob_versions(minor: int, versions: list[str]) -> None:
    assert profile(minor).versions_for("batch", "cronjobs") == versions
    assert profile(minor).versions_for("batch", "jobs") == ["v1"]


def test_batch_v1_serves_cronjobs_only_from_1_21() -> None:
    assert profile(20).group_version("batch", "v1").resources == ("jobs",)
    assert profile(21).group_version("batch", "v1").resources == ("cronjobs", "jobs")


def test_policy_v1beta1_until_1_24() -> None:
    p24, p25 = profile(24), profile(25)
    assert p24.group_version("policy", "v1beta1").resources == ("poddisruptionbudgets", "podsecuritypolicies")
    assert p24.versions_for("policy", "poddisruptionbudgets") == ["v1", "v1beta1"]
    assert not p25.serves("policy", "v1beta1")
    assert p25.versions_for("policy", "podsecuritypolicies") == []
    assert profile(20).versions_for("policy", "poddisruptionbudgets") == ["v1beta1"]


def test_events_and_node_and_discovery_groups() -> None:
    assert profile(18).versions_for("events.k8s.io", "events") == ["v1beta1"]
    assert profile(19).versions_for("events.k8s.io", "events") == ["v1", "v1beta1"]
    assert profile(25).versions_for("events.k8s.io", "events") == ["v1"]
    assert profile(19).versions_for("node.k8s.io", "runtimeclasses") == ["v1beta1"]
    assert profile(20).versions_for("node.k8s.io", "runtimeclasses") == ["v1", "v1beta1"]
    assert profile(25).versions_for("node.k8s.io", "runtimeclasses") == ["v1"]
    assert profile(20).versions_for("discovery.k8s.io", "endpointslices") == ["v1beta1"]
    assert profile(21).preferred_version("discovery.k8s.io") == "v1"


@pytest.mark.parametrize(("minor", "versions"), [
    (18, []), (19, []), (20, ["v1beta1"]), (23, ["v1beta2", "v1beta1"]), (25, ["v1beta2", "v1beta1"]),
    (26, ["v1beta3", "v1beta2"]), (28, ["v1beta3", "v1beta2"]), (29, ["v1", "v1beta3"]),
    (31, ["v1", "v1beta3"]), (32, ["v1"]), (33, ["v1"])])
def test_flowcontrol_versions(minor: int, versions: list[str]) -> None:
    assert profile(minor).versions_for("flowcontrol.apiserver.k8s.io", "flowschemas") == versions


def test_v1beta1_removals_of_1_22() -> None:
    for group in ("rbac.authorization.k8s.io", "apiextensions.k8s.io", "scheduling.k8s.io",
                  "coordination.k8s.io", "certificates.k8s.io", "apiregistration.k8s.io",
                  "authentication.k8s.io", "authorization.k8s.io"):
        assert profile(21).serves(group, "v1beta1"), group
        assert not profile(22).serves(group, "v1beta1"), group
    assert profile(21).versions_for("networking.k8s.io", "ingresses") == ["v1", "v1beta1"]
    assert profile(18).versions_for("networking.k8s.io", "ingresses") == ["v1beta1"]
    assert profile(22).versions_for("networking.k8s.io", "ingresses") == ["v1"]
    assert profile(22).versions_for("storage.k8s.io", "storageclasses") == ["v1"]
    assert profile(22).versions_for("storage.k8s.io", "csistoragecapacities") == ["v1beta1"]
    assert profile(24).versions_for("storage.k8s.io", "csistoragecapacities") == ["v1", "v1beta1"]
    assert not profile(27).serves("storage.k8s.io", "v1beta1")


def _versions(minor: int, group: str) -> list[str]:
    return [gv.version for gv in profile(minor).group_versions(group)]


def test_autoscaling_preferred_version_moves_to_v2_in_1_23() -> None:
    assert _versions(18, "autoscaling") == ["v1", "v2beta1", "v2beta2"]
    assert profile(22).preferred_version("autoscaling") == "v1"
    assert _versions(23, "autoscaling") == ["v2", "v1", "v2beta1", "v2beta2"]
    assert _versions(26, "autoscaling") == ["v2", "v1"]


def test_selfsubjectreviews_from_1_28() -> None:
    assert profile(27).resource("authentication.k8s.io", "v1", "selfsubjectreviews") is None
    r = profile(28).resource("authentication.k8s.io", "v1", "selfsubjectreviews")
    assert r is not None and r.kind == "SelfSubjectReview"
    assert not profile(33).serves("authentication.k8s.io", "v1beta1")


def test_group_order_matches_the_real_apis_list() -> None:
    assert profile(33).groups() == [
        "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
        "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io", "policy",
        "rbac.authorization.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io",
        "apiextensions.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
        "discovery.k8s.io", "flowcontrol.apiserver.k8s.io"]
    assert "flowcontrol.apiserver.k8s.io" not in profile(19).groups()
    assert profile(18).served[0].api_version == "v1"


def test_preferred_version_first_within_each_group() -> None:
    for m in MINORS:
        p = profile(m)
        for group in ["", *p.groups()]:
            assert p.preferred_version(group) == p.group_versions(group)[0].version
        assert p.preferred_version("extensions") is None


def test_every_served_resource_is_a_known_type() -> None:
    for m in MINORS:
        p = profile(m)
        for gv in p.served:
            assert gv.resources, gv
            for plural in gv.resources:
                r = p.resource(gv.group, gv.version, plural)
                assert r is not None and r is resources.lookup(gv.group, plural), (m, gv, plural)


def test_resource_lookup_respects_the_minor() -> None:
    assert profile(33).resource("apps", "v1", "deployments").kind == "Deployment"
    assert profile(33).resource("apps", "v1beta1", "deployments") is None
    assert profile(33).resource("apps", "v1", "cronjobs") is None
    assert profile(33).group_version("", "v1").api_version == "v1"
    assert profile(33).group_version("apps", "v1").api_version == "apps/v1"


@pytest.mark.parametrize(("minor", "mode", "auto", "fv", "v3", "agg", "emu"), [
    (18, "secret", True, False, False, (), False),
    (20, "secret", True, False, False, (), False),
    (21, "projected", True, False, False, (), False),
    (23, "projected", True, False, False, (), False),
    (24, "projected", False, False, True, (), False),
    (25, "projected", False, True, True, (), False),
    (26, "projected", False, True, True, (), False),
    (27, "projected", False, True, True, ("v2beta1",), False),
    (29, "projected", False, True, True, ("v2beta1",), False),
    (30, "projected", False, True, True, ("v2", "v2beta1"), False),
    (32, "projected", False, True, True, ("v2", "v2beta1"), False),
    (33, "projected", False, True, True, ("v2",), True),
])
def test_behaviour_flags(minor: int, mode: str, auto: bool, fv: bool, v3: bool, agg: tuple[str, ...],
                         emu: bool) -> None:
    p = profile(minor)
    assert (p.sa_token_mode, p.auto_sa_token_secret, p.field_validation, p.openapi_v3,
            p.aggregated_discovery, p.emulation_fields) == (mode, auto, fv, v3, agg, emu)
