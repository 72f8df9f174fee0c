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
