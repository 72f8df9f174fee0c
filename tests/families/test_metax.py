"""MetaX: whole cards from capacity with topology losses/scores in the node score, and sGPU from
MetaX's node JSON with QoS/app-class admission, QoS fit, MetaLink-zone selection and the
topology score; the sGPU plugin's node annotation; upstream's example pods as its code treats them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions, extra_devices
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.base import AllocateInput, DeviceUsage, FitContext
from hami_stack.devices.config import parse_device_config
from hami_stack.devices.metax import (
    ALLOCATED,
    APP_CLASS,
    CARD_QOS_POLICY_MISMATCH,
    LOSSES,
    NO_TOPOLOGY_FAULT,
    NODE_DEVICES,
    QOS_POLICY,
    SCORES,
    TOPOLOGY_AWARE,
    MetaxGpuFamily,
    MetaxSgpuFamily,
    decode_sgpu_devices,
    link_score,
)
from hami_stack.devices.registry import build_families
from hami_stack.protocol import events as ev
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.protocol.errors import ProtocolError
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from testbed.node.runtime import admission_requests
from tests.families.famhelpers import capacity_node, pod, run_webhook
from tests.hami.extender_helpers import NV, make_pod

pytestmark = pytest.mark.metax
GPU = "metax-tech.com/gpu"
SGPU, VCORE, VMEM = "metax-tech.com/sgpu", "metax-tech.com/vcore", "metax-tech.com/vmemory"
SECTION = {
    "resourceCountName": GPU,
    "resourceVCountName": SGPU,
    "resourceVMemoryName": VMEM,
    "resourceVCoreName": VCORE,
    "sgpuTopologyAware": False,
}


def _families() -> list[Any]:
    return build_families(parse_device_config({"nvidia": {}, "metax": SECTION}))


def _sgpu_devices(n: int = 4, qos: str = "", zones: tuple[int, ...] = (1, 2, 1, 2)) -> str:
    return json.dumps(
        [
            {
                "uuid": f"MX-{i}",
                "model": "C500",
                "totalDevCount": 16,
                "totalCompute": 100,
                "totalVRam": 65536,
                "numa": 0,
                "healthy": True,
                "qosPolicy": qos,
                "linkZone": zones[i],
            }
            for i in range(n)
        ]
    )


def _sgpu_node(name: str = "mx-a", value: str | None = None) -> dict[str, Any]:
    node = capacity_node(name, {SGPU: "64"})
    node["metadata"]["annotations"][NODE_DEVICES] = value or _sgpu_devices()
    return node


def test_the_metax_section_enables_both_families() -> None:
    assert [f.common_word for f in _families()] == ["Metax-GPU", "Metax-SGPU", "NVIDIA"]


# --- whole cards ------------------------------------------------------------------------------


def test_whole_cards_from_capacity_and_requests_take_whole_cards() -> None:
    fam = MetaxGpuFamily(SECTION)
    devs = fam.node_devices(capacity_node("n1", {GPU: "2"}))
    assert [(d.id, d.count, d.devmem, d.devcore) for d in devs] == [
        ("n1-metax-0", 1, 65536, 100),
        ("n1-metax-1", 1, 65536, 100),
    ]
    r = fam.container_request({"resources": {"limits": {GPU: "1"}}})
    assert r is not None and (r.nums, r.mem_percentage, r.coresreq) == (1, 100, 100)
    assert not fam.needs_lock({"spec": {"containers": [{"resources": {"limits": {GPU: "1"}}}]}})


def test_example_gpu_default_use_is_claimed() -> None:
    _, out = run_webhook(pod({"name": "c", "limits": {GPU: "1"}}), _families())
    assert out["spec"]["schedulerName"] == "hami-scheduler"


def test_examples_binpack_and_spread_follow_the_topology_annotations() -> None:
    fam = MetaxGpuFamily(SECTION)
    ext = Extender(None, [fam, NV], ExtenderOptions())
    # a: taking one card loses little, but scores low; b: the opposite
    for name, loss, score in (("a", 10, 100), ("b", 500, 900)):
        node = capacity_node(name, {GPU: "4"})
        node["metadata"]["annotations"] = {LOSSES: json.dumps({"1": loss}), SCORES: json.dumps({"1": score})}
        ext.cache.on_node("ADDED", node)
        ext.cache.set_node_family(name, "Metax-GPU", fam.node_devices(node))
    binpack = make_pod({GPU: "1"}, annotations={"hami.io/node-scheduler-policy": "binpack"})
    assert ext.filter(FilterArgs(binpack, None, ["a", "b"]))["NodeNames"] == ["a"]  # lower loss
    spread = make_pod({GPU: "1"}, annotations={"hami.io/node-scheduler-policy": "spread"})
    assert ext.filter(FilterArgs(spread, None, ["a", "b"]))["NodeNames"] == ["b"]  # higher score
    assert fam.score_node({"metadata": {"annotations": {LOSSES: "not json"}}}, [], [[]], "binpack") == 2000


def test_a_pods_containers_share_its_card() -> None:
    fam = MetaxGpuFamily(SECTION)
    ext = Extender(None, [fam, NV], ExtenderOptions())
    node = capacity_node("a", {GPU: "2"})
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("a", "Metax-GPU", fam.node_devices(node))
    out = ext.filter(FilterArgs(make_pod({GPU: "1"}, {GPU: "1"}), None, ["a"]))
    # one slot per card, and the second container may not take the other card
    assert out["NodeNames"] is None and ev.CARD_NOT_FOUND_CUSTOM_FILTER_RULE in out["FailedNodes"]["a"]


# --- sGPU: admission (examples/metax/sgpu) ------------------------------------------------------


def test_example_sgpu_default_use_gets_best_effort_qos() -> None:
    resp, out = run_webhook(pod({"name": "c", "limits": {SGPU: "1", VCORE: "60", VMEM: "4"}}), _families())
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"
    assert out["metadata"]["annotations"][QOS_POLICY] == "best-effort"


def test_example_online_pod_keeps_no_qos_and_must_ask_one_device() -> None:
    online = {APP_CLASS: "online"}
    _, out = run_webhook(
        pod({"name": "c", "limits": {SGPU: "1", VMEM: "4"}}, annotations=online), _families()
    )
    assert QOS_POLICY not in out["metadata"]["annotations"]
    resp, _ = run_webhook(pod({"name": "c", "limits": {SGPU: "2"}}, annotations=online), _families())
    assert not resp.allowed and "app-class pod must request single device" in resp.message


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({APP_CLASS: "batch"}, "metax-tech.com/sgpu-app-class must be set one of [online, offline]"),
        (
            {QOS_POLICY: "gold"},
            "metax-tech.com/sgpu-qos-policy must be set one of [best-effort, fixed-share, burst-share]",
        ),
    ],
)
def test_bad_app_class_or_qos_is_refused_with_upstreams_text(
    annotations: dict[str, str], message: str
) -> None:
    resp, _ = run_webhook(pod({"name": "c", "limits": {SGPU: "1"}}, annotations=annotations), _families())
    assert not resp.allowed and message in resp.message


def test_vmemory_is_gib_without_a_unit_and_bytes_with_one() -> None:
    fam = MetaxSgpuFamily(SECTION)
    gib = fam.container_request({"resources": {"limits": {SGPU: "1", VMEM: "4"}}})
    mib = fam.container_request({"resources": {"limits": {SGPU: "1", VCORE: "60", VMEM: "2048Mi"}}})
    assert gib is not None and (gib.memreq, gib.coresreq) == (4096, 100)
    assert mib is not None and (mib.memreq, mib.coresreq) == (2048, 60)
    whole = fam.container_request({"resources": {"limits": {SGPU: "4"}}})
    assert whole is not None and whole.memory_on(65536) == 65536
    # upstream reads limits only
    assert fam.container_request({"resources": {"requests": {SGPU: "1"}}}) is None
    _, out = run_webhook(pod({"name": "c", "limits": {SGPU: "1", VMEM: "2048Mi"}}), _families())
    assert out["spec"]["schedulerName"] == "hami-scheduler"  # a unit is allowed on vmemory


# --- sGPU: devices, fit, annotations, score ----------------------------------------------------


def test_node_json_decodes_with_zones_and_bad_json_is_named() -> None:
    devs = decode_sgpu_devices(_sgpu_devices(2, qos="fixed-share"))
    assert [(d.id, d.count, d.devmem, d.devcore, d.custom_info["LinkZone"]) for d in devs] == [
        ("MX-0", 16, 65536, 100, 1),
        ("MX-1", 16, 65536, 100, 2),
    ]
    assert devs[0].custom_info["QosPolicy"] == "fixed-share"
    with pytest.raises(ProtocolError, match=r"metax-tech\.com/node-gpu-devices: device 0 has no uuid"):
        decode_sgpu_devices('[{"model": "C500"}]')


def _sgpu_extender(
    value: str | None = None, section: dict[str, Any] | None = None
) -> tuple[Extender, MetaxSgpuFamily]:
    fam = MetaxSgpuFamily(section or SECTION)
    ext = Extender(None, [fam, NV], ExtenderOptions())
    node = _sgpu_node(value=value)
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("mx-a", "Metax-SGPU", fam.node_devices(node))
    return ext, fam


def _picked(ext: Extender, p: dict[str, Any]) -> list[ContainerDevice]:
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    return [d for ctr in entry.devices["Metax-SGPU"] for d in ctr]


def test_whole_device_pairs_stay_in_one_metalink_zone() -> None:
    ext, _ = _sgpu_extender()
    p = make_pod({SGPU: "2"}, annotations={QOS_POLICY: "best-effort"})
    assert ext.filter(FilterArgs(p, None, ["mx-a"]))["NodeNames"] == ["mx-a"]
    zones = {d.id: d.custom_info["LinkZone"] for d in decode_sgpu_devices(_sgpu_devices())}
    picked = _picked(ext, p)
    assert len(picked) == 2 and len({zones[d.uuid] for d in picked}) == 1
    assert {(d.usedmem, d.usedcores) for d in picked} == {(65536, 100)}


def test_the_link_zone_fault_splits_the_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", NO_TOPOLOGY_FAULT)
    faults.reset_for_tests()
    try:
        ext, _ = _sgpu_extender()
        p = make_pod({SGPU: "2"}, annotations={QOS_POLICY: "best-effort"})
        assert ext.filter(FilterArgs(p, None, ["mx-a"]))["NodeNames"] == ["mx-a"]
        zones = {d.id: d.custom_info["LinkZone"] for d in decode_sgpu_devices(_sgpu_devices())}
        assert len({zones[d.uuid] for d in _picked(ext, p)}) == 2
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


def test_a_shared_device_in_use_runs_one_qos_policy() -> None:
    fam = MetaxSgpuFamily(SECTION)
    (dev,) = [DeviceUsage.from_info(d) for d in decode_sgpu_devices(_sgpu_devices(1, qos="fixed-share"))]
    dev.used, dev.usedmem, dev.usedcores = 1, 4096, 30
    req = fam.container_request({"resources": {"limits": {SGPU: "1", VCORE: "30", VMEM: "4"}}})
    assert req is not None
    other = FitContext({"metadata": {"annotations": {QOS_POLICY: "burst-share"}}})
    result = fam.fit([dev], req, other)
    assert not result.ok and result.reasons[CARD_QOS_POLICY_MISMATCH] == 1
    same = FitContext({"metadata": {"annotations": {QOS_POLICY: "fixed-share"}}})
    assert fam.fit([dev], req, same).ok
    # an unhealthy device is refused with MetaX's own reason
    dev.health = False
    assert fam.fit([dev], req, same).reasons["CardUnhealthy"] == 1


def test_filter_writes_metax_allocation_json_and_allocate_limits() -> None:
    ext, fam = _sgpu_extender()
    p = make_pod({SGPU: "1", VCORE: "60", VMEM: "4"}, annotations={QOS_POLICY: "best-effort"})
    assert ext.filter(FilterArgs(p, None, ["mx-a"]))["NodeNames"] == ["mx-a"]
    (d,) = _picked(ext, p)
    annotations = fam.pod_annotations([[d]])
    assert json.loads(annotations[ALLOCATED]) == [[{"uuid": d.uuid, "compute": 60, "vRam": 4096}]]
    assert annotations["hami.io/metax-sgpu-devices-allocated"] == f"{d.uuid},Metax-SGPU,4096,60:;"
    assert int(annotations["metax-tech.com/predicate-time"]) > 0
    alloc = fam.allocate_response(AllocateInput([d], "u", "c"))
    assert alloc.envs == {
        "METAX_VISIBLE_DEVICES": d.uuid,
        "METAX_SGPU_VRAM_MIB": "4096",
        "METAX_SGPU_COMPUTE": "60",
    }


def test_topology_score_rewards_a_linked_pair_and_follows_the_policy_sign() -> None:
    fam = MetaxSgpuFamily({**SECTION, "sgpuTopologyAware": True})
    devs = [DeviceUsage.from_info(d) for d in decode_sgpu_devices(_sgpu_devices())]
    ctx = FitContext({"metadata": {"annotations": {}}})
    req = fam.container_request({"resources": {"limits": {SGPU: "2"}}})
    assert req is not None
    result = fam.fit(devs, req, ctx)
    assert result.ok
    # the pair is linked (10); free before: pairs (0,2) and (1,3) linked (20); left: the other pair (10)
    assert fam.score_node({}, devs, [result.devices], "binpack") == 10000 * (10 * 10 - (20 - 10 - 10))
    assert fam.score_node({}, devs, [result.devices], "spread") == -10000 * 100
    assert link_score([("a", 1), ("b", 1), ("c", 0), ("d", 0)]) == 10
    # the pod annotation turns it off; shared picks never score
    off = FitContext({"metadata": {"annotations": {TOPOLOGY_AWARE: "false"}}})
    assert fam.fit(devs, req, off).ok and fam.score_node({}, devs, [result.devices], "binpack") == 0
    shared = [ContainerDevice("MX-0", "Metax-SGPU", 1024, 30)]
    assert MetaxSgpuFamily(SECTION).score_node({}, devs, [shared], "binpack") == 0


# --- the sGPU plugin ---------------------------------------------------------------------------


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


def test_sgpu_plugin_writes_metax_node_json_without_a_handshake(family_hw: Path) -> None:
    hw.create_state(family_hw, "metax", "C500", 4, node_name="mx-a")
    kube = FakeKube()
    spec = get("metax-sgpu")
    plugin = FamilyDevicePlugin(spec, FamilyOptions("mx-a", family_hw), kube, spec.make_family(SECTION))  # type: ignore[arg-type]
    plugin.refresh()
    (body,) = kube.patches
    assert list(body["metadata"]["annotations"]) == [NODE_DEVICES]
    node = {"metadata": {"name": "mx-a", "annotations": body["metadata"]["annotations"]}}
    devs = plugin.family.node_devices(node)
    assert [(d.count, d.devmem, d.custom_info["LinkZone"]) for d in devs] == [
        (16, 65536, 1),
        (16, 65536, 2),
        (16, 65536, 1),
        (16, 65536, 2),
    ]
    assert len(plugin.kubelet_devices()) == 4 * 16
    assert len(extra_devices(spec, "cores", plugin.devices)) == 4 * 100
    assert [kind for _, kind in spec.extra_resources] == ["cores"]  # vmemory is not a kubelet resource
    hw.set_health(family_hw, "metax", 1, False)
    plugin.refresh()
    assert [
        d.health
        for d in plugin.family.node_devices(
            {"metadata": {"annotations": kube.patches[-1]["metadata"]["annotations"]}}
        )
    ] == [True, False, True, True]


@pytest.mark.parametrize("vmemory", ["4", "2048Mi", "60Gi"])
def test_a_vmemory_limit_with_or_without_a_unit_fits_at_the_node(family_hw: Path, vmemory: str) -> None:
    """Upstream's allocate_vmemory_MiB example (``2048Mi``, bytes) and the unitless GiB form both pass
    the kubelet's fit check against what the sGPU plugin advertises: vmemory is not advertised (the
    kubelet drops it), HAMi bounds memory through the node JSON."""
    hw.create_state(family_hw, "metax", "C500", 2, node_name="mx-a")
    spec = get("metax-sgpu")
    fam = spec.make_family(SECTION)
    plugin = FamilyDevicePlugin(spec, FamilyOptions("mx-a", family_hw), FakeKube(), fam)  # type: ignore[arg-type]
    plugin.refresh()
    allocatable = {fam.count_resource: str(len(plugin.kubelet_devices()))} | {
        getattr(fam, attr): str(len(extra_devices(spec, kind, plugin.devices)))
        for attr, kind in spec.extra_resources
    }
    p = make_pod({SGPU: "1", VCORE: "60", VMEM: vmemory})
    need = admission_requests(p, allocatable)
    assert VMEM not in need and need == {SGPU: 1, VCORE: 60}
    assert all(n <= int(allocatable[res]) for res, n in need.items())
    req = fam.container_request(p["spec"]["containers"][0])
    assert req is not None and req.memreq == {"4": 4096, "2048Mi": 2048, "60Gi": 61440}[vmemory]
