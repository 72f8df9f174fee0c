"""The pure rules behind Allocate's trust decision: which pods wait for the resource on the node
(status only: annotations are the tenant's), and the lock-holder checks, without an apiserver."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import urllib3

from hami_stack.device_plugin.allocate import (
    SERVED_MEMORY,
    AllocateRefused,
    Allocator,
    awaiting_admission,
    requests_resource,
)
from hami_stack.devices.nvidia import NvidiaFamily
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.nodelock import format_lock

from .shim_helpers import install_stand_in_shim

GPU = "nvidia.com/gpu"
NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
HOOK: list[str] = []  # the hook path holding the stand-in shim (set once per module)


@pytest.fixture(scope="module", autouse=True)
def _shim_installed(tmp_path_factory: pytest.TempPathFactory) -> None:
    hook = tmp_path_factory.mktemp("hook")
    install_stand_in_shim(hook)
    HOOK[:] = [str(hook)]


def _pod(
    uid: str,
    *,
    limits: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    init: bool = False,
    **meta: Any,
) -> dict[str, Any]:
    c = {"name": "c", "resources": {"limits": limits or {}}}
    spec: dict[str, Any] = {"nodeName": "n", "containers": [] if init else [c]}
    if init:
        spec["initContainers"] = [c]
    return {
        "metadata": {"uid": uid, "name": uid, "namespace": "ns", **meta},
        "spec": spec,
        "status": status if status is not None else {"phase": "Pending"},
    }


def test_requests_resource() -> None:
    assert requests_resource(_pod("a", limits={GPU: "1"}), GPU)
    assert requests_resource(_pod("a", limits={GPU: "2"}, init=True), GPU)
    assert not requests_resource(_pod("a", limits={GPU: "0"}), GPU)
    assert not requests_resource(_pod("a", limits={"nvidia.com/gpumem": "100"}), GPU)
    requests_only = _pod("a")
    requests_only["spec"]["containers"][0]["resources"] = {"requests": {GPU: "1"}}
    assert requests_resource(requests_only, GPU)


@pytest.mark.parametrize(
    ("status", "meta", "waiting"),
    [
        ({"phase": "Pending"}, {}, True),
        ({}, {}, True),
        ({"phase": "Pending", "containerStatuses": [{"name": "c"}]}, {}, False),  # admitted
        ({"phase": "Pending", "initContainerStatuses": [{"name": "c"}]}, {}, False),
        ({"phase": "Failed", "reason": "UnexpectedAdmissionError"}, {}, False),
        ({"phase": "Running"}, {}, False),
        ({"phase": "Pending"}, {"deletionTimestamp": "2026-01-01T00:00:00Z"}, False),
    ],
)
def test_awaiting_admission(status: dict[str, Any], meta: dict[str, Any], waiting: bool) -> None:
    assert awaiting_admission(_pod("a", status=status, **meta)) is waiting


class FakeKube:
    def __init__(self, node: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        self.node, self.pods = node, pods

    def get(self, path: str, **query: Any) -> Any:
        if path.startswith("/api/v1/nodes/"):
            return self.node
        if path == "/api/v1/pods":
            return {"items": self.pods}
        name = path.rsplit("/", 1)[1]
        return next(p for p in self.pods if p["metadata"]["name"] == name)


def _holder(**annotations: str | None) -> dict[str, Any]:
    a = {
        ann.BIND_PHASE: "allocating",
        ann.BIND_TIME: "1767268800",
        ann.VGPU_NODE: "n",
        ann.NVIDIA_KEYS.to_allocate: "GPU-a,NVIDIA,1000,0:;",
    }
    a.update({k: v for k, v in annotations.items() if v is not None})
    for k, v in annotations.items():
        if v is None:
            a.pop(k, None)
    return _pod("holder", limits={GPU: "1"}, annotations=a)


def _allocator(pods: list[dict[str, Any]], lock: str | None) -> Allocator:
    node = {"metadata": {"annotations": {ann.NODE_LOCK: lock} if lock else {}}}
    return Allocator(
        FakeKube(node, pods),
        "n",
        NvidiaFamily(),
        memory_skew_mib=0,  # type: ignore[arg-type]
        now=lambda: NOW,
        hook_path=HOOK[0],
    )


def test_holder_is_served_when_nobody_else_waits() -> None:
    served = _pod("done", limits={GPU: "1"})
    alloc = _allocator([_holder(), served, _pod("cpu-only")], format_lock(NOW, "ns", "holder"))
    alloc.remember_served("done")  # allocated by us, the kubelet has not written its status yet
    assert alloc.pending_pod()["metadata"]["uid"] == "holder"


def test_another_waiting_pod_refuses_and_names_it() -> None:
    other = _pod("other", limits={GPU: "1"})
    alloc = _allocator([_holder(), other], format_lock(NOW, "ns", "holder"))
    with pytest.raises(AllocateRefused) as err:
        alloc.pending_pod()
    assert [p["metadata"]["uid"] for p in err.value.pods] == ["other"]
    assert "pod(s) ns/other also wait for it" in str(err.value)


def test_lock_age_and_holder_checks() -> None:
    holder = _holder()
    with pytest.raises(AllocateRefused, match="expired"):
        _allocator(
            [holder], format_lock(NOW - dt.timedelta(minutes=5, seconds=1), "ns", "holder")
        ).pending_pod()
    assert _allocator([holder], format_lock(NOW - dt.timedelta(minutes=4), "ns", "holder")).pending_pod()
    with pytest.raises(AllocateRefused, match="is not bound to node n"):
        moved = _holder()
        moved["spec"]["nodeName"] = "m"
        _allocator([moved], format_lock(NOW, "ns", "holder")).pending_pod()
    with pytest.raises(AllocateRefused, match="has no NVIDIA devices left"):
        _allocator(
            [_holder(**{ann.NVIDIA_KEYS.to_allocate: ";"})], format_lock(NOW, "ns", "holder")
        ).pending_pod()
    with pytest.raises(AllocateRefused, match="is not"):
        _allocator([holder], "garbage").pending_pod()


def test_served_memory_is_bounded() -> None:
    alloc = _allocator([], None)
    for i in range(SERVED_MEMORY + 10):
        alloc.remember_served(str(i))
    assert len(alloc.served) == SERVED_MEMORY
    assert "9" not in alloc.served and "10" in alloc.served and str(SERVED_MEMORY + 9) in alloc.served


class PatchingKube(FakeKube):
    """FakeKube that applies merge patches of pod annotations and node lock deletions."""

    def patch(self, path: str, body: dict[str, Any], kind: str = "merge") -> Any:
        meta = body.get("metadata") or {}
        target = self.node if path.startswith("/api/v1/nodes/") else next(
            p for p in self.pods if p["metadata"]["name"] == path.rsplit("/", 1)[1])
        notes = target["metadata"].setdefault("annotations", {})
        for k, v in (meta.get("annotations") or {}).items():
            if v is None:
                notes.pop(k, None)
            else:
                notes[k] = v
        return target


def _served_allocator(tmp_path: Any, pods: list[dict[str, Any]], lock: str | None) -> Allocator:
    node = {"metadata": {"annotations": {ann.NODE_LOCK: lock} if lock else {}}}
    install_stand_in_shim(tmp_path)
    return Allocator(
        PatchingKube(node, pods), "n", NvidiaFamily(), memory_skew_mib=0,  # type: ignore[arg-type]
        now=lambda: NOW, hook_path=str(tmp_path), served_path=tmp_path / "state" / "served.json",
    )


def test_a_kubelet_asking_again_gets_the_same_answer_from_the_record(tmp_path: Any) -> None:
    holder = _holder()
    first = _served_allocator(tmp_path, [holder], format_lock(NOW, "ns", "holder"))
    [answer] = first.allocate([["GPU-a::0"]])
    assert holder["metadata"]["annotations"][ann.BIND_PHASE] == "success"
    assert ann.NODE_LOCK not in first.kube.node["metadata"]["annotations"]  # type: ignore[attr-defined]
    record = tmp_path / "state" / "served.json"
    assert record.stat().st_mode & 0o777 == 0o600
    # the kubelet restarted before its checkpoint: a new plugin process (same record) is asked again
    again = _served_allocator(tmp_path, [holder], None)
    [repeat] = again.allocate([["GPU-a::3"]])
    # the same env, but for the per-answer cache file name
    assert {k: v for k, v in repeat.envs.items() if "CACHE" not in k} == {
        k: v for k, v in answer.envs.items() if "CACHE" not in k}
    assert repeat.envs["NVIDIA_VISIBLE_DEVICES"] == "GPU-a"
    # the record is spent for that container: a third ask is refused, as is a different count
    with pytest.raises(AllocateRefused, match="no recorded container allocation"):
        again.allocate([["GPU-a::1"]])


def test_a_repeat_is_refused_when_the_pod_is_admitted_forged_or_not_alone(tmp_path: Any) -> None:
    holder = _holder()
    first = _served_allocator(tmp_path, [holder], format_lock(NOW, "ns", "holder"))
    first.allocate([["GPU-a::0"]])
    admitted = dict(holder, status={"phase": "Running"})
    with pytest.raises(AllocateRefused, match="no binding pod"):
        _served_allocator(tmp_path, [admitted], None).allocate([["GPU-a::0"]])
    # a pod we never served, with annotations copied from the served one, gets nothing
    forged = _holder(**{ann.BIND_PHASE: "success"})
    forged["metadata"].update(uid="forged", name="forged")
    with pytest.raises(AllocateRefused):
        _served_allocator(tmp_path, [forged], None).allocate([["GPU-a::0"]])
    # another pod waits too: the request may be that pod's
    other = _pod("other", limits={GPU: "1"})
    with pytest.raises(AllocateRefused, match="no binding pod"):
        _served_allocator(tmp_path, [holder, other], None).allocate([["GPU-a::0"]])


def test_a_damaged_record_is_reported_and_ignored(tmp_path: Any, caplog: Any) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "served.json").write_text("{not json")
    alloc = _served_allocator(tmp_path, [], None)
    assert alloc.records == {}
    assert "served.json is unreadable" in caplog.text


class LosingKube(PatchingKube):
    """Applies each pod patch, then loses the answer the first ``lose`` times (an apiserver restart)."""

    def __init__(self, node: dict[str, Any], pods: list[dict[str, Any]], lose: int) -> None:
        super().__init__(node, pods)
        self.lose, self.sent = lose, 0

    def patch(self, path: str, body: dict[str, Any], kind: str = "merge") -> Any:
        out = super().patch(path, body, kind)
        if "/pods/" in path:
            self.sent += 1
            if self.lose > 0:
                self.lose -= 1
                raise urllib3.exceptions.ProtocolError("Connection aborted: remote end closed connection")
        return out


def test_a_pod_write_whose_answer_was_lost_is_sent_again() -> None:
    holder = _holder()
    lock = format_lock(NOW, "ns", "holder")
    kube = LosingKube({"metadata": {"annotations": {ann.NODE_LOCK: lock}}}, [holder], lose=2)
    alloc = Allocator(kube, "n", NvidiaFamily(), memory_skew_mib=0, now=lambda: NOW,  # type: ignore[arg-type]
                      hook_path=HOOK[0])
    [answer] = alloc.allocate([["GPU-a::0"]])
    assert answer.envs["NVIDIA_VISIBLE_DEVICES"] == "GPU-a"
    assert holder["metadata"]["annotations"][ann.BIND_PHASE] == "success"
    assert ann.NODE_LOCK not in kube.node["metadata"]["annotations"]
    # the to-allocate write is lost twice and sent a third time; the bind-phase write once
    assert kube.sent == 4
