"""Enflame through the emulated Enflame Management Library (libefml.so): the C API answers as efml.h
documents, the binding gives exactly the devices (DRS slices and profiles included) the emulated
hardware wrote, and both Enflame plugins register from the library, not from devices.json."""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hami_stack.device_plugin.families import hardware
from hami_stack.device_plugin.families.mgmt import enflame as ef
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from testbed.hardware import families as hw

pytestmark = pytest.mark.enflame
SECTION = {"resourceNameGCU": "enflame.com/gcu", "resourceNameDRSGCU": "enflame.com/drs-gcu"}


@pytest.fixture
def lib(family_library_dir: Path) -> Iterator[ctypes.CDLL]:
    lib = ef.declare(ctypes.CDLL(str(family_library_dir / ef.LIBRARY)))
    yield lib
    lib.EfmlShutdown()


def _u32(lib: ctypes.CDLL, fn: str, *args: Any) -> tuple[int, int]:
    v = ctypes.c_uint32()
    rc = getattr(lib, fn)(*args, ctypes.byref(v))
    return rc, v.value


def _str(lib: ctypes.CDLL, fn: str, i: int) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(ef.MAX_CHAR_BUFF_LEN)
    rc = getattr(lib, fn)(i, buf)
    return rc, buf.value


def test_the_library_answers_as_efml_documents(family_hw: Path, lib: ctypes.CDLL) -> None:
    made = hw.create_state(family_hw, "enflame", "S60", 4, node_name="g")
    assert lib.EfmlInit(False) == ef.EFML_SUCCESS
    assert _u32(lib, "EfmlGetDevCount") == (ef.EFML_SUCCESS, 4)
    # the plugin names the card "GCU-" + EfmlGetDevUuid
    assert _str(lib, "EfmlGetDevUuid", 2) == (ef.EFML_SUCCESS, made[2].uuid.removeprefix("GCU-").encode())
    assert _str(lib, "EfmlGetDevSKU", 2) == (ef.EFML_SUCCESS, b"S60")
    info, mem = ef.DeviceInfo(), ef.DevMemInfo()
    assert lib.EfmlGetDevInfo(2, ctypes.byref(info)) == ef.EFML_SUCCESS
    assert (info.domain_id, info.bus_id, info.dev_id, info.func_id, info.logic_id) == (0, 0x1C, 0, 0, 2)
    assert lib.EfmlGetDevMem(2, ctypes.byref(mem)) == ef.EFML_SUCCESS
    assert mem.mem_total_size == 49152 << 20  # bytes
    numa = ctypes.c_int()
    assert lib.EfmlGetNumaNode(2, ctypes.byref(numa)) == ef.EFML_SUCCESS and numa.value == 1
    assert _u32(lib, "EfmlGetClusterCount", 0) == (ef.EFML_SUCCESS, 100)
    # a whole card has no DRS slices or profiles
    assert _u32(lib, "EfmlGetMaxVdevCount", 0) == (ef.EFML_SUCCESS, 0)
    profile = ef.DrsProfileInfo()
    assert lib.EfmlGetDrsProfileInfo(0, 0, ctypes.byref(profile)) == ef.EFML_ERROR_NOT_SUPPORTED
    # out-of-range device, null output
    assert _str(lib, "EfmlGetDevUuid", 4)[0] == ef.EFML_ERROR_INVALID_ARGUMENT
    assert lib.EfmlGetDevMem(0, None) == ef.EFML_ERROR_INVALID_INPUT
    err = ctypes.create_string_buffer(ef.MAX_CHAR_BUFF_LEN)
    assert lib.EfmlErrorString(ef.EFML_ERROR_DRIVER_NOT_LOADED, err) == ef.EFML_SUCCESS
    assert err.value == b"Error, driver not loaded"


def test_calls_before_init_or_after_shutdown_are_uninitialized(family_hw: Path, lib: ctypes.CDLL) -> None:
    hw.create_state(family_hw, "enflame", "S60", 2, node_name="g")
    lib.EfmlShutdown()
    assert _u32(lib, "EfmlGetDevCount")[0] == ef.EFML_ERROR_UNINITIALIZED
    health = ctypes.c_bool()
    assert lib.EfmlGetDevHealth(0, ctypes.byref(health)) == ef.EFML_ERROR_UNINITIALIZED
    assert lib.EfmlInit(False) == ef.EFML_SUCCESS
    assert _u32(lib, "EfmlGetDevCount") == (ef.EFML_SUCCESS, 2)


