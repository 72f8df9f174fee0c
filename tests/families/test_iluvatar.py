"""Iluvatar: per-chip families from ``iluvatars``, admission rewrites, CSV registration by the plugin,
placement (first device first) and Allocate; upstream's example pods as its code treats them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.base import AllocateInput
from hami_stack.devices.config import DeviceConfigError, parse_device_config
from hami_stack.devices.iluvatar import (
    CONTAINER_NAME_ENV,
    DEFAULT_CHIPS,
    NO_CORE_REWRITE_FAULT,
    IluvatarFamily,
    parse_chips,
)
from hami_stack.devices.registry import build_families
from hami_stack.protocol.handshake import check_handshake
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from testbed.hardware import families as hw
from tests.families.famhelpers import pod, run_webhook
from tests.hami.extender_helpers import NV, add_node, gpus, make_pod

pytestmark = pytest.mark.iluvatar
CHIP = "BI-V150"
COUNT, MEM, CORE = f"iluvatar.ai/{CHIP}-vgpu", f"iluvatar.ai/{CHIP}.vMem", f"iluvatar.ai/{CHIP}.vCore"


def _raw(chip: str) -> dict[str, str]:
    return {
        "chipName": chip,
        "commonWord": chip,
        "resourceCountName": f"iluvatar.ai/{chip}-vgpu",
        "resourceMemoryName": f"iluvatar.ai/{chip}.vMem",
        "resourceCoreName": f"iluvatar.ai/{chip}.vCore",
    }


def _families() -> list[Any]:
    return build_families(
        parse_device_config({"nvidia": {}, "iluvatars": [_raw(c.chip_name) for c in DEFAULT_CHIPS]})
    )


def _env(ctr: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in ctr.get("env") or []}


def test_one_family_per_configured_chip_and_none_without_the_section() -> None:
    fams = _families()
    assert sorted(f.common_word for f in fams if isinstance(f, IluvatarFamily)) == sorted(
        ["BI-V100", "BI-V150", "MR-V100", "MR-V50"]
    )
    fam = next(f for f in fams if f.common_word == CHIP)
    assert fam.keys.register == f"hami.io/node-{CHIP}-register"
    assert fam.keys.handshake == f"hami.io/node-handshake-{CHIP}"
    assert fam.keys.to_allocate == f"hami.io/{CHIP}-devices-to-allocate"
    assert fam.keys.use_uuid == f"hami.io/use-{CHIP}-uuid"
    assert not [
        f for f in build_families(parse_device_config({"nvidia": {}})) if isinstance(f, IluvatarFamily)
    ]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"chips": []}, r"iluvatars: must be a list"),
        ([{"commonWord": "X", "resourceCountName": "a"}], r"iluvatars\[0\]\.resourceMemoryName: required"),
        ([{**_raw("A"), "resourceCoreName": ""}], r"iluvatars\[0\]\.resourceCoreName: must be a non-empty"),
        ([_raw("A"), _raw("A")], r"iluvatars\[1\]\.commonWord: 'A' is listed twice"),
        ([{**_raw("A"), "memoryFactor": 2}], r"iluvatars\[0\]\.memoryFactor: unknown field"),
    ],
)
def test_bad_chip_lists_are_refused_naming_the_entry(section: Any, message: str) -> None:
    with pytest.raises(DeviceConfigError, match=message):
        parse_chips(section)


def test_request_units_and_defaults() -> None:
    fam = IluvatarFamily(DEFAULT_CHIPS[2])
    r = fam.container_request({"resources": {"limits": {COUNT: "1", MEM: "64", CORE: "50"}}})
    assert r is not None and (r.nums, r.memreq, r.coresreq) == (1, 64 * 256, 50)
    whole = fam.container_request({"resources": {"requests": {COUNT: "1"}}})
    assert whole is not None and whole.memory_on(32768) == 32768 and whole.coresreq == 0
    assert fam.container_request({"resources": {"limits": {COUNT: "0"}}}) is None
    assert "write 4 for 1Gi" in (
        fam.admission_problem({"name": "c", "resources": {"limits": {COUNT: "1", MEM: "1Gi"}}}) or ""
    )


# --- upstream's example pods (examples/iluvatar), restated as the resources they ask -------------


def test_example_default_use_is_claimed_and_gets_the_container_name_env() -> None:
    resp, out = run_webhook(
        pod(
            {
                "name": "demo",
                "limits": {COUNT: "1", CORE: "50", MEM: "64"},
                "requests": {COUNT: "1", CORE: "50", MEM: "64"},
            }
        ),
        _families(),
    )
    assert resp.allowed, resp.message
    ctr = out["spec"]["containers"][0]
    assert out["spec"]["schedulerName"] == "hami-scheduler"
    assert _env(ctr)[CONTAINER_NAME_ENV] == "demo"
    assert ctr["resources"]["limits"][CORE] == "50"  # one device: cores as asked


def test_example_multi_devices_takes_whole_cards() -> None:
    _, out = run_webhook(pod({"name": "demo", "limits": {COUNT: "2"}, "requests": {COUNT: "2"}}), _families())
    assert out["spec"]["containers"][0]["resources"]["limits"][CORE] == "200"


def test_example_multi_containers_each_get_their_own_name() -> None:
    lim = {COUNT: "1", CORE: "50", MEM: "64"}
    _, out = run_webhook(pod({"name": "a", "limits": lim}, {"name": "b", "limits": lim}), _families())
    assert [_env(c)[CONTAINER_NAME_ENV] for c in out["spec"]["containers"]] == ["a", "b"]


def test_an_existing_container_name_env_is_kept() -> None:
    p = pod({"name": "demo", "limits": {COUNT: "1"}})
    p["spec"]["containers"][0]["env"] = [{"name": CONTAINER_NAME_ENV, "value": "mine"}]
    _, out = run_webhook(p, _families())
    assert out["spec"]["containers"][0]["env"] == [{"name": CONTAINER_NAME_ENV, "value": "mine"}]


def test_example_with_the_generic_resource_names_is_not_claimed_by_the_chip_list() -> None:
    # examples/iluvatar/default_use.yaml asks iluvatar.ai/vgpu, which upstream's chart list does not name
    resp, out = run_webhook(
        pod({"name": "demo", "limits": {"iluvatar.ai/vgpu": "1", "iluvatar.ai/vcuda-memory": "64"}}),
        _families(),
    )
    assert resp.allowed and "schedulerName" not in out["spec"]
    generic = [
        {
            "commonWord": "Iluvatar",
            "resourceCountName": "iluvatar.ai/vgpu",
            "resourceMemoryName": "iluvatar.ai/vcuda-memory",
            "resourceCoreName": "iluvatar.ai/vcuda-core",
        }
    ]
    _, out = run_webhook(
        pod({"name": "demo", "limits": {"iluvatar.ai/vgpu": "1", "iluvatar.ai/vcuda-memory": "64"}}),
        build_families(parse_device_config({"nvidia": {}, "iluvatars": generic})),
    )
    assert out["spec"]["schedulerName"] == "hami-scheduler"


def test_count_only_in_requests_is_not_claimed_as_upstream() -> None:
    _, out = run_webhook(pod({"name": "demo", "requests": {COUNT: "1"}}), _families())
    assert "schedulerName" not in out["spec"]


def test_multi_core_fault_leaves_the_core_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAMI_FAULTS", NO_CORE_REWRITE_FAULT)
    faults.reset_for_tests()
    try:
        _, out = run_webhook(pod({"name": "demo", "limits": {COUNT: "2"}}), _families())
        assert CORE not in out["spec"]["containers"][0]["resources"]["limits"]
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


# --- plugin, scheduler, Allocate --------------------------------------------------------------


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.patches.append(body)
        return body


def _plugin(hw_dir: Path, count: int = 4) -> tuple[FamilyDevicePlugin, dict[str, Any]]:
    """The plugin over ``hw_dir`` (the ``family_hw`` fixture: the dir libixml.so reads)."""
    hw.create_state(hw_dir, "iluvatar", CHIP, count, node_name="ilu-a")
    kube = FakeKube()
    spec = get("iluvatar")
    family = spec.make_family([_raw(c.chip_name) for c in DEFAULT_CHIPS])
    plugin = FamilyDevicePlugin(spec, FamilyOptions("ilu-a", hw_dir), kube, family)  # type: ignore[arg-type]
    plugin.refresh()
    annotations: dict[str, str] = {}
    for body in kube.patches:
        annotations.update(body["metadata"]["annotations"])
    return plugin, {"metadata": {"name": "ilu-a", "annotations": annotations}}


def test_plugin_registers_the_chip_in_csv_with_a_handshake(family_hw: Path) -> None:
    plugin, node = _plugin(family_hw)
    ann = node["metadata"]["annotations"]
    assert check_handshake(ann[f"hami.io/node-handshake-{CHIP}"], dt.datetime.now(), 0).healthy
    devs = plugin.family.node_devices(node)
    model = hw.lookup_model("iluvatar", CHIP)
    assert [(d.count, d.devmem, d.devcore, d.type) for d in devs] == [(4, model.memory_mib, 100, CHIP)] * 4
    assert plugin.family.common_word == CHIP and len(plugin.kubelet_devices()) == 16


def test_scheduler_takes_the_first_device_and_allocate_limits_it(family_hw: Path) -> None:
    plugin, node = _plugin(family_hw)
    fam = plugin.family
    ext = Extender(None, [fam, NV], ExtenderOptions())
    add_node(ext.cache, "gpu-a", gpus("gpu-a"))
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("ilu-a", CHIP, fam.node_devices(node))
    p = make_pod({COUNT: "1", MEM: "64", CORE: "50"})
    out = ext.filter(FilterArgs(p, None, ["gpu-a", "ilu-a"]))
    assert out["NodeNames"] == ["ilu-a"], out
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    (picked,) = [d for ctr in entry.devices[CHIP] for d in ctr]
    # upstream walks from the first device (NVIDIA's walk from the end would take index 3)
    assert picked.uuid == plugin.devices[0].uuid and (picked.usedmem, picked.usedcores) == (16384, 50)
    alloc = fam.allocate_response(AllocateInput([picked], "uid", "c0"))
    assert alloc.envs == {
        "ILUVATAR_VISIBLE_DEVICES": picked.uuid,
        "CUDA_DEVICE_MEMORY_LIMIT_0": "16384m",
        "CUDA_DEVICE_SM_LIMIT": "50",
    }
    # a second pod asking more than what is left on every card is refused with HAMi's reason
    big = make_pod({COUNT: "1", MEM: str(hw.lookup_model("iluvatar", CHIP).memory_mib // 256 + 1)})
    out = ext.filter(FilterArgs(big, None, ["ilu-a"]))
    assert out["NodeNames"] is None and "CardInsufficientMemory" in out["FailedNodes"]["ilu-a"]
