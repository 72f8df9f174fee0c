"""Real vs emulated NVIDIA driver, side by side.

Where a real NVIDIA GPU is present (nvidia-smi on PATH or a libcuda.so.1 outside our build directory,
plus /dev/nvidiactl), this runs ``conformance.probe`` on the real libraries, then creates an
emulated node that mirrors the real inventory (same model, count, memory and driver versions), runs
the same probe on the emulated libraries and prints both views side by side. Without a GPU it says so
and exits 0.

    python bench/hardware_probe.py [--alloc-mib 256] [--kernel-seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from testbed.hardware.build import ensure_built, library_env  # noqa: E402
from testbed.hardware.state import MODELS, create_state  # noqa: E402

_LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/nvidia/lib64",
    "/usr/lib/wsl/lib",
)
_EMU_VARS = ("HAMI_EMU_GPU_STATE_DIR", "HAMI_EMU_GPU_ALL", "HAMI_EMU_UTIL_WINDOW_MS")


def real_gpu_present() -> tuple[bool, str]:
    """(present, why): a driver library outside our build dir and the NVIDIA control device."""
    ours = str(ensure_built())
    libs = [
        os.path.join(d, "libcuda.so.1") for d in _LIB_DIRS if os.path.exists(os.path.join(d, "libcuda.so.1"))
    ]
    libs = [p for p in libs if not p.startswith(ours)]
    smi = shutil.which("nvidia-smi")
    if not (smi or libs):
        return False, "no nvidia-smi and no libcuda.so.1 outside the emulated build"
    if not os.path.exists("/dev/nvidiactl"):
        return False, "NVIDIA user-space found but no /dev/nvidiactl (no GPU in this machine or container)"
    return True, smi or libs[0]


def _run_probe(env: dict[str, str], alloc_mib: int, seconds: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "conformance.probe",
        "--alloc-mib",
        str(alloc_mib),
        "--kernel-seconds",
        str(seconds),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        return {"error": f"probe exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(proc.stdout)


def _real_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _EMU_VARS}
    ours = str(ensure_built())
    env["LD_LIBRARY_PATH"] = ":".join(p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != ours)
    return env


def _mirror_spec(real: dict[str, Any]) -> dict[str, Any]:
    devices = real.get("nvml", {}).get("devices") or []
    name = devices[0]["name"] if devices else "NVIDIA H200"
    model = next((m.key for m in MODELS.values() if m.name == name), "H200")
    spec: dict[str, Any] = {"model": model, "count": max(1, len(devices))}
    if devices:
        spec["memory_mib"] = devices[0]["memory_total"] // (1 << 20)
        spec["numa"] = [d["numa_node"] or 0 for d in devices]
    nvml = real.get("nvml", {})
    if "driver_version" in nvml:
        spec["driver_version"] = nvml["driver_version"]
        spec["cuda_driver_version"] = nvml["cuda_driver_version"]
    return spec


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = d
    return out


def side_by_side(real: dict[str, Any], emu: dict[str, Any]) -> str:
    a, b = _flatten(real), _flatten(emu)
    keys = list(dict.fromkeys([*a, *b]))
    width = max([len(k) for k in keys] + [5])
    lines = [f"{'field':<{width}}  {'real':<40}  emulated", "-" * (width + 60)]
    for k in keys:
        ra, rb = json.dumps(a.get(k, "-")), json.dumps(b.get(k, "-"))
        mark = "" if ra == rb else "  *"
        lines.append(f"{k:<{width}}  {ra[:40]:<40}  {rb[:60]}{mark}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alloc-mib", type=int, default=256)
    p.add_argument("--kernel-seconds", type=float, default=2.0)
    p.add_argument("--json", help="also write both raw results to this file")
    p.add_argument("--assume-absent", action="store_true", help="act as if no GPU were present (for tests)")
    args = p.parse_args(argv)

    present, why = (False, "--assume-absent given") if args.assume_absent else real_gpu_present()
    if not present:
        print(f"no real NVIDIA GPU present ({why}); nothing to compare")
        return 0
    real = _run_probe(_real_env(), args.alloc_mib, args.kernel_seconds)
    with tempfile.TemporaryDirectory(prefix="hami-emu-mirror-") as tmp:
        st = create_state(Path(tmp) / "node", _mirror_spec(real), node_name="mirror")
        st.close()
        emu = _run_probe(library_env(Path(tmp) / "node", "all"), args.alloc_mib, args.kernel_seconds)
    print(f"real driver found via {why}\n")
    print(side_by_side(real, emu))
    if args.json:
        Path(args.json).write_text(json.dumps({"real": real, "emulated": emu}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
