"""Iluvatar through the emulated IXML (libixml.so): the library answers as IXML's NVML-shaped API says,
the binding returns what the testbed wrote, and the in-process plugin registers from the library."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami_stack.device_plugin.families import hardware
from hami_stack.device_plugin.families.hardware import STATE_ENV, HardwareError
from hami_stack.device_plugin.families.mgmt import iluvatar as ix
from hami_stack.device_plugin.families.mgmt import open_library
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw
from tests.families.test_iluvatar import CHIP, DEFAULT_CHIPS, FakeKube, _raw

pytestmark = pytest.mark.iluvatar
VISIBLE = hw.VISIBLE_ENV["iluvatar"]
SUCCESS, UNINITIALIZED, INVALID_ARGUMENT, NOT_FOUND = 0, 1, 2, 6
INSUFFICIENT_SIZE, DRIVER_NOT_LOADED, GPU_IS_LOST, UNKNOWN = 7, 9, 15, 999
MC_ERROR = 0x2


def _shutdown_all(lib: ctypes.CDLL) -> None:
    while lib.nvmlShutdown() == SUCCESS:  # IXML counts inits per process: start every test at zero
        pass


@pytest.fixture
def lib(family_hw: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ctypes.CDLL]:
    monkeypatch.delenv(VISIBLE, raising=False)
    handle = ix.bind(open_library(ix.LIBRARY))
    _shutdown_all(handle)
    yield handle
    _shutdown_all(handle)


def _handle(lib: ctypes.CDLL, index: int) -> ix.Handle:
    h = ix.Handle()
    assert lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(h)) == SUCCESS
    return h


def _uuid(lib: ctypes.CDLL, h: ix.Handle) -> str:
    buf = ctypes.create_string_buffer(ix.UUID_BUFFER)
    assert lib.nvmlDeviceGetUUID(h, buf, ix.UUID_BUFFER) == SUCCESS
    return buf.value.decode()


def test_uninitialised_and_no_driver_codes(lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch) -> None:
    count, h = ctypes.c_uint(), ix.Handle()
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == UNINITIALIZED
    assert lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(h)) == UNINITIALIZED
    assert lib.nvmlSystemGetDriverVersion(ctypes.create_string_buffer(80), 80) == UNINITIALIZED
    assert lib.nvmlShutdown() == UNINITIALIZED
    # a hardware dir without Iluvatar's devices file, or none at all: the driver is not loaded
    assert lib.nvmlInit_v2() == DRIVER_NOT_LOADED
    monkeypatch.delenv(STATE_ENV)
    assert lib.nvmlInit_v2() == DRIVER_NOT_LOADED
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == UNINITIALIZED  # a failed init counts nothing
    lib.nvmlErrorString.restype = ctypes.c_char_p
    assert lib.nvmlErrorString(DRIVER_NOT_LOADED) == b"Driver Not Loaded"


def test_the_library_reports_each_card(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "iluvatar", "BI-V150", 4, node_name="ilu-a")
    assert lib.nvmlInit_v2() == SUCCESS and lib.nvmlInit_v2() == SUCCESS  # reference counted
    count = ctypes.c_uint()
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == SUCCESS and count.value == 4
    version = ctypes.create_string_buffer(80)
    assert lib.nvmlSystemGetNVMLVersion(version, 80) == SUCCESS and version.value
    for d in written:
        h = _handle(lib, d.index)
        assert _uuid(lib, h) == d.uuid
        name = ctypes.create_string_buffer(ix.NAME_BUFFER)
        assert lib.nvmlDeviceGetName(h, name, ix.NAME_BUFFER) == SUCCESS and name.value.decode() == d.model
        minor, index, numa = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
        assert lib.nvmlDeviceGetMinorNumber(h, ctypes.byref(minor)) == SUCCESS and minor.value == d.index
        assert lib.nvmlDeviceGetIndex(h, ctypes.byref(index)) == SUCCESS and index.value == d.index
        assert lib.nvmlDeviceGetNumaNodeId(h, ctypes.byref(numa)) == SUCCESS and numa.value == d.numa
        mem = ix.Memory()
        assert lib.nvmlDeviceGetMemoryInfo(h, ctypes.byref(mem)) == SUCCESS
        assert (mem.total, mem.free, mem.used) == (d.memory_mib << 20, d.memory_mib << 20, 0)
        pci = ix.PciInfo()
        assert lib.nvmlDeviceGetPciInfo_v3(h, ctypes.byref(pci)) == SUCCESS
        bus = int(d.bus_id.split(":")[1], 16)
        assert (pci.domain, pci.bus, pci.device) == (0, bus, 0)
        assert pci.busIdLegacy.decode() == d.bus_id.upper()
        assert pci.busId.decode() == f"00000000:{bus:02X}:00.0"
        health = ctypes.c_ulonglong(99)
        assert lib.ixmlDeviceGetHealth(h, ctypes.byref(health)) == SUCCESS and health.value == 0
        found = ix.Handle()
        assert lib.nvmlDeviceGetHandleByUUID(d.uuid.encode(), ctypes.byref(found)) == SUCCESS
        assert found.value == h.value
    assert lib.nvmlShutdown() == SUCCESS and lib.nvmlShutdown() == SUCCESS
    assert lib.nvmlShutdown() == UNINITIALIZED


def test_bad_index_unknown_uuid_short_buffer_and_corrupt_file(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "iluvatar", "BI-V100", 2)
    assert lib.nvmlInit_v2() == SUCCESS
    h = ix.Handle()
    assert lib.nvmlDeviceGetHandleByIndex_v2(2, ctypes.byref(h)) == INVALID_ARGUMENT
    assert lib.nvmlDeviceGetHandleByUUID(b"ILU-nope", ctypes.byref(h)) == NOT_FOUND
    h = _handle(lib, 1)
    size = len(written[1].uuid)  # no room for the terminator
    assert lib.nvmlDeviceGetUUID(h, ctypes.create_string_buffer(size), size) == INSUFFICIENT_SIZE
    assert lib.nvmlDeviceGetUUID(h, ctypes.create_string_buffer(size + 1), size + 1) == SUCCESS
    assert lib.nvmlDeviceGetName(h, ctypes.create_string_buffer(2), 2) == INSUFFICIENT_SIZE
    bogus = ctypes.c_void_p(12345)  # not a handle the library gave out
    assert lib.nvmlDeviceGetMinorNumber(bogus, ctypes.byref(ctypes.c_uint())) == INVALID_ARGUMENT
    # the card behind a handle is gone (one left): the handle answers "lost"
    hw.write(family_hw, "iluvatar", hw.read(family_hw, "iluvatar")[:1])
    assert lib.nvmlDeviceGetMinorNumber(h, ctypes.byref(ctypes.c_uint())) == GPU_IS_LOST
    (family_hw / "iluvatar" / hw.CONF_FILE).write_text("not the format\n")
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(ctypes.c_uint())) == UNKNOWN
    with pytest.raises(HardwareError, match="nvmlInit_v2 failed with code 999"):
        ix.devices(lib)


def test_visibility_filters_and_reorders(
    lib: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = hw.create_state(family_hw, "iluvatar", "BI-V150", 4, node_name="ilu-a")
    monkeypatch.setenv(VISIBLE, f"{written[2].uuid},0")
    assert lib.nvmlInit_v2() == SUCCESS
    count = ctypes.c_uint()
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) == SUCCESS and count.value == 2
    h = _handle(lib, 0)
    index, minor = ctypes.c_uint(), ctypes.c_uint()
    assert lib.nvmlDeviceGetIndex(h, ctypes.byref(index)) == SUCCESS and index.value == 0  # re-numbered
    assert lib.nvmlDeviceGetMinorNumber(h, ctypes.byref(minor)) == SUCCESS and minor.value == 2  # physical
    assert _uuid(lib, h) == written[2].uuid
    assert [d.uuid for d in ix.devices(lib)] == [written[2].uuid, written[0].uuid]
    monkeypatch.setenv(VISIBLE, "all")
    assert len(ix.devices(lib)) == 4


def test_health_flip_reaches_the_next_query(lib: ctypes.CDLL, family_hw: Path) -> None:
    hw.create_state(family_hw, "iluvatar", "MR-V100", 2)
    assert lib.nvmlInit_v2() == SUCCESS
    h = _handle(lib, 1)
    health = ctypes.c_ulonglong()
    assert lib.ixmlDeviceGetHealth(h, ctypes.byref(health)) == SUCCESS and health.value == 0
    hw.set_health(family_hw, "iluvatar", 1, False)
    assert lib.ixmlDeviceGetHealth(h, ctypes.byref(health)) == SUCCESS and health.value == MC_ERROR
    assert [d.healthy for d in ix.devices(lib)] == [True, False]
    hw.set_health(family_hw, "iluvatar", 1, True)
    assert lib.ixmlDeviceGetHealth(h, ctypes.byref(health)) == SUCCESS and health.value == 0


@pytest.mark.parametrize("model", sorted(hw.MODELS["iluvatar"]))
@pytest.mark.parametrize("node_name", ["", "ilu-node-7"])
def test_binding_returns_what_the_testbed_wrote(
    lib: ctypes.CDLL, family_hw: Path, model: str, node_name: str
) -> None:
    written = hw.create_state(family_hw, "iluvatar", model, 4, node_name=node_name)
    hw.set_health(family_hw, "iluvatar", 2, False)
    got = ix.devices(lib)
    assert got == hardware.read(family_hw, "iluvatar")
    assert [d.uuid for d in got] == [d.uuid for d in written] and {d.numa for d in got} == {0, 1}
    assert lib.nvmlDeviceGetCount_v2(ctypes.byref(ctypes.c_uint())) == UNINITIALIZED  # shut down again


def test_plugin_registers_from_the_library(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "iluvatar", "BI-V150", 2, node_name="ilu-a")
    (family_hw / "iluvatar" / hw.DEVICES_FILE).unlink()  # only the library's view is left
    spec = get("iluvatar")
    family = spec.make_family([_raw(c.chip_name) for c in DEFAULT_CHIPS])
    kube = FakeKube()
    plugin = FamilyDevicePlugin(spec, FamilyOptions("ilu-a", family_hw), kube, family)  # type: ignore[arg-type]
    plugin.refresh()
    assert plugin.devices == [hardware.Device(**vars(d)) for d in written]
    assert len(plugin.kubelet_devices()) == 8
    register = kube.patches[-1]["metadata"]["annotations"][f"hami.io/node-{CHIP}-register"]
    assert all(d.uuid in register for d in written), register
    hw.write(family_hw, "iluvatar", [hw.Device(**{**vars(written[0]), "healthy": False}), written[1]])
    plugin.refresh()
    assert [d.healthy for d in plugin.devices] == [False, True]
    (family_hw / "iluvatar" / hw.CONF_FILE).unlink()  # the driver is gone: nothing to register
    with pytest.raises(HardwareError, match="nvmlInit_v2 failed with code 9"):
        plugin.refresh()