def test_no_driver_is_driver_not_loaded(family_hw: Path, lib: ctypes.CDLL) -> None:
    assert lib.EfmlInit(False) == ef.EFML_ERROR_DRIVER_NOT_LOADED  # no enflame/devices.conf
    assert ef.devices(lib) == []
    hw.create_state(family_hw, "enflame", "S60", 2, node_name="g")
    assert lib.EfmlInit(False) == ef.EFML_SUCCESS
    (family_hw / "enflame" / hw.CONF_FILE).unlink()  # the driver goes away under an initialised library
    assert _u32(lib, "EfmlGetDevCount")[0] == ef.EFML_ERROR_DRIVER_NOT_LOADED


def test_a_corrupt_devices_file_is_a_failure(family_hw: Path, lib: ctypes.CDLL) -> None:
    (family_hw / "enflame").mkdir()
    (family_hw / "enflame" / hw.CONF_FILE).write_text("not the driver's format\n")
    assert lib.EfmlInit(False) == ef.EFML_ERROR_FAIL
    assert lib.EfmlInit(True) == ef.EFML_SUCCESS  # no_driver: the library starts without the driver
    assert _u32(lib, "EfmlGetDevCount")[0] == ef.EFML_ERROR_FAIL


def test_drs_cards_report_slices_and_profiles(family_hw: Path, lib: ctypes.CDLL) -> None:
    hw.create_state(family_hw, "enflame", "S60-MIXED", 4, node_name="m")
    assert lib.EfmlInit(False) == ef.EFML_SUCCESS
    assert [_u32(lib, "EfmlGetMaxVdevCount", i)[1] for i in range(4)] == [0, 0, 6, 6]
    assert _u32(lib, "EfmlGetDrsProfileCount", 3) == (ef.EFML_SUCCESS, 3)
    profile = ef.DrsProfileInfo()
    assert lib.EfmlGetDrsProfileInfo(3, 1, ctypes.byref(profile)) == ef.EFML_SUCCESS
    assert (profile.name, profile.id) == (b"3g.20gb", 1)
    assert lib.EfmlGetDrsProfileInfo(3, 3, ctypes.byref(profile)) == ef.EFML_ERROR_INVALID_ARGUMENT


def test_visibility_filters_and_reindexes(
    family_hw: Path, lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = hw.create_state(family_hw, "enflame", "S60", 4, node_name="g")
    monkeypatch.setenv(hw.VISIBLE_ENV["enflame"], f"2,{made[0].uuid}")
    assert lib.EfmlInit(False) == ef.EFML_SUCCESS
    assert _u32(lib, "EfmlGetDevCount") == (ef.EFML_SUCCESS, 2)
    assert [(d.uuid, d.index) for d in ef.devices(lib)] == [(made[2].uuid, 2), (made[0].uuid, 0)]


def test_health_flips_reach_the_health_call(family_hw: Path, lib: ctypes.CDLL) -> None:
    hw.create_state(family_hw, "enflame", "S60", 2, node_name="g")
    assert lib.EfmlInit(False) == ef.EFML_SUCCESS
    health = ctypes.c_bool()
    hw.set_health(family_hw, "enflame", 0, False)
    assert lib.EfmlGetDevHealth(0, ctypes.byref(health)) == ef.EFML_SUCCESS and health.value is False
    assert [d.healthy for d in ef.devices(lib)] == [False, True]
    assert lib.EfmlInit(False) == ef.EFML_SUCCESS  # the binding shuts the library down after a read
    hw.set_health(family_hw, "enflame", 0, True)
    assert lib.EfmlGetDevIsHealth(0, ctypes.byref(health)) == ef.EFML_SUCCESS and health.value is True


@pytest.mark.parametrize("model", sorted(hw.MODELS["enflame"]))
@pytest.mark.parametrize("count", [1, 4])
def test_the_binding_gives_what_the_hardware_wrote(family_hw: Path, model: str, count: int) -> None:
    made = hw.create_state(family_hw, "enflame", model, count, node_name="node-g")
    expected = [hardware.Device(**dataclasses.asdict(d)) for d in made]
    assert hardware.devices(family_hw, "enflame") == expected


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


@pytest.mark.parametrize("name,kubelet_devices", [("enflame-gcu", 2), ("enflame-drs", 2 * 6)])
def test_the_plugins_register_from_the_library_not_the_json(
    family_hw: Path, name: str, kubelet_devices: int
) -> None:
    hw.create_state(family_hw, "enflame", "S60-MIXED", 4, node_name="m")
    (family_hw / "enflame" / hw.DEVICES_FILE).unlink()
    spec = get(name)
    plugin = FamilyDevicePlugin(spec, FamilyOptions("m", family_hw), FakeKube(), spec.make_family(SECTION))  # type: ignore[arg-type]
    plugin.refresh()
    assert len(plugin.kubelet_devices()) == kubelet_devices
    (family_hw / "enflame" / hw.CONF_FILE).unlink()  # the library's view gone: nothing to register
    plugin.refresh()
    assert plugin.kubelet_devices() == []
