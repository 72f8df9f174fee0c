"""Upstream HAMi's example pods for Hygon DCU and Cambricon MLU (examples/hygon/*.yaml, examples/mlu/*.yaml:
their limits and annotations, restated) go through this stack as upstream's code handles them: the
webhook sends them to HAMi, the extender places them (or refuses with HAMi's reason), and Allocate
answers for the placed device."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from hami_stack.device_plugin.families.plugin import FamilyDevicePlugin, FamilyOptions
from hami_stack.device_plugin.families.specs import get
from hami_stack.devices.cambricon import DSMLU_PROFILE, CambriconFamily
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from hami_stack.webhook.admit import WebhookConfig, admit
from testbed.hardware import families as hw
from tests.hami.extender_helpers import NV, make_pod

SCHEDULER = "hami-scheduler"


class _Patches:
    def __init__(self) -> None:
        self.annotations: dict[str, str] = {}

    def patch(self, path: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        self.annotations.update(body["metadata"]["annotations"])
        return body


def _dcu_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Extender, dict[str, list[str]]]:
    """Two DCU nodes registered by the family plugin: dcu-z (2 x Z100), dcu-k (2 x K100)."""
    spec = get("dcu")
    fam = spec.make_family({})
    ext = Extender(None, [fam, NV], ExtenderOptions())
    uuids = {}
    for node, model in (("dcu-z", "Z100"), ("dcu-k", "K100")):
        hw.create_state(tmp_path / node, "hygon", model, 2, node_name=node)
        kube = _Patches()
        plugin = FamilyDevicePlugin(spec, FamilyOptions(node, tmp_path / node), kube, fam)  # type: ignore[arg-type]
        monkeypatch.setenv(hw.STATE_ENV, str(tmp_path / node))  # ROCm SMI reads this node's hardware
        plugin.refresh()
        obj = {"metadata": {"name": node, "annotations": kube.annotations}}
        ext.cache.on_node("ADDED", obj)
        ext.cache.set_node_family(node, "DCU", fam.node_devices(obj))
        uuids[node] = [d.uuid for d in plugin.devices]
    return ext, uuids


def _admitted(pod: dict[str, Any], families: list[Any]) -> None:
    """As the user wrote it (no schedulerName), the webhook admits it and sends it to HAMi."""
    sent = copy.deepcopy(pod)
    sent["spec"].pop("schedulerName", None)
    review = {"uid": "1", "operation": "CREATE", "object": sent}
    resp = admit(review, WebhookConfig(families=families, trusted_users=(), scheduler_name=SCHEDULER))
    assert resp.allowed and resp.warnings == []
    assert [op["value"] for op in resp.patch if op["path"] == "/spec/schedulerName"] == [SCHEDULER], (
        resp.patch
    )


def _placed(ext: Extender, pod: dict[str, Any], nodes: list[str], cw: str) -> tuple[list[str] | None, Any]:
    out = ext.filter(FilterArgs(pod, None, nodes))
    entry = ext.cache.pod(pod["metadata"]["uid"])
    return out["NodeNames"], ([d for ctr in entry.devices[cw] for d in ctr] if entry else out)


DCU_DEFAULT = {"hygon.com/dcunum": "1", "hygon.com/dcumem": "2000", "hygon.com/dcucores": "60"}


@pytest.mark.hygon
@pytest.mark.usefixtures("family_hw")
def test_hygon_default_use_gets_part_of_one_dcu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ext, _ = _dcu_cluster(tmp_path, monkeypatch)
    pod = make_pod(DCU_DEFAULT)
    _admitted(pod, ext.families)
    nodes, picked = _placed(ext, pod, ["dcu-z", "dcu-k"], "DCU")
    assert nodes is not None and len(nodes) == 1
    assert [(d.usedmem, d.usedcores) for d in picked] == [(2000, 60)]


@pytest.mark.hygon
@pytest.mark.usefixtures("family_hw")
def test_hygon_card_type_example_runs_only_on_that_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext, _ = _dcu_cluster(tmp_path, monkeypatch)
    pod = make_pod(DCU_DEFAULT, annotations={"hygon.com/use-dcutype": "Z100"})
    _admitted(pod, ext.families)
    nodes, _ = _placed(ext, pod, ["dcu-z", "dcu-k"], "DCU")
    assert nodes == ["dcu-z"]
    # and the not-use example: every card but that type
    avoid = make_pod(DCU_DEFAULT, annotations={"hygon.com/nouse-dcutype": "Z100"})
    assert _placed(ext, avoid, ["dcu-z", "dcu-k"], "DCU")[0] == ["dcu-k"]


@pytest.mark.hygon
@pytest.mark.usefixtures("family_hw")
def test_hygon_uuid_examples_pick_or_avoid_that_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ext, uuids = _dcu_cluster(tmp_path, monkeypatch)
    want = uuids["dcu-k"][1]
    pod = make_pod(DCU_DEFAULT, annotations={"hygon.com/use-gpuuuid": want})
    nodes, picked = _placed(ext, pod, ["dcu-z", "dcu-k"], "DCU")
    assert nodes == ["dcu-k"] and [d.uuid for d in picked] == [want]
    # the example's own UUID is on no node here: nothing fits
    absent = make_pod(DCU_DEFAULT, annotations={"hygon.com/use-gpuuuid": "DCU-TPXS320016070601"})
    nodes, out = _placed(ext, absent, ["dcu-z", "dcu-k"], "DCU")
    assert nodes is None and set(out["FailedNodes"]) == {"dcu-z", "dcu-k"}


@pytest.mark.hygon
@pytest.mark.usefixtures("family_hw")
def test_hygon_exclusive_example_takes_two_whole_dcus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext, _ = _dcu_cluster(tmp_path, monkeypatch)
    pod = make_pod({"hygon.com/dcunum": "2"})
    _admitted(pod, ext.families)
    nodes, picked = _placed(ext, pod, ["dcu-z"], "DCU")
    assert nodes == ["dcu-z"]
    assert [(d.usedmem, d.usedcores) for d in picked] == [(16384, 100), (16384, 100)]


def _mlu_extender() -> tuple[Extender, CambriconFamily]:
    fam = CambriconFamily()
    ext = Extender(None, [fam, NV], ExtenderOptions())
    cap = {
        "cambricon.com/vmlu": "200",
        "cambricon.com/mlu.smlu.vcore": "200",
        "cambricon.com/mlu.smlu.vmemory": "192",
    }
    node = {"metadata": {"name": "mlu-a", "annotations": {}}, "status": {"capacity": cap, "allocatable": cap}}
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("mlu-a", "MLU", fam.node_devices(node))
    return ext, fam


@pytest.mark.cambricon
def test_mlu_allocate_whole_example_gets_a_whole_card() -> None:
    ext, _ = _mlu_extender()
    pod = make_pod({"cambricon.com/vmlu": "1"})
    _admitted(pod, ext.families)
    nodes, picked = _placed(ext, pod, ["mlu-a"], "MLU")
    assert nodes == ["mlu-a"] and [(d.usedmem, d.usedcores) for d in picked] == [(96 * 256, 100)]


@pytest.mark.cambricon
def test_mlu_default_use_example_with_its_model_named_resources() -> None:
    # the example names cambricon.com/mlu370.smlu.vmemory / vcore, which are not the configured names:
    # upstream claims the pod by vmlu and ignores the others, so it gets a whole card too
    ext, fam = _mlu_extender()
    pod = make_pod(
        {
            "cambricon.com/vmlu": "1",
            "cambricon.com/mlu370.smlu.vmemory": "20",
            "cambricon.com/mlu370.smlu.vcore": "10",
        }
    )
    _admitted(pod, ext.families)
    nodes, picked = _placed(ext, pod, ["mlu-a"], "MLU")
    assert nodes == ["mlu-a"] and [(d.usedmem, d.usedcores) for d in picked] == [(96 * 256, 100)]
    entry = ext.cache.pod(pod["metadata"]["uid"])
    assert entry is not None
    index = picked[0].uuid.rsplit("-", 1)[-1]
    assert fam.pod_annotations(entry.devices["MLU"])[DSMLU_PROFILE] == f"{index}_100_96"
