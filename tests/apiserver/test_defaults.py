"""Defaulting vectors: registry defaults per minor and the built-in pod admission plugins."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest

from testbed.apiserver import defaults
from testbed.apiserver.errors import APIError
from testbed.apiserver.versions import profile

Obj = dict[str, Any]


def _pod(*containers: Obj, **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": list(containers) or [{"name": "c", "image": "busybox:1.36"}], **spec},
    }


def _defaulted(minor: int, group: str, kind: str, obj: Obj, **kw: Any) -> Obj:
    defaults.apply_defaults(profile(minor), group, kind, obj, **kw)
    return obj


# -- quantities and QoS ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Fraction(1, 10)),
        ("1", Fraction(1)),
        (2, Fraction(2)),
        ("1.5", Fraction(3, 2)),
        ("1Gi", Fraction(2**30)),
        ("512Mi", Fraction(2**29)),
        ("1k", Fraction(1000)),
        ("1M", Fraction(10**6)),
        ("1e3", Fraction(1000)),
        ("5E-1", Fraction(1, 2)),
        ("0", Fraction(0)),
        ("10n", Fraction(1, 10**8)),
    ],
)
def test_parse_quantity(text: Any, value: Fraction) -> None:
    assert defaults.parse_quantity(text) == value


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        defaults.parse_quantity("1 Gi")


@pytest.mark.parametrize(
    ("resources", "init", "qos"),
    [
        ({}, None, "BestEffort"),
        ({"requests": {"nvidia.com/gpu": "1"}}, None, "BestEffort"),  # only cpu/memory count
        ({"requests": {"cpu": "0"}}, None, "BestEffort"),  # zero is ignored
        ({"requests": {"cpu": "100m"}}, None, "Burstable"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, None, "Guaranteed"),  # requests come from limits
        (
            {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1024Mi"}},
            None,
            "Guaranteed",
        ),
        ({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}, None, "Burstable"),
        ({"limits": {"cpu": "1"}}, None, "Burstable"),
        ({"limits": {"cpu": "1", "memory": "1Gi"}}, {"requests": {"cpu": "1"}}, "Burstable"),
    ],
)
def test_qos_class(resources: Obj, init: Obj | None, qos: str) -> None:
    c: Obj = {"name": "c", "image": "x:1", "resources": copy.deepcopy(resources)}
    spec: Obj = {}
    if init is not None:
        spec["initContainers"] = [{"name": "i", "image": "x:1", "resources": init}]
    pod = _defaulted(33, "", "Pod", _pod(c, **spec), create=True)
    assert pod["status"] == {"phase": "Pending", "qosClass": qos}


# -- pods ----------------------------------------------------------------------------------------
def test_pod_spec_defaults() -> None:
    pod = _defaulted(
        33, "", "Pod", _pod({"name": "c", "image": "busybox:1.36", "ports": [{"containerPort": 80}]})
    )
    spec = pod["spec"]
    assert (spec["schedulerName"], spec["restartPolicy"], spec["dnsPolicy"]) == (
        "default-scheduler",
        "Always",
        "ClusterFirst",
    )
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    c = spec["containers"][0]
    assert (c["terminationMessagePath"], c["terminationMessagePolicy"]) == ("/dev/termination-log", "File")
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["resources"] == {}
    assert "priority" not in spec  # the Priority admission plugin fills it


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        ("registry:5000/team/img", "Always"),
        ("registry:5000/team/img:v2", "IfNotPresent"),
        ("img@sha256:" + "a" * 64, "IfNotPresent"),
        ("img:latest@sha256:" + "a" * 64, "Always"),
    ],
)
def test_image_pull_policy(image: str, policy: str) -> None:
    pod = _defaulted(20, "", "Pod", _pod({"name": "c", "image": image}))
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_explicit_values_are_kept() -> None:
    c = {
        "name": "c",
        "image": "busybox",
        "imagePullPolicy": "Never",
        "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "250m"}},
    }
    pod = _defaulted(33, "", "Pod", _pod(c, restartPolicy="Never", terminationGracePeriodSeconds=0))
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 0
    got = pod["spec"]["containers"][0]
    assert got["imagePullPolicy"] == "Never"
    assert got["resources"]["requests"] == {"cpu": "250m", "memory": "1Gi"}  # kept as given, memory filled


def test_probe_env_and_volume_defaults() -> None:
    c = {
        "name": "c",
        "image": "x:1",
        "livenessProbe": {"httpGet": {"port": 8080}},
        "lifecycle": {"preStop": {"httpGet": {"port": 80}}},
        "env": [
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        ],
    }
    volumes = [
        {"name": "a"},
        {"name": "b", "configMap": {"name": "cm"}},
        {"name": "c", "secret": {"secretName": "s"}},
        {"name": "d", "hostPath": {"path": "/dev"}},
        {"name": "e", "emptyDir": {"medium": "Memory"}},
        {"name": "f", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
        {"name": "g", "persistentVolumeClaim": {"claimName": "x"}},
    ]
    pod = _defaulted(25, "", "Pod", _pod(c, volumes=volumes))
    got = pod["spec"]["containers"][0]
    assert got["livenessProbe"] == {
        "httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert got["lifecycle"]["preStop"]["httpGet"] == {"port": 80, "path": "/", "scheme": "HTTP"}
    assert got["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert got["env"][1]["valueFrom"]["resourceFieldRef"]["divisor"] == "0"
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["a"] == {"name": "a", "emptyDir": {}}
    assert vols["b"]["configMap"] == {"name": "cm", "defaultMode": 420}
    assert vols["c"]["secret"] == {"secretName": "s", "defaultMode": 420}
    assert vols["d"]["hostPath"] == {"path": "/dev", "type": ""}
    assert vols["e"]["emptyDir"] == {"medium": "Memory"}
    assert vols["f"]["projected"] == {
        "sources": [{"serviceAccountToken": {"path": "t", "expirationSeconds": 3600}}],
        "defaultMode": 420,
    }
    assert vols["g"] == {"name": "g", "persistentVolumeClaim": {"claimName": "x"}}


def test_host_network_host_ports() -> None:
    ports = [{"containerPort": 9100}]
    container = {"name": "c", "image": "x:1", "ports": copy.deepcopy(ports)}
    pod = _defaulted(28, "", "Pod", _pod(container, hostNetwork=True))
    assert pod["spec"]["containers"][0]["ports"][0]["hostPort"] == 9100
    for minor, expected in ((27, 9100), (28, None)):
        ds = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "spec": {
                "template": {
                    "spec": {
                        "hostNetwork": True,
                        "containers": [{"name": "c", "image": "x:1", "ports": copy.deepcopy(ports)}],
                    }
                }
            },
        }
        _defaulted(minor, "apps", "DaemonSet", ds)
        assert ds["spec"]["template"]["spec"]["containers"][0]["ports"][0].get("hostPort") == expected


def test_deprecated_service_account_field_mirrors() -> None:
    pod = _defaulted(33, "", "Pod", _pod(serviceAccount="legacy"))
    assert (pod["spec"]["serviceAccountName"], pod["spec"]["serviceAccount"]) == ("legacy", "legacy")
    pod = _defaulted(33, "", "Pod", _pod(serviceAccountName="new"))
    assert pod["spec"]["serviceAccount"] == "new"


def test_pod_status_on_create_and_update() -> None:
    pod = _pod()
    pod["status"] = {"phase": "Running", "podIP": "10.0.0.1"}
    assert _defaulted(33, "", "Pod", copy.deepcopy(pod), create=True)["status"] == {
        "phase": "Pending",
        "qosClass": "BestEffort",
    }
    kept = _defaulted(33, "", "Pod", copy.deepcopy(pod))
    assert kept["status"] == {"phase": "Running", "podIP": "10.0.0.1", "qosClass": "BestEffort"}


def test_defaulting_is_idempotent() -> None:
    for minor in (18, 24, 33):
        pod = _defaulted(minor, "", "Pod", _pod(volumes=[{"name": "v"}]))
        again = _defaulted(minor, "", "Pod", copy.deepcopy(pod))
        assert again == pod


# -- workloads -------------------------------------------------------------------------------------
def _template() -> Obj:
    return {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}


def test_deployment_defaults() -> None:
    d = _defaulted(33, "apps", "Deployment", {"apiVersion": "apps/v1", "spec": {"template": _template()}})
    spec = d["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always" and pod_spec["containers"][0]["imagePullPolicy"] == "Always"
    assert "enableServiceLinks" not in pod_spec  # a Pod-only default
    recreate = _defaulted(33, "apps", "Deployment", {"spec": {"strategy": {"type": "Recreate"}}})
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}


def test_replica_set_and_replication_controller() -> None:
    rs = _defaulted(20, "apps", "ReplicaSet", {"spec": {"template": _template()}})
    assert rs["spec"]["replicas"] == 1
    rc = _defaulted(
        20, "", "ReplicationController", {"metadata": {"name": "r"}, "spec": {"template": _template()}}
    )
    assert rc["spec"]["selector"] == {"app": "a"} and rc["metadata"]["labels"] == {"app": "a"}
    assert rc["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    # maxSurge: 0 is defaulted from 1.21 (measured against real 1.21, whose apps/v1 defaults write it)
    ("minor", "rolling"), [(20, {"maxUnavailable": 1}), (21, {"maxUnavailable": 1, "maxSurge": 0})]
)
def test_daemon_set_defaults(minor: int, rolling: Obj) -> None:
    ds = _defaulted(minor, "apps", "DaemonSet", {"spec": {"template": _template()}})
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": rolling}
    assert ds["spec"]["revisionHistoryLimit"] == 10


def test_stateful_set_defaults() -> None:
    old = _defaulted(
        26,
        "apps",
        "StatefulSet",
        {
            "spec": {
                "template": _template(),
                "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
                ],
            }
        },
    )
    spec = old["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert (spec["replicas"], spec["revisionHistoryLimit"]) == (1, 10)
    assert "persistentVolumeClaimRetentionPolicy" not in spec
    assert spec["volumeClaimTemplates"][0]["spec"]["volumeMode"] == "Filesystem"
    assert spec["volumeClaimTemplates"][0]["status"] == {"phase": "Pending"}
    new = _defaulted(27, "apps", "StatefulSet", {"spec": {"updateStrategy": {"type": "OnDelete"}}})
    assert new["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert new["spec"]["updateStrategy"] == {"type": "OnDelete"}


def _job(uid: str | None = "u-1") -> Obj:
    meta: Obj = {"name": "j", "namespace": "ns"}
    if uid:
        meta["uid"] = uid
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}
        },
    }


def test_job_defaults_by_minor() -> None:
    old = _defaulted(21, "batch", "Job", _job(), create=True)["spec"]
    assert (old["completions"], old["parallelism"], old["backoffLimit"]) == (1, 1, 6)
    assert "completionMode" not in old and "suspend" not in old
    mid = _defaulted(22, "batch", "Job", _job(), create=True)["spec"]
    assert (mid["completionMode"], mid["suspend"]) == ("NonIndexed", False)
    assert "podReplacementPolicy" not in mid
    new = _defaulted(29, "batch", "Job", _job(), create=True)["spec"]
    assert new["podReplacementPolicy"] == "TerminatingOrFailed"
    parallel = _defaulted(33, "batch", "Job", {"spec": {"parallelism": 3}})["spec"]
    assert parallel["parallelism"] == 3 and "completions" not in parallel


def test_job_generated_selector() -> None:
    old = _defaulted(26, "batch", "Job", _job(), create=True)
    assert old["spec"]["selector"] == {"matchLabels": {"controller-uid": "u-1"}}
    assert old["spec"]["template"]["metadata"]["labels"] == {"job-name": "j", "controller-uid": "u-1"}
    assert old["metadata"]["labels"] == {"job-name": "j", "controller-uid": "u-1"}
    new = _defaulted(27, "batch", "Job", _job(), create=True)
    assert new["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert new["spec"]["template"]["metadata"]["labels"] == {
        "job-name": "j",
        "batch.kubernetes.io/job-name": "j",
        "controller-uid": "u-1",
        "batch.kubernetes.io/controller-uid": "u-1",
    }
    manual = _job()
    manual["spec"]["manualSelector"] = True
    assert "selector" not in _defaulted(33, "batch", "Job", manual, create=True)["spec"]
    assert "selector" not in _defaulted(33, "batch", "Job", _job(), create=False)["spec"]


def test_cron_job_defaults() -> None:
    cj = _defaulted(
        21,
        "batch",
        "CronJob",
        {
            "apiVersion": "batch/v1beta1",
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": _template()}}},
        },
    )
    spec = cj["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"]) == ("Allow", False)
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    assert "backoffLimit" not in spec["jobTemplate"]["spec"]


# -- core objects ----------------------------------------------------------------------------------
def _service(**spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}], **spec},
    }


def test_service_defaults_by_minor() -> None:
    s20 = _defaulted(20, "", "Service", _service())["spec"]
    assert (s20["type"], s20["sessionAffinity"]) == ("ClusterIP", "None")
    assert s20["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert "ipFamilies" not in s20 and "internalTrafficPolicy" not in s20
    s21 = _defaulted(21, "", "Service", _service())["spec"]
    assert (s21["ipFamilyPolicy"], s21["ipFamilies"]) == ("SingleStack", ["IPv4"])
    assert "internalTrafficPolicy" not in s21
    s22 = _defaulted(22, "", "Service", _service())
    assert s22["spec"]["internalTrafficPolicy"] == "Cluster"
    assert s22["status"] == {"loadBalancer": {}}


def test_service_type_specific_defaults() -> None:
    np = _defaulted(33, "", "Service", _service(type="NodePort", ports=[{"port": 80, "targetPort": "http"}]))
    assert np["spec"]["externalTrafficPolicy"] == "Cluster"
    assert np["spec"]["ports"][0]["targetPort"] == "http"
    lb = _defaulted(33, "", "Service", _service(type="LoadBalancer"))["spec"]
    assert lb["allocateLoadBalancerNodePorts"] is True
    assert (
        "allocateLoadBalancerNodePorts"
        not in _defaulted(21, "", "Service", _service(type="LoadBalancer"))["spec"]
    )
    ext = _defaulted(33, "", "Service", {"spec": {"type": "ExternalName", "externalName": "example.com"}})[
        "spec"
    ]
    assert "ipFamilies" not in ext and "internalTrafficPolicy" not in ext
    sticky = _defaulted(33, "", "Service", _service(sessionAffinity="ClientIP"))["spec"]
    assert sticky["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    plain = _defaulted(33, "", "Service", _service(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 5}}))
    assert "sessionAffinityConfig" not in plain["spec"]
    headless = _defaulted(33, "", "Service", {"spec": {"clusterIP": "None", "ports": [{"port": 1}]}})
    assert headless["spec"]["ipFamilyPolicy"] == "RequireDualStack"


def test_namespace_defaults() -> None:
    ns = _defaulted(21, "", "Namespace", {"metadata": {"name": "team"}}, create=True)
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team"}
    assert "labels" not in _defaulted(20, "", "Namespace", {"metadata": {"name": "team"}})["metadata"]
    finalized = {"metadata": {"name": "team"}, "spec": {}, "status": {"phase": "Terminating"}}
    assert _defaulted(33, "", "Namespace", finalized)["spec"] == {}  # not re-added on update
    assert _defaulted(33, "", "Namespace", {"metadata": {"name": "x"}})["spec"]["finalizers"] == [
        "kubernetes"
    ]


def test_other_core_defaults() -> None:
    assert _defaulted(33, "", "Secret", {"data": {}})["type"] == "Opaque"
    assert _defaulted(33, "", "Secret", {"type": "kubernetes.io/tls"})["type"] == "kubernetes.io/tls"
    pv = _defaulted(33, "", "PersistentVolume", {"spec": {"hostPath": {"path": "/x"}}})
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain" and pv["spec"]["hostPath"]["type"] == ""
    assert pv["status"] == {"phase": "Pending"}
    pvc = _defaulted(33, "", "PersistentVolumeClaim", {"spec": {}})
    assert pvc["spec"] == {"volumeMode": "Filesystem"} and pvc["status"] == {"phase": "Pending"}
    node = _defaulted(33, "", "Node", {"status": {"capacity": {"cpu": "4"}}})
    assert node["status"]["allocatable"] == {"cpu": "4"}
    lr = _defaulted(
        33,
        "",
        "LimitRange",
        {"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}},
    )
    item = lr["spec"]["limits"][0]
    assert item["default"] == {"cpu": "2"} and item["defaultRequest"] == {"cpu": "2", "memory": "1Mi"}
    ep = _defaulted(33, "", "Endpoints", {"subsets": [{"ports": [{"port": 1}]}]})
    assert ep["subsets"][0]["ports"][0]["protocol"] == "TCP"


# -- other groups -------------------------------------------------------------------------------------
def _webhook_config(api_version: str) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": "MutatingWebhookConfiguration",
        "webhooks": [
            {
                "name": "w.example.com",
                "clientConfig": {"service": {"name": "svc", "namespace": "ns"}},
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }
                ],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


def test_webhook_defaults_v1() -> None:
    hook = _defaulted(
        33,
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        _webhook_config("admissionregistration.k8s.io/v1"),
    )["webhooks"][0]
    assert (hook["failurePolicy"], hook["matchPolicy"], hook["timeoutSeconds"]) == ("Fail", "Equivalent", 10)
    assert (hook["namespaceSelector"], hook["objectSelector"]) == ({}, {})
    assert hook["reinvocationPolicy"] == "Never"
    assert hook["rules"][0]["scope"] == "*"
    assert hook["clientConfig"]["service"]["port"] == 443
    assert hook["admissionReviewVersions"] == ["v1"]


def test_webhook_defaults_v1beta1_by_keyword_and_by_body() -> None:
    body = _webhook_config("admissionregistration.k8s.io/v1beta1")
    del body["webhooks"][0]["sideEffects"], body["webhooks"][0]["admissionReviewVersions"]
    hook = _defaulted(
        18, "admissionregistration.k8s.io", "MutatingWebhookConfiguration", copy.deepcopy(body)
    )["webhooks"][0]
    assert (hook["failurePolicy"], hook["matchPolicy"], hook["timeoutSeconds"]) == ("Ignore", "Exact", 30)
    assert (hook["sideEffects"], hook["admissionReviewVersions"]) == ("Unknown", ["v1beta1"])
    body["apiVersion"] = "admissionregistration.k8s.io/v1"
    validating = _defaulted(
        18, "admissionregistration.k8s.io", "ValidatingWebhookConfiguration", body, api_version="v1beta1"
    )["webhooks"][0]
    assert validating["failurePolicy"] == "Ignore" and "reinvocationPolicy" not in validating


def test_rbac_priority_class_and_misc_groups() -> None:
    rb = _defaulted(
        33,
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        {
            "roleRef": {"kind": "ClusterRole", "name": "x"},
            "subjects": [
                {"kind": "User", "name": "u"},
                {"kind": "ServiceAccount", "name": "s", "namespace": "n"},
            ],
        },
    )
    assert rb["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io"
    assert "apiGroup" not in rb["subjects"][1]
    assert rb["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    assert "preemptionPolicy" not in _defaulted(18, "scheduling.k8s.io", "PriorityClass", {"value": 5})
    assert _defaulted(19, "scheduling.k8s.io", "PriorityClass", {"value": 5})["preemptionPolicy"] == (
        "PreemptLowerPriority"
    )
    sc = _defaulted(33, "storage.k8s.io", "StorageClass", {"provisioner": "x"})
    assert (sc["reclaimPolicy"], sc["volumeBindingMode"]) == ("Delete", "Immediate")
    crd = _defaulted(
        33,
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        {"apiVersion": "apiextensions.k8s.io/v1", "spec": {"names": {"kind": "Widget", "plural": "widgets"}}},
    )
    assert crd["spec"]["names"]["singular"] == "widget" and crd["spec"]["names"]["listKind"] == "WidgetList"
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    old_crd = _defaulted(
        18,
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        {"apiVersion": "apiextensions.k8s.io/v1beta1", "spec": {"version": "v1", "names": {"kind": "W"}}},
    )
    assert old_crd["spec"]["scope"] == "Namespaced" and old_crd["spec"]["preserveUnknownFields"] is True
    assert old_crd["spec"]["versions"] == [{"name": "v1", "served": True, "storage": True}]
    netpol = _defaulted(
        33, "networking.k8s.io", "NetworkPolicy", {"spec": {"egress": [{"ports": [{"port": 53}]}]}}
    )
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert netpol["spec"]["egress"][0]["ports"][0]["protocol"] == "TCP"
    hpa = _defaulted(
        33, "autoscaling", "HorizontalPodAutoscaler", {"apiVersion": "autoscaling/v2", "spec": {}}
    )
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 80,
    }
    slice_ = _defaulted(33, "discovery.k8s.io", "EndpointSlice", {"ports": [{"port": 80}]})
    assert slice_["ports"] == [{"port": 80, "name": "", "protocol": "TCP"}]


# -- admission ---------------------------------------------------------------------------------------
def _sa(name: str = "default", **extra: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "ns"},
        **extra,
    }


def _admitted(minor: int, pod: Obj, sa: Obj | None, suffix: str = "x7k2p") -> Obj:
    defaults.apply_defaults(profile(minor), "", "Pod", pod, create=True)
    defaults.default_pod_admission(profile(minor), pod, sa, suffix)
    return pod


def test_projected_token_volume() -> None:
    pod = _admitted(21, _pod(initContainers=[{"name": "i", "image": "x:1"}]), _sa())
    spec = pod["spec"]
    assert (spec["serviceAccountName"], spec["serviceAccount"]) == ("default", "default")
    mount = {
        "name": "kube-api-access-x7k2p",
        "readOnly": True,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    }
    assert spec["containers"][0]["volumeMounts"] == [mount]
    assert spec["initContainers"][0]["volumeMounts"] == [mount]
    assert spec["volumes"] == [
        {
            "name": "kube-api-access-x7k2p",
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
                "defaultMode": 420,
            },
        }
    ]


def test_secret_token_volume() -> None:
    sa = _sa(secrets=[{"name": "default-dockercfg-1"}, {"name": "default-token-abcde"}])
    pod = _admitted(20, _pod(), sa)
    assert pod["spec"]["volumes"] == [
        {"name": "default-token-abcde", "secret": {"secretName": "default-token-abcde", "defaultMode": 420}}
    ]
    assert pod["spec"]["containers"][0]["volumeMounts"][0]["name"] == "default-token-abcde"
    clash = _admitted(18, _pod(volumes=[{"name": "default-token-abcde", "emptyDir": {}}]), sa, "q1w2e")
    assert clash["spec"]["volumes"][1]["name"] == "default-token-abcde-q1w2e"


def test_secret_mode_without_token_asks_to_retry() -> None:
    with pytest.raises(APIError) as err:
        _admitted(19, _pod(), _sa())
    assert (err.value.code, err.value.reason) == (500, "ServerTimeout")
    assert err.value.message == (
        'No API token found for service account "default", retry after the token is '
        "automatically created and added to the service account"
    )
    assert err.value.details == {"name": "create pod", "kind": "serviceaccounts", "retryAfterSeconds": 1}


def test_automount_opt_outs_and_existing_mounts() -> None:
    off = _admitted(33, _pod(automountServiceAccountToken=False), _sa())
    assert "volumes" not in off["spec"] and "volumeMounts" not in off["spec"]["containers"][0]
    sa_off = _admitted(33, _pod(), _sa(automountServiceAccountToken=False))
    assert "volumes" not in sa_off["spec"]
    pod_wins = _admitted(33, _pod(automountServiceAccountToken=True), _sa(automountServiceAccountToken=False))
    assert pod_wins["spec"]["volumes"][0]["name"] == "kube-api-access-x7k2p"
    own = {
        "name": "c",
        "image": "x:1",
        "volumeMounts": [{"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
    }
    custom = _admitted(33, _pod(own, volumes=[{"name": "mine", "emptyDir": {}}]), _sa())
    assert [v["name"] for v in custom["spec"]["volumes"]] == ["mine"]
    assert len(custom["spec"]["containers"][0]["volumeMounts"]) == 1


def test_tolerations_and_pull_secrets() -> None:
    pod = _admitted(33, _pod(), _sa(imagePullSecrets=[{"name": "regcred"}]))
    assert pod["spec"]["tolerations"] == [
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    everything = _admitted(33, _pod(tolerations=[{"operator": "Exists"}]), _sa())
    assert everything["spec"]["tolerations"] == [{"operator": "Exists"}]
    partial = _admitted(
        33,
        _pod(
            tolerations=[
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 5,
                }
            ]
        ),
        _sa(),
    )
    assert [t["key"] for t in partial["spec"]["tolerations"]] == [
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/not-ready",
    ]
    assert partial["spec"]["tolerations"][0]["tolerationSeconds"] == 5


def test_missing_service_account_and_mirror_pods() -> None:
    with pytest.raises(APIError) as err:
        _admitted(33, _pod(serviceAccountName="robot"), None)
    assert (err.value.code, err.value.reason) == (403, "Forbidden")
    assert err.value.message == (
        'pods "p" is forbidden: error looking up service account ns/robot: serviceaccount "robot" not found'
    )
    mirror = _pod()
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "hash"}
    out = _admitted(33, mirror, None)
    assert "serviceAccountName" not in out["spec"] and "volumes" not in out["spec"]
    assert len(out["spec"]["tolerations"]) == 2


def test_priority_fill() -> None:
    p18, p33 = profile(18), profile(33)
    pod = _pod()
    defaults.default_pod_priority(p33, pod, None)
    assert (pod["spec"]["priority"], pod["spec"]["preemptionPolicy"]) == (0, "PreemptLowerPriority")
    old = _pod()
    defaults.default_pod_priority(p18, old, None)
    assert old["spec"]["priority"] == 0 and "preemptionPolicy" not in old["spec"]
    critical = _pod(priorityClassName="system-node-critical")
    defaults.default_pod_priority(p33, critical, None)
    assert critical["spec"]["priority"] == 2000001000
    global_default = _pod()
    pc = {"metadata": {"name": "batch-low"}, "value": -10, "preemptionPolicy": "Never", "globalDefault": True}
    defaults.default_pod_priority(p33, global_default, pc)
    assert (
        global_default["spec"]["priorityClassName"],
        global_default["spec"]["priority"],
        global_default["spec"]["preemptionPolicy"],
    ) == ("batch-low", -10, "Never")
