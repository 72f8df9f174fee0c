"""What the real registry strategies write, as the fidelity corpus measured it against real
kube-apiserver (testbed/DIFFERENCES.md, "Fidelity of the emulated apiserver"): which kinds carry
metadata.generation (per minor), what a DELETE answers, a Secret's stringData, a DaemonSet's template
generation, an Event's null times, the name rules of Events, PodDisruptionBudgets and StatefulSets,
and a Job's manualSelector default. Each per-minor rule is checked on both sides of its boundary."""

from __future__ import annotations

import base64
import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testbed.apiserver.versions import profile
from testbed.embedded import EmbeddedTestbed

from .helpers import raw_json

Testbeds = Callable[[int], EmbeddedTestbed]


@pytest.fixture(scope="module")
def tbs() -> Iterator[Testbeds]:
    """Testbeds by minor, started on first use, each with a namespace ``f``."""
    opened: dict[int, EmbeddedTestbed] = {}
    with contextlib.ExitStack() as stack:

        def get(minor: int) -> EmbeddedTestbed:
            if minor not in opened:
                tb = stack.enter_context(EmbeddedTestbed(minor))
                code, _ = raw_json(tb, "POST", "/api/v1/namespaces", {"metadata": {"name": "f"}})
                assert code == 201
                opened[minor] = tb
            return opened[minor]

        yield get


def _pod_spec() -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": "busybox"}]}


