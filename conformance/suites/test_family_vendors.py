"""Admission, registration and placement for the families beyond Hygon and Cambricon, from one table.

Each :class:`Vendor` row says what HAMi's backend for that family does: the resource that claims a
pod, the values it refuses (with the text of its message), the values it rewrites, how nodes
register (an annotation with a handshake, or capacity the vendor's plugin advertises) and what a
pod asking part of one device is given. Cases that need registered devices end ``unknown`` on a
cluster where no node has the family, naming what they looked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.cases import unknown, violated
from conformance.kube import ContainerSpec, Workloads, pod_manifest, poll
from conformance.suites.common import QUICK

# the case bodies every family shares (handshake rule, binding, routing, the container's view)
from conformance.suites.test_family_cases import (
    _handshake_problem,
    bound,
    check_container_sees,
    check_goes_to_hami,
)


@dataclass(frozen=True)
class Denial:
    suffix: str  # rule id suffix (ADM-1, ADM-2, ...)
    limits: dict[str, str]
    text: str  # what the message must contain (upstream's words)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rewrite:
    limits: dict[str, str]  # asked
    want_limits: dict[str, str]  # what the stored pod's limits must hold
    want_annotations: dict[str, str] = field(default_factory=dict)
    what: str = ""


@dataclass(frozen=True)
class Capacity:
    cores: str  # capacity resource, cores_per_card per card
    cores_per_card: int
    memory: str  # capacity resource in units of memory_unit MiB
    memory_unit: int


@dataclass(frozen=True)
class Vendor:
    vendor: str
    rule: str  # rule id prefix
    count: str
    fit_limits: dict[str, str]  # part of one device
    fit_allocated: str  # the allocated annotation /filter writes
    fit_expect: str  # what that annotation holds for the fit pod (",<MiB>,<cores>:")
    model_memory: dict[str, int]  # register type (or card) -> MiB
    register: str = ""  # register annotation ("" = capacity-derived)
    handshake: str = ""
    register_format: str = "csv"  # csv | metax (MetaX's own JSON list)
    admission_only: bool = False  # no emulated plugin for it: admission cases only
    link_zones: bool = False  # whole devices of one request share a MetaLink zone (MetaX sGPU)
    exclusive: bool = False  # a device is never given to two pods (Enflame GCU)
    devcore: int = 100  # the registered devcore of every device (AMD: the card's compute units)
    capacity: Capacity | None = None
    denials: tuple[Denial, ...] = ()
    rewrites: tuple[Rewrite, ...] = ()
    # what the fit pod's container sees (ALLOC-1): the visibility variable names devices by index
    # (the number ending the assigned ID) rather than by UUID; the vendor's limit variables and
    # their values for the fit pod (``{index}``, ``{core0}``/``{core1}`` filled in)
    alloc_by_index: bool = False
    alloc_env: tuple[tuple[str, str], ...] = ()
    alloc_limits: dict[str, str] | None = None  # what that pod asks, when not fit_limits (runs to its end)


ILU = "BI-V150"
VENDORS: tuple[Vendor, ...] = (
    Vendor(
        "iluvatar",
        "ILUVATAR",
        f"iluvatar.ai/{ILU}-vgpu",
        {f"iluvatar.ai/{ILU}-vgpu": "1", f"iluvatar.ai/{ILU}.vMem": "4", f"iluvatar.ai/{ILU}.vCore": "10"},
        f"hami.io/{ILU}-devices-allocated",
        ",1024,10:",
        {"BI-V150": 65536},
        register=f"hami.io/node-{ILU}-register",
        handshake=f"hami.io/node-handshake-{ILU}",
        # the CUDA-compatible runtime takes HAMi-core's limits: 4 x 256 MiB and 10 % of the cores
        alloc_env=(("CUDA_DEVICE_MEMORY_LIMIT_0", "1024m"), ("CUDA_DEVICE_SM_LIMIT", "10")),
        rewrites=(
            Rewrite(
                {f"iluvatar.ai/{ILU}-vgpu": "2"},
                {f"iluvatar.ai/{ILU}.vCore": "200"},
                what="two devices are two whole cards (vCore = count x 100)",
            ),
        ),
    ),
    Vendor(
        "mthreads",
        "MTHREADS",
        "mthreads.com/vgpu",
        {"mthreads.com/vgpu": "1", "mthreads.com/sgpu-memory": "2", "mthreads.com/sgpu-core": "1"},
        "hami.io/mthreads-vgpu-devices-allocated",
        ",1024,1:",
        {"MTT-S4000": 49152},
        capacity=Capacity("mthreads.com/sgpu-core", 16, "mthreads.com/sgpu-memory", 512),
        alloc_by_index=True,
        alloc_env=(("MTHREADS_SGPU_MEMORY_MIB", "1024"), ("MTHREADS_SGPU_CORES", "1")),
        denials=(
            Denial("ADM-1", {"mthreads.com/vgpu": "0"}, "mthreads.com/vgpu must be greater than 0"),
            Denial(
                "ADM-2",
                {"mthreads.com/vgpu": "1", "mthreads.com/sgpu-memory": "3"},
                "sGPU memory request value is invalid, valid values are [2, 4, 8, 16, 32, 64, 96]",
            ),
        ),
        rewrites=(
            Rewrite(
                {"mthreads.com/vgpu": "2"},
                {"mthreads.com/sgpu-core": "32", "mthreads.com/sgpu-memory": "192"},
                {"mthreads.com/request-gpu-num": "2"},
                "two GPUs are two whole GPUs (16 cores, 96 memory units each)",
            ),
        ),
    ),
)


METAX_QOS = "metax-tech.com/sgpu-qos-policy"
VENDORS += (
    Vendor(
        "metax",
        "METAX",
        "metax-tech.com/sgpu",
        {"metax-tech.com/sgpu": "1", "metax-tech.com/vcore": "10", "metax-tech.com/vmemory": "1024Mi"},
        "hami.io/metax-sgpu-devices-allocated",
        ",1024,10:",
        {"C500": 65536},
        register="metax-tech.com/node-gpu-devices",
        register_format="metax",
        link_zones=True,
        alloc_env=(("METAX_SGPU_VRAM_MIB", "1024"), ("METAX_SGPU_COMPUTE", "10")),
        # a byte quantity, as upstream's example asks (allocate_vmemory_MiB): the sGPU plugin does not
        # advertise vmemory to the kubelet, so HAMi's node data alone bounds it
        alloc_limits={
            "metax-tech.com/sgpu": "1",
            "metax-tech.com/vcore": "10",
            "metax-tech.com/vmemory": "1024Mi",
        },
        denials=(
            Denial(
                "ADM-1",
                {"metax-tech.com/sgpu": "1"},
                f"{METAX_QOS} must be set one of [best-effort, fixed-share, burst-share]",
                {METAX_QOS: "gold"},
            ),
            Denial(
                "ADM-2",
                {"metax-tech.com/sgpu": "1"},
                "metax-tech.com/sgpu-app-class must be set one of [online, offline]",
                {"metax-tech.com/sgpu-app-class": "batch"},
            ),
        ),
        rewrites=(
            Rewrite(
                {"metax-tech.com/sgpu": "1"},
                {},
                {METAX_QOS: "best-effort"},
                "a pod without a QoS policy gets best-effort",
            ),
        ),
    ),
    Vendor(
        "metax",
        "METAX-GPU",
        "metax-tech.com/gpu",
        {"metax-tech.com/gpu": "1"},
        "hami.io/metax-gpu-devices-allocated",
        ",65536,100:",
        {"C500": 65536},
        capacity=Capacity("metax-tech.com/gpu", 1, "", 0),
        admission_only=True,
    ),
)

VXPU_MEM = "kunlunxin.com/vxpu-memory"
VENDORS += (
    Vendor(
        "kunlunxin",
        "KUNLUNXIN",
        "kunlunxin.com/vxpu",
        # 1024 MiB asked: the webhook rounds it to the smallest partition (25 % of the card)
        {"kunlunxin.com/vxpu": "1", VXPU_MEM: "1024"},
        "hami.io/xpu-devices-allocated",
        ",24576,25:",
        {"XPU-P800": 98304},
        register="hami.io/node-register-xpu",
        handshake="hami.io/node-handshake-xpu",
        register_format="json",
        alloc_env=(("XPU_VMEMORY_MIB", "24576"),),  # the partition, not the 1024 MiB asked
        rewrites=(
            Rewrite(
                {"kunlunxin.com/vxpu": "1", VXPU_MEM: "30000"},
                {VXPU_MEM: "49152"},
                what="vXPU memory is rounded up to a partition (24576, 49152 or 98304 MiB)",
            ),
        ),
    ),
    Vendor(
        "kunlunxin",
        "KUNLUNXIN-WHOLE",
        "kunlunxin.com/xpu",
        {"kunlunxin.com/xpu": "1"},
        "hami.io/kunlun-allocated",
        ",98304,100:",
        {"P800": 98304},
        capacity=Capacity("kunlunxin.com/xpu", 1, "", 0),
        admission_only=True,
    ),
)

VENDORS += (
    Vendor(
        "vastai",
        "VASTAI",
        "vastaitech.com/va",
        {"vastaitech.com/va": "1"},
        "hami.io/Vastai-devices-allocated",
        ",16384,0:",  # the whole card's memory, no cores
        {"Vastai-VA1": 16384},
        register="hami.io/node-va-register",
        handshake="hami.io/node-handshake-va",
        register_format="json",
    ),
    Vendor(
        "biren",
        "BIREN",
        "birentech.com/gpu",
        {"birentech.com/gpu": "1"},
        "hami.io/Biren-devices-allocated",
        ",0,0:",  # Biren's assignments carry neither memory nor cores
        {"Biren-BR104": 32768},
        register="hami.io/node-biren-register",
        handshake="hami.io/node-handshake-biren",
        register_format="json",
    ),
)

VENDORS += (
    Vendor(
        "enflame",
        "ENFLAME-GCU",
        "enflame.com/gcu",
        {"enflame.com/gcu": "1"},
        "hami.io/enflame-gcu-devices-allocated",
        ",100,100:",  # whole GCUs count in percent: 100 of the card's 100
        {"S60": 100},
        capacity=Capacity("enflame.com/gcu", 1, "", 0),
        exclusive=True,
        alloc_by_index=True,  # whole GCUs: no limit variable
    ),
)

VENDORS += (
    Vendor(
        "awsneuron",
        "AWSNEURON",
        "aws.amazon.com/neuron",
        {"aws.amazon.com/neuron": "1"},
        "hami.io/aws-neuron-devices-allocated",
        ",0,3:",  # a whole two-core device: no memory, core mask 0b11
        {"Trainium": 0},
        capacity=Capacity("aws.amazon.com/neuron", 1, "", 0),
        alloc_by_index=True,
        alloc_env=(("NEURON_RT_VISIBLE_CORES", "{core0},{core1}"),),  # both cores of the device
    ),
    Vendor(
        "awsneuron",
        "AWSNEURON-CORE",
        "aws.amazon.com/neuroncore",
        {"aws.amazon.com/neuroncore": "1"},
        "hami.io/aws-neuron-devices-allocated",
        ",0,1:",
        {"Trainium": 0},
        capacity=Capacity("aws.amazon.com/neuroncore", 1, "", 0),
        admission_only=True,
    ),
)

VENDORS += (
    Vendor(
        "amd",
        "AMD",
        "amd.com/gpu",
        {"amd.com/gpu": "1", "amd.com/gpumem": "1024", "amd.com/gpucores": "10"},
        "hami.io/amd-devices-allocated",
        ",1024,30:",  # 10 % of the MI300X's 304 compute units
        {"AMD-MI300X": 196608},
        register="hami.io/node-amd-register",
        register_format="json",
        devcore=304,
        alloc_env=(("AMD_GPU_MEMORY_LIMIT_MIB", "1024"), ("AMD_GPU_COMPUTE_UNITS", "30")),
        denials=(
            Denial(
                "ADM-1",
                {"amd.com/gpu": "1", "amd.com/gpucores": "150"},
                "amd.com/gpucores must be an integer percentage between 1 and 100",
            ),
        ),
    ),
)


def _param(v: Vendor, rule_id: str, text: str, value: Any = None) -> Any:
    return pytest.param(
        v if value is None else (v, value),
        id=f"{v.vendor}-{rule_id}",
        marks=[getattr(pytest.mark, v.vendor), pytest.mark.rule(rule_id, text)],
    )


def _nodes_with(kube: Any, v: Vendor) -> list[dict[str, Any]]:
    out = []
    for n in kube.get("/api/v1/nodes").get("items") or []:
        if v.capacity is not None:
            if int(((n.get("status") or {}).get("capacity") or {}).get(v.capacity.cores, "0") or 0) > 0:
                out.append(n)
        elif (n["metadata"].get("annotations") or {}).get(v.register):
            out.append(n)
    return out


def _where(v: Vendor) -> str:
    return f"{v.capacity.cores} capacity" if v.capacity else v.register


@pytest.mark.admission
@pytest.mark.parametrize(
    "v",
    [
        _param(v, f"{v.rule}-ADM-SCHED-1", f"A pod asking {v.count} is given the HAMi scheduler")
        for v in VENDORS
    ],
)
def test_vendor_pod_goes_to_hami(v: Vendor, workloads: Workloads, cluster: Any) -> None:
    check_goes_to_hami(f"{v.rule}-ADM-SCHED-1", v.vendor, v.fit_limits, workloads, cluster)


@pytest.mark.admission
@pytest.mark.parametrize(
    "case",
    [
        _param(v, f"{v.rule}-{d.suffix}", f"{d.limits} is denied: {d.text}", d)
        for v in VENDORS
        for d in v.denials
    ],
)
def test_vendor_values_denied(case: tuple[Vendor, Denial], workloads: Workloads) -> None:
    v, d = case
    rid = f"{v.rule}-{d.suffix}"
    spec = ContainerSpec(name="work", extra_limits=dict(d.limits))
    _, err = workloads.try_create(pod_manifest("fam-deny", [spec], annotations=dict(d.annotations) or None))
    assert err is not None, violated(rid, f"{d.limits} was admitted")
    assert d.text in str(err), violated(rid, f"denied with {str(err)!r}, want it to say {d.text!r}")


@pytest.mark.admission
@pytest.mark.parametrize(
    "case",
    [
        _param(v, f"{v.rule}-ADM-REWRITE-1", f"The webhook rewrites: {r.what}", r)
        for v in VENDORS
        for r in v.rewrites
    ],
)
def test_vendor_values_rewritten(case: tuple[Vendor, Rewrite], workloads: Workloads) -> None:
    v, r = case
    rid = f"{v.rule}-ADM-REWRITE-1"
    out = workloads.create(pod_manifest("fam-rewrite", [ContainerSpec(extra_limits=dict(r.limits))]))
    limits = out["spec"]["containers"][0].get("resources", {}).get("limits") or {}
    for k, want in r.want_limits.items():
        assert str(limits.get(k)) == want, violated(
            rid, f"limit {k} is {limits.get(k)!r}, want {want} ({r.what})"
        )
    annotations = out["metadata"].get("annotations") or {}
    for k, want in r.want_annotations.items():
        assert annotations.get(k) == want, violated(
            rid, f"annotation {k} is {annotations.get(k)!r}, want {want}"
        )


@pytest.mark.registration
@pytest.mark.parametrize(
    "v",
    [
        _param(
            v,
            f"{v.rule}-REG-1",
            f"Nodes register each {v.vendor} device with its card's memory ({_where(v)})",
        )
        for v in VENDORS
        if not v.admission_only
    ],
)
def test_vendor_registration(v: Vendor, kube: Any) -> None:
    rid = f"{v.rule}-REG-1"
    nodes = _nodes_with(kube, v)
    if not nodes:
        unknown(f"no node has {_where(v)} (the cluster has no {v.vendor} devices)")
    for n in nodes:
        name = n["metadata"]["name"]
        if v.capacity is not None:
            cap = n["status"]["capacity"]
            cores, memory = int(cap[v.capacity.cores]), int(cap.get(v.capacity.memory, "0"))
            if not v.capacity.memory:  # count only: the cards the plugin advertises
                count = int(cap[v.capacity.cores])
                assert count > 0, violated(rid, f"{name}: {v.capacity.cores} is {count}")
                continue
            per = v.capacity.cores_per_card
            assert cores % per == 0, violated(
                rid, f"{name}: {v.capacity.cores} {cores} is not {per} per card"
            )
            card = memory * v.capacity.memory_unit * per // cores
            assert card in v.model_memory.values(), violated(
                rid, f"{name}: {v.capacity.memory} {memory} gives {card} MiB per card, no card has that"
            )
            continue
        annotations = n["metadata"].get("annotations") or {}
        problem = _handshake_problem(annotations.get(v.handshake, "")) if v.handshake else None
        assert problem is None, violated(rid, f"{name}: {v.handshake} {problem}")
        if v.register_format == "metax":
            _check_metax_devices(rid, name, v, annotations[v.register])
            continue
        if v.register_format == "json":
            _check_json_devices(rid, name, v, annotations[v.register])
            continue
        for entry in [d.split(",") for d in annotations[v.register].split(":") if d]:
            assert len(entry) in (7, 9), violated(
                rid, f"{name}: device entry {entry} has {len(entry)} fields"
            )
            want = v.model_memory.get(entry[4])
            assert want is not None, violated(rid, f"{name}: type {entry[4]!r} names no known model")
            assert int(entry[2]) == want, violated(
                rid, f"{name}: {entry[0]} devmem {entry[2]}, the card has {want}"
            )


def _device_list(rid: str, node: str, v: Vendor, value: str) -> list[dict[str, Any]]:
    """The register annotation's JSON list of devices (a violation when it is not one)."""
    try:
        devices = json.loads(value)
    except ValueError as e:
        raise AssertionError(violated(rid, f"{node}: {v.register} is not JSON: {e}")) from None
    assert isinstance(devices, list) and devices, violated(rid, f"{node}: {v.register} lists no device")
    assert all(isinstance(d, dict) for d in devices), violated(rid, f"{node}: {v.register} has a non-object")
    return devices


