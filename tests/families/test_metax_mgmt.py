"""MetaX through the emulated mx-smi library (libmxsml.so): the C API answers as MxSml.h documents,
the binding gives exactly the devices the emulated hardware wrote, and the MetaX plugins register from
the library, not from devices.json."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hami_stack.device_plugin.families import hardware
from hami_stack.device_plugin.families.mgmt import metax as mx
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw

pytestmark = pytest.mark.metax
SECTION = {
    "resourceCountName": "metax-tech.com/gpu",
    "resourceVCountName": "metax-tech.com/sgpu",
    "resourceVMemoryName": "metax-tech.com/vmemory",
    "resourceVCoreName": "metax-tech.com/vcore",
}


@pytest.fixture
def lib(family_library_dir: Path) -> ctypes.CDLL:
    return mx.declare(ctypes.CDLL(str(family_library_dir / mx.LIBRARY)))


def _expected(devices: list[hw.Device]) -> list[hardware.Device]:
    return [hardware.Device(**dataclasses.asdict(d)) for d in devices]


def test_the_library_answers_as_mxsml_documents(family_hw: Path, lib: ctypes.CDLL) -> None:
    made = hw.create_state(family_hw, "metax", "C500", 4, node_name="mx")
    assert lib.mxSmlInit() == mx.MXSML_SUCCESS
    assert lib.mxSmlGetDeviceCount() == 4
    info, mem = mx.DeviceInfo(), mx.MemoryInfo()
    assert lib.mxSmlGetDeviceInfo(2, ctypes.byref(info)) == mx.MXSML_SUCCESS
    assert (info.deviceId, info.gpuId, info.uuid, info.bdfId, info.deviceName) == (
        2,
        2,
        made[2].uuid.encode(),
        b"0000:1c:00.0",
        b"C500",
    )
    assert lib.mxSmlGetMemoryInfo(2, ctypes.byref(mem)) == mx.MXSML_SUCCESS
    assert mem.vramTotal == 65536 * 1024  # KB
    words = (ctypes.c_uint * 2)()
    assert lib.mxSmlGetNodeAffinity(2, 2, words) == mx.MXSML_SUCCESS
    assert list(words) == [0b10, 0]  # NUMA node 1
    assert lib.mxSmlGetNodeAffinity(2, 0, words) == mx.MXSML_INVALID_INPUT
    # out-of-range device, null output
    assert lib.mxSmlGetDeviceInfo(4, ctypes.byref(info)) == mx.MXSML_INVALID_DEVICE_ID
    assert lib.mxSmlGetDeviceInfo(0, None) == mx.MXSML_INVALID_INPUT
    assert lib.mxSmlGetErrorString(mx.MXSML_INVALID_DEVICE_ID) == b"Invalid device id"


def test_a_short_buffer_gets_insufficient_size_and_the_size_needed(family_hw: Path, lib: ctypes.CDLL) -> None:
    made = hw.create_state(family_hw, "metax", "C500", 1, node_name="mx")
    assert lib.mxSmlInit() == mx.MXSML_SUCCESS
    size = ctypes.c_uint(4)
    buf = ctypes.create_string_buffer(64)
    assert lib.mxSmlGetBoardSerial(0, buf, ctypes.byref(size)) == mx.MXSML_INSUFFICIENT_SIZE
    assert size.value == len(made[0].uuid) + 1
    assert lib.mxSmlGetBoardSerial(0, buf, ctypes.byref(size)) == mx.MXSML_SUCCESS
    assert buf.value == made[0].uuid.encode()


def test_no_driver_or_no_device_is_no_device(family_hw: Path, lib: ctypes.CDLL) -> None:
    assert lib.mxSmlInit() == mx.MXSML_NO_DEVICE  # no metax/devices.conf under the hardware dir
    hw.create_state(family_hw, "metax", "C500", 2, node_name="mx")
    assert lib.mxSmlInit() == mx.MXSML_SUCCESS
    (family_hw / "metax" / hw.CONF_FILE).unlink()  # the driver goes away under an initialised library
    info = mx.DeviceInfo()
    assert lib.mxSmlGetDeviceInfo(0, ctypes.byref(info)) == mx.MXSML_NO_DEVICE
    assert lib.mxSmlGetDeviceCount() == 0
    assert mx.devices(lib) == []


def test_a_corrupt_devices_file_is_a_failure(family_hw: Path, lib: ctypes.CDLL) -> None:
    (family_hw / "metax").mkdir()
    (family_hw / "metax" / hw.CONF_FILE).write_text("not the driver's format\n")
    assert lib.mxSmlInit() == mx.MXSML_FAILURE


def test_calls_before_init_fail_in_a_fresh_process(family_hw: Path, family_library_dir: Path) -> None:
    hw.create_state(family_hw, "metax", "C500", 2, node_name="mx")
    probe = (
        "import ctypes, sys\n"
        f"lib = ctypes.CDLL({str(family_library_dir / mx.LIBRARY)!r})\n"
        "buf = ctypes.create_string_buffer(512)\n"
        "print(lib.mxSmlGetDeviceCount(), lib.mxSmlGetDeviceInfo(0, buf), lib.mxSmlInit(),"
        " lib.mxSmlGetDeviceCount())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=dict(os.environ)
    ).stdout.split()
    # MxSml.h has no "uninitialised" code: before mxSmlInit nothing is counted and queries fail
    assert out == ["0", str(mx.MXSML_FAILURE), str(mx.MXSML_SUCCESS), "2"]


def test_visibility_filters_and_reindexes(
    family_hw: Path, lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = hw.create_state(family_hw, "metax", "C500", 4, node_name="mx")
    monkeypatch.setenv(hw.VISIBLE_ENV["metax"], f"{made[3].uuid},1")
    assert lib.mxSmlInit() == mx.MXSML_SUCCESS
    assert lib.mxSmlGetDeviceCount() == 2
    got = mx.devices(lib)
    assert [(d.uuid, d.index) for d in got] == [(made[3].uuid, 3), (made[1].uuid, 1)]
    monkeypatch.setenv(hw.VISIBLE_ENV["metax"], "all")
    assert lib.mxSmlGetDeviceCount() == 4


def test_health_flips_reach_the_device_state(family_hw: Path, lib: ctypes.CDLL) -> None:
    hw.create_state(family_hw, "metax", "C500", 2, node_name="mx")
    assert lib.mxSmlInit() == mx.MXSML_SUCCESS
    state = ctypes.c_int()
    hw.set_health(family_hw, "metax", 1, False)
    assert lib.mxSmlGetDeviceState(1, ctypes.byref(state)) == mx.MXSML_SUCCESS and state.value == 0
    assert [d.healthy for d in mx.devices(lib)] == [True, False]
    hw.set_health(family_hw, "metax", 1, True)
    assert lib.mxSmlGetDeviceState(1, ctypes.byref(state)) == mx.MXSML_SUCCESS and state.value == 1


@pytest.mark.parametrize("model", sorted(hw.MODELS["metax"]))
@pytest.mark.parametrize("count", [1, 8])
def test_the_binding_gives_what_the_hardware_wrote(
    family_hw: Path, lib: ctypes.CDLL, model: str, count: int
) -> None:
    made = hw.create_state(family_hw, "metax", model, count, node_name="node-mx")
    assert hardware.devices(family_hw, "metax") == _expected(made)


def _plugin(name: str, family_hw: Path, kube: Any) -> FamilyDevicePlugin:
    spec = get(name)
    return FamilyDevicePlugin(spec, FamilyOptions("mx", family_hw), kube, spec.make_family(SECTION))  # type: ignore[arg-type]


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


@pytest.mark.parametrize("name,per_card", [("metax-gpu", 1), ("metax-sgpu", 16)])
def test_the_plugins_register_from_the_library_not_the_json(
    family_hw: Path, name: str, per_card: int
) -> None:
    hw.create_state(family_hw, "metax", "C500", 4, node_name="mx")
    (family_hw / "metax" / hw.DEVICES_FILE).unlink()
    plugin = _plugin(name, family_hw, FakeKube())
    plugin.refresh()
    assert len(plugin.kubelet_devices()) == 4 * per_card
    (family_hw / "metax" / hw.CONF_FILE).unlink()  # the library's view gone: nothing to register
    plugin.refresh()
    assert plugin.kubelet_devices() == []
