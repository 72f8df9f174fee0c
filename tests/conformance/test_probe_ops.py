"""The probe's --op operations: parsing, and each outcome against the emulated driver with and
without the enforcement shim (the suites' enforcement cases read exactly these outcomes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.probe.ops import Op, parse_op
from conformance.probe.result import find_result
from hami_stack.enforcer import ensure_built
from testbed.hardware import create_state, library_env

REPO = Path(__file__).resolve().parents[2]
LIMIT_MIB = 3000


def test_parse_op() -> None:
    assert parse_op("managed:100") == Op("alloc", "managed", 100, 1, "managed:100")
    assert parse_op("mem:100x25") == Op("alloc", "mem", 100, 25, "mem:100x25")
    assert parse_op("proc:vmm:64") == Op("proc", "vmm", 64, 1, "proc:vmm:64")
    assert parse_op(" meminfo ").kind == "meminfo" and parse_op("free").kind == "free"
    for bad, why in (
        ("heap:1", "unknown path"),
        ("mem:0", "positive"),
        ("mem:1x0", "positive"),
        ("mem:ten", "integers"),
        ("proc:mem:1x2", "one allocation per process"),
        ("mem", "want PATH:MIB"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_op(bad)


def _run(tmp_path: Path, ops: list[str], *, shim: bool) -> list[dict]:
    node = create_state(tmp_path / "gpus", {"model": "A100-SXM4-80GB", "count": 1}, node_name="n")
    env = library_env(node.path, "all")
    for key in list(env):
        if key.startswith(("CUDA_DEVICE_", "GPU_CORE_", "LIBCUDA_", "CUDA_TASK_")):
            del env[key]
    if shim:
        env["LD_PRELOAD"] = str(ensure_built())
        env["CUDA_DEVICE_MEMORY_LIMIT_0"] = f"{LIMIT_MIB}m"
        env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] = str(tmp_path / "region.cache")
    env["PYTHONPATH"] = str(REPO)
    args = ["--alloc-mib", "0", "--kernel-seconds", "0"]
    for op in ops:
        args += ["--op", op]
    out = subprocess.run(
        [sys.executable, "-m", "conformance.probe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    doc = find_result(out.stdout)
    assert doc is not None, out.stdout[-500:] + out.stderr[-500:]
    return list(doc["cuda"]["ops"])


OPS = [
    "managed:3001",
    "pitch:3001",
    "async:3001",
    "vmm:3001",
    "mem:100x25",
    "mem:100x10",
    "meminfo",
    "free",
    "proc:mem:1500",
    "proc:mem:1400",
    "proc:mem:200",
    "free",
]


def test_ops_against_the_shim(tmp_path: Path) -> None:
    r = _run(tmp_path, OPS, shim=True)
    for i in range(4):  # every hooked path refuses past the limit
        assert not r[i]["ok"] and r[i]["error_name"] == "CUDA_ERROR_OUT_OF_MEMORY", r[i]
    assert r[4]["ok"] and r[4]["succeeded"] == 25
    assert r[5]["succeeded"] == 5 and r[5]["error_name"] == "CUDA_ERROR_OUT_OF_MEMORY"
    assert r[6]["cuda"]["total"] == LIMIT_MIB << 20 and r[6]["cuda"]["free"] == 0
    assert r[6]["nvml"]["used"] == LIMIT_MIB << 20
    assert r[8]["ok"] and r[9]["ok"] and r[8]["pid"] != r[9]["pid"]
    assert not r[10]["ok"] and r[10]["error_name"] == "CUDA_ERROR_OUT_OF_MEMORY"  # processes share it


def test_ops_without_the_shim_are_not_limited(tmp_path: Path) -> None:
    r = _run(tmp_path, [*OPS[:5], "proc:mem:1500", "proc:mem:1500"], shim=False)
    assert all(x["ok"] for x in r), json.dumps(r, indent=1)
