"""MetaX sGPU placement by app class and QoS policy: which device a pod may join given the pods the
usage cache counts on it (``CardAppClassMismatch``), the QoS policy a device runs after this scheduler
placed a pod on it (``CardQosPolicyMismatch``, remembered until the node JSON reports it), where an
online pod goes when it has a choice, and its node score."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.devices.base import DeviceUsage, FitContext
from hami_stack.devices.metax import (
    APP_CLASS,
    CARD_APP_CLASS_MISMATCH,
    CARD_QOS_POLICY_MISMATCH,
    NO_APP_CLASS_FAULT,
    NODE_DEVICES,
    QOS_POLICY,
    MetaxSgpuFamily,
    app_class_fits,
    online_score,
    prefer_for_online,
)
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.scheduler.cache import pod_charges, same_charges
from hami_stack.scheduler.extender import Extender, ExtenderOptions
from hami_stack.scheduler.wire import FilterArgs
from tests.families.famhelpers import capacity_node
from tests.families.test_metax import _sgpu_devices
from tests.hami.extender_helpers import NV, make_pod

pytestmark = pytest.mark.metax
SGPU, VCORE, VMEM = "metax-tech.com/sgpu", "metax-tech.com/vcore", "metax-tech.com/vmemory"
USE_UUID = "metax-tech.com/use-gpuuuid"
POLICY = "hami.io/gpu-scheduler-policy"
SECTION = {"resourceVCountName": SGPU, "resourceVMemoryName": VMEM, "resourceVCoreName": VCORE}
ON, OFF, NONE = "online", "offline", ""
SHARED = {SGPU: "1", VCORE: "10", VMEM: "4"}  # a tenth of a device


def _dev(uid: str, pods: tuple[str, ...] = (), qos: str = "") -> DeviceUsage:
    return DeviceUsage(
        uid,
        "Metax-SGPU",
        16,
        65536,
        100,
        used=len(pods),
        usedmem=1024 * len(pods),
        usedcores=10 * len(pods),
        custom_info={"QosPolicy": qos, "LinkZone": 0},
        pods=pods,
    )


@pytest.mark.parametrize(
    ("request_class", "on_device", "fits"),
    [
        (ON, (), True),  # a device nobody uses takes any pod
        (NONE, (), True),
        (NONE, (ON,), False),  # a pod without a class never joins app-class pods
        (NONE, (OFF,), False),
        (NONE, (NONE,), True),
        (ON, (NONE,), False),  # nor an app-class pod pods without one
        (OFF, (NONE, NONE), False),
        (ON, (ON, OFF), True),
        (OFF, (ON, OFF), False),  # an offline pod would be suspended next to an online one
        (OFF, (ON,), False),
        (OFF, (OFF,), True),
        (ON, (OFF, OFF), True),  # an online pod may join offline ones (they yield to it)
    ],
)
def test_app_class_rule(request_class: str, on_device: tuple[str, ...], fits: bool) -> None:
    assert app_class_fits(request_class, _dev("MX-0", on_device)) is fits


def test_an_unknown_class_on_a_device_counts_as_none() -> None:
    # only "online" and "offline" notes are app classes; a used device without them is a plain one
    assert app_class_fits(NONE, _dev("MX-0", ("batch",)))
    assert not app_class_fits(ON, _dev("MX-0", ("batch",)))


@pytest.mark.parametrize(
    ("devices", "want"),
    [
        # an idle device beats every used one
        ([("A", (ON,)), ("B", ()), ("C", (OFF,)), ("D", (ON, OFF))], "B"),
        # fewer online pods first
        ([("A", (ON, ON)), ("B", (ON,)), ("C", (ON, ON, ON, OFF))], "B"),
        # equal online pods: fewer offline ones
        ([("A", (ON, OFF, OFF)), ("B", (ON, OFF)), ("C", (OFF,))], "B"),
        # any device running an online pod beats one running only offline pods
        ([("A", (OFF,)), ("B", (ON, ON, ON, OFF)), ("C", (OFF, OFF))], "B"),
        # only offline ones left: the fewest offline pods
        ([("A", (OFF, OFF)), ("B", (OFF,)), ("C", (OFF, OFF, OFF))], "B"),
    ],
)
def test_an_online_pod_takes_the_best_placed_device(
    devices: list[tuple[str, tuple[str, ...]]], want: str
) -> None:
    candidates = [_dev(u, p) for u, p in devices]
    assert [d.id for d in prefer_for_online(candidates, 1)] == [want]
    # as many candidates as asked: all of them, in their order
    assert prefer_for_online(candidates[:1], 1) == candidates[:1]


@pytest.mark.parametrize(
    ("on_device", "score"),
    [((), 0), ((OFF, OFF), -200), ((ON,), -20), ((ON, ON, OFF), -42), ((NONE,), 0)],
)
def test_online_score_over_the_picked_device(on_device: tuple[str, ...], score: int) -> None:
    devices = [_dev("MX-0", on_device), _dev("MX-1", (OFF,))]  # MX-1 is not picked: not counted
    picked = [[ContainerDevice("MX-0", "Metax-SGPU", 1024, 0)]]
    assert online_score(devices, picked) == score


def test_fit_reasons_and_the_online_node_score() -> None:
    fam = MetaxSgpuFamily(SECTION)
    req = fam.container_request({"resources": {"limits": SHARED}})
    assert req is not None
    online = FitContext({"metadata": {"annotations": {APP_CLASS: ON}}})
    plain = FitContext({"metadata": {"annotations": {QOS_POLICY: "best-effort"}}})
    # an online pod on a device running a plain pod, and the reverse: one reason per device
    result = fam.fit([_dev("MX-0", (NONE,))], req, online)
    assert not result.ok and result.reason == f"1/1 {CARD_APP_CLASS_MISMATCH}"
    result = fam.fit([_dev("MX-0", (ON,))], req, plain)
    assert not result.ok and result.reason == f"1/1 {CARD_APP_CLASS_MISMATCH}"
    # the online pod takes the idle device of three, with no cores, and scores -20 x 0 there
    devices = [_dev("MX-0", (ON,)), _dev("MX-1", ()), _dev("MX-2", (OFF,))]
    result = fam.fit(devices, req, online)
    assert result.ok and [(d.uuid, d.usedcores) for d in result.devices] == [("MX-1", 0)]
    assert fam.score_node({}, devices, [result.devices], "binpack") == 0
    # only offline-busy devices left: scored -100 per offline pod, times -10000 under spread
    busy = [_dev("MX-0", (OFF, OFF))]
    result = fam.fit(busy, req, online)
    assert result.ok and fam.score_node({}, busy, [result.devices], "spread") == -10000 * -200


# --- through the scheduler: the usage cache holds the pods on each device ------------------------


def _sgpu_json(n: int, qos: str = "") -> str:
    return _sgpu_devices(n, qos, zones=(0,) * n)  # no MetaLink zones: placement by class and QoS only


def _extender(n: int = 2, qos: str = "") -> tuple[Extender, MetaxSgpuFamily, dict[str, Any]]:
    fam = MetaxSgpuFamily(SECTION)
    ext = Extender(None, [fam, NV], ExtenderOptions())
    node = capacity_node("mx-a", {SGPU: str(16 * n)})
    node["metadata"]["annotations"][NODE_DEVICES] = _sgpu_json(n, qos)
    ext.cache.on_node("ADDED", node)
    ext.cache.set_node_family("mx-a", "Metax-SGPU", fam.node_devices(node))
    return ext, fam, node


def _place(ext: Extender, annotations: dict[str, str], limits: dict[str, str] = SHARED) -> Any:
    """Filter a pod onto mx-a: (the pod, the device it got or None, the failure text)."""
    p = make_pod(dict(limits), annotations=annotations)
    out = ext.filter(FilterArgs(p, None, ["mx-a"]))
    if not out["NodeNames"]:
        return p, None, (out.get("FailedNodes") or {}).get("mx-a", "")
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None
    (dev,) = [d.uuid for ctr in entry.devices["Metax-SGPU"] for d in ctr]
    return p, dev, ""


def _pods_on(ext: Extender, uid: str) -> tuple[Any, ...]:
    (dev,) = [d for d in ext.cache.nodes["mx-a"].families["Metax-SGPU"] if d.id == uid]
    return dev.pods


def test_the_usage_cache_keeps_each_pods_class_on_its_device() -> None:
    ext, _, _ = _extender()
    online, dev, _ = _place(ext, {APP_CLASS: ON})
    assert dev is not None and _pods_on(ext, dev) == (ON,)
    # the offline pod is refused the online pod's device and takes the other one
    _, why, reason = _place(ext, {APP_CLASS: OFF, QOS_POLICY: "best-effort", USE_UUID: dev})
    assert why is None and f"1/2 {CARD_APP_CLASS_MISMATCH}" in reason
    offline, other, _ = _place(ext, {APP_CLASS: OFF, QOS_POLICY: "best-effort"})
    assert other is not None and other != dev and _pods_on(ext, other) == (OFF,)
    # a plain pod fits neither device now
    _, none, reason = _place(ext, {QOS_POLICY: "best-effort"})
    assert none is None and f"2/2 {CARD_APP_CLASS_MISMATCH}" in reason
    # the online pod leaves: its device takes the offline class again, and its note is gone
    ext.cache.on_pod("DELETED", online)
    assert _pods_on(ext, dev) == ()
    _, again, _ = _place(ext, {APP_CLASS: OFF, QOS_POLICY: "best-effort", USE_UUID: dev})
    assert again == dev
    ext.cache.on_pod("DELETED", offline)
    assert _pods_on(ext, other) == ()


def test_a_second_online_pod_spreads_even_under_binpack() -> None:
    ext, _, _ = _extender()
    _, first, _ = _place(ext, {APP_CLASS: ON, POLICY: "binpack"})
    # binpack alone would stack a plain pod on the used device ...
    _, plain_a, _ = _place(ext, {POLICY: "binpack", QOS_POLICY: "best-effort"})
    assert plain_a is not None and plain_a != first  # (the online device refuses a plain pod)
    _, plain_b, _ = _place(ext, {POLICY: "binpack", QOS_POLICY: "best-effort"})
    assert plain_b == plain_a
    # ... but online placement prefers the device with fewer online pods over binpack's order
    ext2, _, _ = _extender()
    _, a, _ = _place(ext2, {APP_CLASS: ON, POLICY: "binpack"})
    _, b, _ = _place(ext2, {APP_CLASS: ON, POLICY: "binpack"})
    assert a is not None and b is not None and a != b


def test_the_app_class_fault_lets_an_offline_pod_join_an_online_one(monkeypatch: pytest.MonkeyPatch) -> None:
    ext, _, _ = _extender()
    _, dev, _ = _place(ext, {APP_CLASS: ON})
    monkeypatch.setenv("HAMI_FAULTS", NO_APP_CLASS_FAULT)
    faults.reset_for_tests()
    try:
        _, got, _ = _place(ext, {APP_CLASS: OFF, QOS_POLICY: "best-effort", USE_UUID: str(dev)})
        assert got == dev
    finally:
        monkeypatch.delenv("HAMI_FAULTS")
        faults.reset_for_tests()


def test_a_device_keeps_the_qos_policy_its_first_pod_gave_it() -> None:
    ext, fam, node = _extender(n=1)
    _, dev, _ = _place(ext, {QOS_POLICY: "best-effort"})
    assert dev == "MX-0"
    # the node JSON still reports no policy: the scheduler remembers the one it gave the device
    _, got, reason = _place(ext, {QOS_POLICY: "fixed-share"})
    assert got is None and f"1/1 {CARD_QOS_POLICY_MISMATCH}" in reason
    _, same, _ = _place(ext, {QOS_POLICY: "best-effort"})
    assert same == "MX-0"
    # a whole-device request never checks the policy (it fails on cores here, not on QoS)
    _, whole, reason = _place(ext, {QOS_POLICY: "fixed-share"}, {SGPU: "1"})
    assert whole is None and CARD_QOS_POLICY_MISMATCH not in reason
    # MetaX's plugin reports the policy: the memory is dropped, the registered policy rules
    node["metadata"]["annotations"][NODE_DEVICES] = _sgpu_json(1, "best-effort")
    ext.cache.set_node_family("mx-a", "Metax-SGPU", fam.node_devices(node))
    _, got, reason = _place(ext, {QOS_POLICY: "fixed-share"})
    assert got is None and f"1/1 {CARD_QOS_POLICY_MISMATCH}" in reason


def test_online_pods_neither_check_nor_set_the_qos_policy() -> None:
    ext, _, _ = _extender(n=1, qos="burst-share")
    _, dev, _ = _place(ext, {APP_CLASS: ON})
    assert dev == "MX-0"
    _, again, _ = _place(ext, {APP_CLASS: ON})
    assert again == "MX-0"


def test_remembered_policies_follow_what_each_device_ran_when_fitted() -> None:
    fam = MetaxSgpuFamily(SECTION)
    node = capacity_node("mx-a", {SGPU: "48"})
    node["metadata"]["annotations"][NODE_DEVICES] = json.dumps(
        [
            {
                "uuid": u,
                "totalDevCount": 16,
                "totalCompute": 100,
                "totalVRam": 65536,
                "healthy": True,
                "qosPolicy": q,
            }
            for u, q in (("MX-0", "best-effort"), ("MX-1", "burst-share"), ("MX-2", "best-effort"))
        ]
    )
    fam.node_devices(node)
    pod = {"metadata": {"annotations": {QOS_POLICY: "best-effort"}}}
    picks = [
        [ContainerDevice("MX-0", "Metax-SGPU", 1024, 50), ContainerDevice("MX-1", "Metax-SGPU", 1024, 50)],
        [ContainerDevice("MX-2", "Metax-SGPU", 65536, 100)],
    ]
    fam.pod_annotations(picks, pod)
    # MX-0 already runs best-effort; MX-1 is switched to it; a whole device runs no policy
    assert fam._given_qos == {"MX-1": "best-effort", "MX-2": ""}
    # an online pod changes nothing
    fam.pod_annotations(picks, {"metadata": {"annotations": {APP_CLASS: ON, QOS_POLICY: "fixed-share"}}})
    assert fam._given_qos == {"MX-1": "best-effort", "MX-2": ""}
    # the node JSON catching up with MX-1 drops it; MX-2 still reports best-effort: kept
    devices = json.loads(node["metadata"]["annotations"][NODE_DEVICES])
    devices[1]["qosPolicy"] = "best-effort"
    node["metadata"]["annotations"][NODE_DEVICES] = json.dumps(devices)
    fam.node_devices(node)
    assert fam._given_qos == {"MX-2": ""}


def test_bind_sees_the_decision_it_counted_whatever_the_note() -> None:
    # /bind compares the usage the pod's annotations give with the counted decision: the class note
    # the cache keeps is no part of that comparison
    ext, fam, _ = _extender()
    p, dev, _ = _place(ext, {APP_CLASS: ON})
    entry = ext.cache.pod(p["metadata"]["uid"])
    assert entry is not None and [c.note for c in entry.charges] == [ON]
    p["metadata"]["annotations"].update(fam.pod_annotations(entry.devices["Metax-SGPU"], p))
    charges = pod_charges(p, ext.families)
    assert charges is not None and [c.device for c in charges] == [dev]
    assert same_charges(charges, entry.charges)
