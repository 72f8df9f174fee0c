"""The node lock: ``hami.io/mutex.lock`` on a Node serialises "bind -> kubelet Allocate" per node.

Value: ``<RFC3339 time>,<pod namespace>,<pod name>``; the legacy form is the time alone.
The decision rules are pure functions here; the scheduler applies them with a merge patch guarded
by the node's ``resourceVersion`` (so two binders racing on one node cannot both win):

* absent -> acquire;
* older than the timeout (default 5 min) -> replace (a crash between bind and Allocate expires);
* held by the same pod -> re-entrant (a pod using several lock-using families locks once per family);
* holder pod no longer exists -> replace (dangling-holder rule);
* otherwise -> :class:`NodeLockContention` with the contract's message.

A value that is neither form is rejected (:class:`ProtocolError`); nothing valid could have
written it, so it is reported rather than guessed at.

Release deletes the annotation only when its holder suffix matches the releasing pod, the value
is the legacy bare time, or the caller forces it.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ProtocolError
from .timefmt import format_rfc3339, go_duration, parse_rfc3339

DEFAULT_TIMEOUT = dt.timedelta(minutes=5)
CAMBRICON_TIMEOUT = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class LockValue:
    time: dt.datetime
    namespace: str = ""  # empty for the legacy bare-time form
    name: str = ""

    @property
    def legacy(self) -> bool:
        return not self.namespace and not self.name

    def encode(self) -> str:
        stamp = format_rfc3339(self.time)
        return stamp if self.legacy else f"{stamp},{self.namespace},{self.name}"


def format_lock(now: dt.datetime, namespace: str, name: str) -> str:
    if not namespace or not name or "," in namespace + name:
        raise ProtocolError("node lock holder needs a namespace and a name without ','")
    return LockValue(now, namespace, name).encode()


def parse_lock(value: str) -> LockValue:
    parts = value.split(",")
    if len(parts) == 1:
        return LockValue(parse_rfc3339(parts[0]))
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ProtocolError(f"node lock value {value!r} is not '<RFC3339>,<namespace>,<name>'")
    return LockValue(parse_rfc3339(parts[0]), parts[1], parts[2])


class LockAction(enum.Enum):
    ACQUIRE = "acquire"  # no lock: set it
    REENTRANT = "reentrant"  # already ours: nothing to write
    REPLACE_EXPIRED = "replace-expired"  # older than the timeout: overwrite
    REPLACE_DANGLING = "replace-dangling"  # holder pod is gone: overwrite


class NodeLockContention(Exception):
    """The node is locked by another live pod within the timeout."""

    def __init__(self, node: str, timeout: dt.timedelta = DEFAULT_TIMEOUT) -> None:
        self.node = node
        super().__init__(contention_message(node, timeout))


def contention_message(node: str, timeout: dt.timedelta = DEFAULT_TIMEOUT) -> str:
    return f"node {node} has been locked within {go_duration(timeout)}: node lock contention"


def decide_acquire(
    node: str,
    current: str | None,
    namespace: str,
    name: str,
    now: dt.datetime,
    holder_exists: Callable[[str, str], bool],
    timeout: dt.timedelta = DEFAULT_TIMEOUT,
) -> LockAction:
    """What acquiring the lock for pod ``namespace/name`` must do, given the current annotation value."""
    if not current:
        return LockAction.ACQUIRE
    held = parse_lock(current)
    if now - held.time > timeout:
        return LockAction.REPLACE_EXPIRED
    if held.legacy:
        raise NodeLockContention(node, timeout)
    if (held.namespace, held.name) == (namespace, name):
        return LockAction.REENTRANT
    if not holder_exists(held.namespace, held.name):
        return LockAction.REPLACE_DANGLING
    raise NodeLockContention(node, timeout)


def may_release(current: str | None, namespace: str, name: str, *, force: bool = False) -> bool:
    """Whether releasing for ``namespace/name`` should delete the current value."""
    if not current:
        return False
    if force:
        return True
    if current.endswith(f",{namespace},{name}"):
        return True
    try:
        return parse_lock(current).legacy
    except ProtocolError:
        return False


def cambricon_contention_message(node: str) -> str:
    return f"node {node} has been locked within 2 minutes"
