"""The scheduler against a live testbed apiserver: binding, outcomes, requeue, profiles, leader election."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.scheduler import Scheduler
from testbed.scheduler.config import LeaderElection, Profile, SchedulerConfig

from .helpers import events_for, get_pod, make_node, make_pod, node_of, start_scheduler, wait_for


@pytest.fixture
def kube() -> Iterator[Kube]:
    with EmbeddedTestbed(33) as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        yield k
        k.close()


def test_binds_and_reports_scheduled(kube: Kube) -> None:
    make_node(kube, "n1", cpu="2")
    make_node(kube, "n2", cpu="2", labels={"disk": "ssd"})
    s = start_scheduler(kube)
    try:
        make_pod(kube, "web", requests={"cpu": "500m"}, nodeSelector={"disk": "ssd"})
        assert wait_for(lambda: node_of(kube, "web")) == "n2"
        ev = wait_for(lambda: events_for(kube, "web", reason="Scheduled"))[0]
        assert ev["message"] == "Successfully assigned default/web to n2"
        assert ev["type"] == "Normal" and ev["reportingComponent"] == "default-scheduler"
        cond = [c for c in get_pod(kube, "web")["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert cond[0]["status"] == "True"
    finally:
        s.stop()


def test_failed_scheduling_event_and_condition(kube: Kube) -> None:
    make_node(kube, "a", cpu="1", labels={"pool": "x"})
    make_node(kube, "b", cpu="8")
    make_node(kube, "c", cpu="8")
    s = start_scheduler(kube)
    try:
        make_pod(kube, "big", requests={"cpu": "2"}, nodeSelector={"pool": "x"})
        ev = wait_for(lambda: events_for(kube, "big", reason="FailedScheduling"))[0]
        expected = ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node "
                    "affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found "
                    "for incoming pod, 2 Preemption is not helpful for scheduling..")
        assert ev["message"] == expected
        assert ev["type"] == "Warning"
        cond = wait_for(lambda: [c for c in get_pod(kube, "big")["status"].get("conditions") or []
                                 if c["type"] == "PodScheduled"])[0]
        assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", expected)
        assert node_of(kube, "big") == ""
    finally:
        s.stop()


def test_requeue_when_a_node_is_added_and_when_a_pod_is_deleted(kube: Kube) -> None:
    make_node(kube, "small", cpu="1")
    s = start_scheduler(kube)
    try:
        make_pod(kube, "late", requests={"cpu": "1"}, nodeSelector={"pool": "new"})
        wait_for(lambda: events_for(kube, "late", reason="FailedScheduling"))
        make_node(kube, "fresh", cpu="2", labels={"pool": "new"})
        assert wait_for(lambda: node_of(kube, "late"), timeout=15) == "fresh"

        make_pod(kube, "hog", requests={"cpu": "1"}, nodeName=None, nodeSelector={"pool": "new"})
        assert wait_for(lambda: node_of(kube, "hog")) == "fresh"
        make_pod(kube, "waiter", requests={"cpu": "1"}, nodeSelector={"pool": "new"})
        msg = wait_for(lambda: events_for(kube, "waiter", reason="FailedScheduling"))[0]["message"]
        assert msg.startswith("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match")
        kube.delete("/api/v1/namespaces/default/pods/late", gracePeriodSeconds=0)  # no kubelet to finish it
        assert wait_for(lambda: node_of(kube, "waiter"), timeout=15) == "fresh"
    finally:
        s.stop()


def test_backoff_retries_with_growing_delay(kube: Kube) -> None:
    s = start_scheduler(kube)
    try:
        make_pod(kube, "nowhere")  # no node at all: an error, retried with backoff
        ev = wait_for(lambda: events_for(kube, "nowhere", reason="FailedScheduling"))[0]
        assert ev["message"] == "no nodes available to schedule pods"
        qp = s.queue._pods[get_pod(kube, "nowhere")["metadata"]["uid"]]
        assert (s.queue.backoff_for(1), s.queue.backoff_for(4), s.queue.backoff_for(9)) == (1.0, 8.0, 10.0)
        make_node(kube, "arrives")
        assert wait_for(lambda: node_of(kube, "nowhere"), timeout=15) == "arrives"
        assert qp.attempts >= 2
    finally:
        s.stop()


def test_pod_for_a_scheduler_nobody_runs_stays_pending(kube: Kube) -> None:
    make_node(kube, "n1")
    s = start_scheduler(kube, names=("default-scheduler", "second"))
    try:
        make_pod(kube, "orphan", scheduler="nobody")
        make_pod(kube, "second-pod", scheduler="second")
        make_pod(kube, "default-pod")
        wait_for(lambda: node_of(kube, "second-pod") and node_of(kube, "default-pod"))
        time.sleep(0.3)
        assert node_of(kube, "orphan") == ""
        assert events_for(kube, "orphan") == []
        assert not get_pod(kube, "orphan")["status"].get("conditions")
    finally:
        s.stop()


def test_leader_election_only_the_leader_binds(kube: Kube) -> None:
    make_node(kube, "n1")
    kw = {"leader_elect": True}
    a = start_scheduler(kube, **kw)
    b = start_scheduler(kube, **kw)
    try:
        wait_for(lambda: a.is_leader or b.is_leader)
        time.sleep(0.3)
        assert a.is_leader != b.is_leader
        leader, standby = (a, b) if a.is_leader else (b, a)
        lease = kube.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler")
        assert lease["spec"]["holderIdentity"] == leader.elector.identity  # type: ignore[union-attr]
        assert "_" in lease["spec"]["holderIdentity"] and lease["spec"]["leaseDurationSeconds"] == 15
        for i in range(5):
            make_pod(kube, f"p{i}")
        wait_for(lambda: all(node_of(kube, f"p{i}") for i in range(5)))
        time.sleep(0.2)
        assert leader.bound_count == 5 and standby.bound_count == 0
        assert all(len(events_for(kube, f"p{i}", reason="Scheduled")) == 1 for i in range(5))
    finally:
        a.stop()
        b.stop()


def test_118_writes_events_k8s_io_v1beta1_with_118_wording() -> None:
    with EmbeddedTestbed(18) as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        make_node(k, "a", cpu="1")
        make_node(k, "b", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])
        s = start_scheduler(k, minor=18)
        try:
            make_pod(k, "p", requests={"cpu": "2"})
            ev = wait_for(lambda: events_for(k, "p", reason="FailedScheduling"))[0]
            assert ev["message"] == ("0/2 nodes are available: 1 Insufficient cpu, "
                                     "1 node(s) had taints that the pod didn't tolerate.")
            raw = k.get("/apis/events.k8s.io/v1beta1/namespaces/default/events")["items"]
            assert [e["reportingController"] for e in raw] == ["default-scheduler"]
            assert s.events_api == "events.k8s.io/v1beta1"
        finally:
            s.stop()
            k.close()


def test_a_late_unbound_update_of_an_assumed_pod_does_not_schedule_it_again(kube: Kube) -> None:
    # The informer can deliver an update written before the binding (the extender's annotation
    # patch) after the bind has returned; kube-scheduler skips assumed pods, so must this one: once
    # it scheduled the bound pod again and wrote a failure condition on a running pod.
    node = make_node(kube, "n1")
    cfg = SchedulerConfig(profiles=[Profile("default-scheduler")], leader_election=LeaderElection(False))
    s = Scheduler(kube, cfg, 33)  # not started: this test delivers the events itself, in its order
    try:
        s._on_node("ADDED", node, None)
        pod = make_pod(kube, "late")
        uid = pod["metadata"]["uid"]
        s._on_pod("ADDED", pod, None)
        qp = s.queue.pop(1.0)
        assert qp is not None and qp.uid == uid
        s.schedule_one(qp)  # filter, assume, bind (in the scheduler's pool)
        assert wait_for(lambda: node_of(kube, "late")) == "n1"
        wait_for(lambda: len(s.queue) == 0)  # bound: forgotten by the queue
        s._on_pod("MODIFIED", pod, None)  # the stale, unbound copy arrives late
        assert len(s.queue) == 0
        s._on_pod("MODIFIED", get_pod(kube, "late"), None)  # then the bound one
        assert len(s.queue) == 0 and s.bound_count == 1
        # a popped copy of an assumed pod is dropped before any filtering (skipPodSchedule)
        s.queue.add_or_update(uid, pod)
        again = s.queue.pop(1.0)
        assert again is not None
        s.schedule_one(again)
        assert len(s.queue) == 0 and s.bound_count == 1
        assert events_for(kube, "late", reason="FailedScheduling") == []
    finally:
        s.stop()


def _as(tb: EmbeddedTestbed, user: str) -> Kube:
    k = Kube.from_config(str(tb.kubeconfig_path))
    k.api.set_default_header("Impersonate-User", user)
    return k


def test_119_elects_on_an_endpoints_lock_mirrored_to_a_lease_and_rbac_applies() -> None:
    """kube-scheduler 1.19's default lock is "endpointsleases": the record lives in an Endpoints
    annotation and a Lease follows it. A scheduler whose account may not read that Endpoints (the
    built-in system:kube-scheduler role grants it only for the name kube-scheduler) never leads, as on
    a real 1.19; the same account on a Lease lock does."""
    with EmbeddedTestbed(19) as tb:
        admin = Kube.from_config(str(tb.kubeconfig_path))
        make_node(admin, "n1")
        admin.create("/api/v1/namespaces", {"metadata": {"name": "hami-system"}})
        sa = {"kind": "ServiceAccount", "name": "hami-scheduler", "namespace": "hami-system"}
        admin.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "metadata": {"name": "hami-kube-scheduler"}, "subjects": [sa],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:kube-scheduler"}})
        admin.create("/apis/rbac.authorization.k8s.io/v1/namespaces/hami-system/roles", {
            "metadata": {"name": "leases"}, "rules": [{"apiGroups": ["coordination.k8s.io"],
                                                       "resources": ["leases"],
                                                       "verbs": ["create", "get", "update"]}]})
        admin.create("/apis/rbac.authorization.k8s.io/v1/namespaces/hami-system/rolebindings", {
            "metadata": {"name": "leases"}, "subjects": [sa],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases"}})
        account = _as(tb, "system:serviceaccount:hami-system:hami-scheduler")

        def hami(kube: Kube, lock: str = "") -> Scheduler:
            le = LeaderElection(leader_elect=True, resource_lock=lock, resource_name="hami-scheduler",
                                resource_namespace="hami-system", retry_period=0.2)
            cfg = SchedulerConfig(profiles=[Profile("hami-scheduler")], leader_election=le)
            return Scheduler(kube, cfg, 19).start()

        default, leases, own = hami(account), None, None
        try:
            time.sleep(2.0)
            assert not default.is_leader  # endpoints "hami-scheduler" is forbidden to the account
            assert default.elector is not None and default.elector.cfg.resource_lock == "endpointsleases"
            default.stop()
            leases = hami(account, "leases")
            wait_for(lambda: leases.is_leader)
            lease = admin.get("/apis/coordination.k8s.io/v1/namespaces/hami-system/leases/hami-scheduler")
            assert lease["spec"]["holderIdentity"] == leases.elector.identity  # type: ignore[union-attr]
            # the built-in scheduler (admin here) on its own default lock: both objects carry the record
            own = start_scheduler(admin, 19, leader_elect=True)
            wait_for(lambda: own.is_leader)
            ep = admin.get("/api/v1/namespaces/kube-system/endpoints/kube-scheduler")
            record = json.loads(ep["metadata"]["annotations"]["control-plane.alpha.kubernetes.io/leader"])
            assert record["holderIdentity"] == own.elector.identity  # type: ignore[union-attr]
            mirror = admin.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler")
            assert mirror["spec"]["holderIdentity"] == own.elector.identity  # type: ignore[union-attr]
        finally:
            for s in (default, leases, own):
                if s is not None:
                    s.stop()
            account.close()
            admin.close()
