"""The Job table's DURATION column, as kubectl prints it: blank before the job starts, start to
completion once complete, start to now while running."""

from __future__ import annotations

import datetime as dt

from testbed.apiserver import tables


def _job(status: dict) -> dict:
    return {
        "metadata": {"name": "j", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"completions": 1},
        "status": status,
    }


def test_job_duration_column() -> None:
    rows = tables.table(
        "jobs.batch",
        [
            _job({}),
            _job(
                {
                    "startTime": "2024-01-01T00:00:00Z",
                    "completionTime": "2024-01-01T00:01:05Z",
                    "succeeded": 1,
                }
            ),
        ],
        {"resourceVersion": "1"},
        "None",
        "v1",
    )["rows"]
    assert [r["cells"][1:3] for r in rows] == [["0/1", ""], ["1/1", "65s"]]
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    running = tables.table("jobs.batch", [_job({"startTime": started})], {}, "None", "v1")["rows"][0]
    assert running["cells"][2] in ("5m", "5m1s", "5m2s")
