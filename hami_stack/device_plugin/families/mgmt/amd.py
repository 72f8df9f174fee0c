"""AMD Instinct GPUs through AMD SMI (``libamd_smi.so``). HAMi's AMD device plugin registers each GPU by
the UUID and market name AMD SMI gives for its PCI BDF (``amdsmi_get_processor_handle_from_bdf``,
``amdsmi_get_gpu_device_uuid``, ``amdsmi_get_gpu_asic_info``); it finds the BDFs, VRAM, compute units and
NUMA node in sysfs/libdrm, which we take from AMD SMI's own calls for the same facts instead (discovery
through socket/processor handles, ``amdsmi_get_gpu_device_bdf``, ``amdsmi_get_gpu_memory_total``,
``num_of_compute_units``, ``amdsmi_topo_get_numa_node_number``). Health is the UMC block's ECC state.
"""

from __future__ import annotations

import ctypes

from ..hardware import Device
from . import call

LIBRARY = "libamd_smi.so"

AMDSMI_INIT_AMD_GPUS = 1 << 1
AMDSMI_MEM_TYPE_VRAM = 0
AMDSMI_GPU_BLOCK_UMC = 0x1
AMDSMI_RAS_ERR_STATE_MULT_UC = 4
AMDSMI_RAS_ERR_STATE_POISON = 5
AMDSMI_GPU_UUID_SIZE = 38
AMDSMI_MAX_STRING_LENGTH = 64
AMDSMI_NORMAL_STRING_LENGTH = 32
AMDSMI_256_LENGTH = 256


class AsicInfo(ctypes.Structure):
    _fields_ = [
        ("market_name", ctypes.c_char * AMDSMI_256_LENGTH),
        ("vendor_id", ctypes.c_uint32),
        ("vendor_name", ctypes.c_char * AMDSMI_MAX_STRING_LENGTH),
        ("subvendor_id", ctypes.c_uint32),
        ("device_id", ctypes.c_uint64),
        ("rev_id", ctypes.c_uint32),
        ("asic_serial", ctypes.c_char * AMDSMI_NORMAL_STRING_LENGTH),
        ("oam_id", ctypes.c_uint32),
        ("num_of_compute_units", ctypes.c_uint32),
        ("target_graphics_version", ctypes.c_uint64),
        ("reserved", ctypes.c_uint32 * 15),
    ]


_handle = ctypes.c_void_p
_u32 = ctypes.c_uint32
_SIGNATURES: dict[str, list[type]] = {
    "amdsmi_init": [ctypes.c_uint64],
    "amdsmi_shut_down": [],
    "amdsmi_get_socket_handles": [ctypes.POINTER(_u32), ctypes.POINTER(_handle)],
    "amdsmi_get_processor_handles": [_handle, ctypes.POINTER(_u32), ctypes.POINTER(_handle)],
    # amdsmi_bdf_t is a union over one uint64 (function 2..0, device 7..3, bus 15..8, domain 63..16)
    "amdsmi_get_processor_handle_from_bdf": [ctypes.c_uint64, ctypes.POINTER(_handle)],
    "amdsmi_get_gpu_device_bdf": [_handle, ctypes.POINTER(ctypes.c_uint64)],
    "amdsmi_get_gpu_device_uuid": [_handle, ctypes.POINTER(ctypes.c_uint), ctypes.c_char_p],
    "amdsmi_get_gpu_asic_info": [_handle, ctypes.POINTER(AsicInfo)],
    "amdsmi_get_gpu_memory_total": [_handle, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)],
    "amdsmi_topo_get_numa_node_number": [_handle, ctypes.POINTER(_u32)],
    "amdsmi_get_gpu_ecc_status": [_handle, ctypes.c_int, ctypes.POINTER(ctypes.c_int)],
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int  # amdsmi_status_t
    return lib


def bus_id(bdf: int) -> str:
    """An amdsmi_bdf_t as ``0000:1a:00.0``."""
    return f"{bdf >> 16:04x}:{bdf >> 8 & 0xFF:02x}:{bdf >> 3 & 0x1F:02x}.{bdf & 0x7:x}"


def pack_bdf(text: str) -> int:
    """``0000:1a:00.0`` as an amdsmi_bdf_t."""
    domain, bus, rest = text.split(":")
    dev, fn = rest.split(".")
    return int(domain, 16) << 16 | int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn, 16)


def _handles(lib: ctypes.CDLL, fn: str, *lead: object) -> list[int]:
    """A handle list by the API's two-call protocol: the count first, then that many handles."""
    count = _u32()
    call(lib, fn, *lead, ctypes.byref(count), None)
    arr = (_handle * max(count.value, 1))()
    call(lib, fn, *lead, ctypes.byref(count), arr)
    return [arr[i] for i in range(count.value)]


def _device(lib: ctypes.CDLL, index: int, proc: int) -> Device:
    bdf = ctypes.c_uint64()
    call(lib, "amdsmi_get_gpu_device_bdf", proc, ctypes.byref(bdf))
    # the plugin's own path: the processor of that BDF, then its UUID and ASIC facts
    by_bdf = _handle()
    call(lib, "amdsmi_get_processor_handle_from_bdf", bdf.value, ctypes.byref(by_bdf))
    uuid = ctypes.create_string_buffer(AMDSMI_GPU_UUID_SIZE + 58)
    length = ctypes.c_uint(len(uuid))
    call(lib, "amdsmi_get_gpu_device_uuid", by_bdf, ctypes.byref(length), uuid)
    asic = AsicInfo()
    call(lib, "amdsmi_get_gpu_asic_info", by_bdf, ctypes.byref(asic))
    total = ctypes.c_uint64()
    call(lib, "amdsmi_get_gpu_memory_total", by_bdf, AMDSMI_MEM_TYPE_VRAM, ctypes.byref(total))
    numa = _u32()
    call(lib, "amdsmi_topo_get_numa_node_number", by_bdf, ctypes.byref(numa))
    ecc = ctypes.c_int()
    call(lib, "amdsmi_get_gpu_ecc_status", by_bdf, AMDSMI_GPU_BLOCK_UMC, ctypes.byref(ecc))
    return Device(
        uuid=uuid.value.decode(),
        index=index,
        model=asic.market_name.decode(),
        memory_mib=total.value // (1024 * 1024),
        compute_units=asic.num_of_compute_units,
        bus_id=bus_id(bdf.value),
        numa=numa.value,
        healthy=ecc.value not in (AMDSMI_RAS_ERR_STATE_MULT_UC, AMDSMI_RAS_ERR_STATE_POISON),
    )


def devices(lib: ctypes.CDLL) -> list[Device]:
    bind(lib)
    call(lib, "amdsmi_init", AMDSMI_INIT_AMD_GPUS)
    try:
        procs = [p for s in _handles(lib, "amdsmi_get_socket_handles") for p in
                 _handles(lib, "amdsmi_get_processor_handles", _handle(s))]
        return [_device(lib, i, p) for i, p in enumerate(procs)]
    finally:
        lib.amdsmi_shut_down()
