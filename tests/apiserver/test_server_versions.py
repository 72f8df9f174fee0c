"""Per-minor behaviour of the live server: served group-versions, discovery, /version."""

from __future__ import annotations

import pytest

from testbed.embedded import EmbeddedTestbed

from .helpers import raw, raw_json

AGG_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGG_V2B1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


@pytest.fixture(scope="module", params=[18, 22, 27, 33])
def tb(request):  # type: ignore[no-untyped-def]
    with EmbeddedTestbed(request.param) as t:
        yield t


def test_version_reports_the_minor(tb):
    code, body = raw_json(tb, "GET", "/version")
    assert code == 200
    assert body["minor"] == str(tb.minor)
    assert body["gitVersion"].startswith(f"v1.{tb.minor}.")
    assert ("emulationMinor" in body) == (tb.minor >= 33)


def test_served_group_versions_follow_the_minor(tb):
    code, _ = raw_json(tb, "GET", "/apis/admissionregistration.k8s.io/v1beta1")
    assert code == (200 if tb.minor <= 21 else 404)
    code, _ = raw_json(tb, "GET", "/apis/policy/v1beta1")
    assert code == (200 if tb.minor <= 24 else 404)
    code, _ = raw_json(tb, "GET", "/apis/events.k8s.io/v1")
    assert code == (200 if tb.minor >= 19 else 404)
    code, body = raw_json(tb, "GET", "/apis/batch/v1")
    assert code == 200
    assert ("cronjobs" in [r["name"] for r in body["resources"]]) == (tb.minor >= 21)


def test_legacy_discovery_lists_groups(tb):
    code, body = raw_json(tb, "GET", "/apis")
    assert code == 200 and body["kind"] == "APIGroupList"
    names = [g["name"] for g in body["groups"]]
    assert "apps" in names and "coordination.k8s.io" in names
    code, body = raw_json(tb, "GET", "/api")
    assert body["kind"] == "APIVersions" and body["versions"] == ["v1"]
    code, body = raw_json(tb, "GET", "/api/v1")
    pods = next(r for r in body["resources"] if r["name"] == "pods")
    assert pods["namespaced"] and pods["kind"] == "Pod" and "watch" in pods["verbs"]
    assert any(r["name"] == "pods/binding" for r in body["resources"])


def test_aggregated_discovery_where_the_minor_serves_it(tb):
    code, headers, _ = raw(tb, "GET", "/apis", headers={"Accept": f"{AGG_V2},{AGG_V2B1},application/json"})
    assert code == 200
    ctype = headers.get("Content-Type", "")
    if tb.minor >= 30:
        assert "v=v2;" in ctype
    elif tb.minor >= 27:
        assert "v=v2beta1" in ctype
    else:
        assert "apidiscovery" not in ctype
    _, headers, _ = raw(tb, "GET", "/apis", headers={"Accept": f"{AGG_V2B1},application/json"})
    if 27 <= tb.minor <= 32:
        assert "v=v2beta1" in headers.get("Content-Type", "")
    else:
        assert "apidiscovery" not in headers.get("Content-Type", "")


def test_webhook_configuration_v1beta1_defaults_on_old_minors():
    cfg = {
        "apiVersion": "admissionregistration.k8s.io/v1beta1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "old"},
        "webhooks": [{"name": "old.example.com", "clientConfig": {"url": "https://127.0.0.1:1/x"}}],
    }
    path = "/apis/admissionregistration.k8s.io/v1beta1/mutatingwebhookconfigurations"
    with EmbeddedTestbed(21) as old:
        code, body = raw_json(old, "POST", path, cfg)
        assert code == 201, body
        wh = body["webhooks"][0]
        assert wh["failurePolicy"] == "Ignore" and wh["admissionReviewVersions"] == ["v1beta1"]
        assert wh["sideEffects"] == "Unknown" and wh["timeoutSeconds"] == 30
        code, body = raw_json(old, "GET", path.replace("v1beta1", "v1") + "/old")
        assert code == 200 and body["apiVersion"] == "admissionregistration.k8s.io/v1"
    with EmbeddedTestbed(22) as new:
        code, body = raw_json(new, "POST", path, cfg)
        assert code == 404


def test_service_account_token_volume_by_minor(tb):
    pod = {"metadata": {"name": "sa"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    code, body = raw_json(tb, "POST", "/api/v1/namespaces/default/pods", pod)
    assert code == 201, body
    vols = body["spec"]["volumes"]
    if tb.minor >= 21:
        assert vols[0]["name"].startswith("kube-api-access-") and "projected" in vols[0]
    else:
        assert vols[0]["secret"]["secretName"].startswith("default-token-")
    mounts = body["spec"]["containers"][0]["volumeMounts"]
    assert mounts[0]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.mark.parametrize(("minor", "dns", "ops"), [
    (19, "a DNS-1123 subdomain must consist", "expected: '=', '!=', '==', 'in', notin'"),
    (21, "a lowercase RFC 1123 subdomain must consist", "expected: '=', '!=', '==', 'in', notin'"),
    (22, "a lowercase RFC 1123 subdomain must consist", "expected: in, notin, =, ==, !=, gt, lt"),
])
def test_messages_in_the_minors_wording(minor: int, dns: str, ops: str) -> None:
    """Two apimachinery messages changed between releases (name validation in v0.20, the selector's
    operator list in v0.22); each emulated minor answers in its own (fidelity corpus, 1.18-1.21), and
    two testbeds of different minors in one process do not mix them."""
    with EmbeddedTestbed(minor) as tb, EmbeddedTestbed(35) as newest:
        code, body = raw_json(tb, "POST", "/api/v1/namespaces/default/configmaps",
                              {"metadata": {"name": "Not_A_Valid_Name"}})
        assert code == 422 and dns in body["message"], body
        code, body = raw_json(tb, "GET", "/api/v1/namespaces/default/configmaps?labelSelector=a%20b")
        assert code == 400 and body["message"].endswith(ops), body
        code, body = raw_json(newest, "POST", "/api/v1/namespaces/default/configmaps",
                              {"metadata": {"name": "Not_A_Valid_Name"}})
        assert "a lowercase RFC 1123 subdomain" in body["message"]


@pytest.mark.parametrize("minor", [18, 20, 21, 35])
def test_a_resource_no_version_serves_answers_not_found_with_empty_details(minor: int) -> None:
    """batch/v1 CronJobs and policy/v1 PodDisruptionBudgets are not served before 1.21: the real
    kube-apiserver's 404 (checked on 1.18-1.21 and 1.35) carries ``details: {}``."""
    with EmbeddedTestbed(minor) as tb:
        code, body = raw_json(tb, "GET", "/apis/batch/v1/namespaces/default/nosuchthings")
        assert code == 404
        assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "the server could not find the requested resource",
                        "reason": "NotFound", "details": {}, "code": 404}
        code, body = raw_json(tb, "GET", "/apis/batch/v1/namespaces/default/cronjobs")
        assert (code == 404) == (minor < 21)
        if minor < 21:
            assert body["details"] == {}
