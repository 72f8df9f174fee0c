"""CronJob: the schedule parser, and a missed time that starts a Job with the upstream name."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.controllers.cronjob import CronError, Schedule

from .conftest import FakeNodes, wait_for

UTC = dt.UTC


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("*/5 * * * *", "2024-01-01T10:02:30", "2024-01-01T10:05:00"),
        ("0 * * * *", "2024-01-01T10:00:00", "2024-01-01T11:00:00"),
        ("@daily", "2024-01-01T10:00:00", "2024-01-02T00:00:00"),
        ("30 2 * * mon-fri", "2024-01-05T03:00:00", "2024-01-08T02:30:00"),  # Friday -> Monday
        ("0 0 1 feb *", "2024-01-15T00:00:00", "2024-02-01T00:00:00"),
        ("0 12 13 * 5", "2024-01-01T00:00:00", "2024-01-05T12:00:00"),  # day 13 OR a Friday
        ("15,45 8-9 * * *", "2024-01-01T08:20:00", "2024-01-01T08:45:00"),
    ],
)
def test_schedule_next(spec: str, after: str, expected: str) -> None:
    t = dt.datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Schedule(spec).next_after(t) == dt.datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("spec", ["* * * *", "61 * * * *", "*/0 * * * *", "x * * * *"])
def test_schedule_errors(spec: str) -> None:
    with pytest.raises(CronError):
        Schedule(spec)


def test_missed_time_starts_a_job(kube: Kube, nodes: FakeNodes, manager: Any, ns: str) -> None:
    nodes.add_node("cron-n1")
    body = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "tick"},
        "spec": {
            "schedule": "* * * * *",
            "suspend": True,
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                        }
                    }
                }
            },
        },
    }
    path = f"/apis/batch/v1/namespaces/{ns}/cronjobs/tick"
    cj = kube.create(f"/apis/batch/v1/namespaces/{ns}/cronjobs", body)
    earlier = (dt.datetime.now(UTC) - dt.timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cj["status"] = {"lastScheduleTime": earlier}
    kube.update(f"{path}/status", cj)
    kube.patch(path, {"spec": {"suspend": False}}, "merge")
    jobs = wait_for(lambda: kube.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"], what="a job")
    job = jobs[0]
    minute = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    names = {f"tick-{int((minute - dt.timedelta(minutes=k)).timestamp() // 60)}" for k in range(2)}
    assert job["metadata"]["name"] in names
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in job["metadata"]["annotations"]
    st = wait_for(
        lambda: (s := kube.get(path).get("status") or {}).get("lastSuccessfulTime") and s,
        what="lastSuccessfulTime",
        timeout=30,
    )
    assert st["lastScheduleTime"] > earlier and "active" not in st
