"""Upstream node-lock vectors (pkg/util/nodelock/nodelock_test.go: Test_LockNode, TestLockNodeWithTimeout,
TestLockNodeWithDangling, TestLockNodeReentrantSamePod, TestReleaseNodeLock, TestGeneratePodNamespaceName)."""

from __future__ import annotations

import datetime as dt

import pytest

from hami_stack.protocol.errors import ProtocolError
from hami_stack.protocol.nodelock import (
    DEFAULT_TIMEOUT,
    LockAction,
    NodeLockContention,
    decide_acquire,
    format_lock,
    may_release,
    parse_lock,
)

NOW = dt.datetime(2026, 7, 3, 7, 35, 10, tzinfo=dt.UTC)


def live(*pods: tuple[str, str]):  # type: ignore[no-untyped-def]
    return lambda ns, name: (ns, name) in pods


def test_lock_value_is_time_namespace_name() -> None:
    value = format_lock(NOW, "test-namespace", "test-pod")
    assert value.endswith(",test-namespace,test-pod")
    assert parse_lock(value).time == NOW


@pytest.mark.parametrize(
    "holder, requester",
    [
        (("other-ns", "other-pod"), ("hami-ns", "hami")),  # another live pod
        (("hami-ns", "other-pod-same-ns"), ("hami-ns", "hami")),  # same namespace, other pod
    ],
)
def test_lock_node_held_by_another_live_pod(holder: tuple[str, str], requester: tuple[str, str]) -> None:
    current = format_lock(NOW, *holder)
    with pytest.raises(NodeLockContention):
        decide_acquire("n", current, *requester, NOW, live(holder))


def test_lock_node_invalid_value_is_an_error() -> None:
    with pytest.raises(ProtocolError):
        decide_acquire("n", "lock", "hami-ns", "hami", NOW, live())


def test_lock_node_free_node() -> None:
    assert decide_acquire("n", None, "hami-ns", "hami", NOW, live()) is LockAction.ACQUIRE


def test_lock_node_with_timeout_message() -> None:
    current = format_lock(NOW, "test-ns", "test-pod")
    with pytest.raises(NodeLockContention, match="has been locked within 2m0s"):
        decide_acquire(
            "n", current, "test-ns", "new-pod", NOW, live(("test-ns", "test-pod")), dt.timedelta(minutes=2)
        )


def test_lock_node_with_dangling_holder() -> None:
    current = format_lock(NOW, "test-ns", "test-pod")
    assert decide_acquire("n", current, "test-ns", "new-pod", NOW, live()) is LockAction.REPLACE_DANGLING


def test_lock_node_reentrant_same_pod() -> None:
    current = format_lock(NOW, "test-ns", "multi-vendor-pod")
    action = decide_acquire(
        "n", current, "test-ns", "multi-vendor-pod", NOW, live(("test-ns", "multi-vendor-pod"))
    )
    assert action is LockAction.REENTRANT


def test_expired_lock_is_replaced() -> None:
    old = format_lock(NOW - DEFAULT_TIMEOUT - dt.timedelta(seconds=1), "a", "b")
    assert decide_acquire("n", old, "c", "d", NOW, live(("a", "b"))) is LockAction.REPLACE_EXPIRED


@pytest.mark.parametrize(
    "current, releases",
    [
        (None, False),  # not locked: nothing to do, no error
        (format_lock(NOW, "namespace", "pod"), False),  # someone else's lock stays
        (format_lock(NOW, "hami-ns", "hami"), True),
        ("2026-07-03T15:35:10+08:00", True),  # legacy bare timestamp
    ],
)
def test_release_node_lock(current: str | None, releases: bool) -> None:
    assert may_release(current, "hami-ns", "hami") is releases
