"""Allocate answers only once the shim it mounts is installed (regression: a GPU pod admitted while the
postStart hook still ran got an empty directory from the runtime instead of libvgpu.so, ran unenforced,
and the node could never install its shim again), and the installer repairs such a directory."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hami_stack.device_plugin import shim
from hami_stack.device_plugin.allocate import Allocator
from hami_stack.device_plugin.server import AllocateFailed
from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.nodelock import format_lock

from .shim_helpers import install_stand_in_shim
from .test_device_plugin_allocate_rules import NOW, PatchingKube, _holder


def _allocator(hook: Path, holder: dict[str, Any], wait_s: float) -> tuple[Allocator, PatchingKube]:
    kube = PatchingKube({"metadata": {"annotations": {ann.NODE_LOCK: format_lock(NOW, "ns", "holder")}}},
                        [holder])
    alloc = Allocator(kube, "n", NvidiaFamily(), memory_skew_mib=0, now=lambda: NOW,  # type: ignore[arg-type]
                      hook_path=str(hook), served_path=hook / "state.json", shim_wait_s=wait_s)
    return alloc, kube


def test_a_missing_shim_refuses_the_pod_and_frees_the_node(tmp_path: Path) -> None:
    holder = _holder()
    alloc, kube = _allocator(tmp_path, holder, wait_s=0.3)
    started = time.monotonic()
    missing = r"shim is not installed on node n: .*/vgpu/libvgpu\.so is missing"
    with pytest.raises(AllocateFailed, match=missing):
        alloc.allocate([["GPU-a::0"]])
    assert time.monotonic() - started >= 0.3  # it waited for the hook first
    assert holder["metadata"]["annotations"][ann.BIND_PHASE] == "failed"
    assert ann.NODE_LOCK not in kube.node["metadata"]["annotations"]
    assert not (tmp_path / "vgpu" / "libvgpu.so").exists()  # nothing made in its place


def test_a_directory_where_the_shim_belongs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vgpu" / "libvgpu.so").mkdir(parents=True)
    alloc, _ = _allocator(tmp_path, _holder(), wait_s=0.1)
    with pytest.raises(AllocateFailed, match=r"libvgpu\.so is a directory, not a file"):
        alloc.allocate([["GPU-a::0"]])


def test_a_missing_preload_list_is_refused(tmp_path: Path) -> None:
    install_stand_in_shim(tmp_path)
    (tmp_path / "vgpu" / "ld.so.preload").unlink()
    alloc, _ = _allocator(tmp_path, _holder(), wait_s=0.1)
    with pytest.raises(AllocateFailed, match=r"ld\.so\.preload is missing"):
        alloc.allocate([["GPU-a::0"]])


def test_a_pod_admitted_while_the_hook_runs_waits_for_the_shim(tmp_path: Path) -> None:
    holder = _holder()
    alloc, kube = _allocator(tmp_path, holder, wait_s=10)
    hook = threading.Timer(0.4, install_stand_in_shim, args=(tmp_path,))
    started = time.monotonic()
    hook.start()
    [answer] = alloc.allocate([["GPU-a::0"]])
    hook.join()
    assert time.monotonic() - started >= 0.4
    mounts = {m.container_path: m.host_path for m in answer.mounts}
    assert Path(mounts["/etc/ld.so.preload"]).is_file()
    assert Path(mounts[f"{tmp_path}/vgpu/libvgpu.so"]).is_file()
    assert holder["metadata"]["annotations"][ann.BIND_PHASE] == "success"
    assert ann.NODE_LOCK not in kube.node["metadata"]["annotations"]


def test_installer_replaces_the_empty_directories_a_runtime_left(tmp_path: Path) -> None:
    dest = tmp_path / "vgpu"
    (dest / "libvgpu.so").mkdir(parents=True)
    (dest / "ld.so.preload").mkdir()
    lib = install_stand_in_shim(tmp_path)
    assert lib.is_file() and lib.read_bytes() == b"\x7fELF-stand-in"
    assert (dest / "ld.so.preload").read_text() == f"{lib}\n"


def test_installer_leaves_a_directory_with_content_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "vgpu"
    (dest / "libvgpu.so").mkdir(parents=True)
    (dest / "libvgpu.so" / "keep").write_text("someone's file")
    source = tmp_path / "lib.so"
    source.write_bytes(b"\x7fELF")
    with pytest.raises(OSError, match=r"libvgpu\.so is a directory that is not empty"):
        shim.install(dest, source)
    assert (dest / "libvgpu.so" / "keep").read_text() == "someone's file"
