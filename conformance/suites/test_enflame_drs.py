"""Enflame DRS (shared GCU slices): admission with HAMi's messages, the nodes' DRS capacity, profile
placement with the annotations Enflame's plugin reads, slices counted per instance until a card is
exhausted, and what a container is given.

Facts (HAMi's Enflame DRS backend): a container asks ``enflame.com/drs-gcu: <slices>`` (one
instance of the profile with that many slices) or memory/cores by spec; nodes describe their cards
in ``enflame.com/gcu-drs-capacity`` (``{"devices": [{index, minor, capacity}], "profiles":
{"<slices>g.<GB>gb": id}}``); an instance takes its profile's slices, ``ceil(slices x 100 / largest
slices)`` cores and its GB of memory on one card. Cases end ``unknown`` on a cluster without a node
that has that annotation.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from conformance.cases import rule, unknown, violated
from conformance.kube import ContainerSpec, Workloads, pod_manifest, poll
from conformance.suites.common import QUICK, expect_filter_failure

pytestmark = [pytest.mark.enflame]

DRS = "enflame.com/drs-gcu"
MEM = "enflame.com/gcu-memory"
CORE = "enflame.com/gcu-core"
CAPACITY = "enflame.com/gcu-drs-capacity"
ALLOCATED = "hami.io/enflame-vgpu-devices-allocated"
USE_UUID = "enflame.com/use-gpuuuid"
HOLD = ["--alloc-mib", "0", "--kernel-seconds", "0", "--hold-seconds", "120"]


def _profiles(value: str) -> list[tuple[str, int, int, int]]:
    """(name, slices, GB, cores) of a capacity annotation's profiles, smallest first."""
    parsed = []
    for name in json.loads(value).get("profiles") or {}:
        size, _, mem = name.lower().partition(".")
        if size.removesuffix("g").isdigit() and mem.removesuffix("gb").isdigit():
            parsed.append((name, int(size.removesuffix("g")), int(mem.removesuffix("gb"))))
    largest = max((p[1] for p in parsed), default=1)
    return sorted((n, s, g, math.ceil(s * 100 / largest)) for n, s, g in parsed)


