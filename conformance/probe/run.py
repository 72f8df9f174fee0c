"""What the probe does: look at the devices it was given, then run the actions the test asked for.

Every failure is captured in the document (``{"error": ...}`` next to the part that failed) rather
than raised, so a test always gets one JSON document to assert on, and an allocation refused with
``CUDA_ERROR_OUT_OF_MEMORY`` is an *outcome* (what enforcement tests look for), not a crash.
"""

from __future__ import annotations

import ctypes
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.probe.driver import KERNEL_IMAGE, MIB, Cuda, Nvml, ProbeError
from conformance.probe.ops import Op, Runner

PROBE_VERSION = "1"
# Only what tells a reader how the container was wired; never the whole environment (secrets).
ENV_PREFIXES = (
    "NVIDIA_",
    "CUDA_",
    "GPU_CORE_",
    "LIBCUDA_",
    "HAMI",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "TESTBED_",
    "NODE_NAME",
    "POD_",
    "ASCEND_",
    "NPU_",
)
PRELOAD_FILE = Path("/etc/ld.so.preload")


@dataclass
class Actions:
    alloc_mib: int = 64
    kernel_seconds: float = 1.0
    load_seconds: float = 0.0  # back-to-back kernels for this long; reports achieved utilisation
    slice_ms: float = 20.0  # length of one kernel of the load loop
    device: int = 0
    ops: list[Op] = field(default_factory=list)  # --op operations, run after the allocation
    npu_ops: list[Any] = field(default_factory=list)  # --npu-op operations (AscendCL, acl.py)


def relevant_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    return {k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIXES)}


def _preload() -> list[str] | None:
    try:
        text = PRELOAD_FILE.read_text()
    except OSError:
        return None
    return [line.strip() for line in text.splitlines() if line.strip()]


def run_probe(
    alloc_mib: int = 64,
    kernel_seconds: float = 1.0,
    device: int = 0,
    *,
    load_seconds: float = 0.0,
    slice_ms: float = 20.0,
    ops: list[Op] | None = None,
    npu_ops: list[Any] | None = None,
) -> dict[str, Any]:
    """The whole probe document as a dict; errors are captured, not raised."""
    actions = Actions(
        alloc_mib, kernel_seconds, load_seconds, slice_ms, device, list(ops or []), list(npu_ops or [])
    )
    result: dict[str, Any] = {
        "probe": {"version": PROBE_VERSION, "hostname": socket.gethostname(), "pid": os.getpid()},
        "env": relevant_env(),
        "preload": _preload(),
    }
    nvml: Nvml | None = None
    try:
        nvml = Nvml()
        result["nvml"] = nvml.inventory()
    except (OSError, ProbeError) as exc:
        result["nvml"] = {"error": str(exc)}
    try:
        cuda = Cuda()
        result["cuda"] = _cuda_part(cuda, nvml, actions)
    except (OSError, ProbeError) as exc:
        result.setdefault("cuda", {})["error"] = str(exc)
        if isinstance(exc, ProbeError):
            result["cuda"]["error_name"] = exc.name
    if nvml is not None:
        nvml.close()
    from conformance.probe.families import view as family_view

    families = family_view()  # a data-driven family's devices (DCU, MLU, ...), when it names any
    if families:
        result["families"] = families
    if "ASCEND_VISIBLE_DEVICES" in os.environ:  # an Ascend container: what DCMI shows it
        from conformance.probe.dcmi import inventory

        result["dcmi"] = inventory()
        from conformance.probe.acl import acl_part

        result["acl"] = acl_part(actions.npu_ops)  # what applications see through AscendCL
    return result


def _cuda_part(cuda: Cuda, nvml: Nvml | None, actions: Actions) -> dict[str, Any]:
    lib = cuda.lib
    out: dict[str, Any] = {}
    ver = ctypes.c_int()
    cuda.check("cuDriverGetVersion", lib.cuDriverGetVersion(ctypes.byref(ver)))
    out["driver_version"] = ver.value
    out["devices"] = cuda.devices()
    if not out["devices"]:
        return out
    device = actions.device
    ctx = ctypes.c_void_p()
    cuda.check("cuDevicePrimaryCtxRetain", lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device))
    cuda.check("cuCtxSetCurrent", lib.cuCtxSetCurrent(ctx))
    try:
        out["mem_before"] = cuda.mem_info()
        ptr = ctypes.c_uint64()
        nbytes = actions.alloc_mib * MIB
        rc = lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)) if nbytes else 0
        out["alloc"] = {
            "requested_mib": actions.alloc_mib,
            "ok": rc == 0,
            "code": rc,
            "error_name": "" if rc == 0 else cuda.error_name(rc),
        }
        uuid = out["devices"][device]["uuid"]
        if rc == 0 and nbytes:
            out["mem_after_alloc"] = cuda.mem_info()
            # round trip a small pattern through device memory
            n = min(nbytes, MIB)
            src = (ctypes.c_ubyte * n)(*([0x5A] * n))
            dst = (ctypes.c_ubyte * n)()
            cuda.check("cuMemcpyHtoD_v2", lib.cuMemcpyHtoD_v2(ptr, src, ctypes.c_size_t(n)))
            cuda.check("cuMemcpyDtoH_v2", lib.cuMemcpyDtoH_v2(dst, ptr, ctypes.c_size_t(n)))
            out["copy_roundtrip_ok"] = bytes(dst) == bytes(src)
        runner = Runner(cuda, nvml, device, uuid) if actions.ops else None
        if runner is not None:
            out["ops"] = runner.run(actions.ops)  # held through the kernel and load below
        if actions.kernel_seconds > 0:
            out["kernel"] = _run_kernel(cuda, nvml, uuid, actions.kernel_seconds)
        if actions.load_seconds > 0:
            out["load"] = _run_load(cuda, nvml, uuid, actions.load_seconds, actions.slice_ms)
        if runner is not None:
            runner.close()
        if rc == 0 and nbytes:
            cuda.check("cuMemFree_v2", lib.cuMemFree_v2(ptr))
            out["mem_after_free"] = cuda.mem_info()
    finally:
        lib.cuDevicePrimaryCtxRelease_v2(device)
    return out


