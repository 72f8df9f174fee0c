"""A 1 control-plane + 2 node emulated lab provisioned over real SSH through ansible-runner, checked
for idempotence (a second provision and --check report changed=0), an unreachable host (fails in
preflight, naming it, before anything changes) and teardown (no namespace, bridge or sshd left).

Needs root (network namespaces) and Debian's openssh-server (/usr/sbin/sshd)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conformance.cli import main as cli_main
from testbed.lab import Lab, load_spec
from testbed.lab.hosts import SSHD

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SSHD.exists(), reason=f"{SSHD} is missing: apt-get install -y openssh-server"),
    pytest.mark.skipif(os.geteuid() != 0, reason="an emulated lab needs root (network namespaces)"),
]


def _inventory(tmp_path: Path) -> Path:
    doc = yaml.safe_load((REPO / "inventories" / "emulated" / "lab.yml").read_text())
    doc["all"]["vars"]["lab_name"] = f"t{os.getpid() % 100000}"  # never the developer's lab1
    path = tmp_path / "lab.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _runs(out: Path) -> list[dict]:
    (run_dir,) = sorted(out.iterdir())[-1:]
    return json.loads((run_dir / "lab-run.json").read_text())


def test_emulated_lab_over_ssh(tmp_path: Path) -> None:
    inv = _inventory(tmp_path)
    state = tmp_path / "state"
    lab = Lab(load_spec(inv), state)
    base = ["-i", str(inv), "--state", str(state)]
    try:
        t = time.monotonic()
        assert cli_main(["provision", *base, "--out", str(tmp_path / "p1")]) == 0
        provision_s = time.monotonic() - t
        (first,) = _runs(tmp_path / "p1")
        assert first["changedTotal"] > 0 and not first["failures"] and not first["dark"]
        # the node agents on the node hosts joined the control plane across the lab network
        kubeconfig = yaml.safe_load((state / "hosts" / "node1" / "kubeconfig").read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://10.213.0.10:6443"
        facts = json.loads(next((tmp_path / "p1").iterdir()).joinpath("lab-facts.json").read_text())
        assert set(facts) == {"cp1", "node1", "node2"}
        assert all(f.get("ansible_kernel") and f.get("ansible_distribution") for f in facts.values())
        assert facts["node2"]["emulated_node_accelerators"]["devices"] == [
            {"node": "node2", "vendor": "nvidia", "model": "A100-SXM4-80GB", "count": 2,
             "driver_version": "580.65.06", "cuda_driver_version": 13000}]
        # the hosts are really separate network stacks: each sshd only on its own address
        addr = subprocess.run(["ip", "-n", f"hcl-{lab.spec.name}-node1", "-o", "-4", "addr", "show", "eth0"],
                              capture_output=True, text=True).stdout
        assert "10.213.0.11/24" in addr

        assert cli_main(["provision", *base, "--out", str(tmp_path / "p2")]) == 0
        (second,) = _runs(tmp_path / "p2")
        assert second["changedTotal"] == 0, second["changed"]
        assert cli_main(["provision", *base, "--check", "--out", str(tmp_path / "p3")]) == 0
        assert _runs(tmp_path / "p3")[0]["changedTotal"] == 0

        # an unreachable host: preflight stops the play before anything changes, naming the host
        bad = tmp_path / "unreachable.yml"
        bad.write_text(yaml.safe_dump({"all": {"hosts": {"node2": {"ansible_host": "10.213.0.99"}}}}))
        from conformance.backends.lab import LabRunError, run_playbook

        with pytest.raises(LabRunError, match=r"host node2: task 'Gathering Facts' unreachable"):
            run_playbook("provision.yml", [inv, lab.connection_inventory, bad], tmp_path / "p4",
                         extravars={}, control_dir=state / "cp")
        rec = json.loads((tmp_path / "p4" / "lab-run.json").read_text())[0]
        assert rec["changedTotal"] == 0 and "node2" in rec["dark"]
        # any_errors_fatal: the later plays start but no task runs on any host
        assert rec["results"] and {r["play"] for r in rec["results"]} == {rec["plays"][0]}, rec["results"]
        assert rec["plays"][0].startswith("Preflight")
        print(f"provision {provision_s:.1f}s, reprovision {second['seconds']}s")
    finally:
        assert cli_main(["teardown", *base, "--out", str(tmp_path / "td")]) == 0
    st = lab.status()
    assert not any(h["netns"] or h["sshd"] for h in st["hosts"].values()), st
    assert not Path(f"/var/run/netns/hcl-{lab.spec.name}-gw").exists()
    assert str(state) not in subprocess.run(["ps", "-eo", "cmd"], capture_output=True, text=True).stdout
