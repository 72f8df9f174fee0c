"""The lab playbooks without a lab: syntax of every playbook (the real-lab ones cannot run here), the
real-lab templates rendered, and Ansible's argument validation failing before anything changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
ROLES = ("control_plane", "emulated_node", "hami", "conformance", "teardown", "container_runtime",
         "kubernetes", "vendor_runtime")

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(),
                                reason="ansible-core is not installed in this environment (pip install -e .)")


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "PATH": f"{ANSIBLE_PLAYBOOK.parent}:{os.environ.get('PATH', '')}"}


def test_every_role_documents_its_variables() -> None:
    for role in ROLES:
        spec = yaml.safe_load((PLAYBOOKS / "roles" / role / "meta" / "argument_specs.yml").read_text())
        options = spec["argument_specs"]["main"]["options"]
        defaults_file = PLAYBOOKS / "roles" / role / "defaults" / "main.yml"
        defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.exists() else {}
        for name, opt in options.items():
            assert opt.get("description"), f"{role}: {name} has no description"
            if not opt.get("required"):
                # the documented default is the one the role really uses
                assert "default" in opt, f"{role}: optional {name} documents no default"
                assert defaults.get(name) == opt["default"], f"{role}: {name}: not defaults/main.yml's"


def test_syntax_of_every_playbook(tmp_path: Path) -> None:
    books = sorted(str(p) for p in PLAYBOOKS.glob("*.yml"))
    assert {"provision.yml", "deploy.yml", "certify.yml", "teardown-lab.yml", "real-lab.yml"} <= {
        Path(b).name for b in books}
    r = subprocess.run([str(ANSIBLE_PLAYBOOK), "--syntax-check", "-i", "localhost,", *books],
                       capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_real_lab_templates_render(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(REPO / "tests" / "lab" / "render.yml"),
                        "-e", f"out={out}", "-e", f"roles_dir={PLAYBOOKS / 'roles'}",
                        "-e", f"ansible_python_interpreter={sys.executable}"],
                       capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    api = {m: next(d for d in yaml.safe_load_all((out / f"kubeadm-{m}.yaml").read_text())
                   if d["kind"] == "ClusterConfiguration") for m in ("1.21", "1.28", "1.33")}
    assert api["1.21"]["apiVersion"] == "kubeadm.k8s.io/v1beta2"
    assert api["1.28"]["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert api["1.33"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert api["1.33"]["kubernetesVersion"] == "stable-1.33"
    assert api["1.33"]["controlPlaneEndpoint"] == "192.0.2.10:6443"
    assert api["1.33"]["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"}
    assert "URIs: https://pkgs.k8s.io/core:/stable:/v1.33/deb/" in (out / "kubernetes.sources").read_text()
    toml = (out / "config.toml").read_text()
    assert 'sandbox_image = "registry.k8s.io/pause:3.10"' in toml
    assert "SystemdCgroup = true" in toml
    assert 'runtimes.nvidia.options]\n  BinaryName = "/usr/bin/nvidia-container-runtime"' in toml
    nodes = yaml.safe_load((out / "nodes.yaml").read_text())
    assert nodes["nodes"][0]["hardware"] == {"nvidia": {"model": "A100-SXM4-80GB", "count": 4}}
    from testbed.node.inventory import load_inventory

    assert [n.name for n in load_inventory(out / "nodes.yaml")] == ["node9"]


REAL_LAB_INVENTORY = REPO / "inventories" / "examples" / "real-lab.yml"


def _runner(tmp_path: Path, playbook: str, inventory: Path, cmdline: str) -> tuple[int, str]:
    """The play through ansible_runner (as ``hami-conformance`` drives playbooks), its stdout."""
    import ansible_runner

    (tmp_path / "runner").mkdir(parents=True)
    r = ansible_runner.run(private_data_dir=str(tmp_path / "runner"), playbook=str(PLAYBOOKS / playbook),
                           inventory=str(inventory), cmdline=cmdline, quiet=True,
                           envvars={k: v for k, v in _env(tmp_path).items()
                                    if k.startswith("ANSIBLE_") or k == "PATH"})
    return r.rc, r.stdout.read()


def test_real_lab_play_with_the_example_inventory(tmp_path: Path) -> None:
    rc, out = _runner(tmp_path / "syntax", "real-lab.yml", REAL_LAB_INVENTORY, "--syntax-check")
    assert rc == 0, out
    rc, out = _runner(tmp_path / "hosts", "real-lab.yml", REAL_LAB_INVENTORY, "--list-hosts")
    assert rc == 0, out
    plays = {}
    for block in out.split("play #")[1:]:
        pattern = block.split("(", 1)[1].split(")", 1)[0]
        lines = block.split("hosts (", 1)[1].splitlines()[1:]
        plays[pattern] = sorted(h.strip() for h in lines if h.strip())
    # every play finds its hosts through the inventory's groups: none is empty or misses a host
    assert plays == {
        "control_plane:nodes": ["cp-1.lab.example", "gpu-1.lab.example", "gpu-2.lab.example"],
        "nodes": ["gpu-1.lab.example", "gpu-2.lab.example"],
        "control_plane": ["cp-1.lab.example"],
    }, out
    rc, out = _runner(tmp_path / "tasks", "real-lab.yml", REAL_LAB_INVENTORY, "--list-tasks")
    assert rc == 0, out
    for task in ("kubernetes : Kubeadm init", "vendor_runtime : NVIDIA driver is the pinned version",
                 "hami : Helm install of the HAMi chart", "conformance : Fetch it to the controller"):
        assert task in out, out


def test_real_lab_inventory_satisfies_every_role(tmp_path: Path) -> None:
    """Each host's variables from the example inventory pass the argument specs of the roles the
    real-lab play gives it (what Ansible checks first when the play really runs)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(REAL_LAB_INVENTORY)])
    vm = VariableManager(loader=loader, inventory=inv)
    groups = inv.get_groups_dict()
    assert groups["control_plane"] == ["cp-1.lab.example"]
    assert groups["nodes"] == ["gpu-1.lab.example", "gpu-2.lab.example"]
    roles = {"cp-1.lab.example": ["container_runtime", "kubernetes", "hami", "conformance"],
             "gpu-1.lab.example": ["container_runtime", "kubernetes", "vendor_runtime"],
             "gpu-2.lab.example": ["container_runtime", "kubernetes", "vendor_runtime"]}
    # what the real-lab play adds itself (its role vars and -e certify_fetch_dir)
    play_vars = {"kubernetes_role": "node", "hami_kubeconfig": "/etc/kubernetes/admin.conf",
                 "conformance_kubeconfig": "/etc/kubernetes/admin.conf", "lab_host_dir": "/var/lib/hc",
                 "certify_fetch_dir": str(tmp_path)}
    for host, host_roles in roles.items():
        hvars = vm.get_vars(host=inv.get_host(host))
        hvars["hcl_repo"] = hvars["lab_repo"]  # playbooks/group_vars/all.yml
        for role in host_roles:
            spec = yaml.safe_load((PLAYBOOKS / "roles" / role / "meta" / "argument_specs.yml").read_text())
            options = spec["argument_specs"]["main"]["options"]
            given = {k: Templar(loader, variables=hvars).template(hvars[k]) if k in hvars else play_vars[k]
                     for k in options if k in hvars or k in play_vars}
            res = ArgumentSpecValidator(options).validate(given)
            assert not res.error_messages, f"{host} / {role}: {res.error_messages}"


