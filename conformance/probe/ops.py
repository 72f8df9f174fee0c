"""The probe's operation list (``--op``, repeatable, run in order): allocations through each path the
enforcement shim hooks, memory snapshots, and allocations from other processes of the same container.

Grammar of one operation:

* ``PATH:MIB`` - allocate MIB MiB through PATH (``mem``, ``managed``, ``pitch``, ``async``, ``pool``,
  ``vmm``) and keep it;
* ``PATH:MIBxN`` - N allocations of MIB MiB each, kept; stops at the first refusal;
* ``meminfo`` - what the container is told now: ``cuMemGetInfo_v2`` and NVML's memory info of the device;
* ``proc:PATH:MIB`` - a separate process of this container allocates MIB MiB through PATH and keeps it
  until the probe ends (several processes sharing one limit);
* ``free`` - release everything held so far, here and in the processes started.

Everything stays allocated until ``free`` or the end of the probe, so kernels, load and the monitor
see the memory in use. Refusals are outcomes (``ok: false``, the CUDA error name, the failing call).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from conformance.probe.amounts import parse_amount
from conformance.probe.driver import ALLOC_PATHS, MIB, Allocations, Cuda, Nvml, NvmlMemory, ProbeError

CHILD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Op:
    kind: str  # alloc | meminfo | proc | free
    path: str = ""
    mib: int = 0
    count: int = 1
    text: str = ""


def parse_op(text: str) -> Op:
    """One ``--op`` value; ValueError names what is wrong."""
    t = text.strip()
    if t in ("meminfo", "free"):
        return Op(t, text=t)
    parts = t.split(":")
    if parts[0] == "proc" and len(parts) == 3:
        path, amount = parts[1], parts[2]
        kind = "proc"
    elif len(parts) == 2:
        path, amount = parts
        kind = "alloc"
    else:
        raise ValueError(f"--op {text!r}: want PATH:MIB, PATH:MIBxN, proc:PATH:MIB, meminfo or free")
    if path not in ALLOC_PATHS:
        raise ValueError(f"--op {text!r}: unknown path {path!r} (one of {', '.join(ALLOC_PATHS)})")
    mib, count = parse_amount("--op", text, amount, single=kind == "proc")
    return Op(kind, path, mib, count, t)


def meminfo(cuda: Cuda, nvml: Nvml | None, uuid: str) -> dict[str, Any]:
    out: dict[str, Any] = {"cuda": cuda.mem_info()}
    if nvml is None:
        out["nvml"] = {"error": "NVML unusable"}
        return out
    try:
        for d in nvml.inventory()["devices"]:
            if d["uuid"].lower() == uuid.lower():
                mem = NvmlMemory()
                nvml._check(
                    "nvmlDeviceGetMemoryInfo",
                    nvml.lib.nvmlDeviceGetMemoryInfo(nvml.handle(d["index"]), ctypes.byref(mem)),
                )
                out["nvml"] = {"total": mem.total, "used": mem.used, "free": mem.free}
                break
        else:
            out["nvml"] = {"error": f"NVML does not list {uuid}"}
    except ProbeError as e:
        out["nvml"] = {"error": str(e)}
    return out


class Runner:
    """Runs the operations against the current context; :meth:`close` releases everything."""

    def __init__(self, cuda: Cuda, nvml: Nvml | None, device: int, uuid: str) -> None:
        self.cuda, self.nvml, self.device, self.uuid = cuda, nvml, device, uuid
        self.allocs = Allocations(cuda, device)
        self.children: list[subprocess.Popen[str]] = []

    def run(self, ops: list[Op]) -> list[dict[str, Any]]:
        return [self.one(op) for op in ops]

    def one(self, op: Op) -> dict[str, Any]:
        if op.kind == "meminfo":
            return {"op": op.text, **meminfo(self.cuda, self.nvml, self.uuid)}
        if op.kind == "free":
            self.close()
            return {"op": op.text, "ok": True}
        if op.kind == "proc":
            return {"op": op.text, **self._spawn(op)}
        done, last = 0, {}
        for _ in range(op.count):
            last = self.allocs.alloc(op.path, op.mib * MIB)
            if not last.get("ok"):
                break
            done += 1
        return {
            "op": op.text,
            "path": op.path,
            "mib": op.mib,
            "count": op.count,
            "succeeded": done,
            "ok": done == op.count,
            "error_name": "" if done == op.count else last.get("error_name", ""),
            "step": last.get("step", ""),
            "unsupported": bool(last.get("unsupported")),
        }

    def _spawn(self, op: Op) -> dict[str, Any]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        child = subprocess.Popen(
            [sys.executable, "-m", "conformance.probe.ops", op.path, str(op.mib), str(self.device)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()  # the child answers once its allocation is decided
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            child.kill()
            _, err = child.communicate(timeout=CHILD_TIMEOUT_S)
            return {"ok": False, "error_name": "", "detail": f"child printed {line!r}; stderr {err[-400:]!r}"}
        doc["pid"] = child.pid
        return doc  # type: ignore[no-any-return]

    def close(self) -> None:
        self.allocs.release()
        for child in self.children:
            try:
                child.communicate(input="", timeout=CHILD_TIMEOUT_S)  # EOF on stdin: free and exit
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
        self.children = []


def child_main(argv: list[str]) -> int:
    """``python -m conformance.probe.ops PATH MIB DEVICE``: allocate, print one JSON line, hold until
    stdin closes, then free."""
    path, mib, device = argv[0], int(argv[1]), int(argv[2])
    try:
        cuda = Cuda()
        ctx = ctypes.c_void_p()
        cuda.check("cuDevicePrimaryCtxRetain", cuda.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device))
        cuda.check("cuCtxSetCurrent", cuda.lib.cuCtxSetCurrent(ctx))
    except (OSError, ProbeError) as e:
        print(json.dumps({"ok": False, "error_name": getattr(e, "name", ""), "detail": str(e)}), flush=True)
        return 0
    allocs = Allocations(cuda, device)
    out = allocs.alloc(path, mib * MIB)
    print(json.dumps(out), flush=True)
    sys.stdin.read()
    allocs.release()
    cuda.lib.cuDevicePrimaryCtxRelease_v2(device)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
