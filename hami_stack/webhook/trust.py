"""Who may write allocation annotations, and which ones an update touches.

The device plugin hands out exactly what ``hami.io/vgpu-devices-to-allocate`` and its siblings
say, and the scheduler's usage cache counts what ``*-devices-allocated`` says, so only the HAMi
scheduler and device plugin may write them. The webhook sees who sends an update in
``request.userInfo.username``; a service account is ``system:serviceaccount:<namespace>:<name>``.

Configuration (:func:`trusted_users_from_env`): ``HAMI_WEBHOOK_TRUSTED_USERS``, a comma-separated
list of usernames; an entry ending in ``*`` matches every username that starts with what precedes
it. The chart sets it to the scheduler's and device plugin's service accounts. When it is unset,
the service accounts of the namespace HAMi runs in (``POD_NAMESPACE``) are trusted, so a stack
deployed without the variable still works; with neither, nobody is (every change is refused).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from ..protocol.annotations import VGPU_NODE, is_scheduler_owned
from .shape import Obj

ENV_TRUSTED_USERS = "HAMI_WEBHOOK_TRUSTED_USERS"
SA_PREFIX = "system:serviceaccount:"


def service_account(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def parse_trusted_users(text: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in text.split(",") if u.strip())


def trusted_users_from_env(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    env = os.environ if env is None else env
    explicit = parse_trusted_users(env.get(ENV_TRUSTED_USERS, ""))
    if explicit:
        return explicit
    namespace = env.get("POD_NAMESPACE", "").strip()
    return (service_account(namespace, "*"),) if namespace else ()


def is_trusted(username: str, trusted: Iterable[str]) -> bool:
    if not username:
        return False
    for entry in trusted:
        if entry.endswith("*"):
            if username.startswith(entry[:-1]):
                return True
        elif username == entry:
            return True
    return False


def owned_entries(pod: Obj) -> dict[str, str]:
    """The pod's allocation annotations and its ``hami.io/vgpu-node`` label (keyed ``label:<key>``)."""
    meta = pod.get("metadata") or {}
    out = {k: v for k, v in (meta.get("annotations") or {}).items() if is_scheduler_owned(k)}
    labels = meta.get("labels") or {}
    if VGPU_NODE in labels:
        out[f"label:{VGPU_NODE}"] = labels[VGPU_NODE]
    return out


def allocation_changes(old: Obj, new: Obj) -> list[str]:
    """Allocation keys an update adds, changes or removes (sorted)."""
    before, after = owned_entries(old), owned_entries(new)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
