"""Fields the real server always writes, at their zero value, because the Go type's JSON tag lacks
``omitempty`` (facts from the compiled schema, ``k8sproto``): clients written against the real server
rely on them. The official Python client's ``list_node()`` raises on 1.31+ when
``nodeInfo.kubeProxyVersion`` is absent; reading a v2-created HPA through autoscaling/v1 needs
``status.currentReplicas``."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from testbed.apiserver import protobuf

from .helpers import raw

pytestmark = pytest.mark.skipif(
    protobuf.schema(33) is None,
    reason="no compiled Kubernetes API schema for 1.33 in the cache: run `make clients` "
    "(python -m testbed.apiserver.k8sproto fetch 1.33)",
)


def test_node_info_always_has_kube_proxy_version(testbed, api) -> None:
    core = client.CoreV1Api(api)
    info = {
        "machineID": "m",
        "systemUUID": "s",
        "bootID": "b",
        "kernelVersion": "6.1",
        "osImage": "x",
        "containerRuntimeVersion": "containerd://1.7",
        "kubeletVersion": "v1.33.0",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "always-node"},
        "status": {"nodeInfo": info},
    }
    code, _, data = raw(testbed, "POST", "/api/v1/nodes", json.dumps(node).encode())
    assert code == 201, data
    code, _, data = raw(testbed, "GET", "/api/v1/nodes/always-node")
    assert code == 200
    assert json.loads(data)["status"]["nodeInfo"]["kubeProxyVersion"] == ""
    names = [n.metadata.name for n in core.list_node().items]  # raised ValueError before
    assert "always-node" in names


def test_hpa_created_in_v2_reads_in_v1_with_its_always_fields(testbed, api, ns) -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "h"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            "maxReplicas": 3,
        },
    }
    code, _, data = raw(
        testbed,
        "POST",
        f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
        json.dumps(hpa).encode(),
    )
    assert code == 201, data
    v2 = json.loads(data)
    assert v2["status"]["desiredReplicas"] == 0 and "currentReplicas" not in v2["status"]  # omitempty in v2
    v1 = client.AutoscalingV1Api(api).read_namespaced_horizontal_pod_autoscaler("h", ns)
    assert v1.status.current_replicas == 0 and v1.status.desired_replicas == 0


def test_custom_resources_are_left_alone() -> None:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    protobuf.fill_always(obj, 33)
    assert obj == {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