def _check_metax_devices(rid: str, node: str, v: Vendor, value: str) -> None:
    for d in _device_list(rid, node, v, value):
        uuid, vram, compute = d.get("uuid"), d.get("totalVRam"), d.get("totalCompute")
        want = v.model_memory.get(str(d.get("model")))
        assert want is not None, violated(rid, f"{node}: model {d.get('model')!r} names no known card")
        assert vram == want, violated(rid, f"{node}: {uuid} totalVRam {vram}, the card has {want}")
        assert compute == 100, violated(rid, f"{node}: {uuid} totalCompute {compute}")


def _check_json_devices(rid: str, node: str, v: Vendor, value: str) -> None:
    for d in _device_list(rid, node, v, value):
        want = v.model_memory.get(str(d.get("type")))
        assert want is not None, violated(rid, f"{node}: type {d.get('type')!r} names no known model")
        assert d.get("devmem") == want, violated(
            rid, f"{node}: {d.get('id')} devmem {d.get('devmem')}, the card has {want}"
        )
        assert d.get("devcore") == v.devcore, violated(
            rid, f"{node}: {d.get('id')} devcore {d.get('devcore')}, want {v.devcore}"
        )


def _zones(kube: Any, v: Vendor) -> dict[str, dict[str, int]]:
    """node -> device uuid -> MetaLink zone, from the vendor's node JSON."""
    out = {}
    for n in _nodes_with(kube, v):
        devices = json.loads((n["metadata"].get("annotations") or {})[v.register])
        out[n["metadata"]["name"]] = {d["uuid"]: int(d.get("linkZone") or 0) for d in devices}
    return out


