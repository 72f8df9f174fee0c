"""What an Ascend container's applications are told and allowed through AscendCL (``libascendcl.so``).

The memory a framework sees and may take goes through AscendCL's device calls into the CANN runtime,
which is where HAMi's hami-core limiter sits: ``aclrtGetMemInfo`` (total/free of the current device)
and ``aclrtMalloc`` (refused with ``ACL_ERROR_RT_MEMORY_ALLOCATION``, 207001, when out of memory).
Operations (``--npu-op``, repeatable, in order, all on logic device 0):

* ``alloc:MIB`` - allocate MIB MiB and keep it; ``alloc:MIBxN`` - N of them, stopping at the first refusal;
* ``proc:MIB`` - another process of this container allocates MIB MiB and keeps it until ``free``/the end;
* ``meminfo`` - ``aclrtGetMemInfo`` now;
* ``free`` - release everything held so far, here and in the processes started.

The same code runs on a real CANN install or the testbed's emulated runtime; failures are captured.
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

MIB = 1 << 20
ACL_HBM_MEM = 1
OUT_OF_MEMORY = 207001  # ACL_ERROR_RT_MEMORY_ALLOCATION
CHILD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class NpuOp:
    kind: str  # alloc | proc | meminfo | free
    mib: int = 0
    count: int = 1
    text: str = ""


def parse_npu_op(text: str) -> NpuOp:
    """One ``--npu-op`` value; ValueError names what is wrong."""
    t = text.strip()
    if t in ("meminfo", "free"):
        return NpuOp(t, text=t)
    kind, sep, amount = t.partition(":")
    if not sep or kind not in ("alloc", "proc"):
        raise ValueError(f"--npu-op {text!r}: want alloc:MIB, alloc:MIBxN, proc:MIB, meminfo or free")
    mib, count = parse_amount("--npu-op", text, amount, single=kind == "proc")
    return NpuOp(kind, mib, count, t)


class AclError(RuntimeError):
    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} answered {code}")
        self.call, self.code = call, code


class Acl:
    """AscendCL on logic device ``device``: initialised and the device set on construction."""

    def __init__(self, device: int = 0) -> None:
        self.lib = ctypes.CDLL("libascendcl.so")
        self.lib.aclInit.argtypes = [ctypes.c_char_p]
        self.lib.aclrtMalloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_int]
        self.lib.aclrtFree.argtypes = [ctypes.c_void_p]
        self.lib.aclrtGetMemInfo.argtypes = [
            ctypes.c_int, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)
        ]
        self.check("aclInit", self.lib.aclInit(None))
        self.check("aclrtSetDevice", self.lib.aclrtSetDevice(device))
        self.held: list[int] = []

    @staticmethod
    def check(call: str, rc: int) -> None:
        if rc != 0:
            raise AclError(call, rc)

    def device_count(self) -> int:
        n = ctypes.c_uint32()
        self.check("aclrtGetDeviceCount", self.lib.aclrtGetDeviceCount(ctypes.byref(n)))
        return n.value

    def meminfo(self) -> dict[str, Any]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        rc = self.lib.aclrtGetMemInfo(ACL_HBM_MEM, ctypes.byref(free), ctypes.byref(total))
        if rc != 0:
            return {"error": f"aclrtGetMemInfo answered {rc}", "code": rc}
        return {"total_bytes": total.value, "free_bytes": free.value, "total_mib": total.value // MIB}

    def alloc(self, mib: int) -> int:
        """0 and the block kept, or the AscendCL error code."""
        ptr = ctypes.c_void_p()
        rc = int(self.lib.aclrtMalloc(ctypes.byref(ptr), mib * MIB, 0))
        if rc == 0:
            self.held.append(int(ptr.value or 0))
        return rc

    def release(self) -> None:
        for p in self.held:
            self.lib.aclrtFree(ctypes.c_void_p(p))
        self.held = []


class NpuRunner:
    def __init__(self, acl: Acl) -> None:
        self.acl = acl
        self.children: list[subprocess.Popen[str]] = []

    def one(self, op: NpuOp) -> dict[str, Any]:
        if op.kind == "meminfo":
            return {"op": op.text, **self.acl.meminfo()}
        if op.kind == "free":
            self.close()
            return {"op": op.text, "ok": True}
        if op.kind == "proc":
            return {"op": op.text, **self._spawn(op.mib)}
        done, rc = 0, 0
        for _ in range(op.count):
            rc = self.acl.alloc(op.mib)
            if rc != 0:
                break
            done += 1
        return {"op": op.text, "mib": op.mib, "count": op.count, "succeeded": done, "ok": done == op.count,
                "code": rc, "out_of_memory": rc == OUT_OF_MEMORY}

    def _spawn(self, mib: int) -> dict[str, Any]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        child = subprocess.Popen(
            [sys.executable, "-m", "conformance.probe.acl", str(mib)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()  # the child answers once its allocation is decided
        try:
            doc: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            child.kill()
            _, err = child.communicate(timeout=CHILD_TIMEOUT_S)
            return {"ok": False, "detail": f"child printed {line!r}; stderr {err[-400:]!r}"}
        doc["pid"] = child.pid
        return doc

    def close(self) -> None:
        self.acl.release()
        for child in self.children:
            try:
                child.communicate(input="", timeout=CHILD_TIMEOUT_S)  # EOF on stdin: free and exit
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
        self.children = []


def acl_part(ops: list[NpuOp]) -> dict[str, Any]:
    """The ``acl`` part of the probe document: device count, memory of device 0, the operations."""
    try:
        acl = Acl(0)
        out: dict[str, Any] = {"device_count": acl.device_count(), "meminfo": acl.meminfo()}
    except OSError as e:  # no CANN runtime in this image: nothing to ask, which is not a refusal
        return {"error": str(e), "code": None, "unavailable": True}
    except AclError as e:
        return {"error": str(e), "code": e.code}
    runner = NpuRunner(acl)
    try:
        out["ops"] = [runner.one(op) for op in ops]
    finally:
        runner.close()
    return out


def child_main(argv: list[str]) -> int:
    """``python -m conformance.probe.acl MIB``: allocate, print one JSON line, hold until stdin closes."""
    try:
        acl = Acl(0)
    except (OSError, AclError) as e:
        print(json.dumps({"ok": False, "code": getattr(e, "code", None), "detail": str(e)}), flush=True)
        return 0
    rc = acl.alloc(int(argv[0]))
    print(json.dumps({"ok": rc == 0, "code": rc, "out_of_memory": rc == OUT_OF_MEMORY}), flush=True)
    sys.stdin.read()
    acl.release()
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
