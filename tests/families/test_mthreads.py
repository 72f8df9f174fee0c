"""Moore Threads: admission rewrites and refusals, GPUs from capacity (16 cores each), the
same-GPU rule for a pod's containers, /filter annotations, the capacity plugin and Allocate;
upstream's example pods as its code treats them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions, extra_devices
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.base import AllocateInput
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.mthreads import (
    ANY_MEMORY_FAULT,
    GPU_INDEX,
    INVALID_MEMORY,
    PREDICATE_NODE,
    PREDICATE_TIME,
    REQUEST_GPU_NUM,
    MthreadsFamily,
)
from hami_stack.devices.registry import build_families
from hami_stack.protocol import events as ev
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import capacity_node, pod, run_webhook
from tests.hami.extender_helpers import NV, add_node, gpus, make_pod

pytestmark = pytest.mark.mthreads
COUNT, MEM, CORE = "mthreads.com/vgpu", "mthreads.com/sgpu-memory", "mthreads.com/sgpu-core"
SECTION = {"resourceCountName": COUNT, "resourceMemoryName": MEM, "resourceCoreName": CORE}


def _families() -> list[Any]:
    return build_families(parse_device_config({"nvidia": {}, "mthreads": SECTION}))


def _node(name: str = "mt-a", cards: int = 4) -> dict[str, Any]:
    return capacity_node(name, {COUNT: str(cards * 16), CORE: str(cards * 16), MEM: str(cards * 96)})


def test_registry_builds_mthreads_from_its_section() -> None:
    assert [type(f) for f in _families()] == [MthreadsFamily, type(NV)]


# --- upstream's example pods (examples/mthreads), restated as the resources they ask -------------


def test_example_default_use_is_admitted_unchanged() -> None:
    resp, out = run_webhook(pod({"name": "c", "limits": {COUNT: "1", MEM: "32", CORE: "8"}}), _families())
    assert resp.allowed, resp.message
    assert out["spec"]["schedulerName"] == "hami-scheduler"
    assert out["spec"]["containers"][0]["resources"]["limits"] == {COUNT: "1", MEM: "32", CORE: "8"}


def test_example_multi_cards_takes_whole_gpus_and_annotates_the_count() -> None:
    _, out = run_webhook(pod({"name": "c", "limits": {COUNT: "2"}}), _families())
    assert out["spec"]["containers"][0]["resources"]["limits"] == {COUNT: "2", CORE: "32", MEM: "192"}
    assert out["metadata"]["annotations"][REQUEST_GPU_NUM] == "2"


def test_example_use_exclusive_is_rewritten_to_the_whole_gpu() -> None:
    _, out = run_webhook(pod({"name": "c", "limits": {COUNT: "1"}}), _families())
    assert out["spec"]["containers"][0]["resources"]["limits"] == {COUNT: "1", CORE: "16", MEM: "96"}
    assert REQUEST_GPU_NUM not in out["metadata"]["annotations"]


def test_zero_and_unsliceable_memory_are_refused_with_upstreams_text() -> None:
    resp, _ = run_webhook(pod({"name": "work", "limits": {COUNT: "0"}}), _families())
    assert not resp.allowed
    assert "mthreads.com/vgpu must be greater than 0" in resp.message and "work" in resp.message
    resp, _ = run_webhook(pod({"name": "work", "limits": {COUNT: "1", MEM: "3"}}), _families())
    assert not resp.allowed and INVALID_MEMORY in resp.message
    # a count only in requests is still the family's (upstream reads requests too)
    resp, out = run_webhook(pod({"name": "w", "requests": {COUNT: "1"}}), _families())
    assert resp.allowed and out["spec"]["containers"][0]["resources"]["limits"] == {CORE: "16", MEM: "96"}


def test_any_memory_fault_admits_an_unsliceable_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", ANY_MEMORY_FAULT)
    faults.reset_for_tests()
    try:
        resp, _ = run_webhook(pod({"name": "work", "limits": {COUNT: "1", MEM: "3"}}), _families())
        assert resp.allowed
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


def test_gpus_come_from_sixteen_cores_each_and_requests_split_per_device() -> None:
    fam = MthreadsFamily(SECTION)
    devs = fam.node_devices(_node())
    assert [d.id for d in devs] == [f"mt-a-mthreads-{i}" for i in range(4)]
    assert {(d.count, d.devmem, d.devcore, d.health) for d in devs} == {(100, 96 * 512, 16, True)}
    r = fam.container_request({"resources": {"limits": {COUNT: "2", MEM: "192", CORE: "32"}}})
    assert r is not None and (r.nums, r.memreq, r.coresreq) == (2, 96 * 512, 16)
    assert fam.node_devices(capacity_node("x", {})) == []
    # this stack's /bind locks the node for its plugin's Allocate (upstream takes no lock here)
    assert fam.needs_lock({"spec": {"containers": [{"name": "c", "resources": {"limits": {COUNT: "1"}}}]}})


def _extender(fam: MthreadsFamily) -> Extender:
    ext = Extender(None, [fam, NV], ExtenderOptions())
    add_node(ext.cache, "gpu-a", gpus("gpu-a"))
    node = _node()
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("mt-a", "Mthreads", fam.node_devices(node))
    return ext


def test_filter_writes_the_vendor_annotations_and_keeps_a_pods_containers_on_one_gpu() -> None:
    fam = MthreadsFamily(SECTION)
    ext = _extender(fam)
    p = make_pod({COUNT: "1", MEM: "32", CORE: "8"}, {COUNT: "1", MEM: "32", CORE: "8"})
    out = ext.filter(FilterArgs(p, None, ["gpu-a", "mt-a"]))
    assert out["NodeNames"] == ["mt-a"], out
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    first, second = entry.devices["Mthreads"]
    assert first[0].uuid == second[0].uuid  # both containers on the same GPU
    assert (first[0].usedmem, first[0].usedcores) == (32 * 512, 8)
    annotations = fam.pod_annotations(entry.devices["Mthreads"])
    idx = first[0].uuid.rsplit("-", 1)[-1]
    assert annotations[GPU_INDEX] == idx and annotations[PREDICATE_NODE] == "mt-a"
    assert int(annotations[PREDICATE_TIME]) > 0
    assert annotations["hami.io/mthreads-vgpu-devices-allocated"].startswith(
        f"mt-a-mthreads-{idx},Mthreads,16384,8:"
    )


def test_a_second_container_that_cannot_share_the_gpu_is_refused_by_the_custom_rule() -> None:
    fam = MthreadsFamily(SECTION)
    ext = _extender(fam)
    p = make_pod({COUNT: "1", MEM: "64", CORE: "8"}, {COUNT: "1", MEM: "64", CORE: "8"})
    out = ext.filter(FilterArgs(p, None, ["mt-a"]))
    assert out["NodeNames"] is None
    assert ev.CARD_NOT_FOUND_CUSTOM_FILTER_RULE in out["FailedNodes"]["mt-a"]


def test_capacity_plugin_advertises_cores_and_memory_units_and_allocate_names_the_gpu(
    family_hw: Path,
) -> None:
    hw.create_state(family_hw, "mthreads", "MTT-S4000", 2, node_name="mt-a")
    spec = get("mthreads")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("mt-a", family_hw), None, spec.make_family(SECTION))  # type: ignore[arg-type]
    plugin.refresh()  # capacity family: nothing patched, so no API client is needed
    assert len(plugin.kubelet_devices()) == 2 * 16
    assert len(extra_devices(spec, "cores", plugin.devices)) == 2 * 16
    assert len(extra_devices(spec, "memory_units", plugin.devices)) == 2 * 96
    fam = plugin.family
    entry = fam.pod_annotations([[]])
    assert entry == {}
    from hami_stack.protocol.assignment import ContainerDevice

    alloc = fam.allocate_response(
        AllocateInput([ContainerDevice("mt-a-mthreads-1", "Mthreads", 16384, 8)], "u", "c")
    )
    assert alloc.envs == {
        "MTHREADS_VISIBLE_DEVICES": "1",
        "MTHREADS_SGPU_MEMORY_MIB": "16384",
        "MTHREADS_SGPU_CORES": "8",
    }


def test_cards_are_rebuilt_when_memory_is_advertised_after_the_cores() -> None:
    # the kubelet adds each extended resource as its plugin registers: a scheduler that saw the cores
    # before the memory must not keep cards without memory (they would fit nothing)
    fam = _families()[0]
    cap = {COUNT: "32", CORE: "32"}
    early = capacity_node("mt-a", cap)
    health, state = fam.check_health(early, dt.datetime.now(), None)
    assert health.needs_update and [d.devmem for d in fam.node_devices(early)] == [0, 0]
    assert not fam.check_health(early, dt.datetime.now(), state)[0].needs_update
    full = capacity_node("mt-a", {**cap, MEM: "192"})
    assert fam.check_health(full, dt.datetime.now(), state)[0].needs_update
    assert [d.devmem for d in fam.node_devices(full)] == [49152, 49152]


def test_the_scheduler_registers_a_capacity_change_at_once() -> None:
    # the kube-scheduler retries a refused pod only on a node event: the extender must not wait for
    # its next periodic pass to see the memory the kubelet added after the cores
    from hami_stack.scheduler.server import _capacity_changed

    early = capacity_node("mt-a", {COUNT: "32", CORE: "32"})
    full = capacity_node("mt-a", {COUNT: "32", CORE: "32", MEM: "192"})
    heartbeat = {**full, "status": {**full["status"], "conditions": [{"type": "Ready"}]}}
    assert _capacity_changed(full, early) and _capacity_changed(full, None)
    assert not _capacity_changed(heartbeat, full)
