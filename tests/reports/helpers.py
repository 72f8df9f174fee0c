"""A synthetic run covering several vendors and minors, every outcome and an attachment."""

from __future__ import annotations

from pathlib import Path

from reports.model import CaseResult, DeviceInfo, DriverInfo, Environment, NodeInfo, RunMetadata
from reports.runio import RunWriter

# (vendor, minor, capability, case, rule, requirement, outcome, message)
CASES = [
    ("nvidia", "1.33", "registration", "test_register[nvidia-1.33]", "REG-ANNOT-1", "required", "passed", ""),
    ("nvidia", "1.33", "scheduling", "test_fit[nvidia-1.33]", "SCHED-FIT-1", "required", "passed", ""),
    (
        "nvidia",
        "1.33",
        "enforcement",
        "test_mem_limit[nvidia-1.33]",
        "ENF-MEM-1",
        "required",
        "failed",
        "ENF-MEM-1: allocation of 3001 MiB succeeded under a 3000 MiB limit",
    ),
    (
        "nvidia",
        "1.33",
        "isolation",
        "test_no_request_no_gpu[nvidia-1.33]",
        "ISO-NONE-1",
        "required",
        "passed",
        "",
    ),
    ("nvidia", "1.18", "registration", "test_register[nvidia-1.18]", "REG-ANNOT-1", "required", "passed", ""),
    ("nvidia", "1.18", "allocation", "test_share[nvidia-1.18]", "ALLOC-SHARE-1", "required", "passed", ""),
    (
        "nvidia",
        "1.18",
        "metrics",
        "test_metrics[nvidia-1.18]",
        "MET-SCHED-1",
        "optional",
        "skipped",
        "not selected",
    ),
    (
        "ascend",
        "1.33",
        "enforcement",
        "test_mem_limit[ascend-1.33]",
        "ENF-MEM-1",
        "optional",
        "unknown",
        "could not apply: no enforcement emulation for ascend",
    ),
    ("ascend", "1.33", "registration", "test_register[ascend-1.33]", "REG-ANNOT-1", "required", "passed", ""),
    (
        "hygon",
        "1.29",
        "admission",
        "test_scheduler_name[hygon-1.29]",
        "ADM-SCHED-1",
        "required",
        "passed",
        "",
    ),
]

ATTACHED_CASE = "test_mem_limit[nvidia-1.33]"


def write_run(run_dir: Path, *, finalise: bool = True) -> RunWriter:
    metadata = RunMetadata(
        run_id="run-0001",
        project_commit="a7d11c8" + "0" * 33,
        started="2026-11-28T10:00:00Z",
        tool_version="0.1.0",
        backend="testbed",
        hami_namespace="hami-system",
        chart_values={"scheduler": {"defaultMem": 0}},
        profile="default",
        profile_version="1",
    )
    env = Environment(
        server_version={"gitVersion": "v1.33.0", "major": "1", "minor": "33"},
        nodes=[
            NodeInfo(
                "node-a",
                "v1.33.0",
                labels={"gpu": "on"},
                capacity={"nvidia.com/gpu": "40"},
                allocatable={"nvidia.com/gpu": "40"},
            )
        ],
        devices=[
            DeviceInfo("node-a", "nvidia", "GPU-0", type="NVIDIA-A100", index=0, count=10, devmem=81920)
        ],
        drivers=[DriverInfo("node-a", "nvidia", "550.54.15", "12.4")],
    )
    writer = RunWriter(run_dir, metadata, env)
    (run_dir / "probe").mkdir(exist_ok=True)
    (run_dir / "probe" / "mem.json").write_text('{"allocated_mib": 3001}\n')
    for vendor, minor, cap, case_id, rule, req, outcome, msg in CASES:
        writer.append(
            CaseResult(
                vendor=vendor,
                minor=minor,
                capability=cap,
                case_id=case_id,
                rule_id=rule,
                rule_text=f"rule {rule} holds",
                requirement=req,
                outcome=outcome,
                duration_s=1.5,
                message=msg,
                attachments=["probe/mem.json"] if case_id == ATTACHED_CASE else [],
            )
        )
    if finalise:
        writer.finalise("2026-11-28T10:05:00Z")
    return writer
