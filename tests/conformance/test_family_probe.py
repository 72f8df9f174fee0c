"""The probe's view of a family container (what every family's ALLOC case reads), and the fault that
must break it: Allocate naming the wrong device."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.probe import families as probe
from hami_stack.device_plugin.families import wrongvisible
from testbed.hardware import families as hardware
from testbed.node import toolkit

# vendor -> (model, the limit variables its Allocate sets for one device, as the stack answers)
NINE = {
    "iluvatar": ("BI-V150", {"CUDA_DEVICE_MEMORY_LIMIT_0": "1024m", "CUDA_DEVICE_SM_LIMIT": "10"}),
    "mthreads": ("MTT-S4000", {"MTHREADS_SGPU_MEMORY_MIB": "1024", "MTHREADS_SGPU_CORES": "1"}),
    "metax": ("C500", {"METAX_SGPU_VRAM_MIB": "1024", "METAX_SGPU_COMPUTE": "10"}),
    "kunlunxin": ("P800", {"XPU_VMEMORY_MIB": "24576"}),
    "enflame": ("S60", {}),
    "awsneuron": ("Trainium", {"NEURON_RT_VISIBLE_CORES": "2,3"}),
    "amd": ("MI300X", {"AMD_GPU_MEMORY_LIMIT_MIB": "1024", "AMD_GPU_COMPUTE_UNITS": "30"}),
    "vastai": ("VA1", {}),
    "biren": ("BR104", {}),
}


def test_the_probe_knows_the_variable_the_testbed_runtime_reads_for_every_family() -> None:
    assert probe.VISIBLE_ENVS == hardware.VISIBLE_ENV


@pytest.mark.parametrize("vendor", sorted(NINE))
def test_a_family_container_sees_its_one_device_and_its_limits(vendor: str, tmp_path: Path) -> None:
    model, limits = NINE[vendor]
    devices = hardware.create_state(tmp_path, vendor, model, 3, node_name=f"{vendor}-node-1")
    variable = hardware.VISIBLE_ENV[vendor]
    unrelated = {"CUDA_VISIBLE_DEVICES": "0", "SECRET_TOKEN": "x"}
    env = toolkit.inject_families({variable: devices[1].uuid, **limits, **unrelated}, tmp_path)
    seen = probe.view(env)[vendor]
    assert seen["env"] == variable and [d["uuid"] for d in seen["devices"]] == [devices[1].uuid]
    assert seen["devices"][0]["memory_mib"] == devices[1].memory_mib
    assert seen["limits"] == limits  # the vendor's limit variables, nothing else of the environment
    by_index = probe.view(toolkit.inject_families({variable: "2"}, tmp_path))[vendor]
    assert [d["index"] for d in by_index["devices"]] == [2]


def test_without_the_runtimes_word_the_vendor_variable_alone_names_the_devices() -> None:
    # a real cluster: no emulated driver files, no HAMI_FAMILY_VISIBLE_ENVS
    doc = probe.view(
        {"ROCR_VISIBLE_DEVICES": "GPU-1a,GPU-2b", "ENFLAME_VISIBLE_DEVICES": "3", "PATH": "/bin"}
    )
    assert doc["amd"]["devices"] == [{"uuid": "GPU-1a", "index": None}, {"uuid": "GPU-2b", "index": None}]
    assert doc["enflame"]["devices"] == [{"uuid": None, "index": 3}] and doc["enflame"]["limits"] == {}
    assert set(doc) == {"amd", "enflame"}
    assert probe.view({"PATH": "/bin"}) == {}


def test_an_unreadable_devices_file_is_an_error_not_an_empty_view(tmp_path: Path) -> None:
    (tmp_path / "vastai").mkdir()
    (tmp_path / "vastai" / "devices.json").write_text("{not json")
    env = toolkit.inject_families({"VASTAI_VISIBLE_DEVICES": "VA-0"}, tmp_path)
    assert "error" in probe.view(env)["vastai"]


def test_the_wrong_visible_fault_names_a_neighbour_by_uuid_or_index(tmp_path: Path) -> None:
    devices = hardware.create_state(tmp_path, "amd", "MI300X", 3, node_name="amd-node-1")
    uuids = [d.uuid for d in devices]
    assert wrongvisible.shift(uuids[0], devices) == uuids[1]
    assert wrongvisible.shift(f"{uuids[2]},{uuids[0]}", devices) == f"{uuids[0]},{uuids[1]}"
    assert wrongvisible.shift("1", devices) == "2" and wrongvisible.shift("2", devices) == "0"
    assert wrongvisible.shift(uuids[0], devices[:1]) == uuids[0]  # one device: nothing else to name


def test_the_fault_rewrites_only_visibility_variables(tmp_path: Path) -> None:
    from hami_stack.devices.base import ContainerAllocation

    devices = hardware.create_state(tmp_path, "amd", "MI300X", 2, node_name="amd-node-1")

    class Family:
        def allocate_response(self, req: object) -> ContainerAllocation:
            return ContainerAllocation(
                envs={"ROCR_VISIBLE_DEVICES": devices[0].uuid, "AMD_GPU_COMPUTE_UNITS": "30"}
            )

    family = Family()
    wrongvisible.install(family, lambda: devices)
    out = family.allocate_response(None)
    assert out.envs == {"ROCR_VISIBLE_DEVICES": devices[1].uuid, "AMD_GPU_COMPUTE_UNITS": "30"}
