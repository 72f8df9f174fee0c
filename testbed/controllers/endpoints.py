"""Endpoints and EndpointSlice controllers: for each Service with a selector, the pods it selects
(ready ones as addresses, others as notReadyAddresses / ready=false), ports resolved from the
Service's targetPort (a number, or a container port name looked up in each pod)."""

from __future__ import annotations

import copy
from typing import Any

from kubeclient.client import ApiError
from kubeclient.informer import key_of

from . import util
from .base import Context, Controller, Obj

SERVICES = "/api/v1/services"
ENDPOINTS = "/api/v1/endpoints"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGER = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"


def resolve_port(sp: Obj, pod: Obj) -> int | None:
    target = sp.get("targetPort", sp.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    proto = sp.get("protocol", "TCP")
    for c in (pod.get("spec") or {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target and cp.get("protocol", "TCP") == proto:
                return int(cp["containerPort"])
    return None


def selected_pods(svc: Obj, pods: list[Obj]) -> list[Obj]:
    selector = (svc.get("spec") or {}).get("selector") or {}
    out = []
    for p in pods:
        labels = util.meta(p).get("labels") or {}
        if all(labels.get(k) == v for k, v in selector.items()) and (p.get("status") or {}).get("podIP"):
            if util.pod_terminated(p):
                continue
            out.append(p)
    return out


def _managed_labels(svc: Obj) -> dict[str, str]:
    labels = dict(util.meta(svc).get("labels") or {})
    if (svc.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS] = ""
    return labels


def _slice_service_keys(sl: Obj) -> list[str]:
    labels = util.meta(sl).get("labels") or {}
    if labels.get(MANAGED_BY) != MANAGER:
        return []
    return [f"{util.meta(sl).get('namespace')}/{labels.get(SERVICE_NAME_LABEL)}"]


class _ServiceController(Controller):
    """Shared wiring: a service key is synced when the service or any pod in its namespace changes."""

    def setup(self) -> None:
        self.services = self.ctx.informers.get(SERVICES)
        self.services.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.by_ns = self.ctx.pods_by_namespace()
        self.ctx.pods().add_handler(self._on_pod)

    def _on_pod(self, _kind: str, pod: Obj, old: Obj | None) -> None:
        ns = util.meta(pod).get("namespace", "")
        for svc in self.services.items():
            if util.meta(svc).get("namespace") != ns:
                continue
            selector = (svc.get("spec") or {}).get("selector") or {}
            if not selector:
                continue
            for o in (pod, old):
                labels = util.meta(o).get("labels") or {} if o else {}
                if o and all(labels.get(k) == v for k, v in selector.items()):
                    self.enqueue(svc)
                    break

    def _publish_not_ready(self, svc: Obj) -> bool:
        return bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))


class EndpointsController(_ServiceController):
    name = "endpoint"
    component = "endpoint-controller"
    api_version = "v1"
    kind = "Service"

    def setup(self) -> None:
        super().setup()
        self.endpoints = self.ctx.informers.get(ENDPOINTS)
        self.endpoints.add_handler(self._on_endpoints)

    def _on_endpoints(self, kind: str, ep: Obj, _old: Obj | None) -> None:
        if self.services.get(key_of(ep)) is not None:
            self.queue.add(key_of(ep))

    def sync(self, key: str) -> float | None:
        svc = self.services.get(key)
        ns, name = key.split("/", 1)
        path = f"/api/v1/namespaces/{ns}/endpoints"
        current = self.endpoints.get(key)
        if svc is None:
            return None  # the garbage collector is not involved: the real controller deletes it
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return None  # a Service without selector: its Endpoints belong to the user
        subsets: dict[tuple[Any, ...], Obj] = {}
        for pod in sorted(selected_pods(svc, self.by_ns.get(ns)), key=lambda p: util.meta(p)["name"]):
            if util.deleting(pod) and not self._publish_not_ready(svc):
                continue
            ports = []
            for sp in (svc.get("spec") or {}).get("ports") or []:
                port = resolve_port(sp, pod)
                if port is None:
                    continue
                ep: dict[str, Any] = {"port": port, "protocol": sp.get("protocol", "TCP")}
                if sp.get("name"):
                    ep["name"] = sp["name"]
                if sp.get("appProtocol"):
                    ep["appProtocol"] = sp["appProtocol"]
                ports.append(ep)
            pm = util.meta(pod)
            addr: dict[str, Any] = {"ip": pod["status"]["podIP"]}
            pspec = pod.get("spec") or {}
            if pspec.get("hostname") and pspec.get("subdomain") == name:
                addr["hostname"] = pspec["hostname"]
            if pspec.get("nodeName"):
                addr["nodeName"] = pspec["nodeName"]
            addr["targetRef"] = {"kind": "Pod", "namespace": ns, "name": pm["name"], "uid": pm["uid"]}
            sig = tuple(sorted((p.get("name", ""), p["port"], p["protocol"]) for p in ports))
            subset = subsets.setdefault(sig, {"ports": ports} if ports else {})
            ready = util.pod_ready(pod) or self._publish_not_ready(svc)
            subset.setdefault("addresses" if ready else "notReadyAddresses", []).append(addr)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns, "labels": _managed_labels(svc)},
        }
        out_subsets = [s for s in subsets.values() if s.get("addresses") or s.get("notReadyAddresses")]
        for s in out_subsets:
            for k in ("addresses", "notReadyAddresses"):
                if k in s:
                    s[k].sort(key=lambda a: a["ip"])
        if out_subsets:
            body["subsets"] = out_subsets
        if current is None:
            try:
                self.kube.create(path, body)
            except ApiError as e:
                if e.status != 409:
                    raise
            return None
        if (current.get("subsets") or []) == out_subsets and (util.meta(current).get("labels") or {}) == (
            body["metadata"]["labels"]
        ):
            return None
        new = copy.deepcopy(current)
        new["metadata"]["labels"] = body["metadata"]["labels"]
        new["metadata"].setdefault("annotations", {})["endpoints.kubernetes.io/last-change-trigger-time"] = (
            util.now()
        )
        if out_subsets:
            new["subsets"] = out_subsets
        else:
            new.pop("subsets", None)
        self.kube.update(f"{path}/{name}", new)
        return None


