"""Issue 12 finding 7: device quantities are validated at admission with messages naming the resource.

Decisions (HAMi v2.10 ``pkg/device/nvidia`` reads every value with ``AsInt64``): ``gpumem: 1Gi`` is
refused with the MiB count to write (HAMi takes it as 1,073,741,824 MiB); ``gpucores`` must be
0..100 (HAMi admits 101 and clamps it at fit); ``gpumem-percentage`` 1..100 (HAMi admits 0 and
treats it as "not asked"); ``gpu: 0`` asks no GPU and the pod is left as it is.
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import jsonpatch
import pytest

from hami_stack.devices import NvidiaConfig, NvidiaFamily
from hami_stack.devices.config import DeviceConfig
from hami_stack.devices.registry import build_families
from hami_stack.protocol.quantity import parse_quantity, quantity_int
from hami_stack.webhook import WebhookConfig, admit

CFG = WebhookConfig(trusted_users=())


def pod(limits: dict[str, Any], *, requests: dict[str, Any] | None = None, name: str = "main") -> dict:
    resources: dict[str, Any] = {"limits": limits}
    if requests is not None:
        resources["requests"] = requests
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "schedulerName": "default-scheduler",
            "containers": [{"name": name, "image": "x", "resources": resources}],
        },
    }


def run(p: dict, config: WebhookConfig = CFG) -> tuple[Any, dict]:
    resp = admit({"uid": "u", "operation": "CREATE", "object": p}, config)
    return resp, (jsonpatch.JsonPatch(resp.patch).apply(p) if resp.allowed else p)


def refused(limits: dict[str, Any], config: WebhookConfig = CFG, **kw: Any) -> str:
    resp, _ = run(pod(limits, **kw), config)
    assert not resp.allowed and resp.code == 400, resp
    return resp.message


# --- the parser --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value, suffix",
    [
        ("1Gi", Fraction(2**30), "Gi"),
        ("2k", Fraction(2000), "k"),
        ("1e3", Fraction(1000), "e3"),
        ("500m", Fraction(1, 2), "m"),
        ("1024", Fraction(1024), ""),
        (2.5, Fraction(5, 2), ""),
        (-3, Fraction(-3), ""),
    ],
)
def test_parse_quantity(text: Any, value: Fraction, suffix: str) -> None:
    q = parse_quantity(text)
    assert q is not None and q.value == value and q.suffix == suffix


@pytest.mark.parametrize("text", ["", " 1", "1 ", "1GiB", "abc", "1" * 65, True, None, [1], float("nan")])
def test_not_a_quantity(text: Any) -> None:
    assert parse_quantity(text) is None and quantity_int(text) is None


def test_huge_exponents_are_not_expanded() -> None:
    t0 = time.perf_counter()
    assert quantity_int("1e999999999") is None  # past int64: not an AsInt64 value
    assert quantity_int("1e-999999999") is None  # not an integer
    assert quantity_int("0e999999999") == 0
    assert time.perf_counter() - t0 < 0.5


def test_binary_flag() -> None:
    assert parse_quantity("1Gi").binary and parse_quantity("512Mi").binary  # type: ignore[union-attr]
    assert not parse_quantity("1G").binary and not parse_quantity("1024").binary  # type: ignore[union-attr]


# --- gpumem ------------------------------------------------------------------------------------


def test_gpumem_with_a_byte_unit_is_refused_with_the_number_to_write() -> None:
    msg = refused({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1Gi"})
    assert msg == (
        "nvidia.com/gpumem is in MiB, not a quantity with a unit: got 1Gi in container main; "
        "write 1024 for 1Gi"
    )
    assert "write 512 for 512Mi" in refused({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "512Mi"})
    assert "write the count of MiB" in refused({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1500Ki"})


def test_gpumem_unit_follows_memory_factor() -> None:
    cfg = WebhookConfig(families=[NvidiaFamily(NvidiaConfig(memory_factor=1024))], trusted_users=())
    msg = refused({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2Gi"}, cfg)
    assert "nvidia.com/gpumem is in units of 1024 MiB" in msg and "write 2 for 2Gi" in msg
    # within int32 after the factor, as HAMi's own bound
    assert "between 0 and 2097151" in refused({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2097152"}, cfg)
    assert run(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2097151"}), cfg)[0].allowed


@pytest.mark.parametrize("value", ["3000", "3k", 3000, "3e3"])
def test_gpumem_plain_and_decimal_forms_accepted(value: Any) -> None:
    """The apiserver stores 3000 as ``3k``: decimal suffixes are numbers, not units."""
    resp, out = run(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem": value}))
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("-1", "nvidia.com/gpumem must not be negative, got -1 in container main"),
        ("1.5", "nvidia.com/gpumem must be a whole number, got 1.5 in container main"),
        ("500m", "nvidia.com/gpumem must be a whole number, got 500m"),
        ("3000000000", "nvidia.com/gpumem must be an integer between 0 and 2147483647, got 3000000000"),
        ("1e30", "nvidia.com/gpumem must be an integer between 0 and 2147483647, got 1e30"),
        ("lots", "nvidia.com/gpumem must be a whole number, got 'lots' in container main"),
    ],
)
def test_gpumem_bad_values(value: str, fragment: str) -> None:
    assert fragment in refused({"nvidia.com/gpu": "1", "nvidia.com/gpumem": value})


def test_values_in_requests_are_checked_too() -> None:
    msg = refused({"nvidia.com/gpu": "1"}, requests={"nvidia.com/gpu": "1", "nvidia.com/gpucores": "101"})
    assert msg.startswith("nvidia.com/gpucores must be an integer between 0 and 100, got 101")


# --- gpucores, gpumem-percentage, gpu, priority ---------------------------------------------------


@pytest.mark.parametrize(
    "cores, ok", [("0", True), ("1", True), ("100", True), ("101", False), ("-1", False)]
)
def test_gpucores_range(cores: str, ok: bool) -> None:
    resp, out = run(pod({"nvidia.com/gpu": "1", "nvidia.com/gpucores": cores}))
    assert resp.allowed is ok
    if not ok:
        assert resp.code == 400 and resp.message.startswith("nvidia.com/gpucores must")
        assert "in container main" in resp.message
    else:
        assert out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpucores"] == cores


@pytest.mark.parametrize("pct, ok", [("0", False), ("1", True), ("50", True), ("100", True), ("101", False)])
def test_percentage_range(pct: str, ok: bool) -> None:
    resp, _ = run(pod({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": pct}))
    assert resp.allowed is ok
    if not ok:
        assert resp.message == (
            f"invalid nvidia.com/gpumem-percentage value {pct} in container main: "
            "must be an integer between 1 and 100"
        )


@pytest.mark.parametrize(
    "count, fragment",
    [
        ("-1", "nvidia.com/gpu must not be negative, got -1 in container main"),
        ("0.5", "nvidia.com/gpu must be a whole number, got 0.5 in container main"),
        ("99999999999", "nvidia.com/gpu must be an integer between 0 and 1024"),
        ("1Gi", "nvidia.com/gpu must be an integer between 0 and 1024, got 1Gi"),
        ("1025", "nvidia.com/gpu must be an integer between 0 and 1024, got 1025 in container main"),
    ],
)
def test_gpu_count_bad_values(count: str, fragment: str) -> None:
    assert fragment in refused({"nvidia.com/gpu": count})


def test_priority_checked() -> None:
    assert "nvidia.com/priority must not be negative" in refused(
        {"nvidia.com/gpu": "1", "nvidia.com/priority": "-1"}
    )


def test_gpu_zero_is_no_request() -> None:
    """Admitted unchanged: no schedulerName, no exclusive cores; the scheduler sees no request either."""
    p = pod({"nvidia.com/gpu": "0", "cpu": "1"})
    resp, out = run(p)
    assert resp.allowed and resp.patch == [] and out["spec"]["schedulerName"] == "default-scheduler"
    family = NvidiaFamily()
    assert family.container_request(p["spec"]["containers"][0]) is None
    resp, _ = run(pod({"nvidia.com/gpu": 0}))
    assert resp.allowed and resp.patch == []


def test_gpu_zero_with_memory_is_refused() -> None:
    msg = refused({"nvidia.com/gpu": "0", "nvidia.com/gpumem": "1000"})
    assert msg.startswith("nvidia.com/gpu is 0 in container main but nvidia.com/gpumem is set")
    assert run(pod({"nvidia.com/gpu": "0", "nvidia.com/gpucores": "0"}))[0].allowed


def test_other_scheduler_is_not_validated() -> None:
    """As HAMi: a pod for another scheduler is none of this webhook's business."""
    p = pod({"nvidia.com/gpu": "1", "nvidia.com/gpucores": "101"})
    p["spec"]["schedulerName"] = "volcano"
    resp, _ = run(p)
    assert resp.allowed and resp.message == "pod already has different scheduler assigned"


# --- other families ----------------------------------------------------------------------------


def test_counted_families_checked_with_their_unit() -> None:
    families = build_families(
        DeviceConfig(sections={"hygon": {"enabled": True}, "vastai": {"enabled": True}})
    )
    assert {"NVIDIA", "DCU", "Vastai"} <= {f.common_word for f in families}
    cfg = WebhookConfig(families=families, trusted_users=())
    msg = refused({"hygon.com/dcunum": "1", "hygon.com/dcumem": "1Gi"}, cfg)
    assert msg == (
        "hygon.com/dcumem is in MiB, not a quantity with a unit: got 1Gi in container main; "
        "write 1024 for 1Gi"
    )
    assert refused({"vastaitech.com/va": "-2"}, cfg).startswith("vastaitech.com/va must not be negative")
    resp, out = run(pod({"vastaitech.com/va": "0"}), cfg)
    assert resp.allowed and resp.patch == [] and out["spec"]["schedulerName"] == "default-scheduler"
    resp, out = run(pod({"vastaitech.com/va": "1"}), cfg)
    assert resp.allowed and out["spec"]["schedulerName"] == "hami-scheduler"
