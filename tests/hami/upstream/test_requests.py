"""Upstream vectors for reading one container's NVIDIA request (GenerateResourceRequests and friends)."""

from __future__ import annotations

from typing import Any

import pytest

from hami_stack.devices.config import NvidiaConfig
from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import events as ev

from .request_tables import REQUEST_CASES
from .rows import D, ctx_for, pod


def _ctr(limits: dict[str, str], requests: dict[str, str] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"limits": dict(limits)}
    if requests:
        res["requests"] = dict(requests)
    return {"name": "test", "resources": res}


@pytest.mark.parametrize("name, limits, requests, want", REQUEST_CASES, ids=[c[0] for c in REQUEST_CASES])
def test_generate_resource_requests(
    name: str, limits: dict[str, str], requests: dict[str, str], want: tuple[int, str, int, int, int] | None
) -> None:
    r = NvidiaFamily().container_request(_ctr(limits, requests))
    got = None if r is None else (r.nums, r.type, r.memreq, r.mem_percentage, r.coresreq)
    assert got == want


def test_generate_resource_requests_memory_factor() -> None:
    fam = NvidiaFamily(NvidiaConfig(memory_factor=2))
    r = fam.container_request(_ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1024"}))
    assert r is not None and r.memreq == 2048
    assert fam.container_request(_ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1Gi"})) is None


def test_generate_resource_requests_default_memory() -> None:
    fam = NvidiaFamily(NvidiaConfig(default_memory=512))
    plain = fam.container_request(_ctr({"nvidia.com/gpu": "1"}))
    assert plain is not None and (plain.memreq, plain.mem_percentage) == (512, 101)
    zero_pct = fam.container_request(_ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "0"}))
    assert zero_pct is not None and (zero_pct.memreq, zero_pct.mem_percentage) == (512, 101)
    assert fam.container_request(_ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "0"})) == zero_pct


def test_zero_memory_percentage_is_accounted_as_whole_card() -> None:
    fam = NvidiaFamily()
    req = fam.container_request(_ctr({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "0"}))
    assert req is not None

    def card(usedmem: int) -> list:
        return [
            D("dev-0", count=10, usedmem=usedmem, totalmem=11264, totalcore=100, type="NVIDIA", health=True)
        ]

    r = fam.fit(card(0), req, ctx_for(pod()))
    assert r.ok and r.devices[0].usedmem == 11264
    full = fam.fit(card(11260), req, ctx_for(pod()))
    assert not full.ok and ev.CARD_INSUFFICIENT_MEMORY in full.reason
