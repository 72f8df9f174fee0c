"""ctypes bindings to the NVIDIA driver libraries (NVML and the CUDA driver API).

The same code runs against the emulated ``libnvidia-ml.so.1``/``libcuda.so.1`` of the testbed and
against a real driver: only the library search path differs. Stdlib only, so the probe image needs
nothing but a Python interpreter.

The kernel image is PTX whose comment line also declares the kernel to the emulated driver
(``HAMIEMU-KERNEL``), so one image serves both drivers.
"""

from __future__ import annotations

import ctypes
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


# --- allocation paths and the operation list (``--op``) ----------------------------------------------
# Every path HAMi-core hooks, so a suite can check each one is charged against the container's limit.
ALLOC_PATHS = ("mem", "managed", "pitch", "async", "pool", "vmm")
CU_MEM_ATTACH_GLOBAL = 1
CU_MEM_ALLOCATION_TYPE_PINNED = 1
CU_MEM_LOCATION_TYPE_DEVICE = 1
CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3
PITCH_ROW = MIB  # pitched allocations: rows of 1 MiB (already 512-byte aligned), one row per MiB


class MemLocation(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class MemAllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class MemAllocationProp(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", MemLocation),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", MemAllocFlags),
    ]


class MemAccessDesc(ctypes.Structure):
    _fields_ = [("location", MemLocation), ("flags", ctypes.c_int)]


class Unsupported(Exception):
    """The driver does not export an entry point a path needs (reported, not a failure of the limit)."""


