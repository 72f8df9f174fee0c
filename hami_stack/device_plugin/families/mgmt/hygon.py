"""Hygon DCUs through ROCm SMI (``librocm_smi64.so``), as HAMi's dcu-vgpu-device-plugin reads them (via
dcu-dcgm): the device count, each DCU's serial number (the plugin registers ``DCU-<serial>``), PCI device
id (its model, through dcu-dcgm's id -> name table), PCI bus id, VRAM total and NUMA node. The compute
units are not in ROCm SMI: dcu-dcgm takes them from a model -> CU table too, and so do we. Health is the
UMC block's ECC state (uncorrectable errors: unhealthy).
"""

from __future__ import annotations

import ctypes

from ..hardware import Device, HardwareError
from . import call

LIBRARY = "librocm_smi64.so"

RSMI_STATUS_SUCCESS = 0
RSMI_STATUS_NOT_SUPPORTED = 2
RSMI_MEM_TYPE_VRAM = 0
RSMI_GPU_BLOCK_UMC = 0x1
RSMI_RAS_ERR_STATE_MULT_UC = 4
RSMI_RAS_ERR_STATE_POISON = 5
_NAME_LEN = 256

UUID_PREFIX = "DCU-"
# PCI device id -> model (the ids dcu-dcgm's table names for the models the testbed emulates)
MODEL_BY_DEVICE_ID = {0x54B7: "Z100", 0x55B7: "Z100L", 0x62B7: "K100"}
# model -> compute units (dcu-dcgm's table: ROCm SMI has no call for them)
COMPUTE_UNITS = {"Z100": 60, "Z100L": 60, "K100": 120}

_u32 = ctypes.c_uint32
_SIGNATURES: dict[str, list[type]] = {
    "rsmi_init": [ctypes.c_uint64],
    "rsmi_shut_down": [],
    "rsmi_num_monitor_devices": [ctypes.POINTER(_u32)],
    "rsmi_dev_id_get": [_u32, ctypes.POINTER(ctypes.c_uint16)],
    "rsmi_dev_name_get": [_u32, ctypes.c_char_p, ctypes.c_size_t],
    "rsmi_dev_serial_number_get": [_u32, ctypes.c_char_p, _u32],
    "rsmi_dev_pci_id_get": [_u32, ctypes.POINTER(ctypes.c_uint64)],
    "rsmi_dev_memory_total_get": [_u32, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64)],
    "rsmi_topo_get_numa_node_number": [_u32, ctypes.POINTER(_u32)],
    "rsmi_dev_ecc_status_get": [_u32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)],
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int  # rsmi_status_t
    return lib


def bus_id(bdfid: int) -> str:
    """rocm_smi's packed BDF (domain 63..32, bus 15..8, device 7..3, function 2..0) as ``0000:1a:00.0``."""
    return f"{bdfid >> 32 & 0xFFFFFFFF:04x}:{bdfid >> 8 & 0xFF:02x}:{bdfid >> 3 & 0x1F:02x}.{bdfid & 0x7:x}"


def _model(lib: ctypes.CDLL, i: int) -> str:
    dev_id = ctypes.c_uint16()
    rc = lib.rsmi_dev_id_get(i, ctypes.byref(dev_id))
    if rc == RSMI_STATUS_SUCCESS and dev_id.value in MODEL_BY_DEVICE_ID:
        return MODEL_BY_DEVICE_ID[dev_id.value]
    if rc not in (RSMI_STATUS_SUCCESS, RSMI_STATUS_NOT_SUPPORTED):
        raise HardwareError(f"{lib._name}: rsmi_dev_id_get failed with code {rc}")
    name = ctypes.create_string_buffer(_NAME_LEN)  # an id the table lacks: the driver's name for it
    call(lib, "rsmi_dev_name_get", i, name, _NAME_LEN)
    return name.value.decode()


def _device(lib: ctypes.CDLL, i: int) -> Device:
    serial = ctypes.create_string_buffer(_NAME_LEN)
    call(lib, "rsmi_dev_serial_number_get", i, serial, _NAME_LEN)
    model = _model(lib, i)
    if model not in COMPUTE_UNITS:
        raise HardwareError(f"{lib._name}: DCU {i}: no compute-unit count known for model {model!r}")
    bdfid = ctypes.c_uint64()
    call(lib, "rsmi_dev_pci_id_get", i, ctypes.byref(bdfid))
    total = ctypes.c_uint64()
    call(lib, "rsmi_dev_memory_total_get", i, RSMI_MEM_TYPE_VRAM, ctypes.byref(total))
    numa = _u32()
    call(lib, "rsmi_topo_get_numa_node_number", i, ctypes.byref(numa))
    ecc = ctypes.c_int()
    call(lib, "rsmi_dev_ecc_status_get", i, RSMI_GPU_BLOCK_UMC, ctypes.byref(ecc))
    return Device(
        uuid=UUID_PREFIX + serial.value.decode(),
        index=i,
        model=model,
        memory_mib=total.value // (1024 * 1024),
        compute_units=COMPUTE_UNITS[model],
        bus_id=bus_id(bdfid.value),
        numa=numa.value,
        healthy=ecc.value not in (RSMI_RAS_ERR_STATE_MULT_UC, RSMI_RAS_ERR_STATE_POISON),
    )


def devices(lib: ctypes.CDLL) -> list[Device]:
    bind(lib)
    call(lib, "rsmi_init", 0)
    try:
        count = _u32()
        call(lib, "rsmi_num_monitor_devices", ctypes.byref(count))
        return [_device(lib, i) for i in range(count.value)]
    finally:
        lib.rsmi_shut_down()
