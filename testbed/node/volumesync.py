"""The kubelet's periodic sync of a running pod's configMap, secret, downwardAPI and projected volumes.

Every ``period`` seconds (``$TESTBED_VOLUME_SYNC_SECONDS``, default 10; a kubelet syncs each pod about
once a minute plus its object-cache delay; 2 s cost a conformance cell a read per namespace and node
every 2 s, for changes no case makes) each running pod's content volumes are recomputed from the
API (one read per referenced object and namespace per round) and rewritten with the atomic writer
(``podspec.write_atomic``: a new ``..<timestamp>`` directory, then one rename of the ``..data``
symlink), only when something changed. Projected service-account tokens are renewed once 80% of their
lifetime has passed. Mounts with ``subPath`` see no updates, as in Kubernetes (they bind the file
itself, not the symlink).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING

from . import podspec, rootfs

if TYPE_CHECKING:
    from .agent import NodeAgent

log = logging.getLogger("testbed.node.volumesync")


def period() -> float:
    try:
        return max(0.2, float(os.environ.get("TESTBED_VOLUME_SYNC_SECONDS", "10")))
    except ValueError:
        return 10.0


def sync_once(agent: NodeAgent) -> dict[str, list[str]]:
    """One round over the node's pods; returns ``{ns/name: [changed volume names]}``."""
    resolvers: dict[str, podspec.Resolver] = {}
    out: dict[str, list[str]] = {}
    for w in list(agent.runtime.workers.values()):
        if not w.sandbox_ready or w.stopping.is_set() or w.phase in ("Succeeded", "Failed"):
            continue
        res = resolvers.setdefault(w.ns, podspec.Resolver(agent.kube, w.ns))
        try:
            changed = podspec.sync_volumes(
                agent.kube, w.pod, w.volumes, agent.ip, agent.spec.allocatable(), agent.ca_pem,
                rootfs.volume_owner(w.pod), res,
            )
        except Exception:  # one pod's trouble must not stop the others' updates
            log.exception("pod %s: volume sync failed", w.key)
            continue
        if changed:
            out[w.key] = changed
    return out


async def run(agent: NodeAgent) -> None:
    while True:
        await asyncio.sleep(period())
        with contextlib.suppress(Exception):
            await asyncio.to_thread(sync_once, agent)
