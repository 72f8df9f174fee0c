"""ctypes probe of the NVIDIA driver libraries; the same code runs on the emulated and the real ones.

``python -m testbed.hardware.probe [--alloc-mib N] [--kernel-seconds T] [--device I]`` prints JSON:
the NVML inventory, the CUDA view (devices, cuMemGetInfo_v2 before/after an allocation, a copy round
trip) and a timed kernel with NVML utilisation sampled while it runs. The kernel image is PTX whose
comment line declares the same kernel to the emulated driver, so one image serves both.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

KERNEL_IMAGE = b"""//
// HAMIEMU-KERNEL name=busy duration_param=0 unit=ns
//
.version 6.4
.target sm_50
.address_size 64

.visible .entry busy(
    .param .u64 busy_param_0
)
{
    .reg .pred %p<2>;
    .reg .b64 %rd<5>;

    ld.param.u64 %rd1, [busy_param_0];
    mov.u64 %rd2, %globaltimer;
$L__BB0_1:
    mov.u64 %rd3, %globaltimer;
    sub.s64 %rd4, %rd3, %rd2;
    setp.lt.u64 %p1, %rd4, %rd1;
    @%p1 bra $L__BB0_1;
    ret;
}
\x00"""

CUDA_SUCCESS = 0
CUDA_ERROR_OUT_OF_MEMORY = 2
MIB = 1 << 20


class ProbeError(RuntimeError):
    def __init__(self, call: str, code: int, name: str = "") -> None:
        super().__init__(f"{call} failed: {code} {name}".strip())
        self.call, self.code, self.name = call, code, name


class NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class NvmlPci(ctypes.Structure):
    _fields_ = [
        ("busIdLegacy", ctypes.c_char * 16),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
    ]


class NvmlUtil(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class Nvml:
    def __init__(self, path: str = "libnvidia-ml.so.1") -> None:
        self.lib = ctypes.CDLL(path)
        self.lib.nvmlErrorString.restype = ctypes.c_char_p
        self._check("nvmlInit_v2", self.lib.nvmlInit_v2())

    def _check(self, call: str, rc: int) -> None:
        if rc != 0:
            raise ProbeError(call, rc, self.lib.nvmlErrorString(rc).decode())

    def _str(self, fn: str, handle: ctypes.c_void_p, size: int = 96) -> str:
        buf = ctypes.create_string_buffer(size)
        self._check(fn, getattr(self.lib, fn)(handle, buf, ctypes.c_uint(size)))
        return buf.value.decode()

    def handle(self, index: int) -> ctypes.c_void_p:
        h = ctypes.c_void_p()
        self._check(
            "nvmlDeviceGetHandleByIndex_v2", self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(h))
        )
        return h

    def utilization(self, index: int) -> int:
        u = NvmlUtil()
        self._check(
            "nvmlDeviceGetUtilizationRates",
            self.lib.nvmlDeviceGetUtilizationRates(self.handle(index), ctypes.byref(u)),
        )
        return int(u.gpu)

    def inventory(self) -> dict[str, Any]:
        buf = ctypes.create_string_buffer(80)
        self._check("nvmlSystemGetDriverVersion", self.lib.nvmlSystemGetDriverVersion(buf, 80))
        driver = buf.value.decode()
        self._check("nvmlSystemGetNVMLVersion", self.lib.nvmlSystemGetNVMLVersion(buf, 80))
        nvml_version = buf.value.decode()
        cuda = ctypes.c_int()
        self._check(
            "nvmlSystemGetCudaDriverVersion", self.lib.nvmlSystemGetCudaDriverVersion(ctypes.byref(cuda))
        )
        count = ctypes.c_uint()
        self._check("nvmlDeviceGetCount_v2", self.lib.nvmlDeviceGetCount_v2(ctypes.byref(count)))
        devices = []
        for i in range(count.value):
            h = self.handle(i)
            mem, pci = NvmlMemory(), NvmlPci()
            self._check("nvmlDeviceGetMemoryInfo", self.lib.nvmlDeviceGetMemoryInfo(h, ctypes.byref(mem)))
            self._check("nvmlDeviceGetPciInfo_v3", self.lib.nvmlDeviceGetPciInfo_v3(h, ctypes.byref(pci)))
            major, minor, numa = ctypes.c_int(), ctypes.c_int(), ctypes.c_uint()
            self._check(
                "nvmlDeviceGetCudaComputeCapability",
                self.lib.nvmlDeviceGetCudaComputeCapability(h, ctypes.byref(major), ctypes.byref(minor)),
            )
            numa_rc = self.lib.nvmlDeviceGetNumaNodeId(h, ctypes.byref(numa))
            cur, pend = ctypes.c_uint(), ctypes.c_uint()
            mig_rc = self.lib.nvmlDeviceGetMigMode(h, ctypes.byref(cur), ctypes.byref(pend))
            devices.append(
                {
                    "index": i,
                    "name": self._str("nvmlDeviceGetName", h),
                    "uuid": self._str("nvmlDeviceGetUUID", h),
                    "memory_total": mem.total,
                    "memory_used": mem.used,
                    "pci_bus_id": pci.busId.decode(),
                    "pci_device_id": f"0x{pci.pciDeviceId:08X}",
                    "numa_node": numa.value if numa_rc == 0 else None,
                    "compute_capability": f"{major.value}.{minor.value}",
                    "mig_mode": cur.value if mig_rc == 0 else None,
                    "utilization_gpu": self.utilization(i),
                }
            )
        return {
            "driver_version": driver,
            "nvml_version": nvml_version,
            "cuda_driver_version": cuda.value,
            "devices": devices,
        }

    def close(self) -> None:
        self.lib.nvmlShutdown()


class Cuda:
    def __init__(self, path: str = "libcuda.so.1") -> None:
        self.lib = ctypes.CDLL(path)
        self.check("cuInit", self.lib.cuInit(0))

    def error_name(self, rc: int) -> str:
        s = ctypes.c_char_p()
        return s.value.decode() if self.lib.cuGetErrorName(rc, ctypes.byref(s)) == 0 and s.value else str(rc)

    def check(self, call: str, rc: int) -> None:
        if rc != CUDA_SUCCESS:
            raise ProbeError(call, rc, self.error_name(rc))

    def devices(self) -> list[dict[str, Any]]:
        count = ctypes.c_int()
        self.check("cuDeviceGetCount", self.lib.cuDeviceGetCount(ctypes.byref(count)))
        out = []
        for i in range(count.value):
            dev = ctypes.c_int()
            self.check("cuDeviceGet", self.lib.cuDeviceGet(ctypes.byref(dev), i))
            name = ctypes.create_string_buffer(256)
            self.check("cuDeviceGetName", self.lib.cuDeviceGetName(name, 256, dev))
            uuid = (ctypes.c_ubyte * 16)()
            self.check("cuDeviceGetUuid_v2", self.lib.cuDeviceGetUuid_v2(uuid, dev))
            total = ctypes.c_size_t()
            self.check("cuDeviceTotalMem_v2", self.lib.cuDeviceTotalMem_v2(ctypes.byref(total), dev))
            attrs = {}
            for key, attr in (("sm_count", 16), ("cc_major", 75), ("cc_minor", 76)):
                v = ctypes.c_int()
                self.check("cuDeviceGetAttribute", self.lib.cuDeviceGetAttribute(ctypes.byref(v), attr, dev))
                attrs[key] = v.value
            h = bytes(uuid).hex()
            out.append(
                {
                    "ordinal": i,
                    "name": name.value.decode(),
                    "uuid": f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                    "total_mem": total.value,
                    "sm_count": attrs["sm_count"],
                    "compute_capability": f"{attrs['cc_major']}.{attrs['cc_minor']}",
                }
            )
        return out

    def mem_info(self) -> dict[str, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check("cuMemGetInfo_v2", self.lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)))
        return {"free": free.value, "total": total.value}


def run_probe(alloc_mib: int = 64, kernel_seconds: float = 1.0, device: int = 0) -> dict[str, Any]:
    """Everything the probe reports, as a dict; errors are captured, not raised."""
    result: dict[str, Any] = {}
    nvml: Nvml | None = None
    try:
        nvml = Nvml()
        result["nvml"] = nvml.inventory()
    except (OSError, ProbeError) as exc:
        result["nvml"] = {"error": str(exc)}
    try:
        cuda = Cuda()
        result["cuda"] = _cuda_part(cuda, nvml, alloc_mib, kernel_seconds, device)
    except (OSError, ProbeError) as exc:
        result.setdefault("cuda", {})["error"] = str(exc)
    if nvml is not None:
        nvml.close()
    return result


def _cuda_part(
    cuda: Cuda, nvml: Nvml | None, alloc_mib: int, kernel_seconds: float, device: int
) -> dict[str, Any]:
    lib = cuda.lib
    out: dict[str, Any] = {}
    ver = ctypes.c_int()
    cuda.check("cuDriverGetVersion", lib.cuDriverGetVersion(ctypes.byref(ver)))
    out["driver_version"] = ver.value
    out["devices"] = cuda.devices()
    ctx = ctypes.c_void_p()
    cuda.check("cuDevicePrimaryCtxRetain", lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device))
    cuda.check("cuCtxSetCurrent", lib.cuCtxSetCurrent(ctx))
    try:
        out["mem_before"] = cuda.mem_info()
        ptr = ctypes.c_uint64()
        nbytes = alloc_mib * MIB
        cuda.check("cuMemAlloc_v2", lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(nbytes)))
        out["mem_after_alloc"] = cuda.mem_info()
        # round trip a small pattern through device memory
        n = min(nbytes, MIB)
        src = (ctypes.c_ubyte * n)(*([0x5A] * n))
        dst = (ctypes.c_ubyte * n)()
        cuda.check("cuMemcpyHtoD_v2", lib.cuMemcpyHtoD_v2(ptr, src, ctypes.c_size_t(n)))
        cuda.check("cuMemcpyDtoH_v2", lib.cuMemcpyDtoH_v2(dst, ptr, ctypes.c_size_t(n)))
        out["copy_roundtrip_ok"] = bytes(dst) == bytes(src)
        out["kernel"] = _run_kernel(cuda, nvml, out["devices"][device]["uuid"], kernel_seconds)
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


def _run_kernel(cuda: Cuda, nvml: Nvml | None, uuid: str, seconds: float) -> dict[str, Any]:
    lib = cuda.lib
    mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
    image = ctypes.create_string_buffer(KERNEL_IMAGE)
    cuda.check("cuModuleLoadData", lib.cuModuleLoadData(ctypes.byref(mod), image))
    cuda.check("cuModuleGetFunction", lib.cuModuleGetFunction(ctypes.byref(fn), mod, b"busy"))
    start, end = ctypes.c_void_p(), ctypes.c_void_p()
    cuda.check("cuEventCreate", lib.cuEventCreate(ctypes.byref(start), 0))
    cuda.check("cuEventCreate", lib.cuEventCreate(ctypes.byref(end), 0))
    duration = ctypes.c_uint64(int(seconds * 1e9))
    params = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.byref(duration), ctypes.c_void_p))
    nvml_index = _nvml_index(nvml, uuid)
    before = nvml.utilization(nvml_index) if nvml is not None and nvml_index is not None else None
    cuda.check("cuEventRecord", lib.cuEventRecord(start, None))
    cuda.check("cuLaunchKernel", lib.cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, None, params, None))
    cuda.check("cuEventRecord", lib.cuEventRecord(end, None))
    samples = []
    if nvml is not None and nvml_index is not None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds * 0.9:
            time.sleep(max(seconds / 6, 0.01))
            samples.append(nvml.utilization(nvml_index))
    cuda.check("cuCtxSynchronize", lib.cuCtxSynchronize())
    elapsed = ctypes.c_float()
    cuda.check("cuEventElapsedTime", lib.cuEventElapsedTime(ctypes.byref(elapsed), start, end))
    lib.cuEventDestroy_v2(start)
    lib.cuEventDestroy_v2(end)
    lib.cuModuleUnload(mod)
    return {
        "requested_seconds": seconds,
        "elapsed_ms": round(elapsed.value, 3),
        "utilization_before": before,
        "utilization_samples": samples,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.hardware.probe", description=__doc__)
    p.add_argument("--alloc-mib", type=int, default=64)
    p.add_argument("--kernel-seconds", type=float, default=1.0)
    p.add_argument("--device", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(run_probe(args.alloc_mib, args.kernel_seconds, args.device), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
