"""Each filter against in-memory nodes, and the FailedScheduling message shape per minor."""

from __future__ import annotations

from typing import Any

import pytest

from testbed.scheduler.filters import Messages, PodView, make_filter
from testbed.scheduler.nodeinfo import NodeInfo, pod_request
from testbed.scheduler.scheduler import FitError


def node(name: str = "n1", cpu: str = "4", memory: str = "8Gi", pods: str = "110", labels: Any = None,
         taints: Any = None, unschedulable: bool = False, **extra: str) -> NodeInfo:
    alloc = {"cpu": cpu, "memory": memory, "pods": pods, **extra}
    return NodeInfo.from_node({"metadata": {"name": name, "labels": labels or {}},
                               "spec": {"taints": taints or [], "unschedulable": unschedulable},
                               "status": {"allocatable": alloc}})


def pod(requests: Any = None, **spec: Any) -> PodView:
    p = {"metadata": {"name": "p", "namespace": "default", "uid": "u"},
         "spec": {"containers": [{"name": "c", "resources": {"requests": requests or {}}}], **spec}}
    return PodView.of(p, pod_request(p))


def run(p: PodView, n: NodeInfo, minor: int = 33, ignored: set[str] | None = None,
        groups: set[str] | None = None) -> Any:
    return make_filter(Messages(minor), ignored or set(), groups or set())(p, n)


def test_resources_fit_counts_bound_pods() -> None:
    n = node(cpu="2", memory="1Gi")
    assert run(pod({"cpu": "1500m"}), n) is None
    other = {"metadata": {"uid": "o"}, "spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}}
    n.add_pod("o", pod_request(other))
    both = (["Insufficient cpu", "Insufficient memory"], False)
    assert run(pod({"cpu": "1500m", "memory": "2Gi"}), n) == both
    n.remove_pod("o")
    assert run(pod({"cpu": "1500m"}), n) is None


def test_resources_fit_pods_and_extended_and_ephemeral() -> None:
    n = node(pods="1")
    n.add_pod("x", pod_request({"spec": {"containers": [{}]}}))
    assert run(pod(), n) == (["Too many pods"], False)
    n = node(**{"ephemeral-storage": "1Gi", "example.com/foo": "2"})
    assert run(pod({"ephemeral-storage": "2Gi"}), n) == (["Insufficient ephemeral-storage"], False)
    assert run(pod({"example.com/foo": "2"}), n) is None
    assert run(pod({"example.com/bar": "1"}), n) == (["Insufficient example.com/bar"], False)


def test_ignored_resources_and_groups_skip_the_check() -> None:
    n = node()
    p = pod({"nvidia.com/gpu": "1", "example.com/x": "1"})
    assert run(p, n, ignored={"nvidia.com/gpu"}) == (["Insufficient example.com/x"], False)
    assert run(p, n, ignored={"nvidia.com/gpu"}, groups={"example.com"}) is None


def test_init_containers_take_the_max() -> None:
    p = {"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}],
                  "initContainers": [{"resources": {"requests": {"cpu": "3"}}}]}}
    assert pod_request(p).res["cpu"] == 3000


def test_node_name() -> None:
    assert run(pod(nodeName="n2"), node("n1")) == (["node(s) didn't match the requested node name"], True)
    assert run(pod(nodeName="n1"), node("n1")) is None
    assert run(pod(nodeName="n2"), node("n1"), minor=18)[0] == ["node(s) didn't match the requested hostname"]


def test_node_unschedulable_and_its_toleration() -> None:
    n = node(unschedulable=True)
    assert run(pod(), n) == (["node(s) were unschedulable"], True)
    tol = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert run(pod(tolerations=tol), n) is None


def test_node_selector_and_affinity_operators() -> None:
    n = node(labels={"zone": "a", "gen": "5"})
    miss = (["node(s) didn't match Pod's node affinity/selector"], True)
    assert run(pod(nodeSelector={"zone": "a"}), n) is None
    assert run(pod(nodeSelector={"zone": "b"}), n) == miss

    def aff(*exprs: Any, fields: Any = None) -> PodView:
        term: dict[str, Any] = {"matchExpressions": list(exprs)}
        if fields:
            term["matchFields"] = fields
        return pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [term]}}})

    assert run(aff({"key": "zone", "operator": "In", "values": ["a", "b"]}), n) is None
    assert run(aff({"key": "zone", "operator": "NotIn", "values": ["a"]}), n) == miss
    assert run(aff({"key": "zone", "operator": "Exists"}), n) is None
    assert run(aff({"key": "gpu", "operator": "DoesNotExist"}), n) is None
    assert run(aff({"key": "gen", "operator": "Gt", "values": ["4"]}), n) is None
    assert run(aff({"key": "gen", "operator": "Lt", "values": ["4"]}), n) == miss
    assert run(aff(fields=[{"key": "metadata.name", "operator": "In", "values": ["n1"]}]), n) is None
    assert run(aff(fields=[{"key": "metadata.name", "operator": "In", "values": ["n9"]}]), n) == miss
    assert run(pod(nodeSelector={"zone": "b"}), n, minor=18)[0] == ["node(s) didn't match node selector"]


def test_taint_toleration() -> None:
    n = node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"},
                     {"key": "soft", "effect": "PreferNoSchedule"}])
    assert run(pod(), n) == (["node(s) had untolerated taint {gpu: yes}"], True)
    assert run(pod(), n, minor=22)[0] == ["node(s) had taint {gpu: yes}, that the pod didn't tolerate"]
    assert run(pod(), n, minor=18)[0] == ["node(s) had taints that the pod didn't tolerate"]
    assert run(pod(tolerations=[{"key": "gpu", "operator": "Equal", "value": "yes"}]), n) is None
    assert run(pod(tolerations=[{"operator": "Exists"}]), n) is None
    ne = node(taints=[{"key": "k", "effect": "NoExecute"}])
    assert run(pod(tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]), ne) is not None


AFF = "node(s) didn't match Pod's node affinity/selector"
STATUSES = {"a": (["Insufficient cpu"], False), "b": ([AFF], True), "c": ([AFF], True)}


@pytest.mark.parametrize(("minor", "expected"), [
    (18, "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."),
    (24, "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. "
         "preemption: 0/3 nodes are available: 1 Insufficient cpu, "
         "2 Preemption is not helpful for scheduling."),
    (33, "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector. "
         "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, "
         "2 Preemption is not helpful for scheduling.."),
])
def test_fit_error_message_per_minor(minor: int, expected: str) -> None:
    assert FitError(3, STATUSES, {"spec": {}}, Messages(minor)).message() == expected


def test_fit_error_preemption_never() -> None:
    msg = FitError(3, STATUSES, {"spec": {"preemptionPolicy": "Never"}}, Messages(30)).message()
    assert msg.endswith("selector. preemption: not eligible due to preemptionPolicy=Never..")
