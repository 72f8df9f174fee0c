"""An in-memory apiserver for the extender's pods and nodes: just what /filter and /bind call.

GET, JSON merge patch (with the ``metadata.resourceVersion`` precondition, 409 when stale) and the
``binding`` subresource (409 "already assigned" for a bound pod), one resourceVersion counter, and
the watch-event log an informer would deliver (``events``), so tests can lag, replay or rebuild.
Failures can be injected into the next binding create.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from kubeclient.client import ApiError

Obj = dict[str, Any]
_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)(/binding)?$")
_NODE = re.compile(r"^/api/v1/nodes/([^/]+)$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Obj] = {}
        self.nodes: dict[str, Obj] = {}
        self.rv = 0
        self.events: list[tuple[str, Obj]] = []  # (kind, pod) as a pod informer would see them
        self.fail_next_binding: str = ""  # message of an injected failure of the next binding create
        self.fail_next_pod_patch: str = ""  # ...of the next pod patch, once applied (a lost answer)
        self.writes: list[str] = []  # paths written (patch/create), to prove what was not touched

    # --- objects ---------------------------------------------------------------------------
    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)

    def add_pod(self, pod: Obj) -> Obj:
        pod = copy.deepcopy(pod)
        meta = pod["metadata"]
        meta.setdefault("namespace", "default")
        pod.setdefault("status", {"phase": "Pending"})
        self._bump(pod)
        self.pods[(meta["namespace"], meta["name"])] = pod
        self.events.append(("ADDED", copy.deepcopy(pod)))
        return copy.deepcopy(pod)

    def delete_pod(self, ns: str, name: str) -> None:
        pod = self.pods.pop((ns, name), None)
        if pod is not None:
            self._bump(pod)
            self.events.append(("DELETED", copy.deepcopy(pod)))

    def set_phase(self, ns: str, name: str, phase: str) -> None:
        pod = self.pods[(ns, name)]
        pod["status"] = {**pod.get("status", {}), "phase": phase}
        self._bump(pod)
        self.events.append(("MODIFIED", copy.deepcopy(pod)))

    def add_node(self, node: Obj) -> None:
        node = copy.deepcopy(node)
        self._bump(node)
        self.nodes[node["metadata"]["name"]] = node

    # --- the Kube surface the extender uses ------------------------------------------------
    def get(self, path: str, **_query: Any) -> Any:
        if m := _POD.match(path):
            pod = self.pods.get((m[1], m[2]))
            if pod is None or m[3]:
                raise ApiError(404, {"reason": "NotFound", "message": f'pods "{m[2]}" not found'})
            return copy.deepcopy(pod)
        if m := _NODE.match(path):
            node = self.nodes.get(m[1])
            if node is None:
                raise ApiError(404, {"reason": "NotFound", "message": f'nodes "{m[1]}" not found'})
            return copy.deepcopy(node)
        raise ApiError(404, {"message": f"no route {path}"})

    def patch(self, path: str, body: Any, kind: str = "strategic") -> Any:
        assert kind == "merge", kind
        self.writes.append(path)
        if m := _POD.match(path):
            store, key, what = self.pods, (m[1], m[2]), f'pods "{m[2]}"'
        elif m := _NODE.match(path):
            store, key, what = self.nodes, m[1], f'nodes "{m[1]}"'  # type: ignore[assignment]
        else:
            raise ApiError(404, {"message": f"no route {path}"})
        obj = store.get(key)  # type: ignore[call-overload]
        if obj is None:
            raise ApiError(404, {"reason": "NotFound", "message": f"{what} not found"})
        want = (body.get("metadata") or {}).get("resourceVersion")
        if want and want != obj["metadata"]["resourceVersion"]:
            raise ApiError(409, {"reason": "Conflict", "message": f"Operation cannot be fulfilled on {what}"})
        body = copy.deepcopy(body)
        (body.get("metadata") or {}).pop("resourceVersion", None)
        new = merge_patch(obj, body)
        self._bump(new)
        store[key] = new  # type: ignore[index]
        if store is self.pods:
            self.events.append(("MODIFIED", copy.deepcopy(new)))
            if self.fail_next_pod_patch:
                msg, self.fail_next_pod_patch = self.fail_next_pod_patch, ""
                raise OSError(msg)
        return copy.deepcopy(new)

    def create(self, path: str, body: Obj, **_query: Any) -> Any:
        self.writes.append(path)
        m = _POD.match(path)
        if not m or not m[3]:
            return body  # events and the like: accepted, not modelled
        pod = self.pods.get((m[1], m[2]))
        if pod is None:
            raise ApiError(404, {"reason": "NotFound", "message": f'pods "{m[2]}" not found'})
        if self.fail_next_binding:
            msg, self.fail_next_binding = self.fail_next_binding, ""
            raise ApiError(500, {"message": msg})
        if pod["spec"].get("nodeName"):
            raise ApiError(
                409,
                {"reason": "Conflict", "message": f"pod {m[2]} is already assigned to node "
                 f'"{pod["spec"]["nodeName"]}"'},
            )
        uid = (body.get("metadata") or {}).get("uid")
        if uid and uid != pod["metadata"]["uid"]:
            raise ApiError(409, {"reason": "Conflict", "message": "Precondition failed: UID"})
        pod["spec"]["nodeName"] = body["target"]["name"]
        self._bump(pod)
        self.events.append(("MODIFIED", copy.deepcopy(pod)))
        return {"kind": "Status", "status": "Success"}
