"""Watch (resume, 410, bookmarks, selectors) and deletion (grace, finalizers, namespaces, GC)."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from .helpers import raw, wait_for


def _cm(name: str, labels: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}}


def test_watch_from_resource_version_resumes(core, ns):
    core.create_namespaced_config_map(ns, _cm("a"))
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, _cm("b"))
    core.patch_namespaced_config_map("b", ns, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("a", ns)
    w = watch.Watch()
    events = []
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 3:
            w.stop()
    assert events == [("ADDED", "b"), ("MODIFIED", "b"), ("DELETED", "a")]


def test_watch_without_resource_version_sends_current_state_first(core, ns):
    core.create_namespaced_config_map(ns, _cm("a"))
    w = watch.Watch()
    first = next(iter(w.stream(core.list_namespaced_config_map, ns, timeout_seconds=2)))
    w.stop()
    assert first["type"] == "ADDED"


def test_watch_live_events_and_label_transitions(core, ns):
    got: list[tuple[str, str]] = []
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    done = threading.Event()

    def consume() -> None:
        w = watch.Watch()
        for ev in w.stream(
            core.list_namespaced_config_map,
            ns,
            resource_version=rv,
            label_selector="sel=yes",
            timeout_seconds=5,
        ):
            got.append((ev["type"], ev["object"].metadata.name))
            if len(got) == 3:
                w.stop()
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    core.create_namespaced_config_map(ns, _cm("in", {"sel": "yes"}))
    core.create_namespaced_config_map(ns, _cm("out", {"sel": "no"}))
    core.patch_namespaced_config_map("out", ns, {"metadata": {"labels": {"sel": "yes"}}})
    core.patch_namespaced_config_map("in", ns, {"metadata": {"labels": {"sel": "no"}}})
    assert done.wait(10)
    assert got == [("ADDED", "in"), ("ADDED", "out"), ("DELETED", "in")]


def test_watch_too_old_resource_version_gets_410():
    # A testbed keeping only 20 events: resourceVersion 2 is compacted away after a few writes.
    from testbed.embedded import EmbeddedTestbed

    with EmbeddedTestbed(33, history=20) as tb:
        core = client.CoreV1Api(tb.api_client())
        core.create_namespaced_config_map("default", _cm("f"))
        for i in range(30):
            core.patch_namespaced_config_map("f", "default", {"data": {"i": str(i)}})
        w = watch.Watch()
        with pytest.raises(ApiException) as e:
            for _ in w.stream(
                core.list_namespaced_config_map, "default", resource_version="2", timeout_seconds=2
            ):
                pass
        assert e.value.status == 410
        # A recent resourceVersion still resumes.
        rv = core.read_namespaced_config_map("f", "default").metadata.resource_version
        core.patch_namespaced_config_map("f", "default", {"data": {"i": "last"}})
        ev = next(
            iter(w.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2))
        )
        assert ev["type"] == "MODIFIED" and ev["object"].data == {"i": "last"}


def test_watch_bookmarks(testbed, ns):
    code, _, data = raw(
        testbed,
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion=1000000000"
        "&allowWatchBookmarks=true&timeoutSeconds=1",
    )
    # A resourceVersion from the future is accepted; the stream then only carries bookmarks.
    assert code == 200
    lines = [json.loads(x) for x in data.splitlines() if x.strip()]
    assert lines and all(x["type"] == "BOOKMARK" for x in lines)
    assert lines[0]["object"]["kind"] == "ConfigMap"


def test_watch_timeout_ends_stream(testbed, ns):
    code, _, data = raw(testbed, "GET", f"/api/v1/namespaces/{ns}/configmaps?watch=1&timeoutSeconds=1")
    assert code == 200
    # Without a resourceVersion the stream starts with the current objects, then ends at the timeout.
    assert b'"type":"ADDED"' in data


def test_bound_pod_deletes_gracefully_unbound_immediately(core, ns):
    pod = {"metadata": {"name": "g"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    core.create_namespaced_pod(ns, pod)
    core.create_namespaced_pod(ns, {**pod, "metadata": {"name": "u"}})
    core.create_namespaced_binding(
        ns, {"metadata": {"name": "g"}, "target": {"kind": "Node", "name": "n"}}, _preload_content=False
    )
    core.delete_namespaced_pod("u", ns)
    with pytest.raises(ApiException):
        core.read_namespaced_pod("u", ns)
    core.delete_namespaced_pod("g", ns)
    g = core.read_namespaced_pod("g", ns)
    assert g.metadata.deletion_timestamp is not None
    assert g.metadata.deletion_grace_period_seconds == 30
    # The kubelet confirms with grace 0.
    core.delete_namespaced_pod("g", ns, grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("g", ns)
    assert e.value.status == 404


def test_finalizers_hold_deletion_until_removed(core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "f", "finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("f", ns)
    cm = core.read_namespaced_config_map("f", ns)
    assert cm.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("f", ns)


def test_delete_precondition_uid(core, ns):
    core.create_namespaced_config_map(ns, _cm("pre"))
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_config_map(
            "pre",
            ns,
            body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000")
            ),
        )
    assert e.value.status == 409
    core.read_namespaced_config_map("pre", ns)


def test_namespace_deletion_removes_content(core):
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", _cm("a"))
    core.delete_namespace("doomed")
    ns = core.read_namespace("doomed")
    assert ns.status.phase == "Terminating"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("doomed", _cm("b"))
    assert e.value.status == 403
    assert "being terminated" in json.loads(e.value.body)["message"]

    def gone() -> bool:
        try:
            core.read_namespace("doomed")
        except ApiException as err:
            return err.status == 404
        return False

    wait_for(gone)


def test_garbage_collection_of_dependents(core, ns):
    owner = core.create_namespaced_config_map(ns, _cm("owner"))
    core.create_namespaced_config_map(
        ns,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", ns)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", ns)
        except ApiException as err:
            return err.status == 404
        return False

    wait_for(child_gone)


def test_watch_ends_when_shutdown_sentinel_is_queued_behind_events():
    """Events and the shutdown sentinel queued together: the stream delivers them and then ends."""
    import asyncio

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from testbed.apiserver.store import Store
    from testbed.apiserver.watch import serve_watch

    async def scenario() -> list[bytes]:
        store = Store()

        async def handler(request: web.Request) -> web.StreamResponse:
            return await serve_watch(
                request, store, "configmaps", None, since=None, send_initial=False,
                initial_end_bookmark=False, match=lambda _o: True, present=lambda e: e.raw,
                bookmark_kind=("v1", "ConfigMap"), allow_bookmarks=False, timeout_s=60,
                bookmark_interval=5.0,
            )

        app = web.Application()
        app.router.add_get("/watch", handler)
        async with TestClient(TestServer(app, host="127.0.0.1")) as tc:
            resp = await tc.get("/watch")
            while store.watcher_count() == 0:
                await asyncio.sleep(0.01)
            # Same loop tick: the handler wakes on the first event and finds the rest already queued.
            store.put("configmaps", {"metadata": {"name": "a", "namespace": "d"}}, event="ADDED")
            store.put("configmaps", {"metadata": {"name": "b", "namespace": "d"}}, event="ADDED")
            store.close_watchers()
            body = await asyncio.wait_for(resp.read(), 10)
        return body.splitlines()

    lines = asyncio.run(scenario())
    assert [json.loads(x)["object"]["metadata"]["name"] for x in lines] == ["a", "b"]
