"""Moore Threads through the emulated MTML (libmtml.so): the library answers as the API says, the
binding returns what the testbed wrote, and the in-process plugin registers from the library."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from hami_stack.device_plugin.families import hardware
from hami_stack.device_plugin.families.hardware import STATE_ENV, HardwareError
from hami_stack.device_plugin.families.mgmt import mthreads as mt
from hami_stack.device_plugin.families.mgmt import open_library
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw

pytestmark = pytest.mark.mthreads
VISIBLE = hw.VISIBLE_ENV["mthreads"]
SECTION = {
    "resourceCountName": "mthreads.com/vgpu",
    "resourceMemoryName": "mthreads.com/sgpu-memory",
    "resourceCoreName": "mthreads.com/sgpu-core",
}


@pytest.fixture
def lib(family_hw: Path, monkeypatch: pytest.MonkeyPatch) -> ctypes.CDLL:
    monkeypatch.delenv(VISIBLE, raising=False)
    return mt.bind(open_library(mt.LIBRARY))


def _device(lib: ctypes.CDLL, session: ctypes.c_void_p, index: int) -> ctypes.c_void_p:
    dev = ctypes.c_void_p()
    assert lib.mtmlLibraryInitDeviceByIndex(session, index, ctypes.byref(dev)) == mt.SUCCESS
    return dev


def _string(lib: ctypes.CDLL, fn: str, dev: ctypes.c_void_p, size: int) -> tuple[int, str]:
    buf = ctypes.create_string_buffer(size)
    rc = getattr(lib, fn)(dev, buf, size)
    return rc, buf.value.decode()


def test_no_driver_and_uninitialised_codes(
    lib: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = ctypes.c_void_p()
    assert lib.mtmlLibraryInit(ctypes.byref(handle)) == mt.ERROR_DRIVER_NOT_LOADED  # no devices file
    monkeypatch.delenv(STATE_ENV)
    assert lib.mtmlLibraryInit(ctypes.byref(handle)) == mt.ERROR_DRIVER_NOT_LOADED
    assert lib.mtmlLibraryInit(None) == mt.ERROR_INVALID_ARGUMENT
    # MTML has no global init: calls on no library object are invalid arguments
    count = ctypes.c_uint()
    assert lib.mtmlLibraryCountDevice(None, ctypes.byref(count)) == mt.ERROR_INVALID_ARGUMENT
    dev = ctypes.c_void_p()
    assert lib.mtmlLibraryInitDeviceByIndex(None, 0, ctypes.byref(dev)) == mt.ERROR_INVALID_ARGUMENT
    assert _string(lib, "mtmlDeviceGetUUID", None, 48)[0] == mt.ERROR_INVALID_ARGUMENT
    assert lib.mtmlErrorString(mt.ERROR_DRIVER_NOT_LOADED) == b"Driver not loaded"


def test_the_library_reports_each_gpu(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "mthreads", "MTT-S4000", 4, node_name="mt-a")
    handle = ctypes.c_void_p()
    assert lib.mtmlLibraryInit(ctypes.byref(handle)) == mt.SUCCESS
    try:
        count = ctypes.c_uint()
        assert lib.mtmlLibraryCountDevice(handle, ctypes.byref(count)) == mt.SUCCESS and count.value == 4
        dev = _device(lib, handle, 3)
        index, cores = ctypes.c_uint(), ctypes.c_uint()
        assert lib.mtmlDeviceGetIndex(dev, ctypes.byref(index)) == mt.SUCCESS and index.value == 3
        assert _string(lib, "mtmlDeviceGetUUID", dev, mt.UUID_BUFFER_SIZE) == (mt.SUCCESS, written[3].uuid)
        assert _string(lib, "mtmlDeviceGetName", dev, mt.NAME_BUFFER_SIZE) == (mt.SUCCESS, "MTT-S4000")
        assert lib.mtmlDeviceCountGpuCores(dev, ctypes.byref(cores)) == mt.SUCCESS and cores.value == 16
        mem, total = ctypes.c_void_p(), ctypes.c_ulonglong()
        assert lib.mtmlDeviceInitMemory(dev, ctypes.byref(mem)) == mt.SUCCESS
        assert lib.mtmlMemoryGetTotal(mem, ctypes.byref(total)) == mt.SUCCESS
        assert total.value == 49152 * mt.MIB  # bytes
        assert lib.mtmlDeviceFreeMemory(mem) == mt.SUCCESS
        pci = mt.PciInfo()
        assert lib.mtmlDeviceGetPciInfo(dev, ctypes.byref(pci)) == mt.SUCCESS
        assert (pci.sbdf, pci.segment, pci.bus, pci.device) == (b"0000:1d:00.0", 0, 0x1D, 0)
        nodes = (ctypes.c_ulong * 1)()
        assert lib.mtmlDeviceGetMemoryAffinityWithinNode(dev, 1, nodes) == mt.SUCCESS and nodes[0] == 0b10
        assert lib.mtmlDeviceGetMemoryAffinityWithinNode(dev, 0, nodes) == mt.ERROR_INVALID_ARGUMENT
        serial = ctypes.create_string_buffer(mt.SERIAL_NUMBER_BUFFER_SIZE)  # length before the buffer
        assert lib.mtmlDeviceGetSerialNumber(dev, mt.SERIAL_NUMBER_BUFFER_SIZE, serial) == mt.SUCCESS
        assert serial.value.decode().endswith(written[3].uuid)
        assert lib.mtmlLibraryFreeDevice(dev) == mt.SUCCESS
    finally:
        assert lib.mtmlLibraryShutDown(handle) == mt.SUCCESS


def test_bad_index_and_short_buffers(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "mthreads", "MTT-S4000", 2)
    handle = ctypes.c_void_p()
    assert lib.mtmlLibraryInit(ctypes.byref(handle)) == mt.SUCCESS
    try:
        dev = ctypes.c_void_p()
        assert lib.mtmlLibraryInitDeviceByIndex(handle, 2, ctypes.byref(dev)) == mt.ERROR_INVALID_ARGUMENT
        dev = _device(lib, handle, 0)
        uuid = written[0].uuid
        # no room for the NUL
        assert _string(lib, "mtmlDeviceGetUUID", dev, len(uuid))[0] == mt.ERROR_INSUFFICIENT_SIZE
        assert _string(lib, "mtmlDeviceGetUUID", dev, len(uuid) + 1) == (mt.SUCCESS, uuid)
        assert _string(lib, "mtmlDeviceGetName", dev, 4)[0] == mt.ERROR_INSUFFICIENT_SIZE
        serial = ctypes.create_string_buffer(4)
        assert lib.mtmlDeviceGetSerialNumber(dev, 4, serial) == mt.ERROR_INSUFFICIENT_SIZE
        # the device object outlives its GPU: once the GPU is gone, queries say so
        hw.write(family_hw, "mthreads", written[1:])
        assert _string(lib, "mtmlDeviceGetUUID", dev, 48)[0] == mt.ERROR_NOT_FOUND
        lib.mtmlLibraryFreeDevice(dev)
    finally:
        lib.mtmlLibraryShutDown(handle)


def test_visibility_filters_and_reorders(
    lib: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = hw.create_state(family_hw, "mthreads", "MTT-S4000", 4, node_name="mt-a")
    monkeypatch.setenv(VISIBLE, f"3,{written[1].uuid}")
    got = mt.devices(lib)
    assert [d.uuid for d in got] == [written[3].uuid, written[1].uuid]
    assert [d.index for d in got] == [0, 1]  # a container enumerates its GPUs from 0


def test_health_flip_reaches_the_next_query(lib: ctypes.CDLL, family_hw: Path) -> None:
    hw.create_state(family_hw, "mthreads", "MTT-S4000", 2)
    handle = ctypes.c_void_p()
    assert lib.mtmlLibraryInit(ctypes.byref(handle)) == mt.SUCCESS
    try:
        dev = _device(lib, handle, 1)
        gpu = ctypes.c_void_p()
        assert lib.mtmlDeviceInitGpu(dev, ctypes.byref(gpu)) == mt.SUCCESS
        assert lib.mtmlDeviceFreeGpu(gpu) == mt.SUCCESS
        hw.set_health(family_hw, "mthreads", 1, False)
        assert lib.mtmlDeviceInitGpu(dev, ctypes.byref(gpu)) == mt.ERROR_DRIVER_FAILURE
        lib.mtmlLibraryFreeDevice(dev)
    finally:
        lib.mtmlLibraryShutDown(handle)
    assert [d.healthy for d in mt.devices(lib)] == [True, False]
    hw.set_health(family_hw, "mthreads", 1, True)
    assert [d.healthy for d in mt.devices(lib)] == [True, True]


@pytest.mark.parametrize("model", sorted(hw.MODELS["mthreads"]))
@pytest.mark.parametrize("node_name", ["", "mt-node-3"])
def test_binding_returns_what_the_testbed_wrote(
    lib: ctypes.CDLL, family_hw: Path, model: str, node_name: str
) -> None:
    hw.create_state(family_hw, "mthreads", model, 4, node_name=node_name)
    hw.set_health(family_hw, "mthreads", 0, False)
    assert mt.devices(lib) == hardware.read(family_hw, "mthreads")


def test_plugin_registers_from_the_library(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "mthreads", "MTT-S4000", 2, node_name="mt-a")
    (family_hw / "mthreads" / hw.DEVICES_FILE).unlink()  # only the library's view is left
    spec = get("mthreads")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("mt-a", family_hw), None, spec.make_family(SECTION))  # type: ignore[arg-type]
    plugin.refresh()
    assert plugin.devices == [hardware.Device(**vars(d)) for d in written]
    assert len(plugin.kubelet_devices()) == 2 * 16
    (family_hw / "mthreads" / hw.CONF_FILE).unlink()  # the driver is gone: nothing to register
    with pytest.raises(HardwareError, match="mtmlLibraryInit failed with code 1"):
        plugin.refresh()
