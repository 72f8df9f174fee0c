"""Pod names for the monitor's labels: the regions on disk only know ``<pod uid>_<container>``.

Like HAMi's vGPU monitor, the monitor watches the pods bound to its node through the API and maps
UIDs to namespace and name.
"""

from __future__ import annotations

import logging

from kubeclient.client import Kube
from kubeclient.informer import Informer

log = logging.getLogger("hami.monitor")


class NodePodNames:
    """An informer on this node's pods; ``resolve(uid)`` is the collector's PodResolver."""

    def __init__(self, kube: Kube, node_name: str) -> None:
        self._by_uid: dict[str, tuple[str, str]] = {}
        self._informer = Informer(kube, "/api/v1/pods", field_selector=f"spec.nodeName={node_name}",
                                  name=f"monitor pods on {node_name}")
        self._informer.add_handler(self._on_pod)

    def _on_pod(self, kind: str, pod: dict, _old: dict | None) -> None:  # type: ignore[type-arg]
        meta = pod.get("metadata") or {}
        uid = meta.get("uid", "")
        if kind == "DELETED":
            self._by_uid.pop(uid, None)
        else:
            self._by_uid[uid] = (meta.get("namespace", ""), meta.get("name", ""))

    def start(self) -> NodePodNames:
        self._informer.start()
        return self

    def stop(self) -> None:
        self._informer.stop()

    def resolve(self, uid: str) -> tuple[str, str] | None:
        return self._by_uid.get(uid)
