"""Validation causes: field paths and messages as the real apiserver writes them."""

from __future__ import annotations

import copy

import pytest

from testbed.apiserver.errors import APIError, invalid
from testbed.apiserver.validation import ensure_namespace, validate_object

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
    "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def sentences(
    group: str, kind: str, obj: dict, *, namespaced: bool = True, old: dict | None = None
) -> list[str]:
    return [c.sentence() for c in validate_object(group, kind, obj, namespaced=namespaced, old=old)]


def pod(**spec_extra: object) -> dict:
    spec: dict = {"containers": [{"name": "app", "image": "busybox"}]}
    spec.update(spec_extra)
    return {
        "metadata": {
            "name": "p",
            "namespace": "default",
            "uid": "u1",
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": spec,
    }


def test_valid_pod_has_no_causes() -> None:
    assert sentences("", "Pod", pod()) == []


def test_object_meta() -> None:
    obj = {"metadata": {"namespace": "default"}, "spec": {"containers": [{"name": "a", "image": "i"}]}}
    assert sentences("", "Pod", obj) == ["metadata.name: Required value: name or generateName is required"]
    obj["metadata"]["generateName"] = "web-"
    assert sentences("", "Pod", obj) == []
    bad = pod()
    bad["metadata"]["name"] = "Bad_Name"
    assert sentences("", "Pod", bad) == [f'metadata.name: Invalid value: "Bad_Name": {SUBDOMAIN_MSG}']
    no_ns = pod()
    del no_ns["metadata"]["namespace"]
    assert sentences("", "Pod", no_ns) == ["metadata.namespace: Required value"]
    assert sentences("", "Node", {"metadata": {"name": "n", "namespace": "x"}}, namespaced=False) == [
        "metadata.namespace: Forbidden: not allowed on this type"
    ]


def test_name_rules_per_kind() -> None:
    assert sentences("", "Namespace", {"metadata": {"name": "a.b"}}, namespaced=False) == [
        'metadata.name: Invalid value: "a.b": must not contain dots'
    ]
    svc = {"metadata": {"name": "1svc", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}}
    assert sentences("", "Service", svc)[0].startswith(
        'metadata.name: Invalid value: "1svc": a DNS-1035 label must consist of'
    )
    role = {
        "metadata": {"name": "a/b", "namespace": "d"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    assert sentences("rbac.authorization.k8s.io", "Role", role) == [
        "metadata.name: Invalid value: \"a/b\": may not contain '/'"
    ]
    role["metadata"]["name"] = "system:controller:x"
    assert sentences("rbac.authorization.k8s.io", "Role", role) == []


def test_labels_and_annotations() -> None:
    obj = pod()
    obj["metadata"]["labels"] = {"ok": "bad value"}
    obj["metadata"]["annotations"] = {"a/b/c": "x"}
    out = sentences("", "Pod", obj)
    assert out[0].startswith(
        'metadata.labels: Invalid value: "bad value": a valid label must be an empty string'
    )
    assert out[1].startswith('metadata.annotations: Invalid value: "a/b/c": a qualified name must consist of')
    big = pod()
    big["metadata"]["annotations"] = {"k": "x" * (256 * 1024)}
    assert sentences("", "Pod", big) == ["metadata.annotations: Too long: must have at most 262144 bytes"]


def test_immutable_metadata_on_update() -> None:
    old = pod()
    new = copy.deepcopy(old)
    new["metadata"]["name"] = "q"
    new["metadata"]["uid"] = "u2"
    new["metadata"]["creationTimestamp"] = "2024-02-01T00:00:00Z"
    assert sentences("", "Pod", new, old=old) == [
        'metadata.name: Invalid value: "q": field is immutable',
        'metadata.uid: Invalid value: "u2": field is immutable',
        "metadata.creationTimestamp: Invalid value: 2024-02-01 00:00:00 +0000 UTC: field is immutable",
    ]


def test_pod_containers() -> None:
    p = pod(
        containers=[
            {"name": "app", "image": "i", "ports": [{"containerPort": 70000}]},
            {"name": "app", "image": ""},
            {
                "name": "Bad",
                "image": "i",
                "env": [{"name": "1X"}],
                "volumeMounts": [{"name": "nope", "mountPath": "/x"}],
            },
        ],
        initContainers=[{"name": "app", "image": "i"}],
    )
    out = sentences("", "Pod", p)
    assert (
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: "
        "must be between 1 and 65535, inclusive"
        in out
    )
    assert "spec.containers[1].image: Required value" in out
    assert 'spec.containers[1].name: Duplicate value: "app"' in out
    assert 'spec.initContainers[0].name: Duplicate value: "app"' in out
    assert any(
        s.startswith('spec.containers[2].name: Invalid value: "Bad": a lowercase RFC 1123 label') for s in out
    )
    assert any(
        s.startswith('spec.containers[2].env[0].name: Invalid value: "1X": a valid environment variable')
        for s in out
    )
    assert 'spec.containers[2].volumeMounts[0].name: Not found: "nope"' in out
    assert sentences("", "Pod", pod(containers=[])) == ["spec.containers: Required value"]


def test_pod_enums_and_volumes() -> None:
    p = pod(
        restartPolicy="Sometimes",
        dnsPolicy="Cluster",
        volumes=[{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}],
    )
    assert sentences("", "Pod", p) == [
        'spec.volumes[1].name: Duplicate value: "v"',
        'spec.restartPolicy: Unsupported value: "Sometimes": '
        'supported values: "Always", "OnFailure", "Never"',
        'spec.dnsPolicy: Unsupported value: "Cluster": supported values: "ClusterFirstWithHostNet", '
        '"ClusterFirst", "Default", "None"',
    ]


def test_pod_resources() -> None:
    def res(requests: dict, limits: dict) -> dict:
        return pod(
            containers=[{"name": "c", "image": "i", "resources": {"requests": requests, "limits": limits}}]
        )

    assert sentences("", "Pod", res({"cpu": "2"}, {"cpu": "1"})) == [
        'spec.containers[0].resources.requests: Invalid value: "2": '
        "must be less than or equal to cpu limit of 1"
    ]
    assert sentences("", "Pod", res({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"})) == [
        'spec.containers[0].resources.requests: Invalid value: "1": '
        "must be equal to nvidia.com/gpu limit of 2"
    ]
    assert sentences("", "Pod", res({}, {"nvidia.com/gpu": "1500m"})) == [
        'spec.containers[0].resources.limits[nvidia.com/gpu]: Invalid value: "1500m": must be an integer'
    ]
    assert sentences("", "Pod", res({"nvidia.com/gpu": "1"}, {})) == [
        "spec.containers[0].resources.limits: Required value: "
        "Limit must be set for non overcommitable resources"
    ]
    assert sentences("", "Pod", res({"cpu": "-1"}, {})) == [
        'spec.containers[0].resources.requests[cpu]: Invalid value: "-1": must be greater than or equal to 0'
    ]
    assert sentences("", "Pod", res({"gpu": "1"}, {})) == [
        'spec.containers[0].resources.requests[gpu]: Invalid value: "gpu": '
        "must be a standard resource type or "
        "fully qualified",
        'spec.containers[0].resources.requests[gpu]: Invalid value: "gpu": must be a standard resource for '
        "containers",
    ]
    assert sentences("", "Pod", res({"cpu": "1x"}, {}))[0].startswith(
        'spec.containers[0].resources.requests[cpu]: Invalid value: "1x": quantities must match'
    )
    assert (
        sentences(
            "",
            "Pod",
            res({"cpu": "500m", "nvidia.com/gpumem": "3000"}, {"cpu": "1", "nvidia.com/gpumem": "3000"}),
        )
        == []
    )


def test_pod_update_rules() -> None:
    old = pod(
        containers=[{"name": "c", "image": "a", "ports": [{"containerPort": 80}]}],
        tolerations=[{"key": "k", "operator": "Exists"}],
    )
    ok = copy.deepcopy(old)
    ok["spec"]["containers"][0]["image"] = "b"
    ok["spec"]["activeDeadlineSeconds"] = 30
    ok["spec"]["tolerations"].append({"key": "j", "operator": "Exists"})
    assert sentences("", "Pod", ok, old=old) == []
    bad = copy.deepcopy(old)
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = 81
    out = sentences("", "Pod", bad, old=old)
    assert len(out) == 1
    assert out[0].startswith(
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
        "previously negative)\n"
    )
    assert "containerPort" in out[0]
    more = copy.deepcopy(old)
    more["spec"]["containers"].append({"name": "d", "image": "x"})
    assert sentences("", "Pod", more, old=old) == [
        "spec.containers: Forbidden: pod updates may not add or remove containers"
    ]
    dropped = copy.deepcopy(old)
    dropped["spec"]["tolerations"] = []
    assert sentences("", "Pod", dropped, old=old) == [
        "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"
    ]


def test_configmap_and_secret() -> None:
    cm = {"metadata": {"name": "c", "namespace": "d"}, "data": {"a b": "x", "big": "x" * (1024 * 1024 + 1)}}
    out = sentences("", "ConfigMap", cm)
    assert out[0].startswith('data[a b]: Invalid value: "a b": a valid config key must consist of')
    assert out[1] == "[]: Too long: must have at most 1048576 bytes"
    secret = {
        "metadata": {"name": "s", "namespace": "d"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "eA=="},
    }
    assert sentences("", "Secret", secret) == ["data[tls.key]: Required value"]
    old = {"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque"}
    new = {
        "metadata": {"name": "s", "namespace": "d"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "eA==", "tls.key": "eA=="},
    }
    assert sentences("", "Secret", new, old=old) == [
        'type: Invalid value: "kubernetes.io/tls": field is immutable'
    ]


def test_service_ports() -> None:
    svc = {
        "metadata": {"name": "s", "namespace": "d"},
        "spec": {"ports": [{"port": 80}, {"port": 0, "name": "b", "protocol": "HTTP"}]},
    }
    assert sentences("", "Service", svc) == [
        "spec.ports[0].name: Required value",
        "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        'spec.ports[1].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"',
    ]
    assert sentences("", "Service", {"metadata": {"name": "s", "namespace": "d"}, "spec": {}}) == [
        "spec.ports: Required value"
    ]


def test_resourcequota_lease_namespace_event() -> None:
    rq = {
        "metadata": {"name": "q", "namespace": "d"},
        "spec": {
            "hard": {
                "pods": "1.5",
                "gpus": "1",
                "requests.nvidia.com/gpu": "2",
                "limits.nvidia.com/gpumem": "10",
            }
        },
    }
    assert sentences("", "ResourceQuota", rq) == [
        'spec.hard[pods]: Invalid value: "1500m": must be an integer',
        'spec.hard[gpus]: Invalid value: "gpus": must be a standard resource type or fully qualified',
    ]
    lease = {"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 0}}
    assert sentences("coordination.k8s.io", "Lease", lease) == [
        "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
    ]
    ev = {"metadata": {"name": "e.1", "namespace": "a"}, "involvedObject": {"kind": "Pod", "namespace": "b"}}
    assert sentences("", "Event", ev) == [
        'involvedObject.namespace: Invalid value: "b": does not match event.namespace'
    ]
    assert sentences("", "Namespace", {"metadata": {"name": "ok"}}, namespaced=False) == []


def _deploy(selector: dict | None, labels: dict, replicas: int = 1) -> dict:
    spec: dict = {
        "replicas": replicas,
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    }
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": "d", "namespace": "x"}, "spec": spec}


def test_workloads() -> None:
    assert sentences("apps", "Deployment", _deploy({"matchLabels": {"app": "a"}}, {"app": "a"})) == []
    assert sentences("apps", "Deployment", _deploy({"matchLabels": {"app": "a"}}, {"app": "b"}, -1)) == [
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"b"}: `selector` does not '
        "match template `labels`",
    ]
    assert sentences("apps", "DaemonSet", _deploy(None, {"app": "a"})) == ["spec.selector: Required value"]
    job = _deploy({"matchLabels": {"app": "a"}}, {"app": "a"})
    job["spec"]["manualSelector"] = True
    assert sentences("batch", "Job", job) == [
        'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'
    ]
    rs = _deploy({"matchLabels": {"app": "a"}}, {"app": "a"})
    rs["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert sentences("apps", "ReplicaSet", rs) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'
    ]


def test_webhook_configuration() -> None:
    cfg = {
        "metadata": {"name": "w"},
        "webhooks": [
            {"name": "a.b", "clientConfig": {"url": "http://x/y"}},
            {
                "name": "a.b.c",
                "sideEffects": "Unknown",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {},
            },
            {
                "name": "a.b.c",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {"name": "s", "namespace": "n", "port": 443}},
            },
        ],
    }
    assert sentences(
        "admissionregistration.k8s.io", "MutatingWebhookConfiguration", cfg, namespaced=False
    ) == [
        'webhooks[0].name: Invalid value: "a.b": '
        "should be a domain with at least three segments separated by dots",
        "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
        "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1",
        "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; "
        "desired format: https://host[/path]",
        'webhooks[1].sideEffects: Unsupported value: "Unknown": supported values: "None", "NoneOnDryRun"',
        "webhooks[1].clientConfig: Required value: exactly one of url or service is required",
        'webhooks[2].name: Duplicate value: "a.b.c"',
    ]


def test_rbac_and_priorityclass() -> None:
    role = {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]}
    assert sentences("rbac.authorization.k8s.io", "ClusterRole", role, namespaced=False) == [
        "rules[0].verbs: Required value: verbs must contain at least one value"
    ]
    crb = {
        "metadata": {"name": "b"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "sa"}],
    }
    assert sentences("rbac.authorization.k8s.io", "ClusterRoleBinding", crb, namespaced=False) == [
        'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole"',
        "subjects[0].namespace: Required value",
    ]
    pc = {"metadata": {"name": "high"}, "value": 2000000000}
    assert sentences("scheduling.k8s.io", "PriorityClass", pc, namespaced=False) == [
        "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
    ]
    system = {"metadata": {"name": "system-node-critical"}, "value": 2000001000}
    assert sentences("scheduling.k8s.io", "PriorityClass", system, namespaced=False) == []


def test_invalid_error_shape() -> None:
    obj = pod(restartPolicy="Sometimes")
    err = invalid("", "Pod", "p", validate_object("", "Pod", obj, namespaced=True))
    assert err.code == 422
    assert err.message == (
        'Pod "p" is invalid: spec.restartPolicy: Unsupported value: "Sometimes": supported '
        'values: "Always", "OnFailure", "Never"'
    )


def test_ensure_namespace() -> None:
    obj: dict = {"metadata": {"name": "x"}}
    ensure_namespace(obj, "default", namespaced=True)
    assert obj["metadata"]["namespace"] == "default"
    node: dict = {"metadata": {"name": "n", "namespace": "default"}}
    ensure_namespace(node, "", namespaced=False)
    assert "namespace" not in node["metadata"]
    with pytest.raises(APIError) as exc:
        ensure_namespace({"metadata": {"namespace": "a"}}, "b", namespaced=True)
    assert exc.value.code == 400
    assert exc.value.message == (
        "the namespace of the provided object does not match the namespace sent on the request"
    )
