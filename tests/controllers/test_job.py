"""Job: completions with parallelism, and backoffLimit on failing pods."""

from __future__ import annotations

from typing import Any

from kubeclient.client import Kube

from .conftest import FakeNodes, wait_for

Obj = dict[str, Any]


def job(name: str, command: list[str], completions: int = 1, parallelism: int = 1, backoff: int = 6) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimit": backoff,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": command}],
                }
            },
        },
    }


def condition(j: Obj, ctype: str) -> Obj | None:
    return next(
        (
            c
            for c in (j.get("status") or {}).get("conditions") or []
            if c["type"] == ctype and c["status"] == "True"
        ),
        None,
    )


def test_job_completes(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("job-n1")
    kube.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job("ok", ["true"], completions=3, parallelism=2))
    j = wait_for(
        lambda: condition(x := kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/ok"), "Complete") and x,
        what="Complete",
    )
    st = j["status"]
    assert st["succeeded"] == 3
    assert "failed" not in st and "active" not in st
    assert st["startTime"] and st["completionTime"]
    complete = condition(j, "Complete")
    assert complete is not None and complete["reason"] == "CompletionsReached"
    assert condition(j, "SuccessCriteriaMet") is not None  # 1.31+ interim condition
    pods = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="job-name=ok")["items"]
    assert len(pods) == 3 and all(p["status"]["phase"] == "Succeeded" for p in pods)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "Job" for p in pods)
    assert all(
        p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == j["metadata"]["uid"] for p in pods
    )


def test_job_backoff_limit(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("job-n2")
    kube.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job("bad", ["false"], backoff=2))
    j = wait_for(
        lambda: condition(x := kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs/bad"), "Failed") and x,
        what="Failed",
    )
    failed = condition(j, "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == "Job has reached the specified backoff limit"
    assert j["status"]["failed"] == 3  # backoffLimit 2: the third failure ends the job
    assert "completionTime" not in j["status"]
    assert condition(j, "Complete") is None
    pods = kube.get(f"/api/v1/namespaces/{ns}/pods", labelSelector="job-name=bad")["items"]
    assert len(pods) == 3
