"""Pod garbage collector: pods bound to a node that no longer exists are deleted (grace 0), once the
node has stayed missing for the quarantine (40 s, as kube-controller-manager's).

Terminated-pod thresholds are not implemented (the real default threshold is 12500 pods)."""

from __future__ import annotations

from kubeclient.client import ApiError

from . import util
from .base import Controller, Obj

NODE_PREFIX = "node:"


class PodGCController(Controller):
    name = "podgc"
    component = "pod-garbage-collector"
    api_version = "v1"
    kind = "Pod"

    def setup(self) -> None:
        self.nodes = self.ctx.nodes()
        self.by_node = self.ctx.pods_by_node()
        self.nodes.add_handler(self._on_node)
        self.ctx.pods().add_handler(self._on_pod)

    def _on_node(self, kind: str, node: Obj, _old: Obj | None) -> None:
        if kind == "DELETED":
            self.queue.add_after(NODE_PREFIX + util.meta(node)["name"], self.ctx.options.pod_gc_quarantine)

    def _on_pod(self, kind: str, pod: Obj, _old: Obj | None) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if kind != "DELETED" and node and self.nodes.synced and self.nodes.get(node) is None:
            self.queue.add_after(NODE_PREFIX + node, self.ctx.options.pod_gc_quarantine)

    def sync(self, key: str) -> float | None:
        node = key[len(NODE_PREFIX) :]
        if self.nodes.get(node) is not None:
            return None
        # the cache may lag a node that was just created: ask the server before deleting anything
        try:
            self.kube.get(f"/api/v1/nodes/{node}")
            return None
        except ApiError as e:
            if e.status != 404:
                raise
        for pod in self.by_node.get(node):
            m = util.meta(pod)
            self.log.info("PodGC is force deleting Pod: %s/%s", m["namespace"], m["name"])
            try:
                self.kube.delete(
                    f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}", gracePeriodSeconds=0
                )
            except ApiError as e:
                if e.status != 404:
                    raise
        return None