EXCL_HOLD = ["--alloc-mib", "0", "--kernel-seconds", "0", "--hold-seconds", "90"]


@pytest.mark.scheduling
@pytest.mark.parametrize(
    "v",
    [
        _param(v, f"{v.rule}-SCHED-EXCL-1", "A device one pod holds is never given to a second pod")
        for v in VENDORS
        if v.exclusive
    ],
)
def test_vendor_device_not_shared(v: Vendor, workloads: Workloads, kube: Any) -> None:
    rid = f"{v.rule}-SCHED-EXCL-1"
    assert v.capacity is not None
    per_node = {
        n["metadata"]["name"]: int(n["status"]["capacity"][v.capacity.cores]) for n in _nodes_with(kube, v)
    }
    if not per_node:
        unknown(f"no node has {_where(v)} (the cluster has no {v.vendor} devices)")
    most = max(per_node.values())
    # the first pod takes every card of the largest node; the second asks as many again
    first = ContainerSpec(args=EXCL_HOLD, extra_limits={v.count: str(most)})
    a = bound(workloads, workloads.create(pod_manifest("fam-excl-a", [first]))["metadata"]["name"])
    held = {
        d.split(",")[0]
        for d in (a["metadata"].get("annotations") or {}).get(v.fit_allocated, "").split(":")
        if "," in d
    }
    assert len(held) == most, violated(rid, f"the first pod holds {sorted(held)}, asked {most}")
    second = ContainerSpec(args=EXCL_HOLD, extra_limits={v.count: str(most)})
    name = workloads.create(pod_manifest("fam-excl-b", [second]))["metadata"]["name"]

    def outcome() -> tuple[dict[str, Any], bool]:
        failed = any(e.get("reason") == "FilteringFailed" for e in workloads.events(name))
        return workloads.get(name), failed

    pod, _ = poll(
        f"{name} bound or refused",
        outcome,
        lambda o: bool(o[0]["spec"].get("nodeName")) or o[1],
        60,
        describe=lambda o: f"phase {((o or ({}, False))[0].get('status') or {}).get('phase')}",
    )
    got = (pod["metadata"].get("annotations") or {}).get(v.fit_allocated, "")
    shared = held & {d.split(",")[0] for d in got.split(":") if "," in d}
    assert not shared, violated(rid, f"{sorted(shared)} given to {name} while the first pod holds them")


