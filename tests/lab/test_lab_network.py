"""The lab's pod network without a lab: per-node pod /24s from the inventory (and bad ones refused,
naming the field), the node agent's allocator for a routable pod CIDR, and the apiserver contacting
kubelets only on loopback and in the operator's $TESTBED_KUBELET_NETWORKS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from testbed.lab import LabError, load_spec
from testbed.node.podips import CidrPodIPAllocator, PodIPsExhausted

REPO = Path(__file__).resolve().parents[2]


def _inv(tmp_path: Path, **gvars: str) -> Path:
    doc = yaml.safe_load((REPO / "inventories" / "emulated" / "lab.yml").read_text())
    doc["all"]["vars"].update(gvars)
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_each_node_host_gets_its_own_pod_cidr(tmp_path: Path) -> None:
    spec = load_spec(REPO / "inventories" / "emulated" / "lab.yml")
    assert {h.name: h.pod_cidr for h in spec.hosts} == {"cp1": "", "node1": "10.244.0.0/24",
                                                         "node2": "10.244.1.0/24"}
    spec = load_spec(_inv(tmp_path, lab_pod_subnet="10.50.8.0/23"))
    assert [h.pod_cidr for h in spec.hosts if h.group == "nodes"] == ["10.50.8.0/24", "10.50.9.0/24"]


@pytest.mark.parametrize(("value", "message"), [
    ("10.213.0.0/16", "overlaps all.vars.lab_subnet"),
    ("10.96.0.0/12", "overlaps the Service CIDR"),
    ("8.8.0.0/16", "must be a private range"),
    ("10.50.0.0/25", "must be a private range of /24 or wider"),
    ("10.50.0.0/24", "host node2: all.vars.lab_pod_subnet 10.50.0.0/24 has no /24 left"),
    ("not-a-cidr", "all.vars.lab_pod_subnet"),
])
def test_bad_pod_subnet_is_refused(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(LabError, match=re.escape(message)):
        load_spec(_inv(tmp_path, lab_pod_subnet=value))


def test_cidr_allocator_hands_out_the_range() -> None:
    a = CidrPodIPAllocator("10.244.1.0/29")  # .2 .. .6: not the network, the gateway (.1), broadcast
    ips = [a.allocate() for _ in range(5)]
    assert ips == ["10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5", "10.244.1.6"]
    with pytest.raises(PodIPsExhausted, match=re.escape("10.244.1.0/29")):
        a.allocate()
    a.release("10.244.1.3")
    assert a.allocate() == "10.244.1.3"
    b = CidrPodIPAllocator("10.244.1.0/24")
    assert b.claim("10.244.1.40") and not b.claim("10.244.1.40")  # a restarted agent's pod, once
    assert not b.claim("10.244.2.5") and not b.claim("10.244.1.1") and not b.claim("bogus")
    with pytest.raises(ValueError, match="TESTBED_POD_CIDR"):
        CidrPodIPAllocator("10.244.1.0/33")


def test_kubelet_networks_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.apiserver.errors import APIError
    from testbed.apiserver.server import kubelet_endpoint

    def node(addr: str) -> dict:
        return {"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "InternalIP", "address": addr}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 4321}}}}

    monkeypatch.delenv("TESTBED_KUBELET_NETWORKS", raising=False)
    assert kubelet_endpoint(node("127.0.0.2")) == ("127.0.0.2", 4321)
    with pytest.raises(APIError, match="only contacts kubelets on loopback"):
        kubelet_endpoint(node("10.213.0.11"))
    monkeypatch.setenv("TESTBED_KUBELET_NETWORKS", "10.213.0.0/24")
    assert kubelet_endpoint(node("10.213.0.11")) == ("10.213.0.11", 4321)
    with pytest.raises(APIError, match="and in \\$TESTBED_KUBELET_NETWORKS"):
        kubelet_endpoint(node("10.213.1.11"))  # a node's status must not steer the apiserver elsewhere


def test_bad_lab_input_exits_4_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.cli import main as cli_main

    inv = _inv(tmp_path, lab_pod_subnet="10.213.0.0/16")
    base = ["-i", str(inv), "--state", str(tmp_path / "state"), "--out", str(tmp_path / "out")]
    assert cli_main(["provision", *base]) == 4
    assert "all.vars.lab_pod_subnet 10.213.0.0/16 overlaps all.vars.lab_subnet" in capsys.readouterr().err
    assert cli_main(["certify", *base, "-e", "conformance_args=[--"]) == 4
    assert "-e conformance_args: a value starting with [ or { must be JSON" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # nothing was created
