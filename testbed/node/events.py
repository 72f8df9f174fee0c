"""Events as the kubelet records them (source component ``kubelet``, host = the node)."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from kubeclient.client import ApiError, Kube
from testbed.k8s.timefmt import now

log = logging.getLogger("testbed.node.events")


class Recorder:
    def __init__(self, kube: Kube, node: str) -> None:
        self.kube, self.node = kube, node
        self._seen: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def pod(self, pod: dict[str, Any], etype: str, reason: str, message: str, field_path: str = "") -> None:
        meta = pod["metadata"]
        ref = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            ref["fieldPath"] = field_path
        self.emit(ref, etype, reason, message)

    def node_event(self, etype: str, reason: str, message: str) -> None:
        ref = {"kind": "Node", "name": self.node, "uid": self.node, "apiVersion": "v1"}
        self.emit(ref, etype, reason, message, namespace="default")

    def emit(self, ref: dict[str, Any], etype: str, reason: str, message: str, namespace: str = "") -> None:
        ns = namespace or ref.get("namespace") or "default"
        key = (ns, ref.get("uid", ""), reason, message + ref.get("fieldPath", ""))
        ts = now()
        prev = self._seen.get(key)
        try:
            if prev is not None:
                # repeated event: bump count like the kubelet's event correlator
                prev["count"] += 1
                prev["lastTimestamp"] = ts
                self.kube.patch(
                    f"/api/v1/namespaces/{ns}/events/{prev['name']}",
                    {"count": prev["count"], "lastTimestamp": ts},
                    kind="merge",
                )
                return
            name = f"{ref['name']}.{secrets.token_hex(8)}"
            self.kube.create(
                f"/api/v1/namespaces/{ns}/events",
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": name, "namespace": ns},
                    "involvedObject": ref,
                    "reason": reason,
                    "message": message,
                    "type": etype,
                    "source": {"component": "kubelet", "host": self.node},
                    "firstTimestamp": ts,
                    "lastTimestamp": ts,
                    "count": 1,
                    "reportingComponent": "kubelet",
                    "reportingInstance": self.node,
                },
            )
            self._seen[key] = {"name": name, "count": 1}
        except ApiError as e:
            log.debug("event %s %s not recorded: %s", reason, ref.get("name"), e)
        except Exception as e:
            log.debug("event %s not recorded: %r", reason, e)
