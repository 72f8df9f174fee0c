"""Upstream codec vectors: node register CSV/JSON, pod device assignments, reasons.

From pkg/device/devices_test.go (Test_DecodeNodeDevices, Test_EncodeNodeDevices, TestMarshalNodeDevices,
TestUnMarshalNodeDevices, TestEncodeDecodeNodeDevicesRoundtrip, TestDecodeNodeDevicesLegacyFormat,
TestPodDevicesCoding, Test_DecodePodDevices, TestDecodePodDevices_BadAnnotation, the empty codings).
"""

from __future__ import annotations

import json

import pytest

from hami_stack.protocol.assignment import (
    ContainerDevice,
    decode_container_devices,
    decode_pod_devices,
    encode_container_devices,
    encode_pod_devices,
)
from hami_stack.protocol.errors import ProtocolError
from hami_stack.protocol.register import (
    DeviceInfo,
    decode_register,
    decode_register_csv,
    decode_register_json,
    encode_register_csv,
    encode_register_json,
)

P4 = "GPU-ebe7c3f7-303d-558d-435e-99a160631fe4"


def p4(index: int = 0) -> DeviceInfo:
    return DeviceInfo(
        id=P4, count=10, devmem=7680, devcore=100, type="NVIDIA-Tesla P4", numa=0, health=True, index=index
    )


@pytest.mark.parametrize(
    "value, devices",
    [
        (":", []),
        ("::", []),
        (f"{P4},10,7680,100,NVIDIA-Tesla P4,0,true:", [p4()]),  # old (7-field) format
        (f"{P4},10,7680,100,NVIDIA-Tesla P4,0,true,1,hami-core:", [p4(1)]),  # new (9-field) format
    ],
)
def test_decode_node_devices(value: str, devices: list[DeviceInfo]) -> None:
    assert decode_register_csv(value) == devices


@pytest.mark.parametrize(
    "value",
    [
        "",  # no device separator
        ",",
        ",:",  # 2 fields
        "a",
        "garbage:",
        f"{P4},notanint,7680,100,NVIDIA-Tesla P4,0,true:",
        f"{P4},10,notanint,100,NVIDIA-Tesla P4,0,true:",
        f"{P4},10,7680,notanint,NVIDIA-Tesla P4,0,true:",
        f"{P4},10,7680,100,NVIDIA-Tesla P4,notanint,true:",
        f"{P4},10,7680,100,NVIDIA-Tesla P4,0,notabool:",
        f"{P4},10,7680,100,NVIDIA-Tesla P4:",  # 5 fields
        f"{P4},10,7680,100,NVIDIA-Tesla P4,0,true,notanint,hami-core:",
        f"{P4},10,7680,100,NVIDIA-Tesla P4,0,true,-1,hami-core:",  # negative index
    ],
)
def test_decode_node_devices_rejects(value: str) -> None:
    with pytest.raises(ProtocolError):
        decode_register_csv(value)


@pytest.mark.parametrize(
    "devices, value",
    [
        ([p4()], f"{P4},10,7680,100,NVIDIA-Tesla P4,0,true,0,hami-core:"),
        ([p4(1)], f"{P4},10,7680,100,NVIDIA-Tesla P4,0,true,1,hami-core:"),
    ],
)
def test_encode_node_devices(devices: list[DeviceInfo], value: str) -> None:
    assert encode_register_csv(devices) == value


V100 = "NVIDIA-Tesla V100-PCIE-32GB"


@pytest.mark.parametrize(
    "devices",
    [
        [p4()],
        [p4(1)],
        [
            DeviceInfo("GPU-00552014-5c87-89ac-b1a6-7b53aa24b0ec", 10, 32768, 100, V100, health=True),
            DeviceInfo(
                "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448", 10, 32768, 100, V100, health=True, index=1
            ),
        ],
    ],
)
def test_encode_decode_node_devices_roundtrip(devices: list[DeviceInfo]) -> None:
    assert decode_register(encode_register_csv(devices)) == devices


ONE = DeviceInfo("id-1", 1, 1024, 10, "type", numa=0, health=True, index=1, mode="")
TWO = DeviceInfo("id-2", 2, 2048, 20, "type2", numa=1, health=False, index=2, mode="")


@pytest.mark.parametrize(
    "devices, want",
    [
        (
            [ONE],
            [
                {
                    "index": 1,
                    "id": "id-1",
                    "count": 1,
                    "devmem": 1024,
                    "devcore": 10,
                    "type": "type",
                    "numa": 0,
                    "health": True,
                }
            ],
        ),
        (
            [ONE, TWO],
            [
                {
                    "index": 1,
                    "id": "id-1",
                    "count": 1,
                    "devmem": 1024,
                    "devcore": 10,
                    "type": "type",
                    "numa": 0,
                    "health": True,
                },
                {
                    "index": 2,
                    "id": "id-2",
                    "count": 2,
                    "devmem": 2048,
                    "devcore": 20,
                    "type": "type2",
                    "numa": 1,
                    "health": False,
                },
            ],
        ),
        ([], []),
    ],
)
def test_marshal_node_devices(devices: list[DeviceInfo], want: list[dict]) -> None:
    # upstream compares after decoding both sides, so zero-valued keys may be left out
    assert decode_register_json(encode_register_json(devices)) == decode_register_json(json.dumps(want))


def test_unmarshal_node_devices() -> None:
    one = '[{"index":1,"id":"id-1","count":1,"devmem":1024,"devcore":10,"type":"type","health":true}]\n'
    assert decode_register_json(one) == [ONE]
    two = (
        '[{"index":1,"id":"id-1","count":1,"devmem":1024,"devcore":10,"type":"type","health":true},'
        '{"index":2,"id":"id-2","count":2,"devmem":4096,"devcore":20,"type":"type2","health":false}]'
    )
    assert decode_register_json(two) == [
        ONE,
        DeviceInfo("id-2", 2, 4096, 20, "type2", numa=0, health=False, index=2, mode=""),
    ]


# --- pod device assignments ------------------------------------------------------------------------


def cd(uuid: str, type_: str = "Type1", mem: int = 1000, cores: int = 30) -> ContainerDevice:
    return ContainerDevice(uuid, type_, mem, cores)


def test_empty_codings() -> None:
    assert decode_container_devices(encode_container_devices([])) == []
    assert encode_pod_devices([]) == ""


@pytest.mark.parametrize(
    "pod, roundtrip",
    [
        ([], [[]]),  # "" decodes to one empty container
        ([[cd("UUID1")]], [[cd("UUID1")], []]),  # the final ";" gives one more, empty, container
        ([[cd("UUID1")], [cd("UUID1")]], [[cd("UUID1")], [cd("UUID1")], []]),
        ([[cd("UUID1"), cd("UUID2")]], [[cd("UUID1"), cd("UUID2")], []]),
    ],
)
def test_pod_devices_coding(pod: list, roundtrip: list) -> None:
    assert decode_pod_devices(encode_pod_devices(pod)) == roundtrip


def test_decode_pod_devices() -> None:
    a, b = "GPU-8dcd427f-483b-b48f-d7e5-75fb19a52b76", "GPU-ebe7c3f7-303d-558d-435e-99a160631fe4"
    value = f"{a},NVIDIA,500,3:;{b},NVIDIA,500,3:;"
    assert decode_pod_devices(value) == [[cd(a, "NVIDIA", 500, 3)], [cd(b, "NVIDIA", 500, 3)], []]


def test_decode_pod_devices_bad_annotation() -> None:
    with pytest.raises(ProtocolError, match="missing fields"):
        decode_pod_devices("uuid,type,100:;")