class EndpointSliceController(_ServiceController):
    name = "endpointslice"
    component = "endpointslice-controller"
    api_version = "v1"
    kind = "Service"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.version = "v1" if ctx.minor >= 21 else "v1beta1"
        self.slices_path = f"/apis/discovery.k8s.io/{self.version}/endpointslices"

    def setup(self) -> None:
        super().setup()
        self.slices = self.ctx.informers.get(self.slices_path)
        self.by_service = self.ctx.informers.index(
            self.slices_path,
            "service",
            _slice_service_keys,
        )
        self.slices.add_handler(self._on_slice)
        self._created: dict[str, Obj] = {}

    def _on_slice(self, _kind: str, sl: Obj, _old: Obj | None) -> None:
        labels = util.meta(sl).get("labels") or {}
        if labels.get(MANAGED_BY) == MANAGER and labels.get(SERVICE_NAME_LABEL):
            self.queue.add(f"{util.meta(sl)['namespace']}/{labels[SERVICE_NAME_LABEL]}")

    def _endpoint(self, pod: Obj, ready: bool) -> Obj:
        pm = util.meta(pod)
        spec = pod.get("spec") or {}
        ep: dict[str, Any] = {"addresses": [pod["status"]["podIP"]]}
        terminating = util.deleting(pod)
        if self.ctx.minor >= 22:
            ep["conditions"] = {
                "ready": ready and not terminating,
                "serving": util.pod_ready(pod),
                "terminating": terminating,
            }
        else:
            ep["conditions"] = {"ready": ready}
        if spec.get("hostname"):
            ep["hostname"] = spec["hostname"]
        ep["targetRef"] = {"kind": "Pod", "namespace": pm["namespace"], "name": pm["name"], "uid": pm["uid"]}
        if spec.get("nodeName"):
            if self.version == "v1":
                ep["nodeName"] = spec["nodeName"]
            else:
                ep["topology"] = {"kubernetes.io/hostname": spec["nodeName"]}
        return ep

    def sync(self, key: str) -> float | None:
        svc = self.services.get(key)
        ns, name = key.split("/", 1)
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            return None
        existing = self.by_service.get(key)
        if not existing and key in self._created:
            existing = [self._created[key]]
        pods = sorted(selected_pods(svc, self.by_ns.get(ns)), key=lambda p: util.meta(p)["name"])
        ports: list[Obj] = []
        endpoints: list[Obj] = []
        for pod in pods:
            if util.deleting(pod) and not self._publish_not_ready(svc) and self.ctx.minor < 22:
                continue
            for sp in (svc.get("spec") or {}).get("ports") or []:
                port = resolve_port(sp, pod)
                entry: dict[str, Any] = {
                    "name": sp.get("name", ""),
                    "port": port,
                    "protocol": sp.get("protocol", "TCP"),
                }
                if sp.get("appProtocol"):
                    entry["appProtocol"] = sp["appProtocol"]
                if port is not None and entry not in ports:
                    ports.append(entry)
            endpoints.append(self._endpoint(pod, util.pod_ready(pod) or self._publish_not_ready(svc)))
        labels = {**_managed_labels(svc), SERVICE_NAME_LABEL: name, MANAGED_BY: MANAGER}
        body: dict[str, Any] = {
            "apiVersion": f"discovery.k8s.io/{self.version}",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": f"{name}-",
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [util.owner_reference(svc, "v1", "Service")],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
        path = f"/apis/discovery.k8s.io/{self.version}/namespaces/{ns}/endpointslices"
        if not existing:
            created = self.kube.create(path, body)
            self._created[key] = created
            return None
        self._created.pop(key, None)
        first, extra = existing[0], existing[1:]
        for sl in extra:
            try:
                self.kube.delete(f"{path}/{util.meta(sl)['name']}")
            except ApiError:
                pass
        if (
            (first.get("endpoints") or []) == endpoints
            and (first.get("ports") or []) == ports
            and (util.meta(first).get("labels") or {}) == labels
        ):
            return None
        new = copy.deepcopy(first)
        new["metadata"]["labels"] = labels
        new["endpoints"] = endpoints
        new["ports"] = ports
        self.kube.update(f"{path}/{util.meta(first)['name']}", new)
        return None
