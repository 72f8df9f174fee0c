"""Admission, registration and placement for the data-driven families (one parameter per family).

Each family is a :class:`Family` row: its resources, register and handshake keys, allocation
annotation and the memory of the models its nodes may carry. A case that needs registered devices
ends ``unknown`` on a cluster where no node registers the family, naming the annotation it looked
for; admission cases need only the webhook (the family must be enabled in the device config).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from conformance.cases import unknown, violated
from conformance.kube import ContainerSpec, Workloads, pod_manifest, poll
from conformance.suites.common import QUICK


@dataclass(frozen=True)
class Family:
    vendor: str
    cw: str
    count: str
    memory: str
    cores: str
    register: str
    handshake: str
    allocated: str
    type_prefix: str
    model_memory: dict[str, int]  # type after the prefix -> MiB the card has


FAMILIES = (
    Family(
        "hygon",
        "DCU",
        "hygon.com/dcunum",
        "hygon.com/dcumem",
        "hygon.com/dcucores",
        "hami.io/node-dcu-register",
        "hami.io/node-handshake-dcu",
        "hami.io/dcu-devices-allocated",
        "DCU-",
        {"Z100L": 32768, "Z100": 16384, "K100": 65536},
    ),
)


def _cases(rule_suffix: str, text: str) -> list[Any]:
    """One param per family, carrying the family's vendor marker and its rule."""
    return [
        pytest.param(
            f,
            id=f.vendor,
            marks=[
                getattr(pytest.mark, f.vendor),
                pytest.mark.rule(f"{f.cw}-{rule_suffix}", text.format(f=f)),
            ],
        )
        for f in FAMILIES
    ]


def _limits(f: Family, count: str, mem: int | None = None, cores: int | None = None) -> dict[str, str]:
    out = {f.count: count}
    if mem is not None:
        out[f.memory] = str(mem)
    if cores is not None:
        out[f.cores] = str(cores)
    return out


def _registered(kube: Any, f: Family) -> list[tuple[str, list[list[str]]]]:
    """(node, CSV device fields) for every node that registers the family."""
    out = []
    for n in kube.get("/api/v1/nodes").get("items") or []:
        value = (n["metadata"].get("annotations") or {}).get(f.register)
        if value:
            out.append((n["metadata"]["name"], [d.split(",") for d in value.split(":") if d]))
    return out


HANDSHAKE_WINDOW_S = 60  # the scheduler's: a Requesting_ older than this marks the node's devices gone
STALE_CERTAIN_S = 15 * 60  # the stamp is the scheduler's local time: only an age below a zone step counts