@pytest.mark.scheduling
@pytest.mark.parametrize(
    "v",
    [
        _param(v, f"{v.rule}-SCHED-TOPO-1", "Two whole devices of one pod share a MetaLink zone")
        for v in VENDORS
        if v.link_zones
    ],
)
def test_vendor_whole_devices_share_a_link_zone(v: Vendor, workloads: Workloads, kube: Any) -> None:
    rid = f"{v.rule}-SCHED-TOPO-1"
    zones = _zones(kube, v)
    linked = [
        node
        for node, zs in zones.items()
        if any(z and list(zs.values()).count(z) >= 2 for z in set(zs.values()))
    ]
    if not linked:
        unknown(f"no node lists two devices of one link zone in {v.register}")
    spec = ContainerSpec(args=QUICK, extra_limits={v.count: "2"})
    pod = bound(workloads, workloads.create(pod_manifest("fam-topo", [spec]))["metadata"]["name"])
    got = (pod["metadata"].get("annotations") or {}).get(v.fit_allocated, "")
    uuids = [d.split(",")[0] for d in got.split(";")[0].split(":") if d]
    assert len(uuids) == 2, violated(rid, f"{v.fit_allocated} is {got!r}, want two devices")
    node = pod["spec"]["nodeName"]
    picked = {zones.get(node, {}).get(u, 0) for u in uuids}
    assert len(picked) == 1 and 0 not in picked, violated(
        rid, f"devices {uuids} on {node} are in link zones {sorted(picked)}, want one zone"
    )


