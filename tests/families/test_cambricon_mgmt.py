"""Cambricon through the emulated CNDev (libcndev.so): the library answers as the API says, the binding
returns what the testbed wrote, and the in-process plugin registers from the library."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami_stack.device_plugin.families import hardware
from hami_stack.device_plugin.families.hardware import STATE_ENV, HardwareError
from hami_stack.device_plugin.families.mgmt import cambricon as cn
from hami_stack.device_plugin.families.mgmt import open_library
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw

pytestmark = pytest.mark.cambricon
VISIBLE = hw.VISIBLE_ENV["cambricon"]


@pytest.fixture
def lib(family_hw: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ctypes.CDLL]:
    monkeypatch.delenv(VISIBLE, raising=False)
    handle = cn.bind(open_library(cn.LIBRARY))
    handle.cndevRelease()  # CNDev's init state is per process: every test starts uninitialised
    yield handle
    handle.cndevRelease()


def _v(cls: type[ctypes.Structure]) -> ctypes.Structure:
    s = cls()
    s.version = cn.CNDEV_VERSION
    return s


def _handle(lib: ctypes.CDLL, index: int) -> int:
    h = ctypes.c_int32()
    assert lib.cndevGetDeviceHandleByIndex(index, ctypes.byref(h)) == cn.SUCCESS
    return h.value


def test_uninitialised_and_no_driver_codes(
    lib: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = _v(cn.CardInfo)
    assert lib.cndevGetDeviceCount(ctypes.byref(info)) == cn.ERROR_UNINITIALIZED
    h = ctypes.c_int32()
    assert lib.cndevGetDeviceHandleByIndex(0, ctypes.byref(h)) == cn.ERROR_UNINITIALIZED
    assert lib.cndevGetUUID(ctypes.byref(_v(cn.UUID)), 0) == cn.ERROR_UNINITIALIZED
    # a hardware dir without Cambricon's devices file: the driver is not loaded
    assert lib.cndevInit(0) == cn.ERROR_NO_DRIVER
    monkeypatch.delenv(STATE_ENV)
    assert lib.cndevInit(0) == cn.ERROR_NO_DRIVER
    assert lib.cndevGetErrorString(cn.ERROR_NO_DRIVER) == b"No driver"


def test_the_library_reports_each_card(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "cambricon", "MLU370-X8", 4, node_name="mlu-a")
    assert lib.cndevInit(0) == cn.SUCCESS
    info = _v(cn.CardInfo)
    assert lib.cndevGetDeviceCount(ctypes.byref(info)) == cn.SUCCESS and info.number == 4
    h = _handle(lib, 3)
    uuid = _v(cn.UUID)
    assert lib.cndevGetUUID(ctypes.byref(uuid), h) == cn.SUCCESS
    assert cn.UUID_PREFIX + uuid.uuid.decode() == written[3].uuid  # the plugin adds "MLU-"
    name = _v(cn.CardName)
    assert lib.cndevGetCardName(ctypes.byref(name), h) == cn.SUCCESS and name.id == 23  # MLU370
    assert lib.cndevGetCardNameStringByDevId(h) == b"MLU370-X8"
    mem = cn.MemoryInfoV2()
    assert lib.cndevGetMemoryUsageV2(ctypes.byref(mem), h) == cn.SUCCESS and mem.physicalMemoryTotal == 24576
    cores = _v(cn.CardCoreCount)
    assert lib.cndevGetCoreCount(ctypes.byref(cores), h) == cn.SUCCESS and cores.count == 100
    pci = cn.PCIeInfoV2()
    assert lib.cndevGetPCIeInfoV2(ctypes.byref(pci), h) == cn.SUCCESS
    assert (pci.vendor, pci.domain, pci.bus, pci.device, pci.function) == (0xCABC, 0, 0x1D, 0, 0)
    numa = _v(cn.NUMANodeId)
    assert lib.cndevGetNUMANodeIdByDevId(ctypes.byref(numa), h) == cn.SUCCESS and numa.nodeId == 1
    sn1, sn2 = _v(cn.CardSN), _v(cn.CardSN)
    assert lib.cndevGetCardSN(ctypes.byref(sn1), h) == cn.SUCCESS
    assert lib.cndevGetCardSN(ctypes.byref(sn2), _handle(lib, 0)) == cn.SUCCESS and sn1.sn != sn2.sn


def test_bad_index_handle_version_and_short_field(lib: ctypes.CDLL, family_hw: Path) -> None:
    hw.create_state(family_hw, "cambricon", "MLU590", 2)
    assert lib.cndevInit(0) == cn.SUCCESS
    h = ctypes.c_int32()
    assert lib.cndevGetDeviceHandleByIndex(2, ctypes.byref(h)) == cn.ERROR_INVALID_ARGUMENT
    assert lib.cndevGetDeviceHandleByIndex(-1, ctypes.byref(h)) == cn.ERROR_INVALID_ARGUMENT
    assert lib.cndevGetDeviceHandleByIndex(0, None) == cn.ERROR_INVALID_ARGUMENT
    assert lib.cndevGetUUID(ctypes.byref(_v(cn.UUID)), 7) == cn.ERROR_INVALID_DEVICE_ID
    assert lib.cndevGetMemoryUsageV2(None, 0) == cn.ERROR_INVALID_ARGUMENT
    unversioned = cn.CardHealthState()
    assert lib.cndevGetCardHealthState(ctypes.byref(unversioned), 0) == cn.ERROR_UNSUPPORTED_API_VERSION
    # CNDev's UUID field is 37 bytes: a longer UUID does not fit
    long = hw.Device("MLU-" + "f" * 40, 0, "MLU590", 49152, 100, "0000:1a:00.0")
    hw.write(family_hw, "cambricon", [long])
    assert lib.cndevGetUUID(ctypes.byref(_v(cn.UUID)), 0) == cn.ERROR_INSUFFICIENT_SPACE
    # no devices at all: cndevInit says so, and the binding lists none
    hw.write(family_hw, "cambricon", [])
    lib.cndevRelease()
    assert lib.cndevInit(0) == cn.ERROR_NO_DEVICES
    assert cn.devices(lib) == []


def test_visibility_filters_and_reorders(
    lib: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = hw.create_state(family_hw, "cambricon", "MLU370-X8", 4, node_name="mlu-a")
    monkeypatch.setenv(VISIBLE, f"{written[2].uuid},0")
    assert lib.cndevInit(0) == cn.SUCCESS
    info = _v(cn.CardInfo)
    assert lib.cndevGetDeviceCount(ctypes.byref(info)) == cn.SUCCESS and info.number == 2
    uuid = _v(cn.UUID)
    assert lib.cndevGetUUID(ctypes.byref(uuid), _handle(lib, 0)) == cn.SUCCESS
    assert cn.UUID_PREFIX + uuid.uuid.decode() == written[2].uuid
    assert [d.uuid for d in cn.devices(lib)] == [written[2].uuid, written[0].uuid]


def test_health_flip_reaches_the_next_query(lib: ctypes.CDLL, family_hw: Path) -> None:
    hw.create_state(family_hw, "cambricon", "MLU370-X8", 2)
    assert lib.cndevInit(0) == cn.SUCCESS
    state = _v(cn.CardHealthState)
    assert lib.cndevGetCardHealthState(ctypes.byref(state), 1) == cn.SUCCESS
    assert (state.health, state.deviceState) == (1, cn.HEALTH_STATE_DEVICE_GOOD)
    hw.set_health(family_hw, "cambricon", 1, False)
    assert lib.cndevGetCardHealthState(ctypes.byref(state), 1) == cn.SUCCESS
    assert (state.health, state.deviceState) == (0, 0)
    assert [d.healthy for d in cn.devices(lib)] == [True, False]


@pytest.mark.parametrize("model", sorted(hw.MODELS["cambricon"]))
@pytest.mark.parametrize("node_name", ["", "mlu-node-7"])
def test_binding_returns_what_the_testbed_wrote(
    lib: ctypes.CDLL, family_hw: Path, model: str, node_name: str
) -> None:
    written = hw.create_state(family_hw, "cambricon", model, 4, node_name=node_name)
    hw.set_health(family_hw, "cambricon", 2, False)
    assert cn.devices(lib) == hardware.read(family_hw, "cambricon")
    assert [d.uuid for d in cn.devices(lib)] == [d.uuid for d in written]
    assert lib.cndevGetDeviceCount(ctypes.byref(_v(cn.CardInfo))) == cn.ERROR_UNINITIALIZED  # released


def test_plugin_registers_from_the_library(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "cambricon", "MLU370-X8", 2, node_name="mlu-a")
    (family_hw / "cambricon" / hw.DEVICES_FILE).unlink()  # only the library's view is left
    spec = get("mlu")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("mlu-a", family_hw), None, spec.make_family({}))  # type: ignore[arg-type]
    plugin.refresh()
    assert plugin.devices == [hardware.Device(**vars(d)) for d in written]
    assert len(plugin.kubelet_devices()) == 200
    (family_hw / "cambricon" / hw.CONF_FILE).unlink()  # the driver is gone: nothing to register
    with pytest.raises(HardwareError, match="cndevInit failed with code 1"):
        plugin.refresh()
