"""The JSON client and informer that testbed components use to reach an apiserver."""

from __future__ import annotations

import threading
import time

import pytest

from kubeclient.client import ApiError, Kube
from kubeclient.informer import Informer, key_of
from testbed.embedded import EmbeddedTestbed


@pytest.fixture(scope="module")
def kube():  # type: ignore[no-untyped-def]
    with EmbeddedTestbed(33, history=50) as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        yield k
        k.close()


def _wait(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


def test_crud_and_errors(kube):
    path = "/api/v1/namespaces/default/configmaps"
    made = kube.create(path, {"metadata": {"name": "k1"}, "data": {"a": "1"}})
    assert made["metadata"]["uid"]
    assert kube.patch(f"{path}/k1", {"data": {"b": "2"}})["data"] == {"a": "1", "b": "2"}
    assert kube.patch(f"{path}/k1", [{"op": "remove", "path": "/data/a"}], kind="json")["data"] == {"b": "2"}
    with pytest.raises(ApiError) as e:
        kube.create(path, {"metadata": {"name": "k1"}})
    assert e.value.status == 409 and e.value.reason == "AlreadyExists"
    kube.delete(f"{path}/k1")
    with pytest.raises(ApiError) as e:
        kube.get(f"{path}/k1")
    assert e.value.status == 404 and str(e.value) == 'configmaps "k1" not found'


def test_informer_tracks_changes_and_survives_expiry(kube):
    kube.create("/api/v1/namespaces", {"metadata": {"name": "inf"}})
    path = "/api/v1/namespaces/inf/configmaps"
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(kind: str, obj: dict, old: dict | None) -> None:
        with lock:
            events.append((kind, obj["metadata"]["name"]))
    inf = Informer(kube, path, label_selector="track=yes")
    inf.add_handler(record)
    inf.start()
    try:
        assert inf.wait_synced(5)
        kube.create(path, {"metadata": {"name": "a", "labels": {"track": "yes"}}})
        kube.create(path, {"metadata": {"name": "b", "labels": {"track": "no"}}})
        _wait(lambda: inf.get("inf/a") is not None)
        kube.delete(f"{path}/a")
        _wait(lambda: ("DELETED", "a") in events)
        assert [key_of(o) for o in inf.items()] == []
        assert ("ADDED", "b") not in events
        # Push the server's 50-event history far past the informer, then check it still follows.
        for i in range(80):
            kube.patch(f"{path}/b", {"data": {"i": str(i)}})
        kube.create(path, {"metadata": {"name": "c", "labels": {"track": "yes"}}})
        _wait(lambda: inf.get("inf/c") is not None)
    finally:
        inf.stop()


def test_retry_after_as_client_go() -> None:
    from kubeclient.client import retry_after

    assert retry_after(500, "1") == 1.0 and retry_after(429, "3") == 3.0 and retry_after(503, "60") == 10.0
    assert retry_after(500, None) is None and retry_after(500, "soon") is None
    assert retry_after(403, "1") is None and retry_after(409, "1") is None  # only 429 and 5xx wait


def test_a_pod_waits_for_its_service_account_token_on_120() -> None:
    # kube-apiserver 1.20 refuses a pod whose service account has no token Secret yet with 500
    # ServerTimeout and Retry-After: 1; client-go (so kubectl and the suites' client) waits and sends
    # it again. Once the token exists the retried create lands; a token that never comes is an error
    # after client-go's 10 retries.
    with EmbeddedTestbed(20) as tb:
        k = Kube.from_config(str(tb.kubeconfig_path))
        sas = "/api/v1/namespaces/default/serviceaccounts"
        pods = "/api/v1/namespaces/default/pods"
        k.create(sas, {"metadata": {"name": "late"}})
        _wait(lambda: k.get(f"{sas}/late").get("secrets"))
        sa = k.get(f"{sas}/late")
        token = sa["secrets"]
        k.update(f"{sas}/late", {**sa, "secrets": []})  # as if the tokens controller had not run yet

        def token_arrives() -> None:
            time.sleep(1.5)
            fresh = k.get(f"{sas}/late")
            k.update(f"{sas}/late", {**fresh, "secrets": token})

        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"serviceAccountName": "late", "containers": [{"name": "c", "image": "i"}]}}
        threading.Thread(target=token_arrives, daemon=True).start()
        t = time.monotonic()
        made = k.create(pods, pod)
        assert made["spec"]["serviceAccountName"] == "late" and time.monotonic() - t >= 1.0
        # the emulated server answers the refusal with the header the retry keys on
        sa = k.get(f"{sas}/late")
        k.update(f"{sas}/late", {**sa, "secrets": []})
        _m, url, headers, data, _p = k.api.param_serialize(
            "POST", pods, header_params={"Content-Type": "application/json"},
            body={**pod, "metadata": {"name": "q"}}, auth_settings=["BearerToken"])
        raw = k.api.call_api("POST", url, header_params=headers, body=data)
        assert (raw.status, raw.getheader("Retry-After")) == (500, "1")
        assert b"No API token found for service account" in raw.read()
        k.close()
