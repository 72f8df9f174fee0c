"""Registration loop (handshake, 60 s health rule, cleanup, malformed annotations), leader awareness, CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hami_stack.protocol import annotations as ann
from hami_stack.protocol.handshake import requesting
from hami_stack.scheduler.cache import UsageCache
from hami_stack.scheduler.cli import parse_args, service_config
from hami_stack.scheduler.registration import LeaderWatch, Registrar

from .extender_helpers import NV, gpus, node_obj

HS = ann.NVIDIA_KEYS.handshake
NOW = dt.datetime(2025, 1, 2, 3, 4, 5).astimezone()


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, Any]] = []

    def patch(self, path: str, body: Any, kind: str = "strategic") -> Any:
        self.patches.append((path, body))
        return {}


def registrar(nodes: list[dict[str, Any]], now: dt.datetime = NOW) -> tuple[Registrar, UsageCache, FakeKube]:
    cache = UsageCache([NV])
    kube = FakeKube()
    reg = Registrar(kube, [NV], cache, lambda: nodes, now=lambda: now)  # type: ignore[arg-type]
    return reg, cache, kube


def test_first_pass_requests_handshake_and_registers() -> None:
    node = node_obj("n", gpus("n"))
    reg, cache, kube = registrar([node])
    assert not reg.synced.is_set()
    reg.run_pass()
    assert reg.synced.is_set()
    assert [d.id for d in cache.nodes["n"].all_devices()] == ["GPU-n-0", "GPU-n-1"]
    assert kube.patches == [("/api/v1/nodes/n", {"metadata": {"annotations": {HS: requesting(NOW)}}})]


def test_stale_request_with_zero_allocatable_cleans_up() -> None:
    node = node_obj("n", gpus("n"))
    reg, cache, kube = registrar([node])
    reg.run_pass()
    stale = node_obj("n", gpus("n"), {HS: requesting(NOW - dt.timedelta(seconds=61))}, allocatable=0)
    reg.nodes = lambda: [stale]
    reg.run_pass()
    assert "n" not in cache.nodes
    assert kube.patches[-1] == ("/api/v1/nodes/n", {"metadata": {"annotations": {HS: None}}})


def test_young_request_stays_healthy_without_writes() -> None:
    node = node_obj("n", gpus("n"), {HS: requesting(NOW - dt.timedelta(seconds=10))})
    reg, cache, kube = registrar([node])
    reg.run_pass()  # first pass: NVIDIA has no previous allocatable, generic rule: young -> no write
    assert "n" in cache.nodes and kube.patches == []


def test_malformed_register_is_dropped_whole_and_deleted_nodes_leave() -> None:
    node = node_obj("n", gpus("n"))
    reg, cache, _ = registrar([node])
    reg.run_pass()
    bad = node_obj("n", gpus("n"))
    bad["metadata"]["annotations"][ann.NVIDIA_KEYS.register] = '[{"id":"GPU-x","count":"ten"}]'
    reg.nodes = lambda: [bad]
    reg.run_pass()
    assert "n" not in cache.nodes
    reg.nodes = lambda: [node]
    reg.run_pass()
    assert "n" in cache.nodes
    reg.nodes = lambda: []
    reg.run_pass()
    assert "n" not in cache.nodes


def test_follower_does_not_register() -> None:
    reg, cache, kube = registrar([node_obj("n", gpus("n"))])
    reg.is_leader = lambda: False
    reg.start()
    reg.wake()
    reg.stop()
    assert not reg.synced.is_set() and not cache.nodes and not kube.patches


def test_leader_from_lease_holder_prefix(monkeypatch: Any) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    changes: list[bool] = []
    watch = LeaderWatch.__new__(LeaderWatch)
    watch.hostname, watch.leader, watch.on_change, watch.kube = "sched-0", False, changes.append, None
    watch._on_lease("ADDED", {"spec": {"holderIdentity": "sched-1_abc"}}, None)
    assert not watch.leader
    watch._on_lease("MODIFIED", {"spec": {"holderIdentity": "sched-0_1f2e"}}, None)
    assert watch.leader
    watch._on_lease("DELETED", {"spec": {"holderIdentity": "sched-0_1f2e"}}, None)
    assert changes == [True, False]


def test_cli_accepts_the_chart_flags() -> None:
    ns = parse_args(
        [
            "--http_bind=0.0.0.0:443",
            "--cert_file=/tls/tls.crt",
            "--key_file=/tls/tls.key",
            "--scheduler-name=hami-scheduler",
            "--device-config-file=/device-config.yaml",
            "--metrics-bind-address=:9395",
            "--leader-elect=true",
            "--leader-elect-resource-name=hami-scheduler",
            "--leader-elect-resource-namespace=hami-system",
            "--node-scheduler-policy=binpack",
            "--gpu-scheduler-policy=spread",
            "--kubeconfig",
            "/k",
            "--legacy-metrics",
            "-v",
            "4",
        ]
    )
    cfg = service_config(ns)
    assert (cfg.http_bind, cfg.cert_file, cfg.metrics_bind) == ("0.0.0.0:443", "/tls/tls.crt", ":9395")
    assert cfg.leader_elect and cfg.legacy_metrics and cfg.lease_namespace == "hami-system"
    assert cfg.options.scheduler_name == "hami-scheduler" and ns.kubeconfig == "/k" and ns.verbosity == 4
    assert not parse_args(["--leader-elect=false"]).leader_elect
