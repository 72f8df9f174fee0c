"""The Helm chart: lint, render for every minor 1.18-1.35, and the rendered scheduler config and flags are
what the testbed's kube-scheduler of that minor accepts (real helm 3; skipped when none is cached)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.clients import helm_path, helm_skip_reason
from testbed.scheduler.cli import flags_for, parse_flags
from testbed.scheduler.config import config_from_policy, decode_config, decode_policy

CHART = Path(__file__).resolve().parents[2] / "hami_stack" / "chart"
HELM = helm_path(major=3)
NS = "hami-system"
MINORS = range(18, 36)  # 1.34, 1.35: kubescheduler.config.k8s.io/v1 as 1.29-1.33

pytestmark = [pytest.mark.helm, pytest.mark.skipif(HELM is None, reason=helm_skip_reason(3))]


@functools.cache
def render(minor: int, *sets: str) -> dict[tuple[str, str], dict[str, Any]]:
    args = [str(HELM), "template", "rel", str(CHART), "--namespace", NS, "--kube-version", f"1.{minor}.0"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


def _container(docs: dict, kind: str, name: str, container: str) -> dict[str, Any]:
    spec = docs[(kind, name)]["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == container)


def test_helm_lint() -> None:
    proc = subprocess.run([str(HELM), "lint", str(CHART)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("minor", MINORS)
def test_scheduler_config_is_accepted_by_that_minor(minor: int) -> None:
    docs = render(minor)
    data = docs[("ConfigMap", "rel-hami-scheduler")]["data"]
    ks = _container(docs, "Deployment", "rel-hami-scheduler", "kube-scheduler")
    assert ks["image"] == f"registry.k8s.io/kube-scheduler:v1.{minor}.0"
    assert ks["command"] == ["kube-scheduler"]
    flags = parse_flags(ks["args"], flags_for(minor))  # raises on a flag this minor lacks
    if minor < 22:
        assert set(data) == {"config.json"}
        assert flags.get("policy-config-file") == "/config/config.json"
        assert flags.get("scheduler-name") == "hami-scheduler"
        assert flags.get("leader-elect-resource-namespace") == NS
        # the lock the extender watches; real 1.18/1.19 default to an Endpoints lock its RBAC lacks
        assert flags.get("leader-elect-resource-lock") == "leases"
        cfg = config_from_policy(decode_policy(data["config.json"], minor), "hami-scheduler")
    else:
        assert set(data) == {"config.yaml"}
        assert flags.get("config") == "/config/config.yaml"
        version = "v1" if minor >= 26 else "v1beta2"
        assert yaml.safe_load(data["config.yaml"])["apiVersion"] == f"kubescheduler.config.k8s.io/{version}"
        cfg = decode_config(data["config.yaml"], minor)
        le = cfg.leader_election
        assert (le.leader_elect, le.resource_name, le.resource_namespace) == (True, "hami-scheduler", NS)
    assert cfg.scheduler_names() == {"hami-scheduler"}
    (ext,) = cfg.extenders
    assert (ext.url_prefix, ext.filter_verb, ext.bind_verb, ext.weight) == (
        "https://127.0.0.1:443",
        "filter",
        "bind",
        1,
    )
    # mutual TLS: the extender is verified against the chart's CA, kube-scheduler presents its client cert
    assert ext.enable_https and ext.tls is not None and not ext.tls.insecure
    assert (ext.tls.server_name, ext.tls.cert_file, ext.tls.key_file, ext.tls.ca_file) == (
        f"rel-hami-scheduler.{NS}.svc",
        "/tls/client.crt",
        "/tls/client.key",
        "/tls/ca.crt",
    )
    assert (ext.node_cache_capable, ext.http_timeout, ext.ignorable) == (True, 30.0, False)
    managed = dict(ext.managed_resources)
    for name in (
        "nvidia.com/gpu",
        "nvidia.com/gpumem",
        "nvidia.com/gpumem-percentage",
        "nvidia.com/gpucores",
        "nvidia.com/priority",
        "cambricon.com/vmlu",
        "hygon.com/dcunum",
        "metax-tech.com/gpu",
    ):
        assert managed[name] is True


@pytest.mark.parametrize("minor", [18, 33])
def test_webhook_disabled_keeps_mutual_tls(minor: int) -> None:
    """Without the webhook, /filter and /bind still need kube-scheduler's client certificate."""
    docs = render(minor, "scheduler.admissionWebhook.enabled=false")
    data = docs[("ConfigMap", "rel-hami-scheduler")]["data"]
    if minor < 22:
        cfg = config_from_policy(decode_policy(data["config.json"], minor), "hami-scheduler")
    else:
        cfg = decode_config(data["config.yaml"], minor)
    ext_cfg = cfg.extenders[0]
    assert (ext_cfg.url_prefix, ext_cfg.enable_https) == ("https://127.0.0.1:443", True)
    assert ext_cfg.tls is not None and ext_cfg.tls.cert_file == "/tls/client.crt"
    assert ("MutatingWebhookConfiguration", "rel-hami-webhook") not in docs
    assert ("Secret", "rel-hami-scheduler-tls") in docs
    ext = _container(docs, "Deployment", "rel-hami-scheduler", "vgpu-scheduler-extender")
    assert "--http_bind=0.0.0.0:443" in ext["args"] and "--client-ca-file=/tls/ca.crt" in ext["args"]


