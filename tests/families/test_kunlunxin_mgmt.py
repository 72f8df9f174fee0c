"""Kunlunxin through the emulated XPUML (libxpuml.so): the library answers as XPUML's API says, the
binding returns what the testbed wrote, and both in-process Kunlunxin plugins register from the library."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami_stack.device_plugin.families import hardware
from hami_stack.device_plugin.families.hardware import STATE_ENV, HardwareError
from hami_stack.device_plugin.families.mgmt import kunlunxin as xp
from hami_stack.device_plugin.families.mgmt import open_library
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw
from tests.families.test_kunlun import SECTION, FakeKube

pytestmark = pytest.mark.kunlunxin
VISIBLE = hw.VISIBLE_ENV["kunlunxin"]
SUCCESS, UNINITIALIZED, INVALID_ARGUMENT = 0, 1, 2
INSUFFICIENT_SIZE, DRIVER_NOT_LOADED, XPU_IS_LOST, UNKNOWN = 7, 9, 15, 999
STATE_RUNNING, STATE_ERROR = 201, xp.XPUML_DEVICE_STATE_ERROR


def _shutdown_all(lib: ctypes.CDLL) -> None:
    while lib.xpumlShutdown() == SUCCESS:  # XPUML counts inits per process: start every test at zero
        pass


@pytest.fixture
def lib(family_hw: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ctypes.CDLL]:
    monkeypatch.delenv(VISIBLE, raising=False)
    handle = xp.bind(open_library(xp.LIBRARY))
    _shutdown_all(handle)
    yield handle
    _shutdown_all(handle)


def _handle(lib: ctypes.CDLL, index: int) -> xp.Handle:
    h = xp.Handle()
    assert lib.xpumlDeviceGetHandleByIndex(index, ctypes.byref(h)) == SUCCESS
    return h


def _serial(lib: ctypes.CDLL, h: xp.Handle) -> str:
    buf = ctypes.create_string_buffer(xp.SERIAL_BUFFER)
    assert lib.xpumlDeviceGetSerial(h, buf, xp.SERIAL_BUFFER) == SUCCESS
    return buf.value.decode()


def test_struct_sizes_follow_the_published_layout() -> None:
    # each published XPUML struct pads itself to 128 bytes with its reserved words
    assert [ctypes.sizeof(s) for s in (xp.PciInfo, xp.Memory, xp.Attributes)] == [128, 128, 128]


def test_uninitialised_and_no_driver_codes(lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch) -> None:
    count, h = ctypes.c_uint(), xp.Handle()
    assert lib.xpumlDeviceGetCount(ctypes.byref(count)) == UNINITIALIZED
    assert lib.xpumlDeviceGetHandleByIndex(0, ctypes.byref(h)) == UNINITIALIZED
    assert lib.xpumlSystemGetDriverVersion(ctypes.create_string_buffer(80), 80) == UNINITIALIZED
    assert lib.xpumlShutdown() == UNINITIALIZED
    assert lib.xpumlInit() == DRIVER_NOT_LOADED  # no Kunlunxin devices file under the hardware dir
    monkeypatch.delenv(STATE_ENV)
    assert lib.xpumlInit() == DRIVER_NOT_LOADED
    assert lib.xpumlDeviceGetCount(ctypes.byref(count)) == UNINITIALIZED
    lib.xpumlErrorString.restype = ctypes.c_char_p
    assert lib.xpumlErrorString(DRIVER_NOT_LOADED) == b"Driver Not Loaded"


def test_the_library_reports_each_card(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "kunlunxin", "P800", 8, node_name="xpu-a")
    assert lib.xpumlInit() == SUCCESS and lib.xpumlInit() == SUCCESS  # reference counted
    count = ctypes.c_uint()
    assert lib.xpumlDeviceGetCount(ctypes.byref(count)) == SUCCESS and count.value == 8
    for d in written:
        h = _handle(lib, d.index)
        assert _serial(lib, h) == d.uuid
        name = ctypes.create_string_buffer(xp.NAME_BUFFER)
        assert lib.xpumlDeviceGetName(h, name, xp.NAME_BUFFER) == SUCCESS and name.value.decode() == d.model
        minor, numa, state = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_int()
        assert lib.xpumlDeviceGetMinorNumber(h, ctypes.byref(minor)) == SUCCESS and minor.value == d.index
        assert lib.xpumlDeviceGetNumaNodeId(h, ctypes.byref(numa)) == SUCCESS and numa.value == d.numa
        assert lib.xpumlDeviceGetState(h, ctypes.byref(state)) == SUCCESS and state.value == STATE_RUNNING
        attrs = xp.Attributes()
        assert lib.xpumlDeviceGetAttributes(h, ctypes.byref(attrs)) == SUCCESS
        assert (attrs.archId, attrs.modelId) == (3, 300)  # KL3, the generic KL3 model id
        assert (attrs.globalMemorySizeMB, attrs.clusterCount) == (d.memory_mib, d.compute_units)
        mem = xp.Memory()
        assert lib.xpumlDeviceGetMemoryInfo(h, ctypes.byref(mem)) == SUCCESS
        assert (mem.totalGlobalMemory, mem.usedGlobalMemory) == (d.memory_mib << 20, 0)
        pci = xp.PciInfo()
        assert lib.xpumlDeviceGetPciInfo(h, ctypes.byref(pci)) == SUCCESS
        bus = int(d.bus_id.split(":")[1], 16)
        assert (pci.domain, pci.bus, pci.device, pci.function) == (0, bus, 0, 0)
        assert pci.busId.decode() == f"00000000:{bus:02X}:00.0"
        mode = ctypes.c_int(9)
        assert lib.xpumlDeviceGetHostVxpuMode(h, ctypes.byref(mode)) == SUCCESS and mode.value == 0
    assert lib.xpumlShutdown() == SUCCESS and lib.xpumlShutdown() == SUCCESS
    assert lib.xpumlShutdown() == UNINITIALIZED


def test_bad_index_short_buffer_lost_card_and_corrupt_file(lib: ctypes.CDLL, family_hw: Path) -> None:
    written = hw.create_state(family_hw, "kunlunxin", "P800", 2)
    assert lib.xpumlInit() == SUCCESS
    h = xp.Handle()
    assert lib.xpumlDeviceGetHandleByIndex(2, ctypes.byref(h)) == INVALID_ARGUMENT
    h = _handle(lib, 1)
    size = len(written[1].uuid)  # no room for the terminator
    assert lib.xpumlDeviceGetSerial(h, ctypes.create_string_buffer(size), size) == INSUFFICIENT_SIZE
    assert lib.xpumlDeviceGetSerial(h, ctypes.create_string_buffer(size + 1), size + 1) == SUCCESS
    assert lib.xpumlDeviceGetName(h, ctypes.create_string_buffer(2), 2) == INSUFFICIENT_SIZE
    assert lib.xpumlDeviceGetState(ctypes.c_void_p(12345), ctypes.byref(ctypes.c_int())) == INVALID_ARGUMENT
    hw.write(family_hw, "kunlunxin", hw.read(family_hw, "kunlunxin")[:1])
    assert lib.xpumlDeviceGetState(h, ctypes.byref(ctypes.c_int())) == XPU_IS_LOST
    (family_hw / "kunlunxin" / hw.CONF_FILE).write_text("not the format\n")
    assert lib.xpumlDeviceGetCount(ctypes.byref(ctypes.c_uint())) == UNKNOWN
    with pytest.raises(HardwareError, match="xpumlInit failed with code 999"):
        xp.devices(lib)


def test_visibility_filters_and_reorders(
    lib: ctypes.CDLL, family_hw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = hw.create_state(family_hw, "kunlunxin", "P800", 8, node_name="xpu-a")
    monkeypatch.setenv(VISIBLE, f"5,{written[1].uuid}")
    assert lib.xpumlInit() == SUCCESS
    count = ctypes.c_uint()
    assert lib.xpumlDeviceGetCount(ctypes.byref(count)) == SUCCESS and count.value == 2
    minor = ctypes.c_uint()
    assert lib.xpumlDeviceGetMinorNumber(_handle(lib, 0), ctypes.byref(minor)) == SUCCESS and minor.value == 5
    assert [d.uuid for d in xp.devices(lib)] == [written[5].uuid, written[1].uuid]


def test_health_flip_reaches_the_next_query(lib: ctypes.CDLL, family_hw: Path) -> None:
    hw.create_state(family_hw, "kunlunxin", "P800", 2)
    assert lib.xpumlInit() == SUCCESS
    h, state = _handle(lib, 0), ctypes.c_int()
    hw.set_health(family_hw, "kunlunxin", 0, False)
    assert lib.xpumlDeviceGetState(h, ctypes.byref(state)) == SUCCESS and state.value == STATE_ERROR
    assert [d.healthy for d in xp.devices(lib)] == [False, True]
    hw.set_health(family_hw, "kunlunxin", 0, True)
    assert lib.xpumlDeviceGetState(h, ctypes.byref(state)) == SUCCESS and state.value == STATE_RUNNING


@pytest.mark.parametrize("model", sorted(hw.MODELS["kunlunxin"]))
@pytest.mark.parametrize("node_name", ["", "xpu-node-7"])
def test_binding_returns_what_the_testbed_wrote(
    lib: ctypes.CDLL, family_hw: Path, model: str, node_name: str
) -> None:
    written = hw.create_state(family_hw, "kunlunxin", model, 8, node_name=node_name)
    hw.set_health(family_hw, "kunlunxin", 3, False)
    got = xp.devices(lib)
    assert got == hardware.read(family_hw, "kunlunxin")
    assert [d.uuid for d in got] == [d.uuid for d in written] and {d.numa for d in got} == {0, 1}
    assert lib.xpumlDeviceGetCount(ctypes.byref(ctypes.c_uint())) == UNINITIALIZED  # shut down again


@pytest.mark.parametrize("plugin_name", ["kunlun-vxpu", "kunlun"])
def test_plugins_register_from_the_library(lib: ctypes.CDLL, family_hw: Path, plugin_name: str) -> None:
    written = hw.create_state(family_hw, "kunlunxin", "P800", 8, node_name="xpu-a")
    (family_hw / "kunlunxin" / hw.DEVICES_FILE).unlink()  # only the library's view is left
    spec = get(plugin_name)
    kube = FakeKube()
    plugin = FamilyDevicePlugin(
        spec, FamilyOptions("xpu-a", family_hw), kube, spec.make_family(SECTION)
    )  # type: ignore[arg-type]
    plugin.refresh()
    assert plugin.devices == [hardware.Device(**vars(d)) for d in written]
    assert plugin.kubelet_devices()
    if plugin_name == "kunlun-vxpu":  # the vXPU plugin registers every card by its serial
        register = kube.patches[-1]["metadata"]["annotations"]["hami.io/node-register-xpu"]
        assert all(d.uuid in register for d in written), register
    # a fault as the driver shows it (the JSON view is gone, so write the library's file directly)
    hw.write(family_hw, "kunlunxin", [hw.Device(**{**vars(d), "healthy": d.index != 2}) for d in written])
    (family_hw / "kunlunxin" / hw.DEVICES_FILE).unlink()
    plugin.refresh()
    assert [d.healthy for d in plugin.devices] == [i != 2 for i in range(8)]
    (family_hw / "kunlunxin" / hw.CONF_FILE).unlink()  # the driver is gone: nothing to register
    with pytest.raises(HardwareError, match="xpumlInit failed with code 9"):
        plugin.refresh()
