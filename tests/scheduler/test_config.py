"""Scheduler configuration formats per minor: what each accepts and how it refuses the rest."""

from __future__ import annotations

import json

import pytest

from testbed.scheduler import cli
from testbed.scheduler.config import (
    ConfigError,
    config_from_policy,
    decode_config,
    decode_policy,
)

MANAGED = [{"name": "nvidia.com/gpu", "ignoredByScheduler": True},
           {"name": "nvidia.com/gpumem", "ignoredByScheduler": True}]

# the shapes HAMi's chart renders (hami-protocol.md §1.2)
HAMI_POLICY = json.dumps({
    "kind": "Policy", "apiVersion": "v1",
    "extenders": [{"urlPrefix": "https://127.0.0.1:443", "enableHttps": True, "tlsConfig": {"insecure": True},
                   "filterVerb": "filter", "bindVerb": "bind", "weight": 1, "nodeCacheCapable": True,
                   "httpTimeout": 30000000000, "managedResources": MANAGED, "ignoreable": False}],
})


def hami_yaml(version: str) -> str:
    return f"""apiVersion: kubescheduler.config.k8s.io/{version}
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: true
  resourceName: "hami-scheduler"
  resourceNamespace: "hami-system"
profiles:
- schedulerName: hami-scheduler
extenders:
- urlPrefix: "https://127.0.0.1:443"
  enableHTTPS: true
  tlsConfig:
    insecure: true
  filterVerb: filter
  bindVerb: bind
  nodeCacheCapable: true
  weight: 1
  httpTimeout: 30s
  managedResources:
  - name: nvidia.com/gpu
    ignoredByScheduler: true
  - name: nvidia.com/gpumem
    ignoredByScheduler: true
"""


def _check_hami(cfg) -> None:  # type: ignore[no-untyped-def]
    ext = cfg.extenders[0]
    assert ext.url_prefix == "https://127.0.0.1:443"
    assert ext.enable_https and ext.tls is not None and ext.tls.insecure
    assert (ext.filter_verb, ext.bind_verb, ext.weight, ext.node_cache_capable) == ("filter", "bind", 1, True)
    assert ext.http_timeout == 30.0
    assert ext.managed_resources == [("nvidia.com/gpu", True), ("nvidia.com/gpumem", True)]
    assert {"nvidia.com/gpu", "nvidia.com/gpumem"} <= cfg.profiles[0].ignored_resources


@pytest.mark.parametrize("minor", [18, 21, 22])
def test_hami_policy_decodes_up_to_122(minor: int) -> None:
    cfg = config_from_policy(decode_policy(HAMI_POLICY, minor), "hami-scheduler")
    assert cfg.scheduler_names() == {"hami-scheduler"}
    _check_hami(cfg)
    assert cfg.extenders[0].ignorable is False  # "ignoreable" is not a field: ignored like Go json does


@pytest.mark.parametrize(("minor", "version"), [(22, "v1beta2"), (25, "v1beta2"), (25, "v1"), (26, "v1"),
                                                (33, "v1")])
def test_hami_component_config_decodes(minor: int, version: str) -> None:
    cfg = decode_config(hami_yaml(version), minor)
    assert cfg.scheduler_names() == {"hami-scheduler"}
    le = cfg.leader_election
    assert (le.leader_elect, le.resource_name) == (True, "hami-scheduler")
    assert le.resource_namespace == "hami-system"
    _check_hami(cfg)


def test_118_v1alpha2_extenders_are_case_insensitive_with_integer_timeout() -> None:
    text = """apiVersion: kubescheduler.config.k8s.io/v1alpha2
kind: KubeSchedulerConfiguration
profiles: [{schedulerName: a}, {schedulerName: b}]
extenders:
- URLPrefix: http://127.0.0.1:9
  FilterVerb: filter
  EnableHttps: true
  HTTPTimeout: 2500000000
  someUnknownKey: 1
"""
    cfg = decode_config(text, 18)
    assert cfg.scheduler_names() == {"a", "b"}
    ext = cfg.extenders[0]
    assert (ext.url_prefix, ext.filter_verb, ext.enable_https, ext.http_timeout) == (
        "http://127.0.0.1:9", "filter", True, 2.5)


def test_118_v1alpha1_with_policy_source() -> None:
    text = """apiVersion: kubescheduler.config.k8s.io/v1alpha1
kind: KubeSchedulerConfiguration
schedulerName: my-sched
algorithmSource:
  policy:
    file:
      path: /etc/policy.json
"""
    cfg = decode_config(text, 18)
    assert cfg.scheduler_names() == {"my-sched"}
    assert cfg.policy == {"source": {"file": {"path": "/etc/policy.json"}}}


def test_118_rejects_v1beta1() -> None:
    with pytest.raises(ConfigError) as e:
        decode_config(hami_yaml("v1beta1"), 18)
    assert str(e.value) == ('no kind "KubeSchedulerConfiguration" is registered for version '
                            '"kubescheduler.config.k8s.io/v1beta1" in scheme '
                            '"k8s.io/kubernetes/pkg/scheduler/apis/config/scheme/scheme.go:30"')


