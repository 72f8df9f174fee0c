"""The extender with Ascend families: placement through /filter, and the message when no node has NPUs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hami_stack.devices.ascend import DEFAULT_CHIPS, AscendFamily
from hami_stack.protocol.register import DeviceInfo
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from tests.hami.extender_helpers import NV, add_node, gpus, make_pod

pytestmark = pytest.mark.ascend

CFG = {c.common_word: c for c in DEFAULT_CHIPS}


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def pod_event(self, pod: Any, etype: str, reason: str, message: str) -> None:
        self.seen.append((reason, message))


def _npus(node: str, n: int = 8) -> list[DeviceInfo]:
    return [
        DeviceInfo(
            id=f"NPU-{node}-{i}",
            index=i,
            count=4,
            devmem=65536,
            devcore=20,
            type="Ascend910B3",
            health=True,
            custom_info={"NetworkID": 1 if i > 3 else 0},
        )
        for i in range(n)
    ]


def _extender(events: Events) -> tuple[Extender, AscendFamily]:
    fam = AscendFamily(CFG["Ascend910B3"])
    ext = Extender(None, [fam, NV], ExtenderOptions(), recorder=events)  # type: ignore[arg-type]
    return ext, fam


def test_filter_places_a_template_pod_and_writes_runtime_info() -> None:
    events = Events()
    ext, _ = _extender(events)
    add_node(ext.cache, "gpu-a", gpus("gpu-a"))
    node = {"metadata": {"name": "npu-a", "annotations": {}}}
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("npu-a", "Ascend910B3", _npus("npu-a"))
    pod = make_pod({"huawei.com/Ascend910B3": "2", "huawei.com/Ascend910B3-memory": "65536"})
    out = ext.filter(FilterArgs(pod, None, ["gpu-a", "npu-a"]))
    assert out["NodeNames"] == ["npu-a"]
    assert "NodeInsufficientDevice" in out["FailedNodes"]["gpu-a"]
    decision = ext.cache.pod(pod["metadata"]["uid"])
    assert decision is not None


def test_no_npu_node_says_so_in_an_event() -> None:
    events = Events()
    ext, _ = _extender(events)
    add_node(ext.cache, "gpu-a", gpus("gpu-a"))
    pod = make_pod({"huawei.com/Ascend910B3": "1"})
    out = ext.filter(FilterArgs(pod, None, ["gpu-a"]))
    assert out["NodeNames"] is None and out["FailedNodes"]
    hints = [m for r, m in events.seen if r == "FilteringFailed" and "no node registers Ascend910B3" in m]
    assert len(hints) == 1 and "devices.ascend.nodeSelector" in hints[0]
    # an NVIDIA pod refused the same way gets HAMi's reasons only
    events.seen.clear()
    ext.filter(FilterArgs(make_pod({"nvidia.com/gpu": "9"}), None, ["gpu-a"]))
    assert events.seen and not any("no node registers" in m for _, m in events.seen)
    assert json.dumps(out)  # the answer stays JSON-serialisable