def _nvml_index(nvml: Nvml | None, uuid: str) -> int | None:
    if nvml is None:
        return None
    for d in nvml.inventory()["devices"]:
        if d["uuid"].lower() == uuid.lower():
            return int(d["index"])
    return None


class _Kernel:
    """The busy kernel loaded once, with two events to time each launch."""

    def __init__(self, cuda: Cuda) -> None:
        self.cuda, lib = cuda, cuda.lib
        self.mod, self.fn = ctypes.c_void_p(), ctypes.c_void_p()
        image = ctypes.create_string_buffer(KERNEL_IMAGE)
        cuda.check("cuModuleLoadData", lib.cuModuleLoadData(ctypes.byref(self.mod), image))
        cuda.check("cuModuleGetFunction", lib.cuModuleGetFunction(ctypes.byref(self.fn), self.mod, b"busy"))
        self.start, self.end = ctypes.c_void_p(), ctypes.c_void_p()
        cuda.check("cuEventCreate", lib.cuEventCreate(ctypes.byref(self.start), 0))
        cuda.check("cuEventCreate", lib.cuEventCreate(ctypes.byref(self.end), 0))

    def launch(self, seconds: float) -> None:
        lib, cuda = self.cuda.lib, self.cuda
        duration = ctypes.c_uint64(int(seconds * 1e9))
        params = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.byref(duration), ctypes.c_void_p))
        cuda.check("cuEventRecord", lib.cuEventRecord(self.start, None))
        cuda.check("cuLaunchKernel", lib.cuLaunchKernel(self.fn, 1, 1, 1, 1, 1, 1, 0, None, params, None))
        cuda.check("cuEventRecord", lib.cuEventRecord(self.end, None))

    def elapsed_ms(self) -> float:
        elapsed = ctypes.c_float()
        self.cuda.check(
            "cuEventElapsedTime",
            self.cuda.lib.cuEventElapsedTime(ctypes.byref(elapsed), self.start, self.end),
        )
        return float(elapsed.value)

    def sync(self) -> None:
        self.cuda.check("cuCtxSynchronize", self.cuda.lib.cuCtxSynchronize())

    def close(self) -> None:
        lib = self.cuda.lib
        lib.cuEventDestroy_v2(self.start)
        lib.cuEventDestroy_v2(self.end)
        lib.cuModuleUnload(self.mod)


def _run_kernel(cuda: Cuda, nvml: Nvml | None, uuid: str, seconds: float) -> dict[str, Any]:
    kernel = _Kernel(cuda)
    nvml_index = _nvml_index(nvml, uuid)
    before = nvml.utilization(nvml_index) if nvml is not None and nvml_index is not None else None
    kernel.launch(seconds)
    samples = []
    if nvml is not None and nvml_index is not None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds * 0.9:
            time.sleep(max(seconds / 6, 0.01))
            samples.append(nvml.utilization(nvml_index))
    kernel.sync()
    elapsed = kernel.elapsed_ms()
    kernel.close()
    return {
        "requested_seconds": seconds,
        "elapsed_ms": round(elapsed, 3),
        "utilization_before": before,
        "utilization_samples": samples,
    }


def _run_load(cuda: Cuda, nvml: Nvml | None, uuid: str, seconds: float, slice_ms: float) -> dict[str, Any]:
    """Full load: launch short kernels back to back for ``seconds``; a compute limiter shows up as
    wall time between kernels, so achieved utilisation = kernel time / wall time.

    Kernel time is the slices' declared length (the kernel spins on the GPU clock for exactly that
    long). Events around each launch would also count the time a limiter held the launch back on
    the host, because the start event completes before the delayed kernel is queued."""
    kernel = _Kernel(cuda)
    nvml_index = _nvml_index(nvml, uuid)
    busy_ms, launches, samples = 0.0, 0, []
    t0 = time.monotonic()
    next_sample = t0 + 0.25
    while time.monotonic() - t0 < seconds:
        kernel.launch(slice_ms / 1000)
        kernel.sync()
        busy_ms += kernel.elapsed_ms()
        launches += 1
        now = time.monotonic()
        if nvml is not None and nvml_index is not None and now >= next_sample:
            samples.append(nvml.utilization(nvml_index))
            next_sample = now + 0.25
    wall_ms = (time.monotonic() - t0) * 1000
    kernel.close()
    return {
        "requested_seconds": seconds,
        "slice_ms": slice_ms,
        "launches": launches,
        "busy_ms": round(busy_ms, 3),
        "wall_ms": round(wall_ms, 3),
        "achieved_utilization": round(100 * launches * slice_ms / wall_ms, 2) if wall_ms else 0.0,
        "nvml_utilization_samples": samples,
    }
