"""AMD Instinct GPUs through the emulated AMD SMI (``libamd_smi.so``, ``famlib_amd_smi.c``): the calls
HAMi's AMD plugin makes answer as amdsmi.h documents them, the binding gives back exactly the devices
the testbed wrote, and the family plugin registers from the library alone."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hami_stack.device_plugin.families import hardware, mgmt
from hami_stack.device_plugin.families.mgmt import amd
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw

pytestmark = pytest.mark.amd

SUCCESS, INVAL, NOT_FOUND, NOT_INIT, DRIVER_NOT_LOADED, INSUFFICIENT_SIZE = 0, 1, 31, 32, 34, 41
ECC_ENABLED, ECC_MULT_UC = 6, 4
GPUS = amd.AMDSMI_INIT_AMD_GPUS


@pytest.fixture
def smi(family_hw: Path) -> Iterator[ctypes.CDLL]:
    lib = amd.bind(ctypes.CDLL(amd.LIBRARY))
    yield lib
    while lib.amdsmi_shut_down() == SUCCESS:  # leave the process-wide reference count at zero
        pass


def _processors(lib: ctypes.CDLL) -> list[int]:
    return [p for s in amd._handles(lib, "amdsmi_get_socket_handles")
            for p in amd._handles(lib, "amdsmi_get_processor_handles", ctypes.c_void_p(s))]


def _uuid(lib: ctypes.CDLL, proc: int) -> str:
    buf = ctypes.create_string_buffer(amd.AMDSMI_GPU_UUID_SIZE)
    length = ctypes.c_uint(len(buf))
    assert lib.amdsmi_get_gpu_device_uuid(proc, ctypes.byref(length), buf) == SUCCESS
    assert length.value == len(buf.value)
    return buf.value.decode()


def test_calls_before_init_and_without_a_driver_fail_with_amd_smis_codes(
    smi: ctypes.CDLL, family_hw: Path
) -> None:
    count = ctypes.c_uint32()
    assert smi.amdsmi_get_socket_handles(ctypes.byref(count), None) == NOT_INIT
    assert smi.amdsmi_init(GPUS) == DRIVER_NOT_LOADED  # no devices.conf: no amdgpu driver state
    hw.create_state(family_hw, "amd", "MI300X", 2, node_name="amd-a")
    assert smi.amdsmi_get_socket_handles(ctypes.byref(count), None) == NOT_INIT
    assert smi.amdsmi_shut_down() == NOT_INIT
    assert smi.amdsmi_init(GPUS) == SUCCESS
    assert smi.amdsmi_get_socket_handles(ctypes.byref(count), None) == SUCCESS and count.value == 2
    assert smi.amdsmi_shut_down() == SUCCESS
    assert smi.amdsmi_get_socket_handles(ctypes.byref(count), None) == NOT_INIT


def test_discovery_facts_codes_and_buffers(smi: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "amd", "MI300X", 3, node_name="amd-a")
    assert smi.amdsmi_init(GPUS) == SUCCESS
    procs = _processors(smi)
    assert len(procs) == 3 and len(set(procs)) == 3
    assert [_uuid(smi, p) for p in procs] == [d.uuid for d in written]
    # the plugin's path: BDF text -> amdsmi_bdf_t -> processor handle -> UUID and market name
    handle = ctypes.c_void_p()
    by_bdf = smi.amdsmi_get_processor_handle_from_bdf
    assert by_bdf(amd.pack_bdf("0000:1c:00.0"), ctypes.byref(handle)) == SUCCESS and handle.value == procs[2]
    assert by_bdf(amd.pack_bdf("0000:99:00.0"), ctypes.byref(handle)) == NOT_FOUND
    bdf = ctypes.c_uint64()
    assert smi.amdsmi_get_gpu_device_bdf(procs[1], ctypes.byref(bdf)) == SUCCESS
    assert bdf.value == 0x1B << 8 and amd.bus_id(bdf.value) == written[1].bus_id
    info = amd.AsicInfo()
    assert smi.amdsmi_get_gpu_asic_info(procs[0], ctypes.byref(info)) == SUCCESS
    assert (info.market_name, info.vendor_id, info.device_id, info.num_of_compute_units) == (
        b"MI300X", 0x1002, 0x74A1, 304
    )
    total = ctypes.c_uint64()
    assert smi.amdsmi_get_gpu_memory_total(procs[0], amd.AMDSMI_MEM_TYPE_VRAM, ctypes.byref(total)) == SUCCESS
    assert total.value == 196608 * 1024 * 1024
    numa = ctypes.c_uint32()
    assert smi.amdsmi_topo_get_numa_node_number(procs[2], ctypes.byref(numa)) == SUCCESS and numa.value == 1
    # a handle the library never gave out, short buffers
    assert smi.amdsmi_get_gpu_asic_info(ctypes.c_void_p(id(info)), ctypes.byref(info)) == INVAL
    short = ctypes.create_string_buffer(8)
    length = ctypes.c_uint(8)
    assert smi.amdsmi_get_gpu_device_uuid(procs[0], ctypes.byref(length), short) == INSUFFICIENT_SIZE
    count = ctypes.c_uint32(1)
    one = (ctypes.c_void_p * 1)()
    assert smi.amdsmi_get_socket_handles(ctypes.byref(count), one) == INSUFFICIENT_SIZE
    assert count.value == 3 and one[0] is not None


def test_health_flips_show_as_uncorrectable_memory_errors(smi: ctypes.CDLL, family_hw: Path) -> None:
    hw.create_state(family_hw, "amd", "MI300X", 2, node_name="amd-a")
    assert smi.amdsmi_init(GPUS) == SUCCESS
    procs = _processors(smi)
    state = ctypes.c_int()

    def ecc(p: int) -> int:
        assert smi.amdsmi_get_gpu_ecc_status(p, amd.AMDSMI_GPU_BLOCK_UMC, ctypes.byref(state)) == SUCCESS
        return state.value

    assert [ecc(p) for p in procs] == [ECC_ENABLED, ECC_ENABLED]
    hw.set_health(family_hw, "amd", 0, False)  # no re-init: the driver's live state
    assert [ecc(p) for p in procs] == [ECC_MULT_UC, ECC_ENABLED]


def test_rocr_visible_devices_filters_and_reorders(
    smi: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = hw.create_state(family_hw, "amd", "MI300X", 4, node_name="amd-a")
    assert smi.amdsmi_init(GPUS) == SUCCESS
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", f"{written[3].uuid},1")
    assert [_uuid(smi, p) for p in _processors(smi)] == [written[3].uuid, written[1].uuid]
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "all")
    assert len(_processors(smi)) == 4


def test_the_binding_returns_what_the_testbed_wrote(family_hw: Path) -> None:
    for model in sorted(hw.MODELS["amd"]):
        hw.create_state(family_hw, "amd", model, 4, node_name=f"node-{model}")
        hw.set_health(family_hw, "amd", 2, False)
        (family_hw / "amd" / hw.DEVICES_FILE).rename(family_hw / "want.json")  # the library's view only
        got = hardware.devices(family_hw, "amd")
        (family_hw / "want.json").rename(family_hw / "amd" / hw.DEVICES_FILE)
        assert got == hardware.read(family_hw, "amd")
        assert [d.healthy for d in got] == [True, True, False, True]


def test_the_binding_names_the_failing_call(family_hw: Path) -> None:
    with pytest.raises(hardware.HardwareError, match=r"libamd_smi\.so: amdsmi_init failed with code 34"):
        amd.devices(mgmt.open_library(amd.LIBRARY))


class _Kube:
    def __init__(self) -> None:
        self.annotations: dict[str, str] = {}

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.annotations.update(body["metadata"]["annotations"])
        return body


def test_the_plugin_registers_from_the_library_alone(family_hw: Path) -> None:
    written = hw.create_state(family_hw, "amd", "MI300X", 2, node_name="amd-a")
    (family_hw / "amd" / hw.DEVICES_FILE).unlink()  # only AMD SMI can tell the plugin now
    kube, spec = _Kube(), get("amd")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("amd-a", family_hw), kube, spec.make_family({}))  # type: ignore[arg-type]
    plugin.refresh()
    assert [d.uuid for d in plugin.devices] == [d.uuid for d in written]
    assert [(d.memory_mib, d.compute_units) for d in plugin.devices] == [(196608, 304)] * 2
    assert kube.annotations and all(d.uuid in str(kube.annotations) for d in written)
    (family_hw / "amd" / hw.CONF_FILE).unlink()  # the driver's view gone: amdsmi_init fails
    kube.annotations.clear()
    with pytest.raises(hardware.HardwareError, match="amdsmi_init"):
        plugin.refresh()
    assert kube.annotations == {}