@pytest.mark.scheduling
@pytest.mark.parametrize(
    "v",
    [
        _param(
            v,
            f"{v.rule}-SCHED-FIT-1",
            f"A pod asking part of one {v.vendor} device is bound with its assignment",
        )
        for v in VENDORS
        if not v.admission_only
    ],
)
def test_vendor_pod_placed(v: Vendor, workloads: Workloads, kube: Any) -> None:
    rid = f"{v.rule}-SCHED-FIT-1"
    nodes = {n["metadata"]["name"] for n in _nodes_with(kube, v)}
    if not nodes:
        unknown(f"no node has {_where(v)} (the cluster has no {v.vendor} devices)")
    spec = ContainerSpec(args=QUICK, extra_limits=dict(v.fit_limits))
    pod = bound(workloads, workloads.create(pod_manifest("fam-fit", [spec]))["metadata"]["name"])
    assert pod["spec"]["nodeName"] in nodes, violated(rid, f"bound to {pod['spec']['nodeName']}")
    got = (pod["metadata"].get("annotations") or {}).get(v.fit_allocated, "")
    assert v.fit_expect in got, violated(
        rid, f"{v.fit_allocated} is {got!r}, want one device with {v.fit_expect!r}"
    )


@pytest.mark.allocation
@pytest.mark.parametrize(
    "v",
    [
        _param(
            v,
            f"{v.rule}-ALLOC-1",
            f"A container given part of one {v.vendor} device sees exactly that device"
            + (f" and its limits ({', '.join(k for k, _ in v.alloc_env)})" if v.alloc_env else ""),
        )
        for v in VENDORS
        if not v.admission_only
    ],
)
def test_vendor_container_sees_its_device(v: Vendor, workloads: Workloads, kube: Any) -> None:
    if not _nodes_with(kube, v):
        unknown(f"no node has {_where(v)} (the cluster has no {v.vendor} devices)")
    check_container_sees(
        f"{v.rule}-ALLOC-1",
        v.vendor,
        ContainerSpec(args=QUICK, extra_limits=dict(v.alloc_limits or v.fit_limits)),
        v.fit_allocated,
        workloads,
        by_index=v.alloc_by_index,
        limit_env=v.alloc_env,
    )


def parametrized_rules() -> dict[str, list[str]]:
    """Rule id -> node ids of this module's cases (the self-test runs a fault's cases by these)."""
    here = "conformance/suites/test_family_vendors.py"
    out: dict[str, list[str]] = {}
    for name, fn in sorted(globals().items()):
        if not name.startswith("test_"):
            continue
        for mark in getattr(fn, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            for param in mark.args[1]:
                for m in param.marks:
                    if m.name == "rule":
                        out.setdefault(m.args[0], []).append(f"{here}::{name}[{param.id}]")
    return out