def test_121_v1beta1_accepted_and_strict() -> None:
    cfg = decode_config(hami_yaml("v1beta1"), 21)
    _check_hami(cfg)
    legacy_key = hami_yaml("v1beta1").replace("enableHTTPS", "enableHttps")
    with pytest.raises(ConfigError) as e:
        decode_config(legacy_key, 21)
    assert str(e.value) == ('error unmarshaling JSON: while decoding JSON: json: unknown field '
                            '"enableHttps"')


def test_121_v1beta1_timeout_must_be_a_duration_string() -> None:
    with pytest.raises(ConfigError, match="cannot unmarshal number"):
        decode_config(hami_yaml("v1beta1").replace("httpTimeout: 30s", "httpTimeout: 30000000000"), 21)


@pytest.mark.parametrize(("minor", "version"), [(21, "v1beta2"), (22, "v1beta3"), (23, "v1beta1"), (24, "v1"),
                                                (28, "v1beta2"), (29, "v1beta3"), (33, "v1beta3")])
def test_versions_a_minor_does_not_serve_are_rejected(minor: int, version: str) -> None:
    with pytest.raises(ConfigError, match=f'no kind "KubeSchedulerConfiguration" is registered for version '
                                          f'"kubescheduler.config.k8s.io/{version}"'):
        decode_config(hami_yaml(version), minor)


def test_unknown_field_strict_wording_from_124() -> None:
    text = hami_yaml("v1") + "bogus: 1\n"
    text = text.replace("- schedulerName: hami-scheduler", "- schedulerName: hami-scheduler\n  extra: x")
    with pytest.raises(ConfigError) as e:
        decode_config(text, 33)
    assert str(e.value) == 'strict decoding error: unknown field "bogus", unknown field "profiles[0].extra"'


def test_policy_is_gone_in_123() -> None:
    with pytest.raises(ConfigError):
        decode_policy(HAMI_POLICY, 23)
    with pytest.raises(cli.UsageError, match=r"^unknown flag: --policy-config-file$"):
        cli.parse_flags(["--policy-config-file=/x.json"], cli.flags_for(23))
    with pytest.raises(cli.UsageError, match=r"^unknown flag: --policy-configmap$"):
        cli.parse_flags(["--policy-configmap", "x"], cli.flags_for(23))


def test_scheduler_name_flag_gone_in_122() -> None:
    argv = ["--scheduler-name=hami-scheduler", "--policy-config-file", "/p"]
    flags = cli.parse_flags(argv, cli.flags_for(21))
    assert flags.get("scheduler-name") == "hami-scheduler"
    with pytest.raises(cli.UsageError, match="unknown flag: --scheduler-name"):
        cli.parse_flags(["--scheduler-name=x"], cli.flags_for(22))


def test_main_fails_like_the_binary_on_removed_flag(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["--k8s", "1.23", "--policy-config-file=/tmp/x.json", "--kubeconfig", "/nonexistent"])
    assert rc == 1
    assert "Error: unknown flag: --policy-config-file" in capsys.readouterr().err


def test_main_fails_on_unserved_config_version(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "c.yaml"
    f.write_text(hami_yaml("v1beta3"))
    assert cli.main(["--k8s=1.29", f"--config={f}", "--kubeconfig=/nonexistent"]) == 1
    assert 'no kind \\"KubeSchedulerConfiguration\\" is registered for version' in capsys.readouterr().err


def test_policy_flags_build_the_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "config.json"
    f.write_text(HAMI_POLICY)
    flags = cli.parse_flags(["--scheduler-name=hami-scheduler", f"--policy-config-file={f}", "-v=4",
                             "--leader-elect=false", "--leader-elect-resource-name=hami-scheduler",
                             "--leader-elect-resource-namespace=hami"], cli.flags_for(20))
    cfg = cli.build_config(flags, 20, lambda: None)
    assert cfg.scheduler_names() == {"hami-scheduler"}
    assert cfg.leader_election.leader_elect is False
    le = cfg.leader_election
    assert (le.resource_name, le.resource_namespace) == ("hami-scheduler", "hami")
    _check_hami(cfg)


def test_leader_election_and_client_connection_fields() -> None:
    text = """apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: /etc/k.conf}
leaderElection: {leaderElect: true, leaseDuration: 20s, renewDeadline: 12s, retryPeriod: 1s}
"""
    cfg = decode_config(text, 30)
    le = cfg.leader_election
    assert cfg.kubeconfig == "/etc/k.conf"
    assert (le.lease_duration, le.renew_deadline, le.retry_period) == (20, 12, 1)
    assert (le.resource_name, le.resource_namespace) == ("kube-scheduler", "kube-system")
    assert cfg.scheduler_names() == {"default-scheduler"}


def test_two_binding_extenders_rejected() -> None:
    second = "extenders:\n- urlPrefix: http://127.0.0.1:1\n  bindVerb: b\n"
    text = hami_yaml("v1").replace("extenders:\n", second)
    with pytest.raises(ConfigError, match="only one extender can implement bind"):
        decode_config(text, 33)
