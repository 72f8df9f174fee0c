"""Faults outside the Python processes: the shim's separate fault builds and the chart's switch.

The default shim is compiled without any fault code and never reads a fault variable, so nothing a
container sets can reach one; a fault build breaks exactly the path its catalogue entry names. The
default chart render carries no fault environment; ``faultInjection.faults`` reaches only the
containers a fault belongs to.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from hami_stack.enforcer import ensure_built
from hami_stack.faults.catalogue import BY_NAME, CATALOGUE, SHIM
from testbed.clients import helm_path, helm_skip_reason
from tests.enforcer.conftest import node, probe_bin, probe_env  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "hami_stack" / "chart"
MIB = 1 << 20
OOM = 2  # CUDA_ERROR_OUT_OF_MEMORY


def _run(
    probe: Path, shim: Path, node_state, tmp_path: Path, *cmds: str, env: dict | None = None
) -> list[str]:
    extra = {
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / f"{shim.parent.parent.name}.cache"),
        "CUDA_DEVICE_MEMORY_LIMIT_0": "4m",
        **(env or {}),
    }
    proc = subprocess.run(
        [str(probe), "dlsym", *cmds],
        env=probe_env(node_state, shim, extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def _codes(lines: list[str], cmd: str) -> list[int]:
    return [
        int(dict(kv.split("=", 1) for kv in ln.split()[1:])["rc"]) for ln in lines if ln.split()[0] == cmd
    ]


def test_default_shim_has_no_fault_code() -> None:
    data = ensure_built().read_bytes()
    for marker in (b"VGPU_FAULT", b"HAMI_FAULT", b"fault_per_call"):
        assert marker not in data
    faulty = ensure_built([BY_NAME["shim-per-call-limit"].shim_define])
    assert faulty != ensure_built() and b"fault_per_call" in faulty.read_bytes()


# (fault, probe commands, the command whose last call must succeed in the fault build and OOM by default)
PATHS = [
    ("shim-alloc-unlimited", ("alloc", str(3 * MIB), "alloc", str(2 * MIB)), "alloc"),
    ("shim-managed-unlimited", ("managed", str(3 * MIB), "managed", str(2 * MIB)), "managed"),
    ("shim-async-unlimited", ("async", str(3 * MIB), "async", str(2 * MIB)), "async"),
    ("shim-pitch-unlimited", ("alloc", str(3 * MIB), "pitch", "1024", "2048"), "pitch"),
    ("shim-vmm-unlimited", ("alloc", str(3 * MIB), "create", str(2 * MIB)), "create"),
    ("shim-per-call-limit", ("alloc", str(3 * MIB), "alloc", str(2 * MIB)), "alloc"),
]


@pytest.mark.parametrize(("fault", "cmds", "cmd"), PATHS, ids=[p[0] for p in PATHS])
def test_fault_build_breaks_exactly_its_path(fault, cmds, cmd, probe_bin, node, tmp_path) -> None:  # noqa: F811
    default = _run(probe_bin, ensure_built(), node, tmp_path, *cmds)
    assert _codes(default, cmd)[-1] == OOM
    # a workload's own environment naming every fault changes nothing in the default build
    names = ",".join(f.name for f in CATALOGUE)
    again = _run(
        probe_bin, ensure_built(), node, tmp_path, *cmds, env={"HAMI_FAULTS": names, "VGPU_FAULTS": names}
    )
    assert _codes(again, cmd)[-1] == OOM
    broken = _run(probe_bin, ensure_built([BY_NAME[fault].shim_define]), node, tmp_path, *cmds)
    assert _codes(broken, cmd)[-1] == 0


def test_cuda_total_fault_reports_the_hardware(probe_bin, node, tmp_path) -> None:  # noqa: F811
    def total(shim: Path) -> int:
        line = next(ln for ln in _run(probe_bin, shim, node, tmp_path, "info") if ln.startswith("info "))
        return int(dict(kv.split("=", 1) for kv in line.split()[1:])["total"])

    assert total(ensure_built()) == 4 * MIB
    assert total(ensure_built([BY_NAME["shim-cuda-total-unclamped"].shim_define])) > 4 * MIB


def test_every_shim_fault_builds() -> None:
    for f in CATALOGUE:
        if f.kind == SHIM:
            assert ensure_built([f.shim_define]).is_file()


needs_helm = pytest.mark.skipif(helm_path() is None, reason=helm_skip_reason())


def _render_text(*sets: str) -> str:
    cmd = [str(helm_path()), "template", "hami", str(CHART)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _render(*sets: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(_render_text(*sets)) if d]


def _fault_env(docs: list[dict]) -> dict[str, str]:
    out = {}
    for d in docs:
        spec = (((d.get("spec") or {}).get("template") or {}).get("spec")) or {}
        for c in spec.get("containers") or []:
            for e in c.get("env") or []:
                if "FAULT" in e["name"]:
                    out[c["name"]] = e.get("value", "")
    return out


@needs_helm
def test_default_render_has_no_fault_env() -> None:
    docs = _render()
    assert _fault_env(docs) == {}
    assert "FAULT" not in yaml.safe_dump_all(docs)


@needs_helm
def test_faults_reach_only_their_containers() -> None:
    env = _fault_env(
        _render(
            "faultInjection.faults={webhook-allows-privileged,shim-limiter-off,"
            "monitor-limit-halved,nodelock-never-released}"
        )
    )
    by_container = {k: set(v.split(",")) for k, v in env.items()}
    assert by_container == {
        "vgpu-scheduler-extender": {"webhook-allows-privileged", "nodelock-never-released"},
        "device-plugin": {"shim-limiter-off", "nodelock-never-released"},
        "vgpu-monitor": {"monitor-limit-halved"},
    }


@needs_helm
def test_chart_faults_change_the_rendered_objects() -> None:
    clean = _render_text()
    old_api = _render_text("faultInjection.faults={chart-scheduler-config-old-api}")
    assert "kubescheduler.config.k8s.io/v1\n" in clean and "kubescheduler.config.k8s.io/v1beta2" in old_api
    no_patch = _render_text("faultInjection.faults={chart-rbac-no-node-patch}")
    nodes_verbs = 'resources: ["nodes"]\n    verbs: ["get", "list", "patch", "watch"]'
    assert nodes_verbs in clean and nodes_verbs not in no_patch
    assert 'resources: ["nodes"]\n    verbs: ["get", "list", "watch"]' in no_patch
