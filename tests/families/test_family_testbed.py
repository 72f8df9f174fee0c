"""Family nodes on the testbed (data-driven from testbed/hardware/families.py and the plugin specs):
inventories, node files, the runtime's injection, the chart's family plugin DaemonSet, the backend's
chart flags and registration check, and the harness's vendor selection (``--vendor a,b|all``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conformance import profiles
from conformance.backends import testbed as backend
from conformance.profiles.combined import CombinedProfile
from conformance.vendorsel import VendorError, parse_vendors, profiled_vendors
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.registry import build_families
from hami_stack.webhook.admit import WebhookConfig, admit
from testbed.clients import helm_path
from testbed.hardware import families
from testbed.node import runtime, toolkit
from testbed.node.inventory import InventoryError, load_inventory, parse_inventory

REPO = Path(__file__).resolve().parents[2]
INV = REPO / "inventories" / "emulated"


def test_family_inventories_load() -> None:
    hygon = load_inventory(INV / "two-nodes-hygon.yaml")
    assert [(n.name, n.hardware) for n in hygon] == [
        ("dcu-node-1", {"hygon": {"model": "Z100L", "count": 4}}),
        ("dcu-node-2", {"hygon": {"model": "K100", "count": 2}}),
    ]
    assert all(n.labels == {"dcu": "on"} for n in hygon)
    mixed = {n.name: set(n.hardware) for n in load_inventory(INV / "mixed-families.yaml")}
    kinds = set().union(*mixed.values())
    assert {"nvidia", "ascend", "hygon", "cambricon"} <= kinds and len(kinds) >= 4
    assert sum(1 for k in mixed.values() if k == {"nvidia"}) == 2  # the node-policy cases need two


@pytest.mark.parametrize(
    ("hardware", "message"),
    [
        ({"hygon": {"model": "Z999"}}, r"hardware\.hygon\.model: unknown hygon model 'Z999' \(known: "),
        ({"hygon": {"count": 2}}, r"hardware\.hygon\.model: required \(one of: K100, Z100, Z100L\)"),
        ({"cambricon": {"model": "MLU590", "count": 0}}, r"hardware\.cambricon\.count: must be >= 1"),
        ({"hygon": {"model": "Z100", "count": 17}}, r"hardware\.hygon\.count: at most 16 devices"),
        ({"hygon": {"model": "Z100", "cores": 1}}, r"hardware\.hygon\.cores: unknown field"),
        ({"dcu": {"model": "Z100"}}, r"hardware\.dcu: unknown field \(allowed: .*hygon"),
    ],
)
def test_bad_family_hardware_names_the_field(hardware: dict[str, object], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        parse_inventory({"nodes": [{"name": "n", "hardware": hardware}]}, "inv.yaml")


def test_node_files_and_the_runtimes_view(tmp_path: Path) -> None:
    state = families.node_state_dir(tmp_path)
    devices = families.create_state(state, "hygon", "Z100L", 3, node_name="dcu-node-1")
    nodes = families.create_device_nodes(tmp_path, "hygon", 3)
    assert {str(p.relative_to(tmp_path)) for p in nodes} >= {"dev/kfd", "dev/dri/card2", "dev/dri/renderD130"}
    assert not (tmp_path / "dev/dri/card3").exists()  # a device the node lacks has no node
    # device specs bind the node's stand-in; any other path stays the host's
    assert runtime._device_source(tmp_path, "/dev/dri/card1") == str(tmp_path / "dev/dri/card1")
    assert runtime._device_source(tmp_path, "/dev/dri/card3") == "/dev/dri/card3"
    assert toolkit.family_state_dir(tmp_path) == state
    # only a container naming devices in the vendor's variable gets the driver files
    assert families.STATE_ENV not in toolkit.inject_families({"PATH": "/bin"}, state)
    env = toolkit.inject_families({"DCU_VISIBLE_DEVICES": devices[1].uuid}, state)
    assert env[families.STATE_ENV] == str(state)
    assert families.visible(state, "hygon", env["DCU_VISIBLE_DEVICES"]) == [devices[1]]
    assert families.visible(state, "hygon", "all") == devices
    assert [d.index for d in families.visible(state, "hygon", "2,0,9")] == [2, 0]


def test_the_probe_shows_only_the_visible_devices(tmp_path: Path) -> None:
    from conformance.probe.families import view

    families.create_state(tmp_path, "cambricon", "MLU370-X8", 4, node_name="mlu-node-1")
    env = toolkit.inject_families({"CAMBRICON_SPLIT_VISIBLE_DEVICES": "2"}, tmp_path)
    doc = view(env)
    assert [d["index"] for d in doc["cambricon"]["devices"]] == [2]
    assert doc["cambricon"]["devices"][0]["memory_mib"] == 24576
    assert view({families.STATE_ENV: str(tmp_path)}) == {}  # names no device: no view


def test_backend_enables_the_family_plugins_and_knows_their_registration() -> None:
    sets = backend.vendor_chart_set(INV / "mixed-families.yaml", [])
    assert "devices.hygon.devicePlugin.enabled=true" in sets
    assert "devices.cambricon.devicePlugin.enabled=true" in sets and "devices.ascend.enabled=true" in sets
    # an explicit flag wins
    assert "devices.hygon.devicePlugin.enabled=true" not in backend.vendor_chart_set(
        INV / "two-nodes-hygon.yaml", ["devices.hygon.devicePlugin.enabled=false"]
    )
    assert backend.default_inventory(["hygon"]) == INV / "two-nodes-hygon.yaml"
    # several vendors: the smallest mixed inventory with each of them
    assert backend.default_inventory(["nvidia", "ascend"]) == INV / "mixed-nvidia-ascend.yaml"
    assert backend.default_inventory(["nvidia", "hygon"]) == INV / "mixed-families.yaml"
    signs = backend.family_signs()
    assert signs["dcu"] == ("hygon.com/dcunum", "hami.io/node-dcu-register")
    assert signs["mlu"] == ("cambricon.com/vmlu", "")  # capacity only

    def node(annotations: dict[str, str], capacity: dict[str, str]) -> dict[str, object]:
        return {"metadata": {"annotations": annotations}, "status": {"capacity": capacity}}

    assert backend._registered(node({}, {"cambricon.com/vmlu": "400"}), signs)
    assert not backend._registered(node({}, {"hygon.com/dcunum": "16"}), signs)  # no register yet
    assert backend._registered(node({"hami.io/node-dcu-register": "x"}, {"hygon.com/dcunum": "16"}), signs)


def test_vendor_selection() -> None:
    assert parse_vendors("ascend,nvidia") == ["nvidia", "ascend"]  # cases.VENDORS order
    assert parse_vendors("hygon, hygon") == ["hygon"]
    every = parse_vendors("all")
    assert every == profiled_vendors() and {"nvidia", "ascend", "hygon", "cambricon"} <= set(every)
    with pytest.raises(VendorError, match=r"unknown vendor 'nvdia' \(known: nvidia, "):
        parse_vendors("nvidia,nvdia")
    with pytest.raises(VendorError, match="give a vendor"):
        parse_vendors(" , ")


def test_a_combined_profile_keeps_each_vendors_requirements() -> None:
    nvidia, hygon = profiles.load_profile("nvidia"), profiles.load_profile("hygon")
    both = CombinedProfile([nvidia, hygon])
    assert both.name == "nvidia+hygon" and both.version == f"nvidia.{nvidia.version}+hygon.{hygon.version}"
    assert set(both.required_rules("1.33")) == set(nvidia.required_rules("1.33")) | set(
        hygon.required_rules("1.33")
    )
    assert both.requirement("DCU-ALLOC-1", "1.33", "hygon") == "required"
    # each case keeps its own vendor's answer: ENF-* is not-applicable in the scheduling-only profile,
    # though the hygon profile's default (required) would be the strictest
    lean = CombinedProfile([profiles.load_profile("nvidia-scheduling-only"), hygon])
    assert lean.requirement("ENF-MEM-1", "1.33", "nvidia") == "not-applicable"
    assert lean.requirement("ENF-MEM-1", "1.33") == "required"


def test_cli_refuses_an_unknown_vendor_before_anything_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--vendor", "nvidia,bogus", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 4, proc.stderr
    assert "unknown vendor 'bogus'" in proc.stderr and not any(tmp_path.iterdir())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "run",
            "--vendor",
            "nvidia,ascend",
            "--profile",
            "nvidia",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 4 and "with several vendors" in proc.stderr


def _review(limits: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, object]:
    pod = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "d", "labels": labels or {}},
        "spec": {"containers": [{"name": "work", "resources": {"limits": limits}}]},
    }
    return {"uid": "1", "operation": "CREATE", "object": pod}


def test_a_pod_of_a_disabled_family_is_told_so() -> None:
    no_dcu = WebhookConfig(families=build_families(parse_device_config({"nvidia": {}})), trusted_users=())
    resp = admit(_review({"hygon.com/dcunum": "1", "hygon.com/dcumem": "2048"}), no_dcu)
    assert resp.allowed and not resp.patch  # left to its scheduler, unchanged
    assert len(resp.warnings) == 1
    assert "container work asks for hygon.com/dcumem, hygon.com/dcunum" in resp.warnings[0]
    assert "hygon family (DCU) is not enabled" in resp.warnings[0]
    assert "devices.hygon.enabled=false" in resp.warnings[0]
    # a pod that opted out of HAMi hears nothing about it
    opted_out = admit(_review({"hygon.com/dcunum": "1"}, {"hami.io/webhook": "ignore"}), no_dcu)
    assert opted_out.allowed and opted_out.warnings == []
    # enabled: no warning, and the pod goes to HAMi
    dcu = WebhookConfig(
        families=build_families(
            parse_device_config({"nvidia": {}, "hygon": {"resourceCountName": "hygon.com/dcunum"}})
        ),
        trusted_users=(),
        scheduler_name="hami-scheduler",
    )
    resp = admit(_review({"hygon.com/dcunum": "1"}), dcu)
    assert resp.allowed and resp.warnings == [] and resp.patch


HELM = helm_path()


def _render(*sets: str) -> list[dict[str, object]]:
    assert HELM is not None
    cmd = [str(HELM), "template", "hami", str(REPO / "hami_stack" / "chart")]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.skipif(HELM is None, reason="helm is fetched by `make clients`")
def test_chart_family_plugin_daemonset_and_device_config() -> None:
    docs = _render(
        "devices.hygon.devicePlugin.enabled=true",
        "devices.cambricon.enabled=false",
        "devices.cambricon.devicePlugin.enabled=true",
    )
    ds = {d["metadata"]["name"]: d for d in docs if d["kind"] == "DaemonSet"}
    assert "hami-cambricon-device-plugin" not in ds  # the family itself is off
    pod = ds["hami-hygon-device-plugin"]["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert ctr["command"] == ["family-device-plugin"] and "--family=dcu" in ctr["args"]
    assert {"name": "DCU_VISIBLE_DEVICES", "value": "all"} in ctr["env"]
    assert pod["nodeSelector"] == {"dcu": "on"}
    config = next(d for d in docs if d["metadata"]["name"] == "hami-scheduler-device")
    sections = yaml.safe_load(config["data"]["device-config.yaml"])
    assert "hygon" in sections and "cambricon" not in sections
    scheduler = json.dumps([d for d in docs if d["kind"] == "ConfigMap"])
    assert "cambricon.com/vmlu" not in scheduler and "hygon.com/dcunum" in scheduler  # managed resources
    defaults = {d["metadata"]["name"] for d in _render() if d["kind"] == "DaemonSet"}
    assert not any("hygon" in n or "cambricon" in n for n in defaults)  # vendor plugins are opt-in


def test_vendor_all_runs_on_a_cluster_with_every_profiled_family(tmp_path: Path) -> None:
    vendors = parse_vendors("all")
    inventory = backend.default_inventory(vendors, tmp_path)
    nodes = backend.expected_nodes(inventory)
    # every vendor with a profile and an inventory of its own has a node (the mixed cluster's, or the
    # first of its two-nodes inventory), and the mixed cluster's own nodes are all there
    assert [v for v in vendors if not nodes.get(v)] == []
    mixed = {n.name for n in load_inventory(INV / "mixed-families.yaml")}
    assert mixed <= {n.name for n in load_inventory(inventory)}
    assert backend.default_inventory(["ascend", "cambricon"], tmp_path) == INV / "mixed-families.yaml"