def _create(tb: EmbeddedTestbed, path: str, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
    code, body = raw_json(tb, "POST", path, obj, **kw)
    assert code == 201 or (code == 200 and "dryRun" in path), (code, body)
    return body


def _patch(tb: EmbeddedTestbed, path: str, patch: dict[str, Any]) -> dict[str, Any]:
    code, body = raw_json(tb, "PATCH", path, patch, content_type="application/merge-patch+json")
    assert code == 200, body
    return body


# -- metadata.generation ------------------------------------------------------------------------


def test_generation_only_on_kinds_whose_strategy_keeps_one(tbs: Testbeds) -> None:
    tb = tbs(33)
    without = [
        ("/api/v1/namespaces/f/limitranges",
         {"metadata": {"name": "lr"}, "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]}}),
        ("/api/v1/namespaces/f/resourcequotas",
         {"metadata": {"name": "rq"}, "spec": {"hard": {"pods": "5"}}}),
        ("/api/v1/namespaces/f/persistentvolumeclaims", {"metadata": {"name": "pvc"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ("/apis/rbac.authorization.k8s.io/v1/namespaces/f/roles", {"metadata": {"name": "r"}, "rules": []}),
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "gen-cr"}, "rules": []}),
        ("/apis/storage.k8s.io/v1/storageclasses", {"metadata": {"name": "gen-sc"}, "provisioner": "x.io/y"}),
    ]
    for path, obj in without:
        assert "generation" not in _create(tb, path, obj)["metadata"], path
    with_gen = [
        ("/apis/networking.k8s.io/v1/namespaces/f/networkpolicies",
         {"metadata": {"name": "np"}, "spec": {"podSelector": {}}}),
        ("/apis/scheduling.k8s.io/v1/priorityclasses", {"metadata": {"name": "gen-pc"}, "value": 5}),
        ("/apis/policy/v1/namespaces/f/poddisruptionbudgets",
         {"metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}}),
    ]
    for path, obj in with_gen:
        assert _create(tb, path, obj)["metadata"]["generation"] == 1, path
    np = "/apis/networking.k8s.io/v1/namespaces/f/networkpolicies/np"
    assert _patch(tb, np, {"metadata": {"labels": {"x": "y"}}})["metadata"]["generation"] == 1
    changed = _patch(tb, np, {"spec": {"podSelector": {"matchLabels": {"a": "b"}}}})
    assert changed["metadata"]["generation"] == 2
    # a label change is a change of an EndpointSlice (from 1.21)
    eps = _create(tb, "/apis/discovery.k8s.io/v1/namespaces/f/endpointslices",
                  {"metadata": {"name": "eps"}, "addressType": "IPv4", "endpoints": []})
    assert eps["metadata"]["generation"] == 1
    eps = _patch(tb, "/apis/discovery.k8s.io/v1/namespaces/f/endpointslices/eps",
                 {"metadata": {"labels": {"a": "b"}}})
    assert eps["metadata"]["generation"] == 2


def test_job_cronjob_and_podtemplate_generation_from_1_22(tbs: Testbeds) -> None:
    job = {"metadata": {"name": "j"}, "spec": {"suspend": True, "template": {"spec": {
        **_pod_spec(), "restartPolicy": "Never"}}}}
    template = {"metadata": {"name": "pt"},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": _pod_spec()}}
    old, new = tbs(21), tbs(22)
    assert "generation" not in _create(old, "/apis/batch/v1/namespaces/f/jobs", job)["metadata"]
    assert "generation" not in _create(old, "/api/v1/namespaces/f/podtemplates", template)["metadata"]
    assert _create(new, "/apis/batch/v1/namespaces/f/jobs", job)["metadata"]["generation"] == 1
    assert _create(new, "/api/v1/namespaces/f/podtemplates", template)["metadata"]["generation"] == 1
    assert ("batch", "cronjobs") not in profile(21).generation_kinds
    assert ("batch", "cronjobs") in profile(22).generation_kinds


def test_pod_generation_from_1_33(tbs: Testbeds) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {**_pod_spec(), "nodeName": "nowhere"}}
    path = "/api/v1/namespaces/f/pods"
    assert "generation" not in _create(tbs(32), path, pod)["metadata"]
    tb = tbs(33)
    assert _create(tb, path, pod)["metadata"]["generation"] == 1
    # metadata changes keep it, spec changes bump it
    assert _patch(tb, f"{path}/p", {"metadata": {"labels": {"a": "b"}}})["metadata"]["generation"] == 1
    assert _patch(tb, f"{path}/p", {"spec": {"activeDeadlineSeconds": 600}})["metadata"]["generation"] == 2
    # the first deletionTimestamp (a graceful delete of a bound pod) bumps it too
    code, body = raw_json(tb, "DELETE", f"{path}/p")
    assert code == 200 and body["kind"] == "Pod"
    assert body["metadata"]["deletionTimestamp"] and body["metadata"]["generation"] == 3
    code, body = raw_json(tb, "DELETE", f"{path}/p")
    assert body["metadata"]["generation"] == 3


# -- DELETE answers -----------------------------------------------------------------------------


def test_delete_answers_status_or_object_by_kind(tbs: Testbeds) -> None:
    tb = tbs(33)
    cm = _create(tb, "/api/v1/namespaces/f/configmaps", {"metadata": {"name": "cm"}, "data": {"a": "b"}})
    code, body = raw_json(tb, "DELETE", "/api/v1/namespaces/f/configmaps/cm")
    assert code == 200
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": "cm", "kind": "configmaps", "uid": cm["metadata"]["uid"]}}
    _create(tb, "/apis/rbac.authorization.k8s.io/v1/namespaces/f/roles",
            {"metadata": {"name": "del"}, "rules": []})
    code, body = raw_json(tb, "DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/f/roles/del")
    assert body["kind"] == "Status" and body["details"]["group"] == "rbac.authorization.k8s.io"
    # a dry run answers the same and deletes nothing
    _create(tb, "/api/v1/namespaces/f/configmaps", {"metadata": {"name": "dry"}})
    code, body = raw_json(tb, "DELETE", "/api/v1/namespaces/f/configmaps/dry?dryRun=All")
    assert code == 200 and body["kind"] == "Status"
    assert raw_json(tb, "GET", "/api/v1/namespaces/f/configmaps/dry")[0] == 200
    # kinds whose storage returns the deleted object
    _create(tb, "/api/v1/namespaces/f/serviceaccounts", {"metadata": {"name": "sa"}})
    code, body = raw_json(tb, "DELETE", "/api/v1/namespaces/f/serviceaccounts/sa")
    assert body["kind"] == "ServiceAccount"


def test_service_delete_answers_status_up_to_1_22(tbs: Testbeds) -> None:
    svc = {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    kinds = {}
    for minor in (22, 33):
        tb = tbs(minor)
        _create(tb, "/api/v1/namespaces/f/services", svc)
        kinds[minor] = raw_json(tb, "DELETE", "/api/v1/namespaces/f/services/s")[1]["kind"]
    assert kinds == {22: "Status", 33: "Service"}
    assert ("", "services") in profile(23).delete_returns_object


def test_job_delete_without_policy_answers_as_orphaned(tbs: Testbeds) -> None:
    tb = tbs(33)
    job = {"metadata": {"name": "jd"}, "spec": {"suspend": True, "template": {"spec": {
        **_pod_spec(), "restartPolicy": "Never"}}}}
    path = "/apis/batch/v1/namespaces/f/jobs"
    _create(tb, path, job)
    code, body = raw_json(tb, "DELETE", f"{path}/jd")
    assert code == 200 and body["kind"] == "Job"
    assert body["metadata"]["finalizers"] == ["orphan"] and body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["generation"] == 2
    _create(tb, path, {**job, "metadata": {"name": "jb"}})
    code, body = raw_json(tb, "DELETE", f"{path}/jb", {"propagationPolicy": "Background"})
    assert body["kind"] == "Status"


# -- kinds' own conversions and defaults --------------------------------------------------------


def test_secret_string_data_is_stored_in_data(tbs: Testbeds) -> None:
    tb = tbs(33)
    path = "/api/v1/namespaces/f/secrets"
    secret = {"metadata": {"name": "s"}, "stringData": {"k": "v", "both": "new"},
              "data": {"both": base64.b64encode(b"old").decode(), "d": "ZA=="}}
    dry = _create(tb, path + "?dryRun=All", secret)
    made = _create(tb, path, secret)
    for body in (dry, made):
        assert "stringData" not in body
        assert body["data"] == {"k": "dg==", "both": base64.b64encode(b"new").decode(), "d": "ZA=="}
    patched = _patch(tb, f"{path}/s", {"stringData": {"k": "w"}})
    assert "stringData" not in patched and patched["data"]["k"] == base64.b64encode(b"w").decode()
    assert raw_json(tb, "GET", f"{path}/s")[1]["data"]["k"] == base64.b64encode(b"w").decode()


def test_daemonset_template_generation_annotation(tbs: Testbeds) -> None:
    tb = tbs(33)
    key = "deprecated.daemonset.template.generation"
    path = "/apis/apps/v1/namespaces/f/daemonsets"
    ds = {"metadata": {"name": "ds"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": _pod_spec()}}}
    made = _create(tb, path, ds)
    assert made["metadata"]["annotations"] == {key: "1"} and made["metadata"]["generation"] == 1
    body = _patch(tb, f"{path}/ds", {"metadata": {"labels": {"x": "y"}}})
    assert body["metadata"]["annotations"][key] == "1"
    # a spec change outside the template bumps the generation only
    body = _patch(tb, f"{path}/ds", {"spec": {"minReadySeconds": 5}})
    assert (body["metadata"]["generation"], body["metadata"]["annotations"][key]) == (2, "1")
    body = _patch(tb, f"{path}/ds", {"spec": {"template": {"metadata": {"labels": {"c": "d"}}}}})
    assert (body["metadata"]["generation"], body["metadata"]["annotations"][key]) == (3, "2")
    # a client cannot change or drop it
    body["metadata"]["annotations"] = {key: "7"}
    code, put = raw_json(tb, "PUT", f"{path}/ds", body)
    assert code == 200 and put["metadata"]["annotations"][key] == "2"


def test_core_event_times_are_written_as_null(tbs: Testbeds) -> None:
    tb = tbs(33)
    ev = _create(tb, "/api/v1/namespaces/f/events", {
        "metadata": {"name": "ev"}, "involvedObject": {"kind": "Pod", "namespace": "f", "name": "x"},
        "reason": "R", "message": "m", "type": "Normal"})
    for key in ("eventTime", "firstTimestamp", "lastTimestamp"):
        assert key in ev and ev[key] is None, key
    assert ev["source"] == {} and ev["reportingComponent"] == "" and ev["reportingInstance"] == ""
    assert raw_json(tb, "GET", "/api/v1/namespaces/f/events/ev")[1]["lastTimestamp"] is None


def test_dry_run_create_has_the_stored_shape(tbs: Testbeds) -> None:
    tb = tbs(35)
    cj = {"metadata": {"name": "cj"}, "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {
        "template": {"spec": {**_pod_spec(), "restartPolicy": "Never"}}}}}}
    dry = _create(tb, "/apis/batch/v1/namespaces/f/cronjobs?dryRun=All", cj)
    assert dry["spec"]["jobTemplate"]["metadata"] == {}


# -- names --------------------------------------------------------------------------------------


def test_core_events_and_pdbs_take_any_name(tbs: Testbeds) -> None:
    tb = tbs(33)
    event = {"metadata": {"name": "Not_A_Valid_Name"}, "reason": "R",
             "involvedObject": {"kind": "Pod", "namespace": "f", "name": "x"}}
    assert raw_json(tb, "POST", "/api/v1/namespaces/f/events", event)[0] == 201
    strict = {"metadata": {"name": "Not_Valid_Either"}, "eventTime": "2026-12-03T00:00:00.000000Z",
              "reportingController": "a/b", "reportingInstance": "i", "action": "A", "reason": "R",
              "regarding": {"kind": "Pod", "namespace": "f", "name": "x"}, "type": "Normal"}
    code, body = raw_json(tb, "POST", "/apis/events.k8s.io/v1/namespaces/f/events", strict)
    assert code == 422 and body["details"]["causes"][0]["field"] == "metadata.name"
    pdb = {"metadata": {"name": "Not_A_Valid_Name"}, "spec": {"minAvailable": 1}}
    assert raw_json(tb, "POST", "/apis/policy/v1/namespaces/f/poddisruptionbudgets", pdb)[0] == 201


def test_statefulset_name_is_a_dns_label_from_1_27(tbs: Testbeds) -> None:
    sts = {"metadata": {"name": "a.b"}, "spec": {"serviceName": "s", "selector": {"matchLabels": {"a": "b"}},
                                                 "template": {"metadata": {"labels": {"a": "b"}},
                                                              "spec": _pod_spec()}}}
    path = "/apis/apps/v1/namespaces/f/statefulsets"
    assert raw_json(tbs(22), "POST", path, sts)[0] == 201
    code, body = raw_json(tbs(33), "POST", path, sts)
    assert code == 422 and body["details"]["causes"][0]["field"] == "metadata.name"
    code, body = raw_json(tbs(33), "POST", path, {**sts, "metadata": {"name": "Not_A_Valid_Name"}})
    assert "RFC 1123 label" in body["details"]["causes"][0]["message"]


def test_job_manual_selector_defaulted_from_1_29(tbs: Testbeds) -> None:
    job = {"metadata": {"name": "ms"}, "spec": {"suspend": True, "template": {"spec": {
        **_pod_spec(), "restartPolicy": "Never"}}}}
    path = "/apis/batch/v1/namespaces/f/jobs?dryRun=All"
    assert "manualSelector" not in _create(tbs(22), path, job)["spec"]
    assert _create(tbs(33), path, job)["spec"]["manualSelector"] is False


# -- per-minor defaults (the strategies' create-time fills) -------------------------------------


def _defaulted(minor: int, group: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    from testbed.apiserver import defaults

    out = {"apiVersion": f"{group}/v1" if group else "v1", "kind": kind,
           "metadata": {"name": "x", "namespace": "f", "uid": "u"}, **copy.deepcopy(obj)}
    defaults.apply_defaults(profile(minor), group, kind, out, api_version=out["apiVersion"], create=True)
    return out


def test_job_tracking_annotation_on_1_25_to_1_27_and_suspend_from_1_22() -> None:
    job = {"spec": {"suspend": True, "template": {"spec": {**_pod_spec(), "restartPolicy": "Never"}}}}
    tracked = {m: "batch.kubernetes.io/job-tracking" in (_defaulted(m, "batch", "Job", job)["metadata"]
                                                          .get("annotations") or {})
               for m in (24, 25, 27, 28)}
    assert tracked == {24: False, 25: True, 27: True, 28: False}
    assert "suspend" not in _defaulted(21, "batch", "Job", job)["spec"]
    assert _defaulted(22, "batch", "Job", job)["spec"]["suspend"] is True


def test_daemonset_max_surge_defaulted_from_1_21() -> None:
    ds = {"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
        "metadata": {"labels": {"a": "b"}}, "spec": _pod_spec()}}}
    def rolling(minor: int) -> dict[str, Any]:
        return _defaulted(minor, "apps", "DaemonSet", ds)["spec"]["updateStrategy"]["rollingUpdate"]

    assert "maxSurge" not in rolling(20)
    assert rolling(21)["maxSurge"] == 0


def test_service_dry_run_allocates_a_cluster_ip_from_1_23(tbs: Testbeds) -> None:
    svc = {"metadata": {"name": "dry"}, "spec": {"ports": [{"port": 80}]}}
    path = "/api/v1/namespaces/f/services?dryRun=All"
    assert "clusterIP" not in _create(tbs(22), path, svc)["spec"]
    assert _create(tbs(33), path, svc)["spec"]["clusterIP"]


@pytest.mark.parametrize(("minor", "plural", "named"), [
    (20, "networkpolicies", "extensions"), (25, "ingresses", "extensions"), (26, "networkpolicies", None),
    (25, "deployments", None), (26, "deployments", "extensions"), (26, "daemonsets", "extensions"),
    (27, "replicasets", None),
])
def test_a_422_names_the_group_the_real_server_names(minor: int, plural: str, named: str | None) -> None:
    from testbed.apiserver.versions import invalid_group

    own = "apps" if plural in ("deployments", "daemonsets", "replicasets") else "networking.k8s.io"
    assert invalid_group(own, plural, minor) == (named or own)


def test_the_emulated_server_answers_that_group(tbs: Testbeds) -> None:
    deployment = {"metadata": {"name": "Not_Valid"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": _pod_spec()}}}
    for minor, group in ((26, "extensions"), (27, "apps")):
        code, body = raw_json(tbs(minor), "POST", "/apis/apps/v1/namespaces/f/deployments", deployment)
        assert code == 422 and body["details"]["group"] == group, body
        assert body["message"].startswith(f'Deployment.{group} "Not_Valid" is invalid'), body["message"]