class Allocations:
    """Device memory taken through one of :data:`ALLOC_PATHS`, all kept until :meth:`release`.

    Each call returns an outcome dict; a refusal is an outcome (``ok: false`` with the CUDA error
    name and the step that failed), not an exception."""

    def __init__(self, cuda: Cuda, device: int) -> None:
        self.cuda, self.lib, self.device = cuda, cuda.lib, device
        self._frees: list[Any] = []
        self._stream: ctypes.c_void_p | None = None

    def _fn(self, name: str) -> Any:
        try:
            return getattr(self.lib, name)
        except AttributeError:
            raise Unsupported(f"the driver has no {name}") from None

    def _stream_handle(self) -> ctypes.c_void_p:
        if self._stream is None:
            s = ctypes.c_void_p()
            self.cuda.check("cuStreamCreate", self._fn("cuStreamCreate")(ctypes.byref(s), 0))
            self._stream = s
        return self._stream

    def alloc(self, path: str, nbytes: int) -> dict[str, Any]:
        if path not in ALLOC_PATHS:
            raise ValueError(f"unknown allocation path {path!r} (one of {', '.join(ALLOC_PATHS)})")
        out: dict[str, Any] = {"path": path, "bytes": nbytes}
        try:
            step, rc = getattr(self, f"_alloc_{path}")(nbytes)
        except Unsupported as e:
            out.update(ok=False, unsupported=True, error_name="", step="", detail=str(e))
            return out
        except ProbeError as e:  # a setup call (stream, pool, granularity) failed
            out.update(ok=False, code=e.code, error_name=e.name, step=e.call)
            return out
        out.update(
            ok=rc == CUDA_SUCCESS, code=rc, error_name="" if rc == 0 else self.cuda.error_name(rc), step=step
        )
        return out

    def _alloc_mem(self, n: int) -> tuple[str, int]:
        ptr = ctypes.c_uint64()
        rc = self._fn("cuMemAlloc_v2")(ctypes.byref(ptr), ctypes.c_size_t(n))
        if rc == 0:
            self._frees.append(lambda: self.lib.cuMemFree_v2(ptr))
        return "cuMemAlloc_v2", rc

    def _alloc_managed(self, n: int) -> tuple[str, int]:
        ptr = ctypes.c_uint64()
        rc = self._fn("cuMemAllocManaged")(ctypes.byref(ptr), ctypes.c_size_t(n), CU_MEM_ATTACH_GLOBAL)
        if rc == 0:
            self._frees.append(lambda: self.lib.cuMemFree_v2(ptr))
        return "cuMemAllocManaged", rc

    def _alloc_pitch(self, n: int) -> tuple[str, int]:
        ptr, pitch = ctypes.c_uint64(), ctypes.c_size_t()
        rows = max(1, -(-n // PITCH_ROW))
        rc = self._fn("cuMemAllocPitch_v2")(
            ctypes.byref(ptr), ctypes.byref(pitch), ctypes.c_size_t(PITCH_ROW), ctypes.c_size_t(rows), 4
        )
        if rc == 0:
            self._frees.append(lambda: self.lib.cuMemFree_v2(ptr))
        return "cuMemAllocPitch_v2", rc

    def _alloc_async(self, n: int) -> tuple[str, int]:
        s = self._stream_handle()
        ptr = ctypes.c_uint64()
        rc = self._fn("cuMemAllocAsync")(ctypes.byref(ptr), ctypes.c_size_t(n), s)
        if rc == 0:
            self.cuda.check("cuStreamSynchronize", self._fn("cuStreamSynchronize")(s))
            self._frees.append(lambda: self.lib.cuMemFreeAsync(ptr, s) or self.lib.cuStreamSynchronize(s))
        return "cuMemAllocAsync", rc

    def _alloc_pool(self, n: int) -> tuple[str, int]:
        s = self._stream_handle()
        pool = ctypes.c_void_p()
        dev = ctypes.c_int()
        self.cuda.check("cuDeviceGet", self.lib.cuDeviceGet(ctypes.byref(dev), self.device))
        self.cuda.check(
            "cuDeviceGetDefaultMemPool", self._fn("cuDeviceGetDefaultMemPool")(ctypes.byref(pool), dev)
        )
        ptr = ctypes.c_uint64()
        rc = self._fn("cuMemAllocFromPoolAsync")(ctypes.byref(ptr), ctypes.c_size_t(n), pool, s)
        if rc == 0:
            self.cuda.check("cuStreamSynchronize", self._fn("cuStreamSynchronize")(s))
            self._frees.append(lambda: self.lib.cuMemFreeAsync(ptr, s) or self.lib.cuStreamSynchronize(s))
        return "cuMemAllocFromPoolAsync", rc

    def _alloc_vmm(self, n: int) -> tuple[str, int]:
        """cuMemCreate, then reserve, map and enable access: usable memory, as an application does it."""
        prop = MemAllocationProp()
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED
        prop.location = MemLocation(CU_MEM_LOCATION_TYPE_DEVICE, self.device)
        gran = ctypes.c_size_t()
        self.cuda.check(
            "cuMemGetAllocationGranularity",
            self._fn("cuMemGetAllocationGranularity")(ctypes.byref(gran), ctypes.byref(prop), 0),
        )
        g = gran.value or 2 * MIB
        size = -(-n // g) * g
        handle = ctypes.c_uint64()
        rc = self._fn("cuMemCreate")(ctypes.byref(handle), ctypes.c_size_t(size), ctypes.byref(prop), 0)
        if rc != 0:
            return "cuMemCreate", rc
        self._frees.append(lambda: self.lib.cuMemRelease(handle))
        ptr = ctypes.c_uint64()
        rc = self._fn("cuMemAddressReserve")(
            ctypes.byref(ptr), ctypes.c_size_t(size), ctypes.c_size_t(0), 0, 0
        )
        if rc != 0:
            return "cuMemAddressReserve", rc
        self._frees.append(lambda: self.lib.cuMemAddressFree(ptr, ctypes.c_size_t(size)))
        rc = self._fn("cuMemMap")(ptr, ctypes.c_size_t(size), ctypes.c_size_t(0), handle, 0)
        if rc != 0:
            return "cuMemMap", rc
        self._frees.append(lambda: self.lib.cuMemUnmap(ptr, ctypes.c_size_t(size)))
        desc = MemAccessDesc(
            MemLocation(CU_MEM_LOCATION_TYPE_DEVICE, self.device), CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        )
        return "cuMemSetAccess", self._fn("cuMemSetAccess")(ptr, ctypes.c_size_t(size), ctypes.byref(desc), 1)

    def release(self) -> None:
        """Free in reverse order (unmap before release for VMM)."""
        while self._frees:
            self._frees.pop()()
        if self._stream is not None:
            self.lib.cuStreamDestroy_v2(self._stream)
            self._stream = None