def test_kube_scheduler_tag_strips_distribution_suffix() -> None:
    docs = render(31, "scheduler.kubeScheduler.image.tag=v1.31.1")
    assert _container(docs, "Deployment", "rel-hami-scheduler", "kube-scheduler")["image"].endswith(
        ":v1.31.1"
    )


def test_extender_flags_and_tls() -> None:
    from cryptography import x509

    docs = render(33)
    ext = _container(docs, "Deployment", "rel-hami-scheduler", "vgpu-scheduler-extender")
    assert ext["command"] == ["scheduler"]
    for flag in (
        "--http_bind=0.0.0.0:443",
        "--cert_file=/tls/tls.crt",
        "--key_file=/tls/tls.key",
        "--scheduler-name=hami-scheduler",
        "--device-config-file=/device-config.yaml",
        "--metrics-bind-address=:9395",
        "--leader-elect=true",
        "--leader-elect-resource-name=hami-scheduler",
        f"--leader-elect-resource-namespace={NS}",
        "--node-scheduler-policy=binpack",
        "--gpu-scheduler-policy=spread",
        "--client-ca-file=/tls/ca.crt",
        "--client-cn=hami-scheduler-extender-client",
    ):
        assert flag in ext["args"]
    from hami_stack.scheduler.cli import parse_args

    parsed = parse_args(ext["args"])  # the extender accepts every flag the chart passes
    assert (parsed.client_ca_file, parsed.client_cn) == ("/tls/ca.crt", "hami-scheduler-extender-client")
    secret = docs[("Secret", "rel-hami-scheduler-tls")]
    import base64

    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"rel-hami-scheduler.{NS}.svc" in sans
    hook = docs[("MutatingWebhookConfiguration", "rel-hami-webhook")]["webhooks"][0]
    assert hook["name"] == "vgpu.hami.io"
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert hook["clientConfig"]["service"] == {
        "name": "rel-hami-scheduler",
        "namespace": NS,
        "path": "/webhook",
        "port": 443,
    }
    assert (hook["failurePolicy"], hook["sideEffects"], hook["timeoutSeconds"], hook["matchPolicy"]) == (
        "Fail",
        "None",
        10,
        "Equivalent",
    )
    assert hook["rules"] == [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "*",
        }
    ]
    # the opt-out label does not hide a pod from the webhook (it denies the label on device pods)
    assert "objectSelector" not in hook
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {"key": "hami.io/webhook", "operator": "NotIn", "values": ["ignore"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [NS, "kube-system"]},
    ]


def test_rbac_has_only_the_reference_verbs() -> None:
    docs = render(33)
    rules = {
        tuple(r["resources"]): sorted(r["verbs"])
        for r in docs[("ClusterRole", "rel-hami-scheduler")]["rules"]
    }
    assert rules == {
        ("pods", "configmaps"): sorted(["get", "list", "watch", "patch"]),
        ("pods/binding",): ["create"],
        ("nodes",): sorted(["get", "list", "patch", "watch"]),
        ("events",): sorted(["create", "get", "list"]),
        ("resourcequotas",): sorted(["get", "list", "watch"]),
    }
    lease = docs[("Role", "rel-hami-scheduler")]["rules"]
    assert lease == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["create", "list", "watch", "get", "update", "patch"],
        }
    ]
    dp = {
        tuple(r["resources"]): sorted(r["verbs"])
        for r in docs[("ClusterRole", "rel-hami-device-plugin")]["rules"]
    }
    assert dp == {
        ("pods",): sorted(["get", "create", "watch", "list", "update", "patch"]),
        ("nodes",): sorted(["get", "update", "list", "patch"]),
        ("events",): sorted(["list", "create", "update"]),
    }


