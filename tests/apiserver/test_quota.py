"""ResourceQuota usage and admission: charges, exact rejection messages, init containers, terminal pods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from testbed.apiserver.errors import APIError
from testbed.apiserver.quota import (
    check_admission,
    object_usage,
    pod_is_terminal,
    quota_status,
    usage_for_namespace,
)


def container(name: str, requests: dict | None = None, limits: dict | None = None, **extra: object) -> dict:
    c: dict = {"name": name, "image": "i", "resources": {}}
    if requests:
        c["resources"]["requests"] = requests
    if limits:
        c["resources"]["limits"] = limits
    c.update(extra)
    return c


def pod(
    name: str,
    *containers: dict,
    init: list[dict] | None = None,
    phase: str | None = None,
    **spec_extra: object,
) -> dict:
    spec: dict = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    spec.update(spec_extra)
    p: dict = {"metadata": {"name": name, "namespace": "d"}, "spec": spec}
    if phase:
        p["status"] = {"phase": phase}
    return p


def quota(name: str, hard: dict, used: dict, **spec_extra: object) -> dict:
    return {
        "metadata": {"name": name, "namespace": "d"},
        "spec": {"hard": dict(hard), **spec_extra},
        "status": {"hard": dict(hard), "used": dict(used)},
    }


def strs(usage: dict) -> dict:
    return {k: str(v) for k, v in usage.items()}


def test_pod_usage_is_max_of_app_sum_and_largest_init() -> None:
    p = pod(
        "p",
        container("a", {"cpu": "1", "memory": "1Gi"}),
        container("b", {"cpu": "500m"}),
        init=[container("i1", {"cpu": "3"}), container("i2", {"memory": "2Gi"})],
    )
    assert strs(object_usage("", "pods", p)) == {
        "count/pods": "1",
        "pods": "1",
        "cpu": "3",
        "requests.cpu": "3",
        "memory": "2Gi",
        "requests.memory": "2Gi",
    }


def test_sidecar_adds_to_app_containers() -> None:
    p = pod(
        "p",
        container("a", {"cpu": "1"}),
        init=[container("side", {"cpu": "500m"}, restartPolicy="Always"), container("i", {"cpu": "1"})],
    )
    assert str(object_usage("", "pods", p)["requests.cpu"]) == "1500m"


def test_extended_resources_and_limits() -> None:
    p = pod(
        "p",
        container(
            "a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "cpu": "2"}
        ),
    )
    usage = strs(object_usage("", "pods", p))
    assert usage["requests.nvidia.com/gpu"] == "1"
    assert usage["limits.cpu"] == "2"
    assert "limits.nvidia.com/gpumem" not in usage
    tracked = strs(object_usage("", "pods", p, track_extended_limits=True))
    # the real serializer writes 3000 back as 3k
    assert tracked["limits.nvidia.com/gpumem"] == "3k"


def test_terminal_pods() -> None:
    assert pod_is_terminal(pod("p", container("a"), phase="Succeeded"))
    assert pod_is_terminal(pod("p", container("a"), phase="Failed"))
    assert not pod_is_terminal(pod("p", container("a"), phase="Running"))
    stuck = pod("p", container("a"))
    stuck["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    stuck["metadata"]["deletionGracePeriodSeconds"] = 30
    assert pod_is_terminal(stuck, now=datetime(2024, 1, 1, 0, 1, tzinfo=UTC))
    assert not pod_is_terminal(stuck, now=datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC))
    done = pod("p", container("a", {"cpu": "1"}), phase="Succeeded")
    assert strs(object_usage("", "pods", done)) == {"count/pods": "1"}


def test_usage_for_namespace() -> None:
    objects = [
        ("", "pods", pod("a", container("c", {"cpu": "1"}))),
        ("", "pods", pod("b", container("c", {"cpu": "2"}), phase="Failed")),
        ("", "configmaps", {"metadata": {"name": "cm"}}),
        ("", "services", {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
        ("apps", "deployments", {"metadata": {"name": "d"}}),
    ]
    hard = {
        "requests.cpu": "4",
        "pods": "10",
        "count/pods": "10",
        "configmaps": "5",
        "secrets": "5",
        "services.nodeports": "2",
        "count/deployments.apps": "3",
        "limits.nvidia.com/gpumem": "100",
    }
    assert usage_for_namespace(objects, hard) == {
        "configmaps": "1",
        "count/deployments.apps": "1",
        "count/pods": "2",
        "pods": "1",
        "requests.cpu": "1",
        "secrets": "0",
        "services.nodeports": "1",
    }
    status = quota_status(quota("q", hard, {}), objects)
    assert status["hard"] == hard
    assert status["used"]["pods"] == "1"


def test_admission_accepts_and_returns_new_used() -> None:
    q = quota("compute", {"requests.cpu": "2", "pods": "3"}, {"requests.cpu": "1", "pods": "1"})
    out = check_admission([q], "", "pods", pod("a", container("c", {"cpu": "500m"})), None)
    assert len(out) == 1
    assert out[0][0] is q
    assert out[0][1] == {"requests.cpu": "1500m", "pods": "2"}


def test_admission_exceeded_message() -> None:
    q = quota("compute", {"requests.cpu": "2", "pods": "3"}, {"requests.cpu": "1", "pods": "1"})
    with pytest.raises(APIError) as exc:
        check_admission([q], "", "pods", pod("b", container("c", {"cpu": "2"})), None)
    assert exc.value.code == 403
    assert exc.value.reason == "Forbidden"
    assert exc.value.message == (
        'pods "b" is forbidden: exceeded quota: compute, requested: requests.cpu=2, '
        "used: requests.cpu=1, limited: requests.cpu=2"
    )


def test_admission_missing_request_message() -> None:
    q = quota(
        "compute", {"limits.cpu": "4", "requests.memory": "1Gi"}, {"limits.cpu": "0", "requests.memory": "0"}
    )
    p = pod("c", container("web", {"memory": "100Mi"}), container("log"), init=[container("setup")])
    with pytest.raises(APIError) as exc:
        check_admission([q], "", "pods", p, None)
    assert exc.value.message == (
        'pods "c" is forbidden: failed quota: compute: must specify limits.cpu for: '
        "log,setup,web; requests.memory for: log,setup"
    )


def test_admission_extended_resource_quota() -> None:
    q = quota("gpu", {"requests.nvidia.com/gpu": "1"}, {"requests.nvidia.com/gpu": "1"})
    p = pod("g", container("c", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"}))
    with pytest.raises(APIError) as exc:
        check_admission([q], "", "pods", p, None)
    assert exc.value.message == (
        'pods "g" is forbidden: exceeded quota: gpu, requested: '
        "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, "
        "limited: requests.nvidia.com/gpu=1"
    )
    # limits.<extended> is HAMi's business, not the apiserver's
    hami = quota("hami", {"limits.nvidia.com/gpumem": "1000"}, {})
    assert (
        check_admission(
            [hami], "", "pods", pod("h", container("c", None, {"nvidia.com/gpumem": "3000"})), None
        )
        == []
    )


def test_admission_status_unknown_and_object_counts() -> None:
    q = quota("counts", {"configmaps": "1"}, {})
    with pytest.raises(APIError) as exc:
        check_admission([q], "", "configmaps", {"metadata": {"name": "cm"}}, None)
    assert (
        exc.value.message
        == 'configmaps "cm" is forbidden: status unknown for quota: counts, resources: configmaps'
    )
    full = quota("counts", {"count/deployments.apps": "1"}, {"count/deployments.apps": "1"})
    with pytest.raises(APIError) as exc:
        check_admission([full], "apps", "deployments", {"metadata": {"name": "d"}}, None)
    assert exc.value.message == (
        'deployments.apps "d" is forbidden: exceeded quota: counts, requested: '
        "count/deployments.apps=1, used: count/deployments.apps=1, "
        "limited: count/deployments.apps=1"
    )


def test_admission_update_charges_only_the_delta() -> None:
    q = quota("svc", {"services.nodeports": "1"}, {"services.nodeports": "0"})
    old = {
        "metadata": {"name": "s", "resourceVersion": "5"},
        "spec": {"type": "ClusterIP", "ports": [{"port": 1}]},
    }
    new = {
        "metadata": {"name": "s", "resourceVersion": "5"},
        "spec": {"type": "NodePort", "ports": [{"port": 1}]},
    }
    assert check_admission([q], "", "services", new, old)[0][1] == {"services.nodeports": "1"}
    assert check_admission([q], "", "services", old, old) == []


def test_scopes() -> None:
    best_effort = quota("be", {"pods": "0"}, {"pods": "0"}, scopes=["BestEffort"])
    with pytest.raises(APIError):
        check_admission([best_effort], "", "pods", pod("p", container("c")), None)
    assert check_admission([best_effort], "", "pods", pod("p", container("c", {"cpu": "1"})), None) == []
    by_class = quota(
        "pc",
        {"pods": "0"},
        {"pods": "0"},
        scopeSelector={
            "matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]
        },
    )
    assert check_admission([by_class], "", "pods", pod("p", container("c")), None) == []
    with pytest.raises(APIError):
        check_admission([by_class], "", "pods", pod("p", container("c"), priorityClassName="high"), None)
    terminating = quota("t", {"pods": "0"}, {"pods": "0"}, scopes=["Terminating"])
    assert check_admission([terminating], "", "pods", pod("p", container("c")), None) == []
    objects = [("", "pods", pod("a", container("c"))), ("", "pods", pod("b", container("c", {"cpu": "1"})))]
    assert usage_for_namespace(
        objects, {"pods": "5"}, quota=quota("be", {"pods": "5"}, {}, scopes=["BestEffort"])
    ) == {"pods": "1"}
