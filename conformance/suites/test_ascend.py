"""Huawei Ascend (marker ``ascend``): registration, admission, scheduling, allocation, isolation and
hami-core enforcement.

The contract is HAMi's for Ascend (one family per chip common word ``<CW>``): register annotation
``hami.io/node-register-<CW>`` (JSON, ``custominfo.NetworkID`` on 910 chips), handshake
``hami.io/node-handshake-<CW>: Reported_<2006.01.02 15:04:05>``, node annotation ``hami-vnpu-core``;
webhook template rounding and 910C module rules; pod annotations ``hami.io/<CW>-devices-allocated``,
``huawei.com/<CW>`` and ``predicate-time``; Allocate env ``ASCEND_VISIBLE_DEVICES`` and
``ASCEND_VNPU_SPECS``, or ``NPU_MEM_QUOTA`` and the limiter preloaded in hami-core mode. The probe
reports what DCMI shows inside the container (``dcmi`` part) and what AscendCL tells and allows
applications (``acl`` part).

Cases pick the chip from the cluster: template cases use the first chip with templates (910B3 on
the emulated inventory), module cases the 910C.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, unknown, violated
from conformance.kube import ContainerSpec, Workloads, pod_manifest
from conformance.suites.common import HOLD, MIB, QUICK, expect_filter_failure

pytestmark = [pytest.mark.ascend]

REGISTER_PREFIX = "hami.io/node-register-"
HANDSHAKE_PREFIX = "hami.io/node-handshake-"
VNPU_CORE_NODE = "hami-vnpu-core"
ASCEND_HANDSHAKE_RE = re.compile(r"^Reported_\d{4}\.\d{2}\.\d{2} \d{2}:\d{2}:\d{2}$")
# the smallest template and the whole card per chip, as HAMi's chart configures them
TEMPLATES = {
    "Ascend910B3": (("vir05_1c_16g", 16384), ("vir10_3c_32g", 32768)),
    "Ascend910B4-1": (("vir05_1c_16g", 16384), ("vir10_3c_32g", 32768)),
    "Ascend910C": (("vir05_1c_16g", 16384), ("vir10_3c_32g", 32768)),
    "Ascend910B2": (("vir03_1c_8g", 8192), ("vir06_1c_16g", 16384), ("vir12_3c_32g", 32768)),
    "Ascend910B4": (("vir05_1c_8g", 8192), ("vir10_3c_16g", 16384)),
}


@dataclass(frozen=True)
class Npu:
    node: str
    cw: str
    uuid: str
    index: int
    count: int
    devmem: int
    devcore: int
    health: bool
    network: int | None


def ascend_nodes(kube: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for n in kube.get("/api/v1/nodes").get("items") or []:
        if any(k.startswith(REGISTER_PREFIX + "Ascend") for k in (n["metadata"].get("annotations") or {})):
            out[n["metadata"]["name"]] = n
    return out


def npus(kube: Any) -> list[Npu]:
    out = []
    for name, node in sorted(ascend_nodes(kube).items()):
        for key, value in sorted((node["metadata"].get("annotations") or {}).items()):
            if not key.startswith(REGISTER_PREFIX + "Ascend"):
                continue
            cw = key.removeprefix(REGISTER_PREFIX)
            for d in json.loads(value):
                custom = d.get("custominfo") or {}
                out.append(
                    Npu(
                        name,
                        cw,
                        d.get("id", ""),
                        d.get("index", 0),
                        d.get("count", 0),
                        d.get("devmem", 0),
                        d.get("devcore", 0),
                        bool(d.get("health", False)),
                        int(custom["NetworkID"]) if "NetworkID" in custom else None,
                    )
                )
    return out


def chip(kube: Any, cw: str | None = None, *, templates: bool = False) -> tuple[str, list[Npu]]:
    """A chip common word on the cluster (``cw``, or the first with known templates) and its NPUs."""
    all_npus = npus(kube)
    words = sorted({n.cw for n in all_npus})
    if cw is None:
        cw = next((w for w in words if not templates or w in TEMPLATES), None)
    if cw is None or cw not in words:
        unknown(f"no Ascend chip {'with templates ' if templates else ''}{cw or ''} on this cluster: {words}")
    return cw, [n for n in all_npus if n.cw == cw]


def npu_pod(
    name: str,
    cw: str,
    count: int = 1,
    *,
    mem: int | None = None,
    core: int | None = None,
    args: list[str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    limits = {f"huawei.com/{cw}": str(count)}
    if mem is not None:
        limits[f"huawei.com/{cw}-memory"] = str(mem)
    if core is not None:
        limits[f"huawei.com/{cw}-core"] = str(core)
    return pod_manifest(
        name, [ContainerSpec(extra_limits=limits, args=list(args or QUICK))], annotations=annotations
    )


def limits_of(pod: dict[str, Any], part: str = "limits") -> dict[str, str]:
    return ((pod["spec"]["containers"][0].get("resources") or {}).get(part)) or {}


def allocated(pod: dict[str, Any], cw: str) -> list[C.AssignedDevice]:
    value = (pod["metadata"].get("annotations") or {}).get(f"hami.io/{cw}-devices-allocated", "")
    return [d for seg in C.decode_assignment(value) for d in seg] if value else []


# --- registration ----------------------------------------------------------------------------------


@pytest.mark.registration
@rule("ASC-REG-1", "Every Ascend node's hami.io/node-register-<CW> is well formed JSON with healthy NPUs")
def test_register_annotation(kube: Any) -> None:
    found = npus(kube)
    assert found, violated("ASC-REG-1", "no node carries a hami.io/node-register-Ascend* annotation")
    for node, cw in sorted({(n.node, n.cw) for n in found}):
        mine = [n for n in found if (n.node, n.cw) == (node, cw)]
        ids = [n.uuid for n in mine]
        assert all(ids) and len(set(ids)) == len(ids), violated("ASC-REG-1", f"{node}/{cw}: ids {ids}")
        assert sorted(n.index for n in mine) == list(range(len(mine))), violated(
            "ASC-REG-1", f"{node}/{cw}: indexes {[n.index for n in mine]} are not 0..n-1"
        )
        for n in mine:
            assert n.count > 0 and n.devmem > 0 and n.devcore > 0, violated(
                "ASC-REG-1", f"{node}/{cw}: {n.uuid} count={n.count} devmem={n.devmem} devcore={n.devcore}"
            )
            assert n.health, violated("ASC-REG-1", f"{node}/{cw}: NPU {n.uuid} registered unhealthy")


@pytest.mark.registration
@rule("ASC-REG-2", "910 chips register custominfo.NetworkID: 0 for 910C, else 0 for index 0-3 and 1 above")
def test_network_id(kube: Any) -> None:
    found = [n for n in npus(kube) if n.cw.startswith("Ascend910")]
    if not found:
        unknown("no 910-family NPU on this cluster")
    for n in found:
        want = 0 if n.cw == "Ascend910C" else (1 if n.index > 3 else 0)
        assert n.network == want, violated(
            "ASC-REG-2", f"{n.node}/{n.cw} index {n.index}: NetworkID {n.network}, want {want}"
        )


@pytest.mark.registration
@rule("ASC-REG-3", "The Ascend plugin writes Reported_<2006.01.02 15:04:05> and hami-vnpu-core true|false")
def test_handshake_and_mode(kube: Any) -> None:
    nodes = ascend_nodes(kube)
    assert nodes, violated("ASC-REG-3", "no Ascend node")
    for name, node in nodes.items():
        ann = node["metadata"].get("annotations") or {}
        assert ann.get(VNPU_CORE_NODE) in ("true", "false"), violated(
            "ASC-REG-3", f"{name}: {VNPU_CORE_NODE}={ann.get(VNPU_CORE_NODE)!r}"
        )
        for key in (k for k in ann if k.startswith(REGISTER_PREFIX + "Ascend")):
            hs_key = HANDSHAKE_PREFIX + key.removeprefix(REGISTER_PREFIX)
            value = ann.get(hs_key, "")
            # the scheduler may just have answered Requesting_; the plugin overwrites it within 30 s
            assert ASCEND_HANDSHAKE_RE.match(value) or value.startswith("Requesting_"), violated(
                "ASC-REG-3", f"{name}: {hs_key}={value!r}"
            )


@pytest.mark.registration
@rule("ASC-REG-CAP-1", "Node capacity huawei.com/<CW> equals the sum of the healthy NPUs' slot counts")
def test_capacity(kube: Any) -> None:
    nodes = ascend_nodes(kube)
    for node, cw in sorted({(n.node, n.cw) for n in npus(kube)}):
        want = sum(n.count for n in npus(kube) if (n.node, n.cw) == (node, cw) and n.health)
        cap = (nodes[node].get("status") or {}).get("capacity") or {}
        got = C.parse_quantity_int(str(cap.get(f"huawei.com/{cw}", "0")))
        assert got == want, violated("ASC-REG-CAP-1", f"{node}: capacity huawei.com/{cw}={got}, want {want}")


# --- admission -------------------------------------------------------------------------------------


@pytest.mark.admission
@rule("ASC-ADM-SCHED-1", "A pod asking huawei.com/<CW> is given schedulerName hami-scheduler")
def test_scheduler_name(workloads: Workloads, kube: Any) -> None:
    cw, _ = chip(kube)
    pod = workloads.create(npu_pod("sched", cw))
    assert pod["spec"].get("schedulerName") == workloads.scheduler_name, violated(
        "ASC-ADM-SCHED-1", f"schedulerName {pod['spec'].get('schedulerName')!r}"
    )


@pytest.mark.admission
@rule(
    "ASC-ADM-TEMPLATE-1", "Hard mode rounds memory up to the smallest template; limits and requests rewritten"
)
def test_template_rounding(workloads: Workloads, kube: Any) -> None:
    cw, devs = chip(kube, templates=True)
    (_, smallest), *_ = TEMPLATES[cw]
    pod = workloads.create(npu_pod("round", cw, mem=smallest // 8))
    key = f"huawei.com/{cw}-memory"
    assert limits_of(pod).get(key) == str(smallest) and limits_of(pod, "requests").get(key) == str(
        smallest
    ), violated(
        "ASC-ADM-TEMPLATE-1",
        f"{key} {smallest // 8} became limits {limits_of(pod).get(key)!r}, "
        f"requests {limits_of(pod, 'requests').get(key)!r}; want {smallest}",
    )
    whole = workloads.create(npu_pod("whole", cw))
    assert limits_of(whole).get(key) == str(devs[0].devmem), violated(
        "ASC-ADM-TEMPLATE-1", f"no memory asked: {key}={limits_of(whole).get(key)!r}, want the whole card"
    )


@pytest.mark.admission
@rule(
    "ASC-ADM-TEMPLATE-2", "Memory no template nor the card holds is denied: <memory resource> <v> is invalid"
)
def test_template_invalid(workloads: Workloads, kube: Any) -> None:
    cw, devs = chip(kube, templates=True)
    too_big = devs[0].devmem + 1
    _, err = workloads.try_create(npu_pod("toobig", cw, mem=too_big))
    assert err is not None, violated(
        "ASC-ADM-TEMPLATE-2", f"{too_big} MiB on a {devs[0].devmem} MiB card admitted"
    )
    assert f"huawei.com/{cw}-memory {too_big} is invalid" in str(err), violated(
        "ASC-ADM-TEMPLATE-2", f"denied with {str(err)!r}"
    )


@pytest.mark.admission
@rule("ASC-ADM-MULTI-1", "More than one NPU with a partial template is denied (vNPU nor supported ...)")
def test_multi_device_template_denied(workloads: Workloads, kube: Any) -> None:
    cw, _ = chip(kube, templates=True)
    count = 2
    (_, smallest), *_ = TEMPLATES[cw]
    _, err = workloads.try_create(npu_pod("multi", cw, count, mem=smallest))
    assert err is not None, violated("ASC-ADM-MULTI-1", "two NPUs with a template were admitted")
    assert "vNPU nor supported for multiple devices" in str(err), violated(
        "ASC-ADM-MULTI-1", f"denied with {str(err)!r}"
    )


@pytest.mark.admission
@rule("ASC-ADM-CORE-1", "A -core request outside hami-core mode is denied")
def test_core_needs_hami_core(workloads: Workloads, kube: Any) -> None:
    cw, _ = chip(kube, templates=True)
    _, err = workloads.try_create(npu_pod("core", cw, mem=1000, core=20))
    assert err is not None, violated("ASC-ADM-CORE-1", "a core request in hard mode was admitted")
    assert "only supported in hami-core" in str(err), violated("ASC-ADM-CORE-1", f"denied with {str(err)!r}")


@pytest.mark.admission
@rule("ASC-ADM-INT32-1", "Memory written as bytes (16Gi) is denied with the MiB advice: use 16384, not 16Gi")
def test_memory_units_denied(workloads: Workloads, kube: Any) -> None:
    cw, _ = chip(kube)
    pod = npu_pod("gi", cw)
    pod["spec"]["containers"][0]["resources"]["limits"][f"huawei.com/{cw}-memory"] = "16Gi"
    _, err = workloads.try_create(pod)
    assert err is not None, violated("ASC-ADM-INT32-1", "16Gi of NPU memory was admitted")
    assert "use 16384, not 16Gi" in str(err), violated("ASC-ADM-INT32-1", f"denied with {str(err)!r}")


@pytest.mark.admission
@rule("ASC-ADM-910C-1", "An Ascend910C request of 1 becomes 2 (one module)")
def test_910c_one_becomes_two(workloads: Workloads, kube: Any) -> None:
    chip(kube, "Ascend910C")
    pod = workloads.create(npu_pod("c1", "Ascend910C", 1))
    assert limits_of(pod).get("huawei.com/Ascend910C") == "2", violated(
        "ASC-ADM-910C-1", f"huawei.com/Ascend910C limit {limits_of(pod).get('huawei.com/Ascend910C')!r}"
    )


@pytest.mark.admission
@rule("ASC-ADM-910C-2", "An odd Ascend910C request other than 1 is denied with upstream's message")
def test_910c_odd_denied(workloads: Workloads, kube: Any) -> None:
    chip(kube, "Ascend910C")
    _, err = workloads.try_create(npu_pod("c3", "Ascend910C", 3))
    assert err is not None, violated("ASC-ADM-910C-2", "Ascend910C: 3 was admitted")
    assert "Ascend910C device request must be 1 or 2*n, got 3" in str(err), violated(
        "ASC-ADM-910C-2", f"denied with {str(err)!r}"
    )


# --- scheduling ------------------------------------------------------------------------------------


@pytest.mark.scheduling
@rule(
    "ASC-SCHED-FIT-1", "A template pod is placed with its template in huawei.com/<CW> and the rounded memory"
)
def test_template_pod_annotations(workloads: Workloads, kube: Any) -> None:
    cw, _ = chip(kube, templates=True)
    (temp, smallest), *_ = TEMPLATES[cw]
    workloads.create(npu_pod("fit", cw, mem=smallest))
    pod = workloads.wait_scheduled("fit")
    ann = pod["metadata"].get("annotations") or {}
    devs = allocated(pod, cw)
    assert len(devs) == 1 and devs[0].mem_mib == smallest, violated(
        "ASC-SCHED-FIT-1", f"hami.io/{cw}-devices-allocated {ann.get(f'hami.io/{cw}-devices-allocated')!r}"
    )
    runtime = json.loads(ann.get(f"huawei.com/{cw}", "[]"))
    assert runtime == [{"UUID": devs[0].uuid, "temp": temp}], violated(
        "ASC-SCHED-FIT-1", f"huawei.com/{cw}={ann.get(f'huawei.com/{cw}')!r}"
    )
    assert ann.get("predicate-time", "").isdigit(), violated("ASC-SCHED-FIT-1", "no predicate-time")


@pytest.mark.scheduling
@rule("ASC-SCHED-SHARE-1", "Template pods share one NPU until its slots (card / smallest template) run out")
def test_template_sharing(workloads: Workloads, kube: Any) -> None:
    cw, devs = chip(kube, templates=True)
    (_, smallest), *_ = TEMPLATES[cw]
    target = devs[-1]
    slots = target.devmem // smallest
    pin = {f"hami.io/use-{cw}-uuid": target.uuid}
    for i in range(slots):
        workloads.create(npu_pod(f"s{i}", cw, mem=smallest, args=HOLD, annotations=pin))
    for i in range(slots):
        got = {d.uuid for d in allocated(workloads.wait_scheduled(f"s{i}"), cw)}
        assert got == {target.uuid}, violated("ASC-SCHED-SHARE-1", f"pod s{i} got {sorted(got)}")
    workloads.create(npu_pod("over", cw, mem=smallest, annotations=pin))
    expect_filter_failure(workloads, "over", "Card", "ASC-SCHED-SHARE-1")


@pytest.mark.scheduling
@rule("ASC-SCHED-MODE-1", "A hami-core pod does not fit a node whose hami-vnpu-core is false (ModeNotFit)")
def test_mode_not_fit(workloads: Workloads, kube: Any) -> None:
    cw, devs = chip(kube)
    modes = {
        n: (node["metadata"].get("annotations") or {}).get(VNPU_CORE_NODE)
        for n, node in ascend_nodes(kube).items()
    }
    if any(modes.get(d.node) == "true" for d in devs):
        unknown(f"a {cw} node runs in hami-core mode: {modes}")
    workloads.create(
        npu_pod("soft", cw, mem=1000, core=20, annotations={"huawei.com/vnpu-mode": "hami-core"})
    )
    expect_filter_failure(workloads, "soft", "ModeNotFit", "ASC-SCHED-MODE-1")


@pytest.mark.scheduling
@rule("ASC-SCHED-910C-1", "Two Ascend910C NPUs come from one module (device index // 2)")
def test_910c_module(workloads: Workloads, kube: Any) -> None:
    _, devs = chip(kube, "Ascend910C")
    workloads.create(npu_pod("pair", "Ascend910C", 2))
    got = allocated(workloads.wait_scheduled("pair"), "Ascend910C")
    index = {d.uuid: d.index for d in devs}
    modules = {index.get(d.uuid, -1) // 2 for d in got}
    assert len(got) == 2 and len(modules) == 1, violated(
        "ASC-SCHED-910C-1",
        f"NPUs {[(d.uuid, index.get(d.uuid)) for d in got]} span modules {sorted(modules)}",
    )


@pytest.mark.scheduling
@rule("ASC-SCHED-NET-1", "Two 910 NPUs for one container come from one NetworkID group")
def test_network_group(workloads: Workloads, kube: Any) -> None:
    cw, devs = chip(kube, templates=True)
    if not cw.startswith("Ascend910") or cw == "Ascend910C":
        unknown(f"{cw} has no NetworkID split")
    workloads.create(npu_pod("net", cw, 2))
    got = allocated(workloads.wait_scheduled("net"), cw)
    network = {d.uuid: d.network for d in devs}
    groups = {network.get(d.uuid) for d in got}
    assert len(got) == 2 and len(groups) == 1, violated(
        "ASC-SCHED-NET-1", f"NPUs {[d.uuid for d in got]} in NetworkID groups {sorted(map(str, groups))}"
    )


# --- allocation and isolation ----------------------------------------------------------------------


def _dcmi(doc: dict[str, Any], rule_id: str) -> list[dict[str, Any]]:
    part = doc.get("dcmi") or {}
    assert "error" not in part, violated(rule_id, f"DCMI in the container: {part.get('error')}")
    return list(part.get("devices") or [])


def _hami_core_nodes(kube: Any) -> set[str]:
    return {
        n
        for n, node in ascend_nodes(kube).items()
        if (node["metadata"].get("annotations") or {}).get(VNPU_CORE_NODE) == "true"
    }


def hami_core_chip(kube: Any) -> str:
    """The first chip common word with a node in hami-core mode (unknown when there is none)."""
    soft = _hami_core_nodes(kube)
    words = sorted({n.cw for n in npus(kube) if n.node in soft})
    if not words:
        unknown("no Ascend node runs in hami-core mode (hami-vnpu-core: true)")
    return words[0]


@pytest.mark.allocation
@rule("ASC-ALLOC-CORE-1", "A hami-core pod on a hami-core node gets NPU_MEM_QUOTA/NPU_PRIORITY, no template")
def test_hami_core_allocation(workloads: Workloads, kube: Any) -> None:
    cw = hami_core_chip(kube)
    workloads.create(
        npu_pod("soft", cw, mem=1000, core=20, annotations={"huawei.com/vnpu-mode": "hami-core"})
    )
    doc = workloads.probe("soft")
    pod = workloads.get("soft")
    runtime = json.loads((pod["metadata"].get("annotations") or {}).get(f"huawei.com/{cw}", "[]"))
    got = allocated(pod, cw)
    want = [{"UUID": d.uuid, "memory": 1000, "core": 20} for d in got]
    assert len(got) == (2 if cw == "Ascend910C" else 1) and runtime == want, violated(
        "ASC-ALLOC-CORE-1", f"huawei.com/{cw}={runtime!r}, assignment {got}"
    )
    env = doc.get("env") or {}
    assert (env.get("NPU_MEM_QUOTA"), env.get("NPU_PRIORITY")) == ("1000", "20"), violated(
        "ASC-ALLOC-CORE-1",
        f"NPU_MEM_QUOTA={env.get('NPU_MEM_QUOTA')!r} NPU_PRIORITY={env.get('NPU_PRIORITY')!r}",
    )
    assert "ASCEND_VNPU_SPECS" not in env, violated(
        "ASC-ALLOC-CORE-1", "a template was named in hami-core mode"
    )


@pytest.mark.allocation
@rule(
    "ASC-ALLOC-TEMPLATE-1", "A template pod gets ASCEND_VNPU_SPECS and sees one NPU of the template's memory"
)
def test_template_allocation(workloads: Workloads, kube: Any) -> None:
    cw, devs = chip(kube, templates=True)
    if {d.node for d in devs} <= _hami_core_nodes(kube):
        unknown(f"every {cw} node runs in hami-core mode: pods without a vnpu-mode are soft-split there")
    (temp, smallest), *_ = TEMPLATES[cw]
    workloads.create(npu_pod("vnpu", cw, mem=smallest))
    doc = workloads.probe("vnpu")
    env = doc.get("env") or {}
    assert env.get("ASCEND_VNPU_SPECS") == temp, violated(
        "ASC-ALLOC-TEMPLATE-1", f"ASCEND_VNPU_SPECS={env.get('ASCEND_VNPU_SPECS')!r}, want {temp}"
    )
    seen = _dcmi(doc, "ASC-ALLOC-TEMPLATE-1")
    assert [d["memory_total_mib"] for d in seen] == [smallest], violated(
        "ASC-ALLOC-TEMPLATE-1", f"the container sees {seen}, want one NPU of {smallest} MiB"
    )


@pytest.mark.isolation
@rule("ASC-ISO-1", "A container sees exactly the NPUs assigned to it (ASCEND_VISIBLE_DEVICES, DCMI view)")
def test_visible_devices(workloads: Workloads, kube: Any) -> None:
    cw, _ = chip(kube, templates=True)
    workloads.create(npu_pod("two", cw, 2))
    doc = workloads.probe("two")
    pod = workloads.get("two")
    want = sorted(d.uuid for d in allocated(pod, cw))
    seen = _dcmi(doc, "ASC-ISO-1")
    got = sorted(d["uuid"] for d in seen)
    assert got == want, violated(
        "ASC-ISO-1",
        f"assigned {want}, the container sees {got} (ASCEND_VISIBLE_DEVICES="
        f"{(doc.get('env') or {}).get('ASCEND_VISIBLE_DEVICES')!r})",
    )
    assert all(d["memory_total_mib"] > 0 and d["health"] == 0 for d in seen), violated("ASC-ISO-1", f"{seen}")


# --- enforcement (hami-core mode) --------------------------------------------------------------------
# HAMi's hami-core limiter sits on the CANN runtime's memory calls inside the container (loaded through
# /etc/ld.so.preload); the probe drives it through AscendCL (conformance/probe/acl.py).

QUOTA_MIB = 1000
OUT_OF_MEMORY = 207001  # ACL_ERROR_RT_MEMORY_ALLOCATION


def _soft_probe(workloads: Workloads, kube: Any, name: str, ops: list[str], rule_id: str) -> dict[str, Any]:
    """A hami-core pod with NPU_MEM_QUOTA=QUOTA_MIB running ``--npu-op`` ops; its AscendCL part."""
    cw = hami_core_chip(kube)
    args = [*QUICK, *(a for op in ops for a in ("--npu-op", op))]
    workloads.create(npu_pod(name, cw, mem=QUOTA_MIB, core=20, args=args,
                             annotations={"huawei.com/vnpu-mode": "hami-core"}))
    doc = workloads.probe(name)
    part = doc.get("acl") or {}
    if part.get("unavailable"):  # a real cluster's probe image without CANN (libascendcl.so)
        unknown(f"the probe image has no AscendCL runtime to drive the limiter: {part.get('error')}")
    assert "error" not in part and part, violated(
        rule_id, f"AscendCL in the container: {part.get('error', 'no acl part')} "
        f"(env {doc.get('env')}, /etc/ld.so.preload {doc.get('preload')})"
    )
    return dict(part)


@pytest.mark.enforcement
@rule("ASC-ENF-MEM-1", "In a hami-core container AscendCL reports NPU_MEM_QUOTA as the device's total memory")
def test_quota_is_total(workloads: Workloads, kube: Any) -> None:
    part = _soft_probe(workloads, kube, "quota", ["meminfo"], "ASC-ENF-MEM-1")
    info = part["ops"][0]
    assert info.get("total_mib") == QUOTA_MIB and info.get("free_bytes", -1) <= QUOTA_MIB * MIB, violated(
        "ASC-ENF-MEM-1", f"aclrtGetMemInfo with NPU_MEM_QUOTA={QUOTA_MIB}: {info}"
    )


@pytest.mark.enforcement
@rule(
    "ASC-ENF-MEM-2", "aclrtMalloc past NPU_MEM_QUOTA is refused (207001); within it or after a free: served"
)
def test_allocation_over_quota_refused(workloads: Workloads, kube: Any) -> None:
    ops = [f"alloc:{QUOTA_MIB - 100}", "alloc:200", "alloc:100", "free", f"alloc:{QUOTA_MIB}"]
    got = _soft_probe(workloads, kube, "overquota", ops, "ASC-ENF-MEM-2")["ops"]
    outcome = [(o.get("ok"), o.get("code")) for o in got]
    want = [(True, 0), (False, OUT_OF_MEMORY), (True, 0), (True, None), (True, 0)]
    assert outcome == want, violated(
        "ASC-ENF-MEM-2", f"NPU_MEM_QUOTA={QUOTA_MIB}: {list(zip(ops, outcome, strict=True))}, want {want}"
    )


@pytest.mark.enforcement
@rule("ASC-ENF-MEM-3", "The processes of one hami-core container share its NPU_MEM_QUOTA")
def test_quota_shared_by_processes(workloads: Workloads, kube: Any) -> None:
    half = QUOTA_MIB // 2
    ops = [f"alloc:{half}", f"proc:{half - 100}", "proc:200", "meminfo"]
    got = _soft_probe(workloads, kube, "shared", ops, "ASC-ENF-MEM-3")["ops"]
    outcome = [(o.get("ok"), o.get("code")) for o in got[:3]]
    want = [(True, 0), (True, 0), (False, OUT_OF_MEMORY)]
    assert outcome == want, violated(
        "ASC-ENF-MEM-3",
        f"{list(zip(ops[:3], outcome, strict=True))}, want {want}: a process passed the container's quota",
    )
    free_mib = got[3].get("free_bytes", 0) / MIB
    assert free_mib <= 100, violated(
        "ASC-ENF-MEM-3", f"aclrtGetMemInfo with {QUOTA_MIB - 100} MiB held by two processes: {got[3]}"
    )
