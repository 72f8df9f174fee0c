"""The Ascend family: admission rules, requests, fit per chip, scores and annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hami_stack.devices.ascend import (
    DEFAULT_CHIPS,
    MULTI_DEVICE_ERROR,
    AscendFamily,
    VnpuConfig,
    parse_vnpus,
    unsupported_ascend_message,
)
from hami_stack.devices.base import AdmissionError, AllocateInput, DeviceUsage, FitContext
from hami_stack.devices.config import DeviceConfigError, parse_device_config
from hami_stack.devices.registry import build_families
from hami_stack.protocol import events as ev
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.protocol.register import DeviceInfo, encode_register_json
from hami_stack.webhook.admit import WebhookConfig, admit

pytestmark = pytest.mark.ascend

CHIPS = {c.common_word: c for c in DEFAULT_CHIPS}


def fam(cw: str = "Ascend910B3", **kw: Any) -> AscendFamily:
    cfg: VnpuConfig = CHIPS[cw]
    return AscendFamily(cfg, **kw)


def ctr(limits: dict[str, Any], name: str = "c", **extra: Any) -> dict[str, Any]:
    return {"name": name, "resources": {"limits": dict(limits)}, **extra}


def pod(*containers: dict[str, Any], mode: str = "") -> dict[str, Any]:
    ann = {"huawei.com/vnpu-mode": mode} if mode else {}
    return {
        "metadata": {"name": "p", "namespace": "d", "annotations": ann},
        "spec": {"containers": list(containers)},
    }


def usage(
    cw: str, n: int, *, network: bool = True, mem: int = 65536, core: int = 20, count: int = 4
) -> list[DeviceUsage]:
    return [
        DeviceUsage(
            id=f"{cw}-{i}",
            type=cw,
            count=count,
            totalmem=mem,
            totalcore=core,
            index=i,
            custom_info={"NetworkID": 0 if cw == "Ascend910C" or i <= 3 else 1} if network else {},
        )
        for i in range(n)
    ]


# --- admission -------------------------------------------------------------------------------


def test_hard_mode_rounds_memory_up_to_template_and_rewrites_both() -> None:
    f, c, p = fam(), ctr({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "2000"}), pod()
    assert f.mutate_admission(c, p)
    assert c["resources"]["limits"]["huawei.com/Ascend910B3-memory"] == "16384"
    assert c["resources"]["requests"]["huawei.com/Ascend910B3-memory"] == "16384"
    c2 = ctr({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "20000"})
    f.mutate_admission(c2, pod())
    assert c2["resources"]["limits"]["huawei.com/Ascend910B3-memory"] == "32768"
    c3 = ctr({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "40000"})
    f.mutate_admission(c3, pod())  # no template holds it, the card does: whole card
    assert c3["resources"]["limits"]["huawei.com/Ascend910B3-memory"] == "65536"


def test_no_memory_means_whole_card_and_too_big_is_invalid() -> None:
    c = ctr({"huawei.com/Ascend910B3": "1"})
    assert fam().mutate_admission(c, pod())
    assert c["resources"]["limits"]["huawei.com/Ascend910B3-memory"] == "65536"
    with pytest.raises(AdmissionError, match=r"^huawei.com/Ascend910B3-memory 70000 is invalid$"):
        fam().mutate_admission(
            ctr({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "70000"}), pod()
        )


def test_hami_core_keeps_memory_and_allows_cores_hard_mode_refuses_cores() -> None:
    limits = {
        "huawei.com/Ascend910B3": "1",
        "huawei.com/Ascend910B3-memory": "2000",
        "huawei.com/Ascend910B3-core": "30",
    }
    c = ctr(limits)
    assert fam().mutate_admission(c, pod(c, mode="hami-core"))
    assert c["resources"]["limits"]["huawei.com/Ascend910B3-memory"] == "2000"
    with pytest.raises(AdmissionError, match="only supported in hami-core"):
        fam().mutate_admission(ctr(limits), pod())


def test_multi_device_partial_template_refused() -> None:
    c = ctr({"huawei.com/Ascend910B3": "2", "huawei.com/Ascend910B3-memory": "16384"})
    with pytest.raises(AdmissionError) as e:
        fam().mutate_admission(c, pod())
    assert str(e.value) == MULTI_DEVICE_ERROR
    ok = ctr({"huawei.com/Ascend910B3": "2"})
    assert fam().mutate_admission(ok, pod())


def test_910c_one_becomes_two_and_odd_refused() -> None:
    c = ctr({"huawei.com/Ascend910C": "1"})
    c["resources"]["requests"] = {"huawei.com/Ascend910C": "1"}
    assert fam("Ascend910C").mutate_admission(c, pod())
    assert c["resources"]["limits"]["huawei.com/Ascend910C"] == "2"
    assert c["resources"]["requests"]["huawei.com/Ascend910C"] == "2"
    with pytest.raises(AdmissionError) as e:
        fam("Ascend910C").mutate_admission(ctr({"huawei.com/Ascend910C": "3"}), pod())
    assert str(e.value) == "Ascend910C device request must be 1 or 2*n, got 3"
    assert fam("Ascend910C").mutate_admission(ctr({"huawei.com/Ascend910C": "4"}), pod())


def test_memory_above_int32_or_with_unit_refused_with_advice() -> None:
    for raw in ("16Gi", "17179869184"):
        msg = fam().admission_problem(
            ctr({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": raw})
        )
        assert msg and "use 16384, not 16Gi" in msg and raw in msg
    assert (
        fam().admission_problem(
            ctr({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "16384"})
        )
        is None
    )


def test_runtime_class_and_overwrite_env() -> None:
    cfg = CHIPS["Ascend910B3"]
    import dataclasses

    f = AscendFamily(dataclasses.replace(cfg, runtime_class_name="ascend", overwrite_env=True))
    c, other = ctr({"huawei.com/Ascend910B3": "1"}), ctr({"cpu": "1"}, name="plain")
    p = pod(c, other)
    assert f.mutate_admission(c, p)
    assert p["spec"]["runtimeClassName"] == "ascend"
    assert not f.mutate_admission(other, p)
    assert other["env"] == [{"name": "ASCEND_VISIBLE_DEVICES", "value": ""}]
    f.mutate_admission(other, p)  # a second chip family does not add it twice
    assert len(other["env"]) == 1
    assert "env" not in c  # a container asking Ascend never gets the blank


def test_webhook_end_to_end_denies_with_upstream_message() -> None:
    cfg = parse_device_config({"nvidia": {}, "vnpus": {"configs": [_raw("Ascend910C")]}})
    families = build_families(cfg)
    review = {
        "uid": "1",
        "operation": "CREATE",
        "object": {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [ctr({"huawei.com/Ascend910C": "3"})]},
        },
    }
    resp = admit(review, WebhookConfig(families=families, trusted_users=()))
    assert not resp.allowed and resp.message == "Ascend910C device request must be 1 or 2*n, got 3"
    review["object"]["spec"]["containers"] = [ctr({"huawei.com/Ascend910C": "1"})]
    resp = admit(review, WebhookConfig(families=families, trusted_users=()))
    assert resp.allowed
    paths = {op["path"]: op.get("value") for op in resp.patch}
    assert paths.get("/spec/schedulerName") == "hami-scheduler"
    assert any(p.endswith("Ascend910C") and v == "2" for p, v in paths.items())


def test_disabled_message_names_the_chart_value() -> None:
    msg = unsupported_ascend_message(ctr({"huawei.com/Ascend910B3": "1"}))
    assert msg and "devices.ascend.enabled" in msg and "huawei.com/Ascend910B3" in msg
    assert unsupported_ascend_message(ctr({"nvidia.com/gpu": "1"})) is None


def _raw(cw: str) -> dict[str, Any]:
    c = CHIPS[cw]
    return {
        "chipName": c.chip_name,
        "commonWord": c.common_word,
        "resourceName": c.resource_name,
        "resourceMemoryName": c.resource_memory_name,
        "resourceCoreName": c.resource_core_name,
        "memoryAllocatable": c.memory_allocatable,
        "memoryCapacity": c.memory_capacity,
        "aiCore": c.ai_core,
        "superPod": c.super_pod,
        "templates": [{"name": t.name, "memory": t.memory, "aiCore": t.ai_core} for t in c.templates],
    }


def test_config_parsing_errors_name_the_field() -> None:
    with pytest.raises(DeviceConfigError, match=r"vnpus.configs\[0\].commonWord: required"):
        parse_vnpus({"configs": [{"chipName": "x", "resourceName": "r"}]})
    with pytest.raises(DeviceConfigError, match=r"templates\[0\].memory: must be positive"):
        parse_vnpus(
            [
                {
                    "chipName": "x",
                    "commonWord": "y",
                    "resourceName": "r",
                    "templates": [{"name": "t", "memory": 0}],
                }
            ]
        )
    v = parse_vnpus({"hamiVnpuCore": True, "configs": [_raw("Ascend910B3")]})
    assert v.hami_vnpu_core and v.configs[0].vdevice_count == 4


# --- requests and fit -------------------------------------------------------------------------


def test_request_rounds_in_hard_mode_and_not_with_cores() -> None:
    r = fam().container_request(ctr({"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "1000"}))
    assert r is not None and r.memreq == 16384
    r = fam().container_request(
        ctr(
            {
                "huawei.com/Ascend910B3": "1",
                "huawei.com/Ascend910B3-memory": "1000",
                "huawei.com/Ascend910B3-core": "20",
            }
        )
    )
    assert r is not None and (r.memreq, r.coresreq) == (1000, 20)
    assert fam().container_request(ctr({"nvidia.com/gpu": "1"})) is None


def _fit(
    f: AscendFamily,
    devs: list[DeviceUsage],
    limits: dict[str, str],
    *,
    mode: str = "",
    node: dict[str, Any] | None = None,
):
    c = ctr(limits)
    p = pod(c, mode=mode)
    req = f.container_request(c)
    assert req is not None
    return f.fit(devs, req, FitContext(p, node))


def test_templates_share_a_card_until_memory_or_slots_run_out() -> None:
    f = fam()
    devs = usage("Ascend910B3", 1)
    for _ in range(4):
        r = _fit(f, devs, {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "16384"})
        assert r.ok
        d = devs[0]
        d.used += 1
        d.usedmem += r.devices[0].usedmem
    r = _fit(f, devs, {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "16384"})
    assert not r.ok and r.reason == f"1/1 {ev.CARD_TIME_SLICING_EXHAUSTED}"


def test_unhealthy_device_skipped() -> None:
    devs = usage("Ascend910B3", 2)
    devs[1].health = False
    r = _fit(fam(), devs, {"huawei.com/Ascend910B3": "1"})
    assert r.ok and r.devices[0].uuid == "Ascend910B3-0"


def test_hami_core_needs_node_annotation() -> None:
    limits = {
        "huawei.com/Ascend910B3": "1",
        "huawei.com/Ascend910B3-memory": "1000",
        "huawei.com/Ascend910B3-core": "50",
    }
    r = _fit(fam(), usage("Ascend910B3", 2), limits, mode="hami-core")
    assert not r.ok and r.reason == f"2/2 {ev.MODE_NOT_FIT}"
    node = {"metadata": {"annotations": {"hami-vnpu-core": "true"}}}
    r = _fit(fam(), usage("Ascend910B3", 2), limits, mode="hami-core", node=node)
    assert r.ok and r.devices[0].usedcores == 50  # 50 of 100 although the card registered 20 AI cores


def test_910b_prefers_one_network_group() -> None:
    devs = usage("Ascend910B3", 8)
    for i in (0, 1, 2):  # NetworkID 0 has one free device left (3), NetworkID 1 has four
        devs[i].used = devs[i].count
    r = _fit(fam(), devs, {"huawei.com/Ascend910B3": "2"})
    assert r.ok
    assert {d.uuid for d in r.devices} <= {f"Ascend910B3-{i}" for i in range(4, 8)}


def test_910c_takes_whole_modules_only() -> None:
    devs = usage("Ascend910C", 8, count=4)
    for i in (0, 2, 4):  # modules 0, 1, 2 each lose one NPU: only module 3 (devices 6, 7) is whole
        devs[i].used = devs[i].count
    r = _fit(fam("Ascend910C"), devs, {"huawei.com/Ascend910C": "2"})
    assert r.ok and sorted(d.uuid for d in r.devices) == ["Ascend910C-6", "Ascend910C-7"]
    r = _fit(fam("Ascend910C"), devs, {"huawei.com/Ascend910C": "4"})
    assert not r.ok and ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST in r.reason


def test_score_node_network_share() -> None:
    devs = usage("Ascend910B3", 8)
    same = [
        [
            ContainerDevice("Ascend910B3-0", "Ascend910B3", 0, 0),
            ContainerDevice("Ascend910B3-1", "Ascend910B3", 0, 0),
        ]
    ]
    split = [
        [
            ContainerDevice("Ascend910B3-0", "Ascend910B3", 0, 0),
            ContainerDevice("Ascend910B3-5", "Ascend910B3", 0, 0),
        ]
    ]
    assert fam().score_node({}, devs, same, "binpack") == 10.0
    assert fam().score_node({}, devs, split, "binpack") == 5.0
    assert (
        fam("Ascend310P").score_node(
            {}, usage("Ascend310P", 2), [[ContainerDevice("Ascend310P-0", "Ascend310P", 0, 0)]], ""
        )
        == 0.0
    )


def test_pod_annotations_hard_and_hami_core() -> None:
    picks = [[ContainerDevice("U0", "Ascend910B3", 16384, 0)]]
    out = fam().pod_annotations(picks, pod())
    assert out["hami.io/Ascend910B3-devices-to-allocate"] == "U0,Ascend910B3,16384,0:;"
    assert json.loads(out["huawei.com/Ascend910B3"]) == [{"UUID": "U0", "temp": "vir05_1c_16g"}]
    assert out["predicate-time"].isdigit()
    core = fam().pod_annotations([[ContainerDevice("U0", "Ascend910B3", 1000, 30)]], pod(mode="hami-core"))
    assert json.loads(core["huawei.com/Ascend910B3"]) == [{"UUID": "U0", "memory": 1000, "core": 30}]
    assert fam().pod_annotations([]) == {}


def test_node_devices_and_exact_type() -> None:
    reg = encode_register_json(
        [
            DeviceInfo(
                id="U0",
                count=4,
                devmem=65536,
                devcore=20,
                type="Ascend910B4-1",
                health=True,
                custom_info={"NetworkID": 0},
            )
        ]
    )
    node = {"metadata": {"annotations": {"hami.io/node-register-Ascend910B4-1": reg}}}
    assert [d.id for d in fam("Ascend910B4-1").node_devices(node)] == ["U0"]
    d = DeviceUsage.from_info(fam("Ascend910B4-1").node_devices(node)[0])
    assert fam("Ascend910B4-1").matches_type(d) and not fam("Ascend910B4").matches_type(d)


def test_allocate_hard_and_hami_core() -> None:
    f = fam()
    f.phy_ids = lambda: {"U0": 3, "U1": 5}
    out = f.allocate_response(AllocateInput([ContainerDevice("U0", "Ascend910B3", 16384, 0)], "uid", "c"))
    assert out.envs == {"ASCEND_VISIBLE_DEVICES": "3", "ASCEND_VNPU_SPECS": "vir05_1c_16g"}
    whole = f.allocate_response(
        AllocateInput(
            [ContainerDevice("U0", "Ascend910B3", 65536, 0), ContainerDevice("U1", "Ascend910B3", 65536, 0)],
            "u",
            "c",
        )
    )
    assert whole.envs == {"ASCEND_VISIBLE_DEVICES": "3,5"}
    core = f.allocate_response(
        AllocateInput(
            [ContainerDevice("U1", "Ascend910B3", 1000, 30)],
            "uid",
            "c",
            pod_annotations={"huawei.com/vnpu-mode": "hami-core"},
        )
    )
    assert core.envs["NPU_MEM_QUOTA"] == "1000" and core.envs["NPU_PRIORITY"] == "30"
    assert core.envs["NPU_GLOBAL_SHM_PATH"] == "/hami-shared-region/5_global_registry"
    assert any(m.container_path == "/etc/ld.so.preload" for m in core.mounts)
    assert core.host_dirs == ["/usr/local/hami-vnpu-core/containers/uid_c"]


def test_webhook_warns_when_ascend_is_disabled() -> None:
    review = {
        "uid": "1",
        "operation": "CREATE",
        "object": {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [ctr({"huawei.com/Ascend910B3": "1"})]},
        },
    }
    resp = admit(
        review, WebhookConfig(families=build_families(parse_device_config({"nvidia": {}})), trusted_users=())
    )
    assert resp.allowed and not resp.patch  # left to its scheduler, unchanged, as upstream
    assert len(resp.warnings) == 1 and "devices.ascend.enabled=false" in resp.warnings[0]
    enabled = build_families(parse_device_config({"nvidia": {}, "vnpus": {"configs": [_raw("Ascend910B3")]}}))
    resp = admit(review, WebhookConfig(families=enabled, trusted_users=()))
    assert resp.allowed and resp.warnings == []


def test_hami_core_mounts_the_hook_dir_the_plugin_prepared(tmp_path: Path) -> None:
    """The limiter and ld.so.preload a container gets are the ones the plugin installed: with a
    ``HOOK_PATH`` of its own the plugin prepares that directory, so Allocate must mount it (mounting
    the default one would leave the container without its NPU limiter: memory quota not enforced)."""
    from hami_stack.device_plugin.ascend.plugin import prepare_hook_dir
    from hami_stack.devices.ascend import HAMI_VNPU_CORE_DIR, hami_core_dir

    assert hami_core_dir("") == hami_core_dir("/usr/local") == HAMI_VNPU_CORE_DIR
    hook = tmp_path / "hook"
    prepare_hook_dir(Path(hami_core_dir(str(hook) + "/")))
    f = fam()
    f.phy_ids = lambda: {"U1": 5}
    core = f.allocate_response(
        AllocateInput([ContainerDevice("U1", "Ascend910B3", 1000, 30)], "uid", "c", hook_path=str(hook) + "/",
                      pod_annotations={"huawei.com/vnpu-mode": "hami-core"})
    )
    src = {m.container_path: m.host_path for m in core.mounts}
    preload = Path(src["/etc/ld.so.preload"])
    assert preload.read_text() == "/hami-vnpu-core/libvnpu.so\n"
    assert (Path(src["/hami-vnpu-core"]) / "libvnpu.so").is_file()
    assert core.host_dirs == [f"{hook}/containers/uid_c"]
