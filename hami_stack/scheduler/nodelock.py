"""Applying the node lock (``hami.io/mutex.lock``) through the API; the rules are in the protocol module.

Acquire reads the Node, asks :func:`hami_stack.protocol.nodelock.decide_acquire` what to do, and
writes with a merge patch carrying the Node's ``resourceVersion`` as precondition, so two binders
racing on one node cannot both win: the loser gets 409, re-reads and then sees the winner's lock
(contention) or its own (re-entrant). Conflicts retry 5 times (100 ms, factor 2, jitter 0.5).
Release deletes the value only when it is ours (or legacy, or forced), with the same precondition.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Callable

from kubeclient.client import ApiError, Kube

from ..protocol import annotations as ann
from ..protocol.errors import ProtocolError
from ..protocol.nodelock import (
    DEFAULT_TIMEOUT,
    LockAction,
    NodeLockContention,
    decide_acquire,
    format_lock,
    may_release,
)

log = logging.getLogger("hami.scheduler.nodelock")
RETRY_STEPS = 5
RETRY_BASE = 0.1
RETRY_FACTOR = 2.0
RETRY_JITTER = 0.5

HolderExists = Callable[[str, str], bool]


class LockError(Exception):
    """The lock could not be written (API errors, conflicts past the retries, a corrupt value)."""


def _node_path(node: str) -> str:
    return f"/api/v1/nodes/{node}"


def _backoff(step: int) -> float:
    base = RETRY_BASE * RETRY_FACTOR**step
    return base + random.uniform(0, base * RETRY_JITTER)


def acquire(
    kube: Kube,
    node: str,
    namespace: str,
    name: str,
    holder_exists: HolderExists,
    *,
    timeout: dt.timedelta = DEFAULT_TIMEOUT,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> LockAction:
    """Take the lock for pod ``namespace/name``; raises NodeLockContention or LockError."""
    for step in range(RETRY_STEPS + 1):
        try:
            obj = kube.get(_node_path(node))
        except ApiError as e:
            raise LockError(f"get node {node}: {e}") from e
        meta = obj.get("metadata") or {}
        current = (meta.get("annotations") or {}).get(ann.NODE_LOCK)
        try:
            action = decide_acquire(node, current, namespace, name, now(), holder_exists, timeout)
        except ProtocolError as e:
            raise LockError(f"node {node}: {e}") from e
        if action is LockAction.REENTRANT:
            return action
        if action is not LockAction.ACQUIRE:
            log.info("node %s: lock %r %s for %s/%s", node, current, action.value, namespace, name)
        patch = {
            "metadata": {
                "annotations": {ann.NODE_LOCK: format_lock(now(), namespace, name)},
                "resourceVersion": meta.get("resourceVersion", ""),
            }
        }
        try:
            kube.patch(_node_path(node), patch, "merge")
            return action
        except ApiError as e:
            if e.status != 409 or step == RETRY_STEPS:
                raise LockError(f"lock node {node}: {e}") from e
        time.sleep(_backoff(step))
    raise LockError(f"lock node {node}: retries exhausted")


def release(kube: Kube, node: str, namespace: str, name: str, *, force: bool = False) -> bool:
    """Remove the lock if it is ours; True when something was deleted."""
    for step in range(RETRY_STEPS + 1):
        try:
            obj = kube.get(_node_path(node))
        except ApiError as e:
            if e.status == 404:
                return False
            raise LockError(f"get node {node}: {e}") from e
        meta = obj.get("metadata") or {}
        current = (meta.get("annotations") or {}).get(ann.NODE_LOCK)
        if not may_release(current, namespace, name, force=force):
            return False
        patch = {
            "metadata": {"annotations": {ann.NODE_LOCK: None}, "resourceVersion": meta.get("resourceVersion")}
        }
        try:
            kube.patch(_node_path(node), patch, "merge")
            return True
        except ApiError as e:
            if e.status != 409 or step == RETRY_STEPS:
                raise LockError(f"unlock node {node}: {e}") from e
        time.sleep(_backoff(step))
    return False


__all__ = ["LockError", "NodeLockContention", "acquire", "release"]
