"""Endpoints and EndpointSlices follow pod readiness; named target ports resolve per pod."""

from __future__ import annotations

from typing import Any

from kubeclient.client import Kube

from .conftest import FakeNodes, wait_for

Obj = dict[str, Any]


def test_endpoints_follow_readiness(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("ep-n1")
    kube.create(
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "metrics", "port": 9000},
                ],
            },
        },
    )
    for name in ("web-0", "web-1"):
        kube.create(
            f"/api/v1/namespaces/{ns}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}
                    ]
                },
            },
        )

    def endpoints(ready: int, not_ready: int) -> Obj | None:
        ep = kube.get(f"/api/v1/namespaces/{ns}/endpoints/web")
        subsets = ep.get("subsets") or []
        have = sum(len(s.get("addresses") or []) for s in subsets)
        have_not = sum(len(s.get("notReadyAddresses") or []) for s in subsets)
        return ep if (have, have_not) == (ready, not_ready) else None

    ep = wait_for(lambda: endpoints(2, 0), what="two ready addresses")
    assert ep["metadata"]["labels"] == {"tier": "front"}
    subset = ep["subsets"][0]
    assert sorted((p["name"], p["port"]) for p in subset["ports"]) == [("http", 8080), ("metrics", 9000)]
    addr = subset["addresses"][0]
    assert addr["targetRef"]["kind"] == "Pod" and addr["nodeName"] == "ep-n1"
    assert addr["ip"].startswith("10.244.")

    nodes.set_ready(ns, "web-1", False)
    ep = wait_for(lambda: endpoints(1, 1), what="one address moved to notReadyAddresses")
    assert ep["subsets"][0]["notReadyAddresses"][0]["targetRef"]["name"] == "web-1"

    def slice_ready() -> dict[str, bool] | None:
        items = kube.get(
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            labelSelector="kubernetes.io/service-name=web",
        )["items"]
        if len(items) != 1:
            return None
        got = {e["targetRef"]["name"]: e["conditions"]["ready"] for e in items[0].get("endpoints") or []}
        return got if got == {"web-0": True, "web-1": False} else None

    wait_for(slice_ready, what="EndpointSlice conditions")
    sl = kube.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
        labelSelector="kubernetes.io/service-name=web",
    )["items"][0]
    assert sl["addressType"] == "IPv4"
    assert (
        sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
        == "endpointslice-controller.k8s.io"
    )
    assert sl["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert sorted((p["name"], p["port"]) for p in sl["ports"]) == [("http", 8080), ("metrics", 9000)]

    nodes.set_ready(ns, "web-1", True)
    wait_for(lambda: endpoints(2, 0), what="address back to ready")
    kube.delete(f"/api/v1/namespaces/{ns}/pods/web-0")
    wait_for(lambda: endpoints(1, 0), what="deleted pod leaves the endpoints")