def _handshake_problem(value: str) -> str | None:
    """None for a live handshake: the plugin's ``Reported_<time>``, or the scheduler's ``Requesting_``
    question still inside its answer window (the plugin answers on its next pass); else what is wrong."""
    if value.startswith("Reported"):
        return None
    if not value.startswith("Requesting_"):
        return f"is {value!r} (neither Reported_ nor a pending Requesting_)"
    try:
        asked = datetime.strptime(value.split("_", 1)[1], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return f"is {value!r}: no parsable time"
    age = (datetime.now() - asked).total_seconds()
    if HANDSHAKE_WINDOW_S <= age < STALE_CERTAIN_S:
        return f"is {value!r}: unanswered for {age:.0f}s (window {HANDSHAKE_WINDOW_S}s)"
    return None


def bound(workloads: Workloads, name: str) -> dict[str, Any]:
    """Pod ``name`` once the scheduler bound it (60 s)."""
    return poll(
        f"{name} bound",
        lambda: workloads.get(name),
        lambda p: bool(p["spec"].get("nodeName")),
        60,
        describe=lambda p: f"phase {(p or {}).get('status', {}).get('phase')}",
    )


def check_goes_to_hami(
    rid: str, vendor: str, limits: dict[str, str], workloads: Workloads, cluster: Any
) -> None:
    """A pod asking ``limits`` is given the HAMi scheduler by the webhook."""
    pod = workloads.create(pod_manifest("fam-sched", [ContainerSpec(extra_limits=dict(limits))]))
    got = pod["spec"].get("schedulerName")
    assert got == cluster.scheduler_name, violated(
        rid, f"schedulerName {got!r}, want {cluster.scheduler_name!r} ({vendor} not enabled?)"
    )


def first_assigned(pod: dict[str, Any], key: str) -> str:
    """The first device ID of the allocation annotation (``<id>,<type>,<mem>,<cores>:...;``)."""
    value = (pod["metadata"].get("annotations") or {}).get(key, "")
    return value.split(";", 1)[0].split(":", 1)[0].split(",", 1)[0]


def check_container_sees(
    rid: str,
    vendor: str,
    spec: ContainerSpec,
    allocated: str,
    workloads: Workloads,
    *,
    by_index: bool,
    limit_env: tuple[tuple[str, str], ...] = (),
    limit_lines: tuple[str, ...] = (),
) -> None:
    """Run the probe in a pod of ``spec`` and check what its container sees of ``vendor``: exactly the
    device of ``allocated`` (by UUID, or by the index that ends the assigned ID), the vendor's limit
    variables (``limit_env``: name -> value, ``{index}`` and ``{core0}``/``{core1}``, the device's two
    NeuronCores, filled in) and the lines of its limit file (``limit_lines``)."""
    name = workloads.create(pod_manifest("fam-see", [spec]))["metadata"]["name"]
    doc = workloads.probe(name)
    assigned = first_assigned(workloads.get(name), allocated)
    assert assigned, violated(rid, f"no {allocated} annotation on pod {name}")
    seen = (doc.get("families") or {}).get(vendor)
    assert seen, violated(
        rid, f"the container names no {vendor} device (probe families: {doc.get('families')})"
    )
    assert "error" not in seen, violated(rid, f"the container cannot read its devices: {seen['error']}")
    got = [str(d["index"]) if by_index else str(d["uuid"]) for d in seen.get("devices") or []]
    index = assigned.rsplit("-", 1)[-1]
    want = index if by_index else assigned
    assert got == [want], violated(
        rid, f"the container sees {got} through {seen['env']}={seen['value']!r}, assigned {assigned}"
    )
    limits = seen.get("limits") or {}
    i = int(index) if index.isdigit() else 0
    for key, pattern in limit_env:
        value = pattern.format(index=index, core0=2 * i, core1=2 * i + 1)
        assert limits.get(key) == value, violated(
            rid, f"{key} is {limits.get(key)!r} in the container, want {value!r} (limits seen: {limits})"
        )
    for line in limit_lines:
        assert line in (seen.get("vdev") or []), violated(
            rid, f"limit file lines {seen.get('vdev')} lack {line!r}"
        )


@pytest.mark.admission
@pytest.mark.parametrize("f", _cases("ADM-SCHED-1", "A pod asking {f.count} is given the HAMi scheduler"))
def test_family_pod_goes_to_hami(f: Family, workloads: Workloads, cluster: Any) -> None:
    check_goes_to_hami(f"{f.cw}-ADM-SCHED-1", f.vendor, _limits(f, "1"), workloads, cluster)


@pytest.mark.admission
@pytest.mark.parametrize("f", _cases("ADM-1", "{f.count}: 0 is denied naming the resource and container"))
def test_family_zero_count_denied(f: Family, workloads: Workloads) -> None:
    spec = ContainerSpec(name="work", extra_limits=_limits(f, "0"))
    _, err = workloads.try_create(pod_manifest("fam-zero", [spec]))
    assert err is not None, violated(f"{f.cw}-ADM-1", f"{f.count}: 0 was admitted")
    assert f.count in str(err) and "work" in str(err), violated(f"{f.cw}-ADM-1", f"denied with {str(err)!r}")


@pytest.mark.registration
@pytest.mark.parametrize(
    "f", _cases("REG-1", "{f.register} lists each device with its card's memory, 100 cores and a handshake")
)
def test_family_registration(f: Family, kube: Any) -> None:
    nodes = _registered(kube, f)
    if not nodes:
        unknown(f"no node registers {f.register} (the cluster has no {f.vendor} devices)")
    rid = f"{f.cw}-REG-1"
    for node, devices in nodes:
        annotations = kube.get(f"/api/v1/nodes/{node}")["metadata"].get("annotations") or {}
        problem = _handshake_problem(annotations.get(f.handshake, ""))
        assert problem is None, violated(rid, f"{node}: {f.handshake} {problem}")
        for fields in devices:
            assert len(fields) in (7, 9), violated(
                rid, f"{node}: device entry {fields} has {len(fields)} fields"
            )
            model = fields[4].removeprefix(f.type_prefix)
            want = f.model_memory.get(model)
            assert want is not None, violated(rid, f"{node}: type {fields[4]!r} names no known model")
            assert int(fields[2]) == want, violated(
                rid, f"{node}: {fields[0]} devmem {fields[2]}, the card has {want}"
            )
            assert fields[3] == "100", violated(rid, f"{node}: {fields[0]} devcore {fields[3]}")


@pytest.mark.scheduling
@pytest.mark.parametrize(
    "f", _cases("SCHED-FIT-1", "A pod asking part of one device is bound to a node registering it")
)
def test_family_pod_placed(f: Family, workloads: Workloads, kube: Any) -> None:
    nodes = _registered(kube, f)
    if not nodes:
        unknown(f"no node registers {f.register} (the cluster has no {f.vendor} devices)")
    rid = f"{f.cw}-SCHED-FIT-1"
    spec = ContainerSpec(args=QUICK, extra_limits=_limits(f, "1", 1024, 10))
    pod = bound(workloads, workloads.create(pod_manifest("fam-fit", [spec]))["metadata"]["name"])
    assert pod["spec"]["nodeName"] in {n for n, _ in nodes}, violated(
        rid, f"bound to {pod['spec']['nodeName']}"
    )
    got = (pod["metadata"].get("annotations") or {}).get(f.allocated, "")
    assert ",1024," in got, violated(rid, f"{f.allocated} is {got!r}, want one device with 1024 MiB")


# --- capacity-derived families: the scheduler synthesises cards from what the plugin advertises ---


@dataclass(frozen=True)
class CapacityFamily:
    vendor: str
    cw: str
    count: str
    cores: str  # 100 per card
    memory: str  # in units of memory_unit MiB
    memory_unit: int
    model_memory: tuple[int, ...]  # MiB of the cards a node may carry


CAPACITY_FAMILIES = (
    CapacityFamily(
        "cambricon",
        "MLU",
        "cambricon.com/vmlu",
        "cambricon.com/mlu.smlu.vcore",
        "cambricon.com/mlu.smlu.vmemory",
        256,
        (24576, 49152),
    ),
)


@pytest.mark.registration
@pytest.mark.parametrize(
    "f",
    [
        pytest.param(
            f,
            id=f.vendor,
            marks=[
                getattr(pytest.mark, f.vendor),
                pytest.mark.rule(
                    f"{f.cw}-REG-1",
                    f"{f.cores} is 100 per card and {f.memory} a whole card's memory per card",
                ),
            ],
        )
        for f in CAPACITY_FAMILIES
    ],
)
def test_capacity_family_registration(f: CapacityFamily, kube: Any) -> None:
    rid = f"{f.cw}-REG-1"
    seen = 0
    for n in kube.get("/api/v1/nodes").get("items") or []:
        cap = (n.get("status") or {}).get("capacity") or {}
        if int(cap.get(f.cores, "0") or 0) <= 0:
            continue
        seen += 1
        cores, memory = int(cap[f.cores]), int(cap.get(f.memory, "0"))
        name = n["metadata"]["name"]
        assert cores % 100 == 0, violated(rid, f"{name}: {f.cores} {cores} is not 100 per card")
        per_card = memory * f.memory_unit * 100 // cores
        assert per_card in f.model_memory, violated(
            rid, f"{name}: {f.memory} {memory} gives {per_card} MiB per card, no card has that"
        )
    if not seen:
        unknown(f"no node advertises {f.cores} (the cluster has no {f.vendor} devices)")


# --- every family: admission and what a placed container sees ---------------------------------------


@dataclass(frozen=True)
class Placement:
    """One device, part of it, for a family: what to ask and how to read what was given."""

    vendor: str
    cw: str
    count: str
    limits: dict[str, str]  # one device, 1024 MiB, 10 % of its cores (in the family's units)
    allocated: str  # the pod annotation listing the assigned devices
    by_index: bool  # the container names devices by index (MLU: card i of <node>-cambricon-mlu-<i>)
    limit_lines: tuple[str, ...] = ()  # lines of the vendor's per-container limit file (DCU vdev)
    pod_annotations: tuple[tuple[str, str], ...] = ()  # (key, expected value pattern with {index})


PLACEMENTS = (
    Placement(
        "hygon",
        "DCU",
        "hygon.com/dcunum",
        {"hygon.com/dcunum": "1", "hygon.com/dcumem": "1024", "hygon.com/dcucores": "10"},
        "hami.io/dcu-devices-allocated",
        by_index=False,
        limit_lines=("mem: 1024 MiB",),
    ),
    Placement(
        "cambricon",
        "MLU",
        "cambricon.com/vmlu",
        # vmemory is in units of 256 MiB: 4 = 1024 MiB
        {
            "cambricon.com/vmlu": "1",
            "cambricon.com/mlu.smlu.vmemory": "4",
            "cambricon.com/mlu.smlu.vcore": "10",
        },
        "hami.io/cambricon-mlu-devices-allocated",
        by_index=True,
        pod_annotations=(("CAMBRICON_DSMLU_PROFILE", "{index}_10_4"), ("CAMBRICON_DSMLU_ASSIGHED", "false")),
    ),
)


def _placement_cases(rule_suffix: str, text: str, only: tuple[str, ...] = ()) -> list[Any]:
    return [
        pytest.param(
            p,
            id=p.vendor,
            marks=[
                getattr(pytest.mark, p.vendor),
                pytest.mark.rule(f"{p.cw}-{rule_suffix}", text.format(p=p)),
            ],
        )
        for p in PLACEMENTS
        if not only or p.vendor in only
    ]


def _device_nodes(kube: Any, count: str) -> list[str]:
    """Nodes whose capacity has some of ``count`` (what the family's plugin advertised)."""
    out = []
    for n in kube.get("/api/v1/nodes").get("items") or []:
        qty = str(((n.get("status") or {}).get("capacity") or {}).get(count, "0"))
        if qty.isdigit() and int(qty) > 0:
            out.append(n["metadata"]["name"])
    return out


@pytest.mark.admission
@pytest.mark.parametrize(
    "p",
    _placement_cases(
        "ADM-SCHED-1", "A pod asking {p.count} is given the HAMi scheduler", only=("cambricon",)
    ),
)
def test_capacity_family_pod_goes_to_hami(p: Placement, workloads: Workloads, cluster: Any) -> None:
    check_goes_to_hami(f"{p.cw}-ADM-SCHED-1", p.vendor, {p.count: "1"}, workloads, cluster)


@pytest.mark.scheduling
@pytest.mark.parametrize(
    "p",
    _placement_cases(
        "SCHED-FIT-1",
        "A pod asking part of one {p.count} is bound to a node with the family's devices and annotated",
        only=("cambricon",),
    ),
)
def test_capacity_family_pod_placed(p: Placement, workloads: Workloads, kube: Any) -> None:
    nodes = _device_nodes(kube, p.count)
    if not nodes:
        unknown(f"no node advertises {p.count} (the cluster has no {p.vendor} devices)")
    rid = f"{p.cw}-SCHED-FIT-1"
    spec = ContainerSpec(args=QUICK, extra_limits=p.limits)
    pod = bound(workloads, workloads.create(pod_manifest("fam-fit", [spec]))["metadata"]["name"])
    assert pod["spec"]["nodeName"] in nodes, violated(
        rid, f"bound to {pod['spec']['nodeName']}, not one of {nodes}"
    )
    assigned = first_assigned(pod, p.allocated)
    assert assigned, violated(rid, f"no {p.allocated} annotation on the bound pod")
    index = assigned.rsplit("-", 1)[-1]
    annotations = pod["metadata"].get("annotations") or {}
    for key, pattern in p.pod_annotations:
        want = pattern.format(index=index)
        assert annotations.get(key) == want, violated(
            rid, f"{key} is {annotations.get(key)!r}, want {want!r}"
        )


@pytest.mark.allocation
@pytest.mark.parametrize(
    "p",
    _placement_cases(
        "ALLOC-1",
        "A container given part of one {p.count} sees exactly its assigned device (and its limits)",
    ),
)
def test_family_container_sees_its_device(p: Placement, workloads: Workloads, kube: Any) -> None:
    if not _device_nodes(kube, p.count):
        unknown(f"no node advertises {p.count} (the cluster has no {p.vendor} devices)")
    check_container_sees(
        f"{p.cw}-ALLOC-1",
        p.vendor,
        ContainerSpec(args=QUICK, extra_limits=p.limits),
        p.allocated,
        workloads,
        by_index=p.by_index,
        limit_lines=p.limit_lines,
    )
