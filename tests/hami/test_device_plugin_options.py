"""Device plugin settings precedence, node config, errors; shim installation; register entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hami_stack.device_plugin import shim
from hami_stack.device_plugin.nvml import Gpu, disabled_xids
from hami_stack.device_plugin.options import OptionsError, resolve
from hami_stack.device_plugin.plugin import plugin_devices, register_entries


def _files(tmp_path: Path, config: str | None, nodes: list[dict] | None) -> list[str]:
    args = [f"--config-file={tmp_path / 'dc.yaml'}", f"--node-config-file={tmp_path / 'config.json'}"]
    if config is not None:
        (tmp_path / "dc.yaml").write_text(config)
    if nodes is not None:
        (tmp_path / "config.json").write_text(json.dumps({"nodeconfig": nodes}))
    return args


def test_defaults_without_files(tmp_path: Path) -> None:
    o = resolve(_files(tmp_path, None, None), {"NODE_NAME": "n1"})
    assert (o.node_name, o.resource_name, o.endpoint) == ("n1", "nvidia.com/gpu", "nvidia-gpu.sock")
    assert (o.nvidia.device_split_count, o.nvidia.device_memory_scaling, o.nvidia.device_core_scaling) == (
        10,
        1,
        1,
    )
    assert str(o.kubelet_socket) == "/var/lib/kubelet/device-plugins/kubelet.sock"
    assert (o.hook_path, o.device_list_strategy, o.nvidia.disable_core_limit) == (
        "/usr/local",
        "envvar",
        False,
    )


def test_precedence_file_then_flags_and_env_then_node_entry(tmp_path: Path) -> None:
    args = _files(
        tmp_path,
        "nvidia:\n  deviceSplitCount: 6\n  deviceMemoryScaling: 1.5\n  resourceCountName: x.io/gpu\n",
        [
            {"name": "n1", "devicesplitcount": 3, "filterdevices": {"uuid": ["GPU-b"], "index": [2]}},
            {"name": "n2", "devicesplitcount": 9},
        ],
    )
    o = resolve(args, {"NODE_NAME": "n1"})
    assert o.nvidia.device_split_count == 3  # node entry wins over the file
    assert o.nvidia.device_memory_scaling == 1.5  # from the file
    assert (o.resource_name, o.endpoint) == ("x.io/gpu", "nvidia-gpu.sock")
    assert o.filter_devices.excludes("GPU-b", 0) and o.filter_devices.excludes("GPU-z", 2)
    assert not o.filter_devices.excludes("GPU-a", 0)
    o3 = resolve(
        [*args, "--device-memory-scaling=2"],
        {"NodeName": "n3", "NODE_NAME": "ignored", "DEVICE_SPLIT_COUNT": "5", "DISABLE_CORE_LIMIT": "true"},
    )
    assert o3.node_name == "n3"
    assert (o3.nvidia.device_split_count, o3.nvidia.device_memory_scaling, o3.nvidia.disable_core_limit) == (
        5,
        2.0,
        True,
    )


@pytest.mark.parametrize(
    ("config", "nodes", "env", "message"),
    [
        (None, None, {}, "node name"),
        ("nvidia:\n  deviceSplitCount: zero\n", None, {"NODE_NAME": "n"}, "deviceSplitCount"),
        (
            None,
            [{"name": "n", "devicesplitcount": 0}],
            {"NODE_NAME": "n"},
            "devicesplitcount: must be positive",
        ),
        (None, [{"name": "n", "operatingmode": "turbo"}], {"NODE_NAME": "n"}, "operatingmode"),
        (None, [{"name": "n", "operatingmode": "mig"}], {"NODE_NAME": "n"}, "not supported"),
        (None, None, {"NODE_NAME": "n", "DEVICE_LIST_STRATEGY": "cdi-annotations"}, "--device-list-strategy"),
        (None, None, {"NODE_NAME": "n", "DEVICE_SPLIT_COUNT": "-1"}, "--device-split-count"),
    ],
)
def test_bad_settings_are_named(
    tmp_path: Path, config: str | None, nodes: list | None, env: dict, message: str
) -> None:
    with pytest.raises(OptionsError, match=message):
        resolve(_files(tmp_path, config, nodes), env)


def test_bad_node_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(OptionsError, match="invalid JSON"):
        resolve(
            [f"--node-config-file={tmp_path / 'config.json'}", f"--config-file={tmp_path / 'none'}"],
            {"NODE_NAME": "n"},
        )


def test_register_entries_and_virtual_devices(tmp_path: Path) -> None:
    args = _files(
        tmp_path,
        "nvidia:\n  deviceSplitCount: 2\n  preConfiguredDeviceMemory: 0\n",
        [{"name": "n", "filterdevices": {"index": [2]}, "enablenumatopology": True}],
    )
    o = resolve(args, {"NODE_NAME": "n"})
    gpus = [
        Gpu(0, "GPU-a", "Tesla T4", 15360, 0, 0, "0000:01:00.0"),
        Gpu(1, "GPU-b", "Tesla T4", None, 1, 1, "0000:02:00.0"),  # memory unknown, none preconfigured
        Gpu(2, "GPU-c", "Tesla T4", 15360, 1, 2, "0000:03:00.0"),  # filtered
        Gpu(3, "GPU-d", "Tesla T4", 15360, 1, 3, "0000:04:00.0"),
    ]
    entries = register_entries(o, gpus, unhealthy={"GPU-d"})
    assert [(e.id, e.type, e.devmem, e.count, e.health) for e in entries] == [
        ("GPU-a", "NVIDIA-Tesla T4", 15360, 2, True),
        ("GPU-d", "NVIDIA-Tesla T4", 15360, 2, False),
    ]
    devs = plugin_devices(o, entries)
    assert [(d.id, d.healthy, d.numa) for d in devs] == [
        ("GPU-a-0", True, 0),
        ("GPU-a-1", True, 0),
        ("GPU-d-0", False, 1),
        ("GPU-d-1", False, 1),
    ]


def test_disabled_xids() -> None:
    assert disabled_xids({}) == frozenset()
    assert disabled_xids({"DP_DISABLE_HEALTHCHECKS": "48, 63,x"}) == frozenset({48, 63})
    assert disabled_xids({"DP_DISABLE_HEALTHCHECKS": "all"}) is None


def test_shim_install_copies_library_and_writes_preload(tmp_path: Path) -> None:
    src = tmp_path / "built.so"
    src.write_bytes(b"\x7fELF-fake")
    dest = tmp_path / "usr/local/vgpu"
    lib = shim.install(dest, src)
    assert lib == dest / "libvgpu.so" and lib.read_bytes() == b"\x7fELF-fake"
    assert (dest / "ld.so.preload").read_text() == f"{dest}/libvgpu.so\n"
    assert (dest / "containers").is_dir()
    assert shim.main([]) == 2