def test_services_and_ports() -> None:
    docs = render(33)
    svc = docs[("Service", "rel-hami-scheduler")]["spec"]
    ports = {p["name"]: (p["port"], p["targetPort"], p.get("nodePort")) for p in svc["ports"]}
    assert ports == {"http": (443, 443, None), "monitor": (31993, 9395, None)}
    assert svc["type"] == "ClusterIP" and svc["selector"]["hami.io/scheduler-role"] == "leader"
    mon = docs[("Service", "rel-hami-device-plugin-monitor")]["spec"]
    assert mon["type"] == "ClusterIP"
    assert [(p["name"], p["port"], p["targetPort"], p.get("nodePort")) for p in mon["ports"]] == [
        ("monitorport", 31992, 9394, None)
    ]


def test_node_port_only_when_asked() -> None:
    docs = render(33, "scheduler.service.type=NodePort", "devicePlugin.service.type=NodePort")
    svc = docs[("Service", "rel-hami-scheduler")]["spec"]
    assert svc["type"] == "NodePort"
    assert {p["name"]: p.get("nodePort") for p in svc["ports"]} == {"http": 31998, "monitor": 31993}
    mon = docs[("Service", "rel-hami-device-plugin-monitor")]["spec"]
    assert (mon["type"], mon["ports"][0]["nodePort"]) == ("NodePort", 31992)


def test_device_plugin_daemonset() -> None:
    docs = render(33, "devicePlugin.deviceSplitCount=4")
    ds = docs[("DaemonSet", "rel-hami-device-plugin")]["spec"]["template"]["spec"]
    assert ds["nodeSelector"] == {"gpu": "on"}
    vols = {v["name"]: v for v in ds["volumes"]}
    assert vols["device-plugin"]["hostPath"]["path"] == "/var/lib/kubelet/device-plugins"
    assert vols["lib"]["hostPath"]["path"] == "/usr/local/vgpu"
    assert vols["containers"]["hostPath"]["path"] == "/usr/local/vgpu/containers"
    plugin = _container(docs, "DaemonSet", "rel-hami-device-plugin", "device-plugin")
    env = {e["name"]: e.get("value") for e in plugin["env"]}
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["HOOK_PATH"], env["DEVICE_LIST_STRATEGY"]) == (
        "all",
        "/usr/local",
        "envvar",
    )
    assert plugin["command"] == ["nvidia-device-plugin"]
    assert plugin["lifecycle"]["postStart"]["exec"]["command"] == ["hami-install-shim", "/usr/local/vgpu/"]
    from hami_stack.device_plugin.options import build_parser

    build_parser().parse_args(plugin["args"])  # the plugin accepts every flag the chart passes
    device_cfg = yaml.safe_load(
        docs[("ConfigMap", "rel-hami-scheduler-device")]["data"]["device-config.yaml"]
    )
    from hami_stack.devices.config import parse_device_config

    nv = parse_device_config(device_cfg).nvidia
    assert nv is not None and (nv.device_split_count, nv.resource_count_name) == (4, "nvidia.com/gpu")
    assert "config.json" in docs[("ConfigMap", "rel-hami-device-plugin")]["data"]
    assert _container(docs, "DaemonSet", "rel-hami-device-plugin", "vgpu-monitor")["command"] == [
        "vGPUmonitor"
    ]


@pytest.mark.parametrize("minor", [18, 20, 21, 33])
def test_opt_out_label_only_before_namespace_name_labels(minor: int) -> None:
    """Before 1.21 the namespace exclusion matches nothing, so the stack's pods keep upstream's opt-out
    label (else a Fail webhook blocks its own start); from 1.21 that label hides nothing."""
    hook = render(minor)[("MutatingWebhookConfiguration", "rel-hami-webhook")]["webhooks"][0]
    opt_out = {"key": "hami.io/webhook", "operator": "NotIn", "values": ["ignore"]}
    if minor < 21:
        assert hook["objectSelector"] == {"matchExpressions": [opt_out]}
    else:
        assert "objectSelector" not in hook
    assert hook["failurePolicy"] == "Fail"


def test_webhook_trusts_exactly_the_stacks_service_accounts() -> None:
    """The UPDATE check trusts the extender's and the device plugin's service accounts, no one else."""
    from hami_stack.webhook.trust import is_trusted, trusted_users_from_env

    docs = render(33)
    ext = _container(docs, "Deployment", "rel-hami-scheduler", "vgpu-scheduler-extender")
    env = {e["name"]: e.get("value", "") for e in ext["env"] if "value" in e}
    trusted = trusted_users_from_env({**env, "POD_NAMESPACE": NS})
    accounts = {name for kind, name in docs if kind == "ServiceAccount"}
    assert accounts == {"rel-hami-scheduler", "rel-hami-device-plugin"}
    for name in accounts:
        assert is_trusted(f"system:serviceaccount:{NS}:{name}", trusted)
    assert not is_trusted(f"system:serviceaccount:{NS}:default", trusted)
    assert not is_trusted("system:serviceaccount:tenant:rel-hami-scheduler", trusted)