def _drs_cards(kube: Any) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(node, device id, capacity, capacity document) of every DRS card on the cluster."""
    out = []
    for n in kube.get("/api/v1/nodes").get("items") or []:
        value = (n["metadata"].get("annotations") or {}).get(CAPACITY)
        if not value:
            continue
        doc = json.loads(value)
        name = n["metadata"]["name"]
        for d in doc.get("devices") or []:
            out.append((name, f"{name}-enflame-drs-{d.get('index')}", int(d.get("capacity") or 0), doc))
    return out


def _need_cards(kube: Any) -> list[tuple[str, str, int, dict[str, Any]]]:
    cards = _drs_cards(kube)
    if not cards:
        unknown(f"no node has {CAPACITY} (the cluster has no Enflame DRS cards)")
    return cards


def _profile(doc: dict[str, Any], slices: int) -> tuple[str, int, int, int]:
    got = [p for p in _profiles(json.dumps(doc)) if p[1] == slices]
    if not got:
        unknown(f"the cards offer no {slices}-slice profile ({sorted(doc.get('profiles') or {})})")
    return got[0]


def _bound(workloads: Workloads, name: str) -> dict[str, Any]:
    return poll(
        f"{name} bound",
        lambda: workloads.get(name),
        lambda p: bool(p["spec"].get("nodeName")),
        60,
        describe=lambda p: f"phase {(p or {}).get('status', {}).get('phase')}",
    )


# --- admission ----------------------------------------------------------------------------------

DENIALS = [
    ("ENFLAME-DRS-ADM-1", {DRS: "0"}, f"{DRS} must be greater than 0"),
    ("ENFLAME-DRS-ADM-2", {MEM: "0"}, f"{MEM} must be greater than 0"),
    ("ENFLAME-DRS-ADM-3", {MEM: "8", CORE: "150"}, f"{CORE} must be in range (0,100]"),
]


@pytest.mark.admission
@pytest.mark.parametrize(
    "rid, limits, text",
    [
        pytest.param(rid, limits, text, id=rid, marks=pytest.mark.rule(rid, f"{limits} is denied: {text}"))
        for rid, limits, text in DENIALS
    ],
)
def test_drs_values_denied(rid: str, limits: dict[str, str], text: str, workloads: Workloads) -> None:
    _, err = workloads.try_create(pod_manifest("drs-deny", [ContainerSpec(name="work", extra_limits=limits)]))
    assert err is not None, violated(rid, f"{limits} was admitted")
    assert text in str(err), violated(rid, f"denied with {str(err)!r}, want it to say {text!r}")


@pytest.mark.admission
@rule(
    "ENFLAME-DRS-ADM-SCHED-1",
    "A pod asking enflame.com/drs-gcu (or gcu-memory by spec) is given the HAMi scheduler, its limits "
    "copied to its requests",
)
def test_drs_pod_goes_to_hami(workloads: Workloads, cluster: Any) -> None:
    rid = "ENFLAME-DRS-ADM-SCHED-1"
    for i, limits in enumerate(({DRS: "3"}, {MEM: "10"})):
        manifest = pod_manifest(f"drs-sched{i}", [ContainerSpec(extra_limits=limits)])
        # admission only: no node matches, so the pod never holds slices or a node lock
        manifest["spec"]["nodeSelector"] = {"hami-conformance/admission-only": "none"}
        out = workloads.create(manifest)
        got = out["spec"].get("schedulerName")
        assert got == cluster.scheduler_name, violated(
            rid, f"{limits}: schedulerName {got!r}, want {cluster.scheduler_name!r} (Enflame not enabled?)"
        )
        requests = out["spec"]["containers"][0].get("resources", {}).get("requests") or {}
        for k, v in limits.items():
            assert str(requests.get(k)) == v, violated(rid, f"request {k} is {requests.get(k)!r}, want {v}")


# --- registration -------------------------------------------------------------------------------


@pytest.mark.registration
@rule(
    "ENFLAME-DRS-REG-1",
    "Nodes describe their DRS cards in enflame.com/gcu-drs-capacity (slices per card, usable profiles) "
    "and advertise one enflame.com/drs-gcu per slice",
)
def test_drs_capacity_registered(kube: Any) -> None:
    rid = "ENFLAME-DRS-REG-1"
    cards = _need_cards(kube)
    nodes = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes").get("items") or []}
    for node in sorted({c[0] for c in cards}):
        mine = [c for c in cards if c[0] == node]
        doc = mine[0][3]
        profiles = _profiles(json.dumps(doc))
        assert profiles, violated(rid, f"{node}: {CAPACITY} names no usable profile: {doc.get('profiles')}")
        largest = max(p[1] for p in profiles)
        for _, dev, cap, _ in mine:
            assert cap == largest, violated(
                rid, f"{node}: {dev} has capacity {cap}, its largest profile {largest}"
            )
        advertised = int(((nodes[node].get("status") or {}).get("capacity") or {}).get(DRS, "0") or 0)
        want = sum(c[2] for c in mine)
        assert advertised == want, violated(
            rid, f"{node}: capacity {DRS} is {advertised}, its cards have {want} slices"
        )


# --- scheduling ---------------------------------------------------------------------------------


@pytest.mark.scheduling
@rule(
    "ENFLAME-DRS-SCHED-FIT-1",
    "A pod asking 3 slices is bound with one instance of the 3-slice profile and the annotations "
    "Enflame's plugin reads (gcu-assigned, request size, index, minor, assigned-containers)",
)
def test_drs_pod_placed(workloads: Workloads, kube: Any) -> None:
    rid = "ENFLAME-DRS-SCHED-FIT-1"
    cards = _need_cards(kube)
    name_, slices, gb, cores = _profile(cards[0][3], 3)
    spec = ContainerSpec(name="main", args=QUICK, extra_limits={DRS: "3"})
    pod = _bound(workloads, workloads.create(pod_manifest("drs-fit", [spec]))["metadata"]["name"])
    a = pod["metadata"].get("annotations") or {}
    got = a.get(ALLOCATED, "")
    entries = [d.split(",") for d in got.split(";")[0].split(":") if d]
    assert len(entries) == 1, violated(rid, f"{ALLOCATED} is {got!r}, want one card")
    dev = entries[0][0]
    assert dev in {c[1] for c in cards}, violated(rid, f"{ALLOCATED} names {dev}, not a DRS card")
    assert entries[0][1:] == ["Enflame", str(gb * 1024), str(cores)], violated(
        rid, f"{ALLOCATED} is {got!r}, want the {name_} instance ({gb * 1024} MiB, {cores} cores)"
    )
    index = dev.rsplit("-", 1)[-1]
    want = {
        "enflame.com/gcu-assigned": "false",
        "enflame.com/gcu-request-size": str(slices),
        "enflame.com/gcu-assigned-index": index,
        "enflame.com/gcu-assigned-id": index,
    }
    for k, v in want.items():
        assert a.get(k) == v, violated(rid, f"{k} is {a.get(k)!r}, want {v!r}")
    assert a.get("enflame.com/gcu-assigned-minor"), violated(rid, "no enflame.com/gcu-assigned-minor")
    assert str(a.get("enflame.com/gcu-assigned-time", "")).isdigit(), violated(
        rid, f"enflame.com/gcu-assigned-time is {a.get('enflame.com/gcu-assigned-time')!r}"
    )
    try:
        assigned = json.loads(a.get("assigned-containers") or "")
    except ValueError:
        assigned = None
    entry = (assigned or {}).get("main") if isinstance(assigned, dict) else None
    assert isinstance(entry, dict) and entry.get("request") == slices and entry.get("profileName") == name_, (
        violated(
            rid, f"assigned-containers is {a.get('assigned-containers')!r}, want main: {slices} x {name_}"
        )
    )
    assert entry.get("allocated") is False, violated(rid, f"assigned-containers main is {entry}")


@pytest.mark.scheduling
@rule(
    "ENFLAME-DRS-SCHED-EXHAUST-1",
    "Instances take their profile's slices: two 3-slice instances fill a 6-slice card and a further "
    "instance on it is refused (CardTimeSlicingExhausted)",
)
def test_drs_slices_exhaust_a_card(workloads: Workloads, kube: Any) -> None:
    rid = "ENFLAME-DRS-SCHED-EXHAUST-1"
    cards = [c for c in _need_cards(kube) if c[2] == 6]
    if not cards:
        unknown("no DRS card has six slices")
    _profile(cards[0][3], 3)
    node, dev = cards[0][0], cards[0][1]
    pin = {USE_UUID: dev}
    for i in range(2):
        spec = ContainerSpec(name="main", args=HOLD, extra_limits={DRS: "3"})
        workloads.create(pod_manifest(f"drs-half{i}", [spec], annotations=pin))
    for i in range(2):
        pod = _bound(workloads, f"drs-half{i}")
        got = (pod["metadata"].get("annotations") or {}).get(ALLOCATED, "")
        assert got.startswith(f"{dev},"), violated(rid, f"drs-half{i} on {node} got {got!r}, pinned to {dev}")
    spec = ContainerSpec(name="main", args=QUICK, extra_limits={DRS: "1"})
    workloads.create(pod_manifest("drs-extra", [spec], annotations=pin))
    expect_filter_failure(workloads, "drs-extra", "CardTimeSlicingExhausted", rid)


# --- allocation ---------------------------------------------------------------------------------


@pytest.mark.allocation
@rule(
    "ENFLAME-DRS-ALLOC-1",
    "A container given a 3-slice instance sees exactly its card (ENFLAME_VISIBLE_DEVICES) as part of a "
    "card, with the profile's memory",
)
def test_drs_container_sees_its_card(workloads: Workloads, kube: Any) -> None:
    rid = "ENFLAME-DRS-ALLOC-1"
    cards = _need_cards(kube)
    _, _, gb, _ = _profile(cards[0][3], 3)
    spec = ContainerSpec(name="main", args=QUICK, extra_limits={DRS: "3"})
    name = workloads.create(pod_manifest("drs-see", [spec]))["metadata"]["name"]
    doc = workloads.probe(name)
    pod = workloads.get(name)
    got = (pod["metadata"].get("annotations") or {}).get(ALLOCATED, "")
    index = got.split(",")[0].rsplit("-", 1)[-1]
    seen = (doc.get("families") or {}).get("enflame")
    assert seen, violated(
        rid, f"the container names no Enflame device (probe families: {doc.get('families')})"
    )
    assert "error" not in seen, violated(rid, f"the container cannot read its devices: {seen['error']}")
    indexes = [str(d.get("index")) for d in seen.get("devices") or []]
    assert indexes == [index], violated(
        rid, f"the container sees cards {indexes} through {seen['env']}={seen['value']!r}, assigned {got!r}"
    )
    limits = seen.get("limits") or {}
    assert limits.get("ENFLAME_CONTAINER_SUB_CARD") == "true", violated(
        rid, f"ENFLAME_CONTAINER_SUB_CARD is {limits.get('ENFLAME_CONTAINER_SUB_CARD')!r}, want 'true'"
    )
    assert limits.get("ENFLAME_CONTAINER_USABLE_GLOBAL_MEM") == str(gb), violated(
        rid,
        f"ENFLAME_CONTAINER_USABLE_GLOBAL_MEM is {limits.get('ENFLAME_CONTAINER_USABLE_GLOBAL_MEM')!r}, "
        f"want {gb} (the profile's GB)",
    )


def parametrized_rules() -> dict[str, list[str]]:
    """Rule id -> node ids of this module's parametrized cases (the self-test runs a fault's cases)."""
    here = "conformance/suites/test_enflame_drs.py"
    return {rid: [f"{here}::test_drs_values_denied[{rid}]"] for rid, _, _ in DENIALS}
