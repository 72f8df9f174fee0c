"""Hygon DCUs through the emulated ROCm SMI (``librocm_smi64.so``, ``famlib_rocm_smi64.c``): the calls
HAMi's DCU plugin makes (via dcu-dcgm) answer as rocm_smi.h documents them, the binding gives back
exactly the devices the testbed wrote, and the family plugin registers from the library alone."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hami_stack.device_plugin.families import hardware, mgmt
from hami_stack.device_plugin.families.mgmt import hygon
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw

pytestmark = pytest.mark.hygon

SUCCESS, INVALID_ARGS, NOT_SUPPORTED, INIT_ERROR, INSUFFICIENT_SIZE = 0, 1, 2, 8, 11
ECC_ENABLED, ECC_MULT_UC = 6, 4


@pytest.fixture
def rsmi(family_hw: Path) -> Iterator[ctypes.CDLL]:
    lib = hygon.bind(ctypes.CDLL(hygon.LIBRARY))
    yield lib
    while lib.rsmi_shut_down() == SUCCESS:  # leave the process-wide reference count at zero
        pass


def _count(lib: ctypes.CDLL) -> int:
    n = ctypes.c_uint32()
    assert lib.rsmi_num_monitor_devices(ctypes.byref(n)) == SUCCESS
    return n.value


def _serial(lib: ctypes.CDLL, i: int) -> str:
    buf = ctypes.create_string_buffer(64)
    assert lib.rsmi_dev_serial_number_get(i, buf, 64) == SUCCESS
    return buf.value.decode()


def test_calls_before_init_and_without_a_driver_fail_with_rocm_smis_codes(
    rsmi: ctypes.CDLL, family_hw: Path
) -> None:
    n = ctypes.c_uint32()
    assert rsmi.rsmi_num_monitor_devices(ctypes.byref(n)) == INIT_ERROR  # nothing written: no devices.conf
    assert rsmi.rsmi_init(0) == INIT_ERROR  # no driver state on the node
    hw.create_state(family_hw, "hygon", "Z100L", 2, node_name="n1")
    assert rsmi.rsmi_num_monitor_devices(ctypes.byref(n)) == INIT_ERROR  # still not initialised
    assert rsmi.rsmi_shut_down() == INIT_ERROR
    assert rsmi.rsmi_init(0) == SUCCESS
    assert _count(rsmi) == 2
    assert rsmi.rsmi_shut_down() == SUCCESS
    assert rsmi.rsmi_num_monitor_devices(ctypes.byref(n)) == INIT_ERROR


def test_device_facts_codes_and_buffers(rsmi: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "hygon", "K100", 3, node_name="dcu-node-2")
    assert rsmi.rsmi_init(0) == SUCCESS
    assert _count(rsmi) == 3
    assert [f"DCU-{_serial(rsmi, i)}" for i in range(3)] == [d.uuid for d in written]
    dev_id = ctypes.c_uint16()
    assert rsmi.rsmi_dev_id_get(0, ctypes.byref(dev_id)) == SUCCESS and dev_id.value == 0x62B7
    name = ctypes.create_string_buffer(16)
    assert rsmi.rsmi_dev_name_get(0, name, 16) == SUCCESS and name.value == b"K100"
    bdf = ctypes.c_uint64()
    assert rsmi.rsmi_dev_pci_id_get(2, ctypes.byref(bdf)) == SUCCESS
    assert bdf.value == (0x1C << 8) and hygon.bus_id(bdf.value) == written[2].bus_id == "0000:1c:00.0"
    total = ctypes.c_uint64()
    assert rsmi.rsmi_dev_memory_total_get(1, hygon.RSMI_MEM_TYPE_VRAM, ctypes.byref(total)) == SUCCESS
    assert total.value == 65536 * 1024 * 1024
    assert rsmi.rsmi_dev_memory_total_get(1, 2, ctypes.byref(total)) == NOT_SUPPORTED  # GTT: not emulated
    numa = ctypes.c_uint32()
    assert rsmi.rsmi_topo_get_numa_node_number(2, ctypes.byref(numa)) == SUCCESS and numa.value == 1
    # an index past the count, a short buffer
    assert rsmi.rsmi_dev_id_get(3, ctypes.byref(dev_id)) == INVALID_ARGS
    assert rsmi.rsmi_dev_serial_number_get(3, ctypes.create_string_buffer(64), 64) == INVALID_ARGS
    short = ctypes.create_string_buffer(3)
    assert rsmi.rsmi_dev_serial_number_get(0, short, 3) == INSUFFICIENT_SIZE
    assert rsmi.rsmi_dev_name_get(0, short, 3) == INSUFFICIENT_SIZE


def test_health_flips_show_as_uncorrectable_memory_errors(rsmi: ctypes.CDLL, family_hw: Path) -> None:
    hw.create_state(family_hw, "hygon", "Z100", 2, node_name="n1")
    assert rsmi.rsmi_init(0) == SUCCESS
    state = ctypes.c_int()

    def ecc(i: int) -> int:
        assert rsmi.rsmi_dev_ecc_status_get(i, hygon.RSMI_GPU_BLOCK_UMC, ctypes.byref(state)) == SUCCESS
        return state.value

    assert [ecc(0), ecc(1)] == [ECC_ENABLED, ECC_ENABLED]
    hw.set_health(family_hw, "hygon", 1, False)  # no re-init: the driver's live state
    assert [ecc(0), ecc(1)] == [ECC_ENABLED, ECC_MULT_UC]
    hw.set_health(family_hw, "hygon", 1, True)
    assert ecc(1) == ECC_ENABLED


def test_dcu_visible_devices_filters_and_reorders(
    rsmi: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = hw.create_state(family_hw, "hygon", "Z100L", 4, node_name="n1")
    assert rsmi.rsmi_init(0) == SUCCESS
    monkeypatch.setenv("DCU_VISIBLE_DEVICES", f"2,{written[0].uuid}")
    assert _count(rsmi) == 2
    assert [f"DCU-{_serial(rsmi, i)}" for i in range(2)] == [written[2].uuid, written[0].uuid]
    monkeypatch.setenv("DCU_VISIBLE_DEVICES", "all")
    assert _count(rsmi) == 4


@pytest.mark.parametrize("model", sorted(hw.MODELS["hygon"]))
def test_the_binding_returns_what_the_testbed_wrote(family_hw: Path, model: str) -> None:
    hw.create_state(family_hw, "hygon", model, 4, node_name=f"node-{model}")
    hw.set_health(family_hw, "hygon", 3, False)
    (family_hw / "hygon" / hw.DEVICES_FILE).rename(family_hw / "want.json")  # the library's view only
    got = hardware.devices(family_hw, "hygon")
    (family_hw / "want.json").rename(family_hw / "hygon" / hw.DEVICES_FILE)
    assert got == hardware.read(family_hw, "hygon")
    assert [d.healthy for d in got] == [True, True, True, False]


def test_the_binding_names_the_failing_call(family_hw: Path) -> None:
    with pytest.raises(hardware.HardwareError, match=r"librocm_smi64\.so: rsmi_init failed with code 8"):
        hygon.devices(mgmt.open_library(hygon.LIBRARY))


class _Kube:
    def __init__(self) -> None:
        self.annotations: dict[str, str] = {}

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.annotations.update(body["metadata"]["annotations"])
        return body


def test_the_plugin_registers_from_the_library_alone(family_hw: Path) -> None:
    written = hw.create_state(family_hw, "hygon", "Z100L", 2, node_name="dcu-a")
    (family_hw / "hygon" / hw.DEVICES_FILE).unlink()  # only ROCm SMI can tell the plugin now
    kube, spec = _Kube(), get("dcu")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("dcu-a", family_hw), kube, spec.make_family({}))  # type: ignore[arg-type]
    plugin.refresh()
    assert [d.uuid for d in plugin.devices] == [d.uuid for d in written]
    register = kube.annotations["hami.io/node-dcu-register"]
    assert all(d.uuid in register for d in written) and "Z100L" in register
    (family_hw / "hygon" / hw.CONF_FILE).unlink()  # the driver's view gone: rsmi_init fails
    kube.annotations.clear()
    with pytest.raises(hardware.HardwareError, match="rsmi_init"):
        plugin.refresh()
    assert kube.annotations == {}
