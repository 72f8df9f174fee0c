"""Vectors for the protocol codecs, including every example of the reference notes."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from hami_stack.protocol import annotations as ann
from hami_stack.protocol import events as ev
from hami_stack.protocol import handshake as hs
from hami_stack.protocol import nodelock as nl
from hami_stack.protocol import policy as pol
from hami_stack.protocol.assignment import (
    MISSING_FIELDS_ERROR,
    ContainerDevice,
    decode_pod_devices,
    encode_pod_devices,
    has_devices,
    pop_first_nonempty,
)
from hami_stack.protocol.errors import ProtocolError
from hami_stack.protocol.quantity import quantity_int
from hami_stack.protocol.register import (
    DeviceInfo,
    decode_register,
    decode_register_csv,
    decode_register_json,
    decode_topology_scores,
    encode_register_csv,
    encode_register_json,
    encode_topology_scores,
)
from hami_stack.protocol.timefmt import format_rfc3339, go_duration

UTC = dt.UTC

# --- register ---------------------------------------------------------------------------------

MOCK_JSON = (
    '[{"id":"GPU-MOCK-0","count":10,"devmem":81920,"devcore":100,"type":"NVIDIA-A100-SXM4-80GB",'
    '"health":true,"numa":0,"mode":"hami-core"}]'
)
CSV9 = "GPU-00552014-5c87-89ac-b1a6-7b53aa24b0ec,10,32768,100,NVIDIA-Tesla V100-PCIE-32GB,0,true,0,hami-core:"


def test_register_json_reference_example() -> None:
    (d,) = decode_register_json(MOCK_JSON)
    assert d == DeviceInfo(
        id="GPU-MOCK-0",
        count=10,
        devmem=81920,
        devcore=100,
        type="NVIDIA-A100-SXM4-80GB",
        numa=0,
        health=True,
        index=0,
        mode="hami-core",
    )


def test_register_json_encode_omits_zero_values() -> None:
    d = DeviceInfo(id="GPU-a", count=10, devmem=1000, devcore=100, type="NVIDIA-T4", health=False)
    text = encode_register_json([d])
    assert text == (
        '[{"id":"GPU-a","count":10,"devmem":1000,"devcore":100,"type":"NVIDIA-T4","mode":"hami-core"}]'
    )
    (back,) = decode_register_json(text)
    assert back.health is False and back.index == 0 and back.numa == 0


def test_register_json_roundtrip_and_read_only_keys() -> None:
    d = DeviceInfo(
        id="GPU-b",
        index=3,
        count=4,
        devmem=2048,
        devcore=100,
        type="NVIDIA-A30",
        numa=1,
        custom_info={"NetworkID": 1},
        device_vendor="x",
    )
    assert decode_register_json(encode_register_json([d])) == [d]
    (u,) = decode_register_json('[{"id":"x","count":1,"futureKey":[1,2]}]')
    assert u.id == "x" and u.count == 1  # unknown keys are ignored, as Go does


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("not json", "not valid JSON"),
        ('{"id":"a"}', "must be a JSON array"),
        ('[{"id":"a","count":"10"}]', "'count' must be an integer"),
        ('[{"id":"a","count":-1}]', "'count' must be between"),
        ('[{"count":1}]', "'id' is missing"),
        ('[{"id":"a","health":"true"}]', "'health' must be a boolean"),
        ('[{"id":"a","devmem":3000000000}]', "'devmem' must be between"),
        ('[{"id":"a"}, 5]', "device 1: must be an object"),
        ('[{"id":"a","migProfiles":{}}]', "migProfiles"),
    ],
)
def test_register_json_rejections(value: str, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        decode_register_json(value)


def test_register_csv_reference_examples() -> None:
    (d,) = decode_register_csv(CSV9)
    assert (d.id, d.count, d.devmem, d.devcore, d.type, d.numa, d.health, d.index, d.mode) == (
        "GPU-00552014-5c87-89ac-b1a6-7b53aa24b0ec",
        10,
        32768,
        100,
        "NVIDIA-Tesla V100-PCIE-32GB",
        0,
        True,
        0,
        "hami-core",
    )
    seven = "GPU-a,10,15360,100,NVIDIA-Tesla T4,1,false:GPU-b,10,15360,100,NVIDIA-Tesla T4,0,true:"
    a, b = decode_register_csv(seven)
    assert (a.mode, a.index, a.health, a.numa) == ("hami-core", 0, False, 1)
    assert b.id == "GPU-b" and b.health
    assert encode_register_csv([d]) == CSV9
    assert decode_register(CSV9) == [d] and decode_register(MOCK_JSON)[0].id == "GPU-MOCK-0"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("GPU-a,10,100,100,T4,0,true", "no ':'"),
        ("GPU-a,10,100,100,T4,0,true,0:", "expected 7 or 9"),
        ("GPU-a,ten,100,100,T4,0,true:", "'count' must be an integer"),
        ("GPU-a,10,100,100,T4,0,yes:", "'health' must be a boolean"),
        ("GPU-a,10,100,100,T4,0,true,-1,hami-core:", "'index' must be between"),
        ("GPU-a,10,100,100,T4,x,true:", "'numa' must be an integer"),
        ("GPU-a,10,100,100,T4,0,true:GPU-b,1,2:", "device 1"),  # second device bad: whole value rejected
    ],
)
def test_register_csv_rejections(value: str, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        decode_register_csv(value)


def test_register_csv_go_bools_and_empty_segments() -> None:
    devs = decode_register_csv("::GPU-a,1,1,100,T4,0,T::GPU-b,1,1,100,T4,0,0:")
    assert [d.health for d in devs] == [True, False]


def test_topology_scores() -> None:
    text = encode_topology_scores({"GPU-a": {"GPU-b": 160}, "GPU-b": {"GPU-a": 160}})
    assert json.loads(text) == [
        {"uuid": "GPU-a", "score": {"GPU-b": 160}},
        {"uuid": "GPU-b", "score": {"GPU-a": 160}},
    ]
    assert decode_topology_scores(text)["GPU-a"]["GPU-b"] == 160
    with pytest.raises(ProtocolError, match="map UUIDs to integers"):
        decode_topology_scores('[{"uuid":"GPU-a","score":{"GPU-b":"x"}}]')


# --- assignment -------------------------------------------------------------------------------

REF_TWO = (
    "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448,NVIDIA,3000,0:;"
    "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448,NVIDIA,5000,0:;"
)


def test_assignment_reference_examples() -> None:
    uuid = "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448"
    pod = [[ContainerDevice(uuid, "NVIDIA", 3000, 0)], [ContainerDevice(uuid, "NVIDIA", 5000, 0)]]
    assert encode_pod_devices(pod) == REF_TWO
    # the decoder keeps the empty piece after the final ';' as one more container
    assert decode_pod_devices(REF_TWO) == [*pod, []]
    assert decode_pod_devices(REF_TWO, trim_trailing=True) == pod
    lead = ";GPU-A,NVIDIA,1000,0:;"
    assert decode_pod_devices(lead, trim_trailing=True) == [[], [ContainerDevice("GPU-A", "NVIDIA", 1000, 0)]]
    assert encode_pod_devices([[], [ContainerDevice("GPU-A", "NVIDIA", 1000, 0)]]) == lead


def test_assignment_multi_device_container_and_empties() -> None:
    pod = [[], [ContainerDevice("GPU-a", "NVIDIA", 100, 10), ContainerDevice("GPU-b", "NVIDIA", 200, 20)], []]
    text = encode_pod_devices(pod)
    assert text == ";GPU-a,NVIDIA,100,10:GPU-b,NVIDIA,200,20:;;"
    assert decode_pod_devices(text, trim_trailing=True) == pod


def test_assignment_pop_sequence_like_the_device_plugin() -> None:
    pod = decode_pod_devices(";GPU-a,NVIDIA,1,0:;GPU-b,NVIDIA,2,0:;", trim_trailing=True)
    i, devs, rest = pop_first_nonempty(pod)
    assert (i, devs[0].uuid) == (1, "GPU-a")
    assert encode_pod_devices(rest) == ";;GPU-b,NVIDIA,2,0:;"
    i, devs, rest = pop_first_nonempty(rest)
    assert (i, devs[0].uuid) == (2, "GPU-b") and encode_pod_devices(rest) == ";;;"
    assert not has_devices(encode_pod_devices(rest), ["NVIDIA"])
    with pytest.raises(ProtocolError):
        pop_first_nonempty(rest)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("GPU-a,NVIDIA,3000:;", MISSING_FIELDS_ERROR),
        ("GPU-a,NVIDIA,lots,0:;", "usedmem must be a 32-bit integer"),
        ("GPU-a,NVIDIA,1_000,0:;", "usedmem must be a 32-bit integer"),  # Go's ParseInt refuses these
        ("GPU-a,NVIDIA, 1,0:;", "usedmem must be a 32-bit integer"),
        ("GPU-a,NVIDIA,2147483648,0:;", "usedmem must be a 32-bit integer"),
        ("GPU-a,NVIDIA,1,0:junk:;", "is not '<uuid>"),
        ("GPU-a,NVIDIA,1,0:;,NVIDIA,1,0:;", "must be non-empty"),
    ],
)
def test_assignment_rejections(value: str, fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        decode_pod_devices(value)


def test_assignment_encode_refuses_separators() -> None:
    with pytest.raises(ProtocolError):
        encode_pod_devices([[ContainerDevice("GPU;a", "NVIDIA", 1, 0)]])


# --- node lock --------------------------------------------------------------------------------

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_lock_value_format_and_parse() -> None:
    v = nl.format_lock(NOW, "ns1", "pod-a")
    assert v == "2025-01-02T03:04:05Z,ns1,pod-a"
    parsed = nl.parse_lock(v)
    assert (parsed.time, parsed.namespace, parsed.name, parsed.legacy) == (NOW, "ns1", "pod-a", False)
    assert nl.parse_lock("2025-01-02T11:04:05+08:00").time == NOW
    assert nl.parse_lock("2025-01-02T03:04:05Z").legacy
    for bad in (
        "yesterday,ns,p",
        "2025-01-02 03:04:05,ns,p",
        "2025-01-02T03:04:05Z,ns",
        "2025-01-02T03:04:05Z,,p",
    ):
        with pytest.raises(ProtocolError):
            nl.parse_lock(bad)


def _never(ns: str, name: str) -> bool:
    return False


def _always(ns: str, name: str) -> bool:
    return True


def test_lock_decisions() -> None:
    held = nl.format_lock(NOW, "ns1", "pod-a")
    later = NOW + dt.timedelta(minutes=1)
    assert nl.decide_acquire("n1", None, "ns1", "pod-b", later, _always) is nl.LockAction.ACQUIRE
    assert nl.decide_acquire("n1", "", "ns1", "pod-b", later, _always) is nl.LockAction.ACQUIRE
    assert nl.decide_acquire("n1", held, "ns1", "pod-a", later, _always) is nl.LockAction.REENTRANT
    assert nl.decide_acquire("n1", held, "ns1", "pod-b", later, _never) is nl.LockAction.REPLACE_DANGLING
    expired = NOW + dt.timedelta(minutes=5, seconds=1)
    assert nl.decide_acquire("n1", held, "ns1", "pod-b", expired, _always) is nl.LockAction.REPLACE_EXPIRED
    with pytest.raises(nl.NodeLockContention) as e:
        nl.decide_acquire("n1", held, "ns1", "pod-b", later, _always)
    assert str(e.value) == "node n1 has been locked within 5m0s: node lock contention"
    legacy = format_rfc3339(NOW)
    with pytest.raises(nl.NodeLockContention):
        nl.decide_acquire("n1", legacy, "ns1", "pod-a", later, _never)  # legacy holder is unknown
    with pytest.raises(ProtocolError):
        nl.decide_acquire("n1", "garbage", "ns1", "pod-a", later, _never)
    short = dt.timedelta(seconds=28)
    assert nl.contention_message("n2", short) == "node n2 has been locked within 28s: node lock contention"


def test_lock_release_rule() -> None:
    held = nl.format_lock(NOW, "ns1", "pod-a")
    assert nl.may_release(held, "ns1", "pod-a")
    assert not nl.may_release(held, "ns1", "pod-b")
    assert not nl.may_release(held, "ns2", "pod-a")
    assert nl.may_release(held, "ns1", "pod-b", force=True)
    assert nl.may_release(format_rfc3339(NOW), "ns1", "pod-b")  # legacy value
    assert not nl.may_release(None, "ns1", "pod-a")


def test_go_duration() -> None:
    assert [go_duration(dt.timedelta(seconds=s)) for s in (0, 28, 120, 300, 3600, 3725)] == [
        "0s",
        "28s",
        "2m0s",
        "5m0s",
        "1h0m0s",
        "1h2m5s",
    ]


# --- handshake --------------------------------------------------------------------------------

LOCAL = dt.datetime(2025, 3, 4, 10, 0, 0)  # naive = local time, as HAMi stamps


def test_handshake_values() -> None:
    assert hs.requesting(LOCAL) == "Requesting_2025-03-04 10:00:00"
    assert hs.reported(LOCAL) == "Reported_2025-03-04 10:00:00"
    assert hs.deleted(LOCAL) == "Deleted_2025-03-04 10:00:00"
    assert hs.reported_ascend(LOCAL) == "Reported_2025.03.04 10:00:00"
    assert hs.parse_handshake("Requesting_2025-03-04 10:00:00") == hs.Handshake(
        hs.HandshakeKind.REQUESTING, LOCAL
    )
    old = "Reported 2024-01-23 04:30:04.434037031 +0000 UTC m=+1104711.777756895"
    assert hs.parse_handshake(old).kind is hs.HandshakeKind.REPORTED
    assert hs.parse_handshake("Deleted_2025-03-04 10:00:00").kind is hs.HandshakeKind.DELETED
    assert hs.parse_handshake(None).kind is hs.HandshakeKind.MISSING


def test_handshake_health_rule() -> None:
    req = hs.requesting(LOCAL)
    assert hs.check_handshake(req, LOCAL + dt.timedelta(seconds=59), 0) == hs.HealthResult(True, False)
    assert hs.check_handshake(req, LOCAL + dt.timedelta(seconds=61), 0) == hs.HealthResult(False, False)
    assert hs.check_handshake(req, LOCAL + dt.timedelta(seconds=61), 20) == hs.HealthResult(True, False)
    # an undatable Requesting (no stamp, unreadable stamp) waits, as HAMi
    assert hs.check_handshake("Requesting_garbage", LOCAL, 0) == hs.HealthResult(True, False)
    assert hs.check_handshake("Requesting", LOCAL, 0) == hs.HealthResult(True, False)
    for value in (hs.reported(LOCAL), None, "Reported 2024-01-23 04:30:04 +0000 UTC", hs.deleted(LOCAL)):
        assert hs.check_handshake(value, LOCAL, 0) == hs.HealthResult(True, True)


def test_handshake_nvidia_override() -> None:
    generic = hs.HealthResult(True, False)
    assert hs.check_nvidia(20, 0, False, generic) == hs.HealthResult(False, False)
    assert hs.check_nvidia(20, 10, False, generic) == hs.HealthResult(True, True)
    assert hs.check_nvidia(20, 20, True, generic) == hs.HealthResult(True, True)
    assert hs.check_nvidia(20, 20, False, generic) is generic
    assert hs.check_nvidia(None, 0, False, generic) is generic


# --- events, policy, keys, quantities ---------------------------------------------------------


def test_event_messages() -> None:
    assert ev.BIND_PHASES == ("allocating", "success", "failed")
    assert ev.fit_reason(
        {ev.CARD_INSUFFICIENT_MEMORY: 2, ev.CARD_TYPE_MISMATCH: 1, ev.NUMA_NOT_FIT: 0}, 4
    ) == ("1/4 CardTypeMismatch, 2/4 CardInsufficientMemory")
    assert ev.filter_success_message("n1", 1, [("n1", 3.456), ("n2", 1.0)]) == (
        "find fit node(n1), 1 nodes not fit, 2 nodes fit(n1:3.46,n2:1.00)"
    )
    assert ev.filter_failure_message(3) == "no available node, 3 nodes do not meet"
    assert ev.reason_type_messages({"n2": ["CardInsufficientMemory"], "n1": ["CardInsufficientMemory"]}) == [
        "2 nodes CardInsufficientMemory(n1,n2)"
    ]
    assert ev.binding_success_message("n1", "ns", "p") == "Successfully binding node [n1] to ns/p"
    assert (ev.FILTERING_FAILED, ev.FILTERING_SUCCEED, ev.BINDING_FAILED, ev.BINDING_SUCCEED) == (
        "FilteringFailed",
        "FilteringSucceed",
        "BindingFailed",
        "BindingSucceed",
    )


def test_policies() -> None:
    assert pol.node_policy(None) == "binpack" and pol.node_policy("spread") == "spread"
    assert pol.node_policy("bogus") == "binpack"
    assert pol.gpu_policy(None).sort_keys == ("spread",)
    chain = pol.gpu_policy("binpack,numa")
    assert chain.sort_keys == ("binpack", "numa") and not chain.mutex
    assert pol.gpu_policy("mutex").sort_keys == ("spread",) and pol.gpu_policy("mutex").mutex
    assert pol.gpu_policy("topology-aware").topology_aware
    assert pol.gpu_policy("binpack", numa_bind=True).sort_keys == ("numa", "binpack")


def test_scoring_weights() -> None:
    assert pol.scoring_weights("slot=1,core=1,memory=3") == pol.ScoringWeights(1, 1, 3)
    assert pol.scoring_weights(None) == pol.ScoringWeights(1, 1, 1)
    for bad in (
        "slot=1,core=1",
        "slot=1,core=1,memory=-1",
        "slot=0,core=0,memory=0",
        "slot=1,core=1,mem=1",
        "slot=1,slot=1,core=1",
        "slot=1.5,core=1,memory=1",
        "",
        " ",
    ):
        with pytest.raises(ProtocolError, match=r"invalid hami\.io/device-scoring-weights annotation"):
            pol.scoring_weights(bad)


def test_annotation_keys() -> None:
    assert ann.NVIDIA_KEYS.register == "hami.io/node-nvidia-register"
    assert ann.NVIDIA_KEYS.handshake == "hami.io/node-handshake"
    assert ann.NVIDIA_KEYS.to_allocate == "hami.io/vgpu-devices-to-allocate"
    assert ann.NVIDIA_KEYS.allocated == "hami.io/vgpu-devices-allocated"
    assert ann.ascend_keys("Ascend910B3").register == "hami.io/node-register-Ascend910B3"
    assert ann.iluvatar_keys("MR-V100").to_allocate == "hami.io/MR-V100-devices-to-allocate"
    for key in (
        "hami.io/vgpu-node",
        "hami.io/bind-phase",
        "hami.io/vgpu-devices-to-allocate",
        "hami.io/Ascend910B3-devices-allocated",
        "hami.io/kunlun-allocated",
    ):
        assert ann.is_scheduler_owned(key), key
    for key in ("hami.io/gpu-scheduler-policy", "nvidia.com/use-gputype", "hami.io/node-scheduler-policy"):
        assert not ann.is_scheduler_owned(key), key


@pytest.mark.parametrize(
    "text, value",
    [
        ("3000", 3000),
        ("2k", 2000),
        ("1Gi", 2**30),
        ("1e3", 1000),
        (5, 5),
        ("0", 0),
        ("-3", -3),
        ("500m", None),
        ("1.5", None),
        ("abc", None),
        ("", None),
        (True, None),
        ("1.0", 1),
    ],
)
def test_quantity_int(text: object, value: int | None) -> None:
    assert quantity_int(text) == value


def test_hamicore_container_dir_name_round_trips() -> None:
    from hami_stack.protocol import hamicore

    name = hamicore.container_dir_name("3f2a-uid", "main")
    assert name == "3f2a-uid_main"
    assert hamicore.split_container_dir_name(name) == ("3f2a-uid", "main")
    assert hamicore.split_container_dir_name("no-separator") is None
    assert hamicore.memory_limit_env(1) == "CUDA_DEVICE_MEMORY_LIMIT_1"