def _bad_lab(tmp_path: Path, nodes: dict[str, dict], minor: str = "1.33",
             vendor: str = "nvidia") -> subprocess.CompletedProcess[str]:
    """provision.yml against local-connection hosts: only its preflight can run, and must stop it."""
    tmp_path.mkdir(parents=True)
    host_dir = tmp_path / "hosts"
    inv = {"all": {"vars": {"k8s_minor": minor, "vendor": vendor, "ansible_connection": "local",
                            "lab_subnet": "10.0.0.0/24",
                            "ansible_python_interpreter": sys.executable, "hcl_repo": str(REPO)},
                   "children": {
                       "control_plane": {"hosts": {"cp1": {"lab_host_dir": str(host_dir / "cp1")}}},
                       "nodes": {"hosts": {name: {"lab_host_dir": str(host_dir / name),
                                                  "lab_address": "10.0.0.2", "lab_pod_cidr": "10.1.0.0/24",
                                                  **v}
                                           for name, v in nodes.items()}}}}}
    (tmp_path / "inv.yml").write_text(yaml.safe_dump(inv))
    r = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "inv.yml"),
                        str(PLAYBOOKS / "provision.yml")],
                       capture_output=True, text=True, env=_env(tmp_path), timeout=180)
    assert r.returncode != 0
    assert not host_dir.exists(), "preflight failed but something was created"
    assert "PLAY [Control plane]" not in r.stdout
    return r


def test_bad_variables_fail_before_anything_changes(tmp_path: Path) -> None:
    # one run, two hosts: each failing host is named with its variable
    r = _bad_lab(tmp_path / "vars", {"node1": {"node_vendor": "amd", "node_model": "MI300X", "node_count": 1},
                                     "node2": {"node_vendor": "nvidia", "node_count": 1}})
    out = r.stdout + r.stderr
    assert "[node1]" in out and "node_vendor" in out and "amd" in out
    assert "[node2]" in out and "node_model" in out
    r = _bad_lab(tmp_path / "model", {"node1": {"node_vendor": "nvidia", "node_model": "Z9000",
                                                "node_count": 2}})
    assert "host node1: node_vendor/node_model/node_count" in r.stdout and "Z9000" in r.stdout
    r = _bad_lab(tmp_path / "minor", {"node1": {"node_vendor": "nvidia", "node_model": "A100-SXM4-80GB"}},
                 minor="1.9")
    assert "[cp1]" in r.stdout and "k8s_minor" in r.stdout and "1.9" in r.stdout
    r = _bad_lab(tmp_path / "vendor", {"node1": {"node_vendor": "nvidia", "node_model": "A100-SXM4-80GB",
                                                 "node_count": 1}}, vendor="amdgpu")
    assert "[cp1]" in r.stdout and "vendor" in r.stdout and "amdgpu" in r.stdout


ANSIBLE_LINT = Path(sys.executable).with_name("ansible-lint")


@pytest.mark.skipif(not ANSIBLE_LINT.exists(), reason="ansible-lint is not installed (test extra)")
def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    books = ["provision.yml", "deploy.yml", "certify.yml", "teardown-lab.yml", "real-lab.yml", "roles/"]
    r = subprocess.run([str(ANSIBLE_LINT), "--offline", "--nocolor", "-f", "pep8", "--profile", "production",
                        *books], cwd=PLAYBOOKS, capture_output=True, text=True, env=_env(tmp_path),
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr
