"""State directory API, CLI, model catalog, the probe module and the side-by-side bench script."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.hardware.build import REPO, library_env
from testbed.hardware.state import (
    MODELS,
    DeviceState,
    build_inventory,
    create_state,
    lookup_model,
    parse_conf,
    render_conf,
)


def test_inventory_from_spec_is_deterministic_and_complete() -> None:
    inv = build_inventory(
        {"model": "A100-SXM4-80GB", "count": 4, "memory_mib": 81920, "numa": [0, 0, 1, 1]}, node_name="n1"
    )
    again = build_inventory({"model": "A100-SXM4-80GB", "count": 4, "numa": [0, 0, 1, 1]}, node_name="n1")
    other = build_inventory({"model": "A100-SXM4-80GB", "count": 4}, node_name="n2")
    assert inv == again
    assert {g.uuid for g in inv.gpus}.isdisjoint({g.uuid for g in other.gpus})
    assert [g.pci_bus_id for g in inv.gpus] == [
        "00000000:07:00.0",
        "00000000:0F:00.0",
        "00000000:47:00.0",
        "00000000:4E:00.0",
    ]
    assert [g.numa_node for g in inv.gpus] == [0, 0, 1, 1]
    assert all(len(g.uuid) == 40 and g.uuid.startswith("GPU-") for g in inv.gpus)
    assert inv.gpus[0].memory_bytes == 81920 << 20 and inv.gpus[0].compute_capability == "8.0"
    assert inv.driver_version == "580.65.06" and inv.cuda_driver_version == 13000
    assert inv.nvml_version == "13.580.65.06"
    assert inv.gpus[0].context_bytes == 420 << 20
    assert parse_conf(render_conf(inv)) == inv


def test_catalog_lookup_and_bad_specs() -> None:
    assert {"A100-SXM4-80GB", "A100-PCIE-40GB", "H100-SXM5-80GB", "H200", "Tesla T4", "L4"} <= set(MODELS)
    assert lookup_model("NVIDIA H200").key == "H200"
    assert lookup_model("t4").name == "Tesla T4"
    with pytest.raises(KeyError):
        lookup_model("Voodoo 2")
    with pytest.raises(ValueError):
        build_inventory({"model": "L4", "count": 17})
    with pytest.raises(ValueError):
        build_inventory({"model": "L4", "count": 1, "uuids": ["GPU-short"]})


def test_fault_api_and_usage(make_state: Callable[..., DeviceState]) -> None:
    st = make_state()
    st.set_health(1, "unhealthy")
    st.fail_next(1, 3)
    st.raise_xid(1, 13, lose_gpu=False)
    u = st.usage(1)
    assert (u.health, u.nvml_fail_count, u.cuda_fail_count, u.xids) == ("unhealthy", 3, 3, (13,))
    st.clear_faults(1)
    u = st.usage(1)
    assert (u.health, u.nvml_fail_count, u.cuda_fail_count, u.xids) == ("healthy", 0, 0, (13,))
    with pytest.raises(IndexError):
        st.usage(5)
    with pytest.raises(ValueError):
        st.set_health(0, "sleepy")
    # Xid events past the ring size keep only the newest
    for x in range(1, 41):
        st.raise_xid(0, x, lose_gpu=False)
    assert st.usage(0).xids == tuple(range(9, 41))


def test_opening_a_foreign_region_fails(tmp_path: Path) -> None:
    st = create_state(tmp_path / "s", {"model": "L4", "count": 1})
    st.close()
    data = bytearray((tmp_path / "s" / "shared.bin").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "s" / "shared.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError):
        DeviceState(tmp_path / "s")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testbed.hardware", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_create_show_fault(tmp_path: Path, lib_dir: Path) -> None:
    d = str(tmp_path / "node")
    created = _cli("create", d, "--model", "H200", "--count", "2", "--numa", "0,1", "--node-name", "cli")
    assert created.returncode == 0, created.stderr
    out = json.loads(created.stdout)
    assert [g["name"] for g in out["gpus"]] == ["NVIDIA H200"] * 2 and [
        g["numa_node"] for g in out["gpus"]
    ] == [0, 1]
    fault = _cli("fault", d, "--gpu", "1", "xid", "79")
    assert fault.returncode == 0, fault.stderr
    assert json.loads(fault.stdout)["live_health"] == "lost"
    _cli("fault", d, "--gpu", "0", "fail-next", "2", "--nvml-code", "999")
    _cli("fault", d, "--gpu", "0", "memory-query", "unsupported")
    shown = json.loads(_cli("show", d).stdout)
    g0, g1 = shown["gpus"]
    assert (g0["live_nvml_fail_count"], g0["live_cuda_fail_count"], g0["live_memory_query_unsupported"]) == (
        2,
        0,
        True,
    )
    assert g1["live_xids"] == [79]
    healed = _cli("fault", d, "--gpu", "1", "healthy")
    assert json.loads(healed.stdout)["live_health"] == "healthy"
    env = _cli("env", d, "--visible", "0")
    assert f"LD_LIBRARY_PATH={lib_dir}" in env.stdout and "NVIDIA_VISIBLE_DEVICES=0" in env.stdout
    assert _cli("build").stdout.strip() == str(lib_dir)
    bad = _cli("create", d, "--model", "Voodoo")
    assert bad.returncode != 0 and "unknown GPU model" in bad.stderr


def test_probe_module_on_emulated_node(make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "H200", "count": 1, "memory_mib": 8192})
    env = library_env(st.path, "all")
    env["HAMI_EMU_UTIL_WINDOW_MS"] = "100"
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.probe", "--alloc-mib", "64", "--kernel-seconds", "0.5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["nvml"]["devices"][0]["name"] == "NVIDIA H200"
    cuda = res["cuda"]
    assert cuda["devices"][0]["uuid"] == st.gpus[0].uuid and cuda["devices"][0]["sm_count"] == 132
    assert cuda["mem_before"]["free"] - cuda["mem_after_alloc"]["free"] == 64 << 20
    assert cuda["mem_after_free"] == cuda["mem_before"] and cuda["copy_roundtrip_ok"] is True
    assert cuda["kernel"]["elapsed_ms"] >= 500 and max(cuda["kernel"]["utilization_samples"]) > 0


def test_bench_script_without_gpu_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "hardware_probe.py"), "--assume-absent"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no real NVIDIA GPU present" in proc.stdout
