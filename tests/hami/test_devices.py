"""The device interface: NVIDIA requests, fit reasons, policies, scores, Allocate, config, a second family."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hami_stack.devices import (
    AllocateInput,
    DeviceConfigError,
    DeviceUsage,
    FitContext,
    NvidiaConfig,
    NvidiaFamily,
    add_usage,
    build_families,
    load_device_config,
    parse_device_config,
)
from hami_stack.devices.base import ContainerDeviceRequest, HealthState
from hami_stack.devices.counted import VASTAI, CountedFamily
from hami_stack.devices.nvidia import nvidia_type_name, physical_uuid, register_device, virtual_device_ids
from hami_stack.devices.scoring import best_node, device_score, node_score, order_devices
from hami_stack.protocol import events as ev
from hami_stack.protocol.assignment import ContainerDevice
from hami_stack.protocol.handshake import HealthResult
from hami_stack.protocol.policy import ScoringWeights, gpu_policy
from hami_stack.protocol.register import encode_register_json

NV = NvidiaFamily()


def ctr(
    limits: dict[str, Any] | None = None, requests: dict[str, Any] | None = None, name: str = "c"
) -> dict:
    res: dict[str, Any] = {}
    if limits is not None:
        res["limits"] = limits
    if requests is not None:
        res["requests"] = requests
    return {"name": name, "image": "x", "resources": res}


def pod(*containers: dict, init: tuple[dict, ...] = (), annotations: dict[str, str] | None = None) -> dict:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = list(init)
    return {"metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}}, "spec": spec}


def gpu(
    i: int,
    *,
    mem: int = 16000,
    used: int = 0,
    usedmem: int = 0,
    usedcores: int = 0,
    numa: int = 0,
    type_: str = "NVIDIA-Tesla T4",
    health: bool = True,
    count: int = 10,
    mode: str = "hami-core",
) -> DeviceUsage:
    return DeviceUsage(
        id=f"GPU-{i}",
        type=type_,
        count=count,
        totalmem=mem,
        totalcore=100,
        index=i,
        numa=numa,
        health=health,
        used=used,
        usedmem=usedmem,
        usedcores=usedcores,
        mode=mode,
    )


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits, requests, expected",
    [
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}, None, (1, 3000, 101, 0)),
        ({"nvidia.com/gpu": 2}, None, (2, 0, 100, 0)),  # no memory asked -> whole memory
        (
            {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50", "nvidia.com/gpucores": "30"},
            None,
            (1, 0, 50, 30),
        ),
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "150"}, None, (1, 0, 100, 0)),  # clamp
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "0"}, None, (1, 0, 100, 0)),  # ignored
        (None, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1Ki"}, (1, 1024, 101, 0)),  # requests fallback
    ],
)
def test_nvidia_container_request(limits: Any, requests: Any, expected: tuple[int, int, int, int]) -> None:
    r = NV.container_request(ctr(limits, requests))
    assert r is not None
    assert (r.nums, r.memreq, r.mem_percentage, r.coresreq) == expected
    assert r.type == "NVIDIA"


def test_nvidia_request_defaults_factor_and_rejections() -> None:
    fam = NvidiaFamily(NvidiaConfig(default_memory=2000, default_cores=20, memory_factor=1024))
    r = fam.container_request(ctr({"nvidia.com/gpu": "1"}))
    assert r is not None and (r.memreq, r.mem_percentage, r.coresreq) == (2000, 101, 20)
    r = fam.container_request(ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3"}))
    assert r is not None and r.memreq == 3072
    too_big = fam.container_request(ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(2**22)}))
    assert too_big is None  # not an int32 after the factor: the container asks nothing
    assert NV.container_request(ctr({"nvidia.com/gpu": "500m"})) is None
    assert NV.container_request(ctr({"nvidia.com/gpu": "0"})) is None
    assert NV.container_request(ctr({"cpu": "1"})) is None


def test_pod_requests_init_first_and_lock_need() -> None:
    p = pod(ctr({"nvidia.com/gpu": 1}, name="app"), init=(ctr({}, name="init"),))
    reqs = NV.pod_requests(p)
    assert reqs[0] is None and reqs[1] is not None
    assert NV.needs_lock(p)
    assert not NV.needs_lock(pod(ctr({}), init=(ctr({"nvidia.com/gpu": 1}),)))  # only init uses the GPU


# --- fit --------------------------------------------------------------------------------------


def req(nums: int = 1, mem: int = 1000, pct: int = 101, cores: int = 0) -> ContainerDeviceRequest:
    return ContainerDeviceRequest("NVIDIA", nums, mem, pct, cores)


def test_fit_walks_from_the_end_and_resolves_percentage() -> None:
    devs = [gpu(0), gpu(1)]
    r = NV.fit(devs, req(mem=0, pct=25, cores=150), FitContext(pod()))
    assert r.ok and r.devices == [
        ContainerDevice("GPU-1", "NVIDIA", 4000, 100)
    ]  # 25 % of 16000, cores clamped
    add_usage(devs, r.devices)
    assert (devs[1].used, devs[1].usedmem, devs[1].usedcores) == (1, 4000, 100)


@pytest.mark.parametrize(
    "device, request_, annotations, node_ann, reason",
    [
        (gpu(0, health=False), req(), {}, {}, ev.CARD_NOT_HEALTH),
        (gpu(0), req(), {}, {"hami.io/device-cordon": "GPU-9, GPU-0"}, ev.CARD_CORDONED),
        (gpu(0), req(), {"nvidia.com/use-gputype": "a100,h100"}, {}, ev.CARD_TYPE_MISMATCH),
        (gpu(0), req(), {"nvidia.com/nouse-gputype": "t4"}, {}, ev.CARD_TYPE_MISMATCH),
        (gpu(0), req(), {"nvidia.com/vgpu-mode": "mig"}, {}, ev.CARD_TYPE_MISMATCH),
        (gpu(0), req(), {"nvidia.com/use-gpuuuid": "GPU-1"}, {}, ev.CARD_UUID_MISMATCH),
        (gpu(0), req(), {"nvidia.com/nouse-gpuuuid": " GPU-0 "}, {}, ev.CARD_UUID_MISMATCH),
        (gpu(0, used=10), req(), {}, {}, ev.CARD_TIME_SLICING_EXHAUSTED),
        (gpu(0, used=1, usedmem=15500), req(), {}, {}, ev.CARD_INSUFFICIENT_MEMORY),
        (gpu(0, used=1, usedcores=80), req(cores=30), {}, {}, ev.CARD_INSUFFICIENT_CORE),
        (gpu(0, used=1, usedcores=0), req(cores=100), {}, {}, ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT),
        (gpu(0, used=1, usedcores=100), req(cores=0), {}, {}, ev.CARD_COMPUTE_UNITS_EXHAUSTED),
        (gpu(0, mode="mig"), req(), {}, {}, ev.CARD_MIG_TOPOLOGY_INFEASIBLE),
    ],
)
def test_fit_reasons(
    device: DeviceUsage,
    request_: ContainerDeviceRequest,
    annotations: dict[str, str],
    node_ann: dict[str, str],
    reason: str,
) -> None:
    ctx = FitContext(pod(annotations=annotations), node={"metadata": {"annotations": node_ann}})
    r = NV.fit([device], request_, ctx)
    assert not r.ok and r.devices == []
    # nothing picked: no AllocatedCardsInsufficientRequest (HAMi adds it only on partial picks)
    assert r.reason == f"1/1 {reason}"


def test_fit_partial_pick_counts_picked_devices() -> None:
    r = NV.fit([gpu(0, usedmem=15500), gpu(1), gpu(2)], req(nums=3), FitContext(pod()))
    assert not r.ok and r.reason == (
        f"1/3 {ev.CARD_INSUFFICIENT_MEMORY}, 2/3 {ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST}"
    )


def test_fit_selection_accepts() -> None:
    ctx = FitContext(pod(annotations={"nvidia.com/use-gputype": "T4", "nvidia.com/use-gpuuuid": "GPU-0"}))
    assert NV.fit([gpu(0), gpu(1)], req(), ctx).devices[0].uuid == "GPU-0"


def test_fit_more_than_the_node_has_ends_short_and_other_types_ignored() -> None:
    # the scheduler refuses such a node before fit (bare NodeInsufficientDevice, see
    # test_extender_filter); fit itself just ends short, counting what it picked
    r = NV.fit([gpu(0), gpu(1, type_="Ascend910B3")], req(nums=2), FitContext(pod()))
    assert not r.ok and r.reason == f"1/1 {ev.ALLOCATED_CARDS_INSUFFICIENT_REQUEST}"


def test_fit_mutex_policy() -> None:
    ctx = FitContext(pod(), policy=gpu_policy("mutex"))
    r = NV.fit([gpu(0, used=1, usedmem=100)], req(), ctx)
    assert not r.ok and ev.EXCLUSIVE_DEVICE_ALLOCATE_CONFLICT in r.reason


def test_fit_quota_callback() -> None:
    seen: list[tuple[str, int, int]] = []

    def quota(ns: str, fam: Any, mem: int, cores: int) -> bool:
        seen.append((ns, mem, cores))
        return mem <= 500

    r = NV.fit([gpu(0)], req(mem=1000, cores=10), FitContext(pod(), quota_fits=quota))
    assert not r.ok and ev.RESOURCE_QUOTA_NOT_FIT in r.reason and seen == [("ns", 1000, 10)]


def test_fit_numa_bind_keeps_one_numa_node() -> None:
    devs = [gpu(0, numa=0), gpu(1, numa=0), gpu(2, numa=1)]
    ctx = FitContext(pod(annotations={"nvidia.com/numa-bind": "true"}))
    r = NV.fit(devs, req(nums=2), ctx)
    assert r.ok and sorted(d.uuid for d in r.devices) == ["GPU-0", "GPU-1"]
    assert r.reasons[ev.NUMA_NOT_FIT] == 1
    unbound = NV.fit(devs, req(nums=2), FitContext(pod()))
    assert [d.uuid for d in unbound.devices] == ["GPU-2", "GPU-1"]
    split = [gpu(0, numa=0), gpu(1, numa=1)]
    assert not NV.fit(split, req(nums=2), ctx).ok


def test_fit_topology_aware() -> None:
    node = {
        "metadata": {
            "annotations": {
                "hami.io/node-nvidia-score": (
                    '[{"uuid":"GPU-0","score":{"GPU-1":10,"GPU-2":200}},{"uuid":"GPU-1","score":{"GPU-0":10,"GPU-2":10}},'
                    '{"uuid":"GPU-2","score":{"GPU-0":200,"GPU-1":10}}]'
                )
            }
        }
    }
    ctx = FitContext(pod(), node=node, policy=gpu_policy("topology-aware"))
    devs = [gpu(0), gpu(1), gpu(2)]
    two = NV.fit(devs, req(nums=2), ctx)
    assert sorted(d.uuid for d in two.devices) == ["GPU-0", "GPU-2"]  # best-linked pair
    one = NV.fit(devs, req(nums=1), ctx)
    assert [d.uuid for d in one.devices] == ["GPU-1"]  # least-linked single, keeps the good pair free


# --- scores and ordering ----------------------------------------------------------------------


def test_device_score_formula() -> None:
    d = gpu(0, used=1, usedmem=4000, usedcores=20, type_="NVIDIA")
    s = device_score(d, req(mem=4000, cores=30), ScoringWeights())
    assert s == pytest.approx(10 * (2 / 10 + 50 / 100 + 8000 / 16000))
    s3 = device_score(d, req(mem=4000, cores=30), ScoringWeights(1, 1, 3))
    assert s3 == pytest.approx(10 * (2 / 10 + 50 / 100 + 3 * 8000 / 16000))
    # HAMi counts a request only when its type equals the device type verbatim: a registered
    # "NVIDIA-<model>" device is scored on its usage alone
    named = gpu(0, used=1, usedmem=4000, usedcores=20)
    assert device_score(named, req(mem=4000, cores=30), ScoringWeights()) == pytest.approx(
        10 * (1 / 10 + 20 / 100 + 4000 / 16000)
    )
    assert device_score(gpu(0, mem=0), req(), ScoringWeights()) == 0


def test_binpack_and_spread_order() -> None:
    busy, idle = gpu(0, used=2, usedmem=8000), gpu(1)
    binpack = order_devices([busy, idle], req(), gpu_policy("binpack"))
    spread = order_devices([busy, idle], req(), gpu_policy("spread"))
    assert binpack[-1] is busy  # the walk from the end takes the busiest
    assert spread[-1] is idle
    assert NV.fit(binpack, req(), FitContext(pod())).devices[0].uuid == "GPU-0"
    assert NV.fit(spread, req(), FitContext(pod())).devices[0].uuid == "GPU-1"
    tie = order_devices([gpu(0), gpu(1), gpu(2)], req(), gpu_policy("spread"))
    assert tie[-1].id == "GPU-2"  # ties keep the list order (stable), so the last is taken first
    numa = order_devices([gpu(0, numa=1), gpu(1, numa=0)], req(), gpu_policy("spread"))
    assert numa[-1].id == "GPU-0"  # equal scores: NUMA ascending, so the NUMA-1 GPU is taken first
    mutex = order_devices([idle, busy], req(), gpu_policy("mutex"))
    assert mutex[-1] is idle
    chained = order_devices([busy, idle], req(), gpu_policy("binpack,mutex"))
    assert chained[-1] is busy  # in a chain mutex is only a fit filter, not a sort key


def test_node_score_and_best_node() -> None:
    devs = [gpu(0, used=5, usedmem=8000, usedcores=50), gpu(1)]
    assert node_score(devs) == pytest.approx(10 * (5 / 20 + 50 / 200 + 8000 / 32000))
    assert node_score([]) == 0
    scores = {"a": 1.0, "b": 3.0, "c": 3.0}
    assert best_node(scores, "binpack") == "b" and best_node(scores, "spread") == "a"
    assert best_node({}, "binpack") is None


# --- node side --------------------------------------------------------------------------------


def test_node_devices_and_register_helpers() -> None:
    cfg = NvidiaConfig(device_memory_scaling=1.5, device_split_count=4)
    info = register_device(cfg, uuid="GPU-a", index=1, nvml_name="Tesla T4", memory_mib=15360, numa=-1)
    assert info is not None
    assert (info.count, info.devmem, info.devcore, info.type, info.numa) == (
        4,
        23040,
        100,
        "NVIDIA-Tesla T4",
        0,
    )
    assert register_device(cfg, uuid="x", index=0, nvml_name="A", memory_mib=None) is None
    pre = dataclasses.replace(cfg, pre_configured_device_memory=8000)
    pre_info = register_device(pre, uuid="x", index=0, nvml_name="NVIDIA A30", memory_mib=None)
    assert pre_info is not None and pre_info.devmem == 12000 and pre_info.type == "NVIDIA A30"
    assert nvidia_type_name("NVIDIA A30") == "NVIDIA A30"
    assert virtual_device_ids("GPU-a", 3) == ["GPU-a-0", "GPU-a-1", "GPU-a-2"]
    assert physical_uuid("GPU-5d3c-aa-7") == "GPU-5d3c-aa" and physical_uuid("GPU-x-y") == "GPU-x-y"
    node = {"metadata": {"annotations": {"hami.io/node-nvidia-register": encode_register_json([info])}}}
    assert NV.node_devices(node) == [info]
    assert NV.node_devices({"metadata": {}}) == []


def test_check_health_handshake() -> None:
    now = dt.datetime(2025, 1, 1, 12, 0, 0)
    node = {
        "metadata": {"annotations": {"hami.io/node-handshake": "Requesting_2025-01-01 11:58:00"}},
        "status": {"allocatable": {"nvidia.com/gpu": "0"}},
    }
    result, state = NV.check_health(node, now, None)
    assert not result.healthy and state == HealthState(0, None)
    node["status"]["allocatable"]["nvidia.com/gpu"] = "20"
    result, state = NV.check_health(node, now, None)
    assert result.healthy and state.allocatable == 20
    node["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    fresh = {
        **node,
        "metadata": {"annotations": {"hami.io/node-handshake": "Requesting_2025-01-01 11:59:30"}},
    }
    assert NV.check_health(fresh, now, None)[0].healthy  # generic rule alone: young Requesting
    assert not NV.check_health(fresh, now, state)[0].healthy  # NVIDIA: allocatable fell from 20 to 0
    node["status"]["allocatable"]["nvidia.com/gpu"] = "10"
    assert NV.check_health(node, now, state)[0] == HealthResult(True, True)  # count changed: rebuild


# --- allocate ---------------------------------------------------------------------------------


def test_allocate_response_env_and_mounts() -> None:
    fam = NvidiaFamily(NvidiaConfig(device_memory_scaling=2, disable_core_limit=True))
    devices = [ContainerDevice("GPU-a", "NVIDIA", 3000, 30), ContainerDevice("GPU-b", "NVIDIA", 5000, 30)]
    out = fam.allocate_response(AllocateInput(devices, "uid1", "main", cache_id="abc"))
    assert out.envs == {
        "NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b",
        "CUDA_DEVICE_MEMORY_LIMIT_0": "3000m",
        "CUDA_DEVICE_MEMORY_LIMIT_1": "5000m",
        "CUDA_DEVICE_SM_LIMIT": "30",
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": "/usr/local/vgpu/abc.cache",
        "CUDA_OVERSUBSCRIBE": "true",
        "LIBCUDA_LOG_LEVEL": "1",
        "GPU_CORE_UTILIZATION_POLICY": "disable",
    }
    mounts = {(m.container_path, m.host_path, m.read_only) for m in out.mounts}
    assert mounts == {
        ("/usr/local/vgpu/libvgpu.so", "/usr/local/vgpu/libvgpu.so", True),
        ("/usr/local/vgpu", "/usr/local/vgpu/containers/uid1_main", False),
        ("/tmp/vgpulock", "/tmp/vgpulock", False),
        ("/etc/ld.so.preload", "/usr/local/vgpu/ld.so.preload", True),
    }
    assert out.host_dirs == ["/usr/local/vgpu/containers/uid1_main"]
    off = NV.allocate_response(
        AllocateInput(
            devices[:1],
            "u",
            "c",
            {"CUDA_DISABLE_CONTROL": "true"},
            "x",
            libvgpu_name="libvgpu.so.v2",
            license_present=True,
        )
    )
    paths = {m.container_path: m.host_path for m in off.mounts}
    assert "/etc/ld.so.preload" not in paths and "CUDA_OVERSUBSCRIBE" not in off.envs
    assert paths["/usr/local/vgpu/libvgpu.so"] == "/usr/local/vgpu/libvgpu.so.v2"
    assert paths["/tmp/license"] == "/usr/local/vgpu/license"


def test_allocate_volume_mounts_strategy() -> None:
    fam = NvidiaFamily(device_list_strategy="volume-mounts")
    out = fam.allocate_response(
        AllocateInput([ContainerDevice("GPU-a", "NVIDIA", 1, 0)], "u", "c", cache_id="z")
    )
    assert out.envs["NVIDIA_VISIBLE_DEVICES"] == "/var/run/nvidia-container-devices"
    assert any(
        m.container_path == "/var/run/nvidia-container-devices/GPU-a" and m.host_path == "/dev/null"
        for m in out.mounts
    )


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_and_fields(tmp_path: Path) -> None:
    cfg = load_device_config("nvidia: {}\n")
    assert cfg.nvidia == NvidiaConfig()
    assert (cfg.nvidia.device_split_count, cfg.nvidia.default_gpu_num, cfg.nvidia.gpu_core_policy) == (
        10,
        1,
        "default",
    )
    f = tmp_path / "device-config.yaml"
    f.write_text(
        "nvidia:\n  resourceCountName: nvidia.com/vgpu\n  deviceSplitCount: 4\n"
        "  deviceMemoryScaling: 1.5\n  overwriteEnv: 'true'\n  gpuCorePolicy: force\n"
        "vastai:\n  resourceCountName: vastaitech.com/va\n"
    )
    cfg = load_device_config(f)
    assert cfg.nvidia is not None
    assert (
        cfg.nvidia.resource_count_name,
        cfg.nvidia.device_split_count,
        cfg.nvidia.device_memory_scaling,
        cfg.nvidia.overwrite_env,
        cfg.nvidia.gpu_core_policy,
    ) == ("nvidia.com/vgpu", 4, 1.5, True, "force")
    assert [f.common_word for f in build_families(cfg)] == ["NVIDIA", "Vastai"]
    assert NvidiaFamily(cfg.nvidia).count_resource == "nvidia.com/vgpu"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("nvidia:\n  deviceSplitCount: ten\n", "nvidia.deviceSplitCount: must be an integer"),
        ("nvidia:\n  deviceSplitCount: 0\n", "nvidia.deviceSplitCount: must be >= 1"),
        ("nvidia:\n  defaultCores: 101\n", "nvidia.defaultCores: must be between 0 and 100"),
        ("nvidia:\n  gpuCorePolicy: hard\n", "nvidia.gpuCorePolicy: must be one of"),
        ("nvidia:\n  overwriteEnv: maybe\n", "nvidia.overwriteEnv: must be a boolean"),
        ("nvidia:\n  deviceSplitcount: 3\n", "nvidia.deviceSplitcount: unknown field"),
        ("nvidia:\n  deviceMemoryScaling: -1\n", "nvidia.deviceMemoryScaling: must be a positive number"),
        ("nvidia:\n  resourceCountName: ''\n", "nvidia.resourceCountName: must be a non-empty"),
        ("hygon: [1]\n", "hygon: must be a mapping"),
        ("gpus: {}\n", "gpus: unknown section"),
        ("{}\n", "every vendor section is empty"),
        ("nvidia: [\n", "invalid YAML"),
    ],
)
def test_config_errors_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(DeviceConfigError, match=fragment):
        load_device_config(text)


def test_config_lenient_mode_and_missing_file(tmp_path: Path) -> None:
    cfg = parse_device_config({"nvidia": {"someFutureKnob": 1}, "future": {}}, strict=False)
    assert cfg.nvidia == NvidiaConfig()
    with pytest.raises(DeviceConfigError, match="cannot read"):
        load_device_config(tmp_path / "absent.yaml")


# --- a second family through the same interface -----------------------------------------------


def test_counted_family_through_the_same_interface() -> None:
    fam = CountedFamily(VASTAI, {"resourceCountName": "vastaitech.com/va"})
    assert fam.common_word == "Vastai" and fam.keys.register == "hami.io/node-va-register"
    c = ctr({"vastaitech.com/va": "2"})
    r = fam.container_request(c)
    assert r is not None and (r.nums, r.mem_percentage, r.coresreq) == (2, 100, 100)
    assert fam.mutate_admission(c, pod(c))
    node = {
        "metadata": {
            "name": "n1",
            "annotations": {
                "hami.io/node-va-register": (
                    '[{"id":"VA-0","count":1,"devmem":16384,"devcore":100,"type":"Vastai","health":true},'
                    '{"id":"VA-1","index":1,"count":1,"devmem":16384,"devcore":100,"type":"Vastai","health":true}]'
                )
            },
        }
    }
    devs = [DeviceUsage.from_info(d) for d in fam.node_devices(node)]
    fit = fam.fit(order_devices(devs, r, gpu_policy(None)), r, FitContext(pod(c)))
    assert fit.ok and [d.uuid for d in fit.devices] == ["VA-1", "VA-0"]  # equal: the last first
    assert all(d.type == "Vastai" and d.usedcores == 100 for d in fit.devices)
    add_usage(devs, fit.devices)
    again = fam.fit(devs, r, FitContext(pod(c)))
    assert not again.ok and "CardTimeSlicingExhausted" in again.reason
    annotations = fam.pod_annotations([[], fit.devices])
    value = ";VA-1,Vastai,16384,100:VA-0,Vastai,16384,100:;"
    assert annotations == {
        "hami.io/Vastai-devices-to-allocate": value,
        "hami.io/Vastai-devices-allocated": value,
    }
    assert NV.container_request(c) is None  # families do not see each other's resources


def test_capacity_derived_family() -> None:
    cfg = parse_device_config({"metax": {"resourceCountName": "metax-tech.com/gpu"}})
    # the section enables both MetaX families; the whole-GPU one derives its cards from capacity
    fam = next(f for f in build_families(cfg) if f.common_word == "Metax-GPU")
    node = {"metadata": {"name": "n1"}, "status": {"capacity": {"metax-tech.com/gpu": "2"}}}
    devs = fam.node_devices(node)
    assert [d.id for d in devs] == ["n1-metax-0", "n1-metax-1"] and devs[0].devmem == 65536
    assert not fam.needs_lock(pod(ctr({"metax-tech.com/gpu": 1})))
    health, _ = fam.check_health(node, dt.datetime.now(), None)
    assert health.healthy


def test_quota_usage_collapses_by_true_container_position() -> None:
    # UPSTREAM-DIFFERENCES.md: HAMi checks an app container's quota against the app containers'
    # picks only, numbering them from 0 (so the first ones count as init containers); we count
    # the pod as it will be charged: an init container's 60 on gpu-0 plus an app's 60 on gpu-1
    from hami_stack.devices.base import pod_quota_usage

    init = [ContainerDevice("gpu-0", "NVIDIA", 1000, 60)]
    app = ContainerDevice("gpu-1", "NVIDIA", 1000, 60)
    assert pod_quota_usage([init], [app], 1, "NVIDIA") == (2000, 120)
    same = ContainerDevice("gpu-0", "NVIDIA", 500, 60)
    assert pod_quota_usage([init], [same], 1, "NVIDIA") == (1000, 60)  # same device: the peak
    assert pod_quota_usage([], [app, app], 0, "NVIDIA") == (2000, 120)  # app containers add up
