"""CronJob controller: creates a Job from ``jobTemplate`` at each scheduled time (standard five-field
cron syntax, the ``@hourly``-style macros, ``timeZone``), with ``concurrencyPolicy`` (Allow, Forbid,
Replace), ``suspend``, ``startingDeadlineSeconds``, the history limits, and the status
(``active``, ``lastScheduleTime``, ``lastSuccessfulTime``) the real controller writes.

Job names are ``<cronjob>-<minutes since the epoch of the scheduled time>``, as upstream names them,
so a time is never run twice. batch/v1 from 1.21, batch/v1beta1 before.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubeclient.client import ApiError

from . import util
from .base import Context, Controller, Obj
from .job import finished

SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"  # 1.28+
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_NAMES = {
    3: {
        m: i + 1
        for i, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


class CronError(ValueError):
    pass


def _field(text: str, index: int) -> set[int]:
    lo, hi = _RANGES[index]
    out: set[int] = set()
    names = _NAMES.get(index, {})

    def num(s: str) -> int:
        v = names.get(s.lower())
        if v is None:
            if not s.isdigit():
                raise CronError(f"failed to parse int from {s}")
            v = int(s)
        if index == 4 and v == 7:
            v = 0
        if not lo <= v <= hi:
            raise CronError(f"value {v} out of range [{lo}, {hi}]")
        return v

    for part in text.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if step <= 0:
            raise CronError(f"step of {part} must be positive")
        if rng in ("*", "?"):
            a, b = lo, hi
        elif "-" in rng:
            a_s, b_s = rng.split("-", 1)
            a, b = num(a_s), num(b_s)
        else:
            a = num(rng)
            b = hi if step_s else a
        out.update(range(a, b + 1, step))
    return out


class Schedule:
    """A parsed five-field cron schedule."""

    def __init__(self, text: str) -> None:
        spec = _MACROS.get(text.strip(), text.strip())
        parts = spec.split()
        if len(parts) != 5:
            raise CronError(f"expected exactly 5 fields, found {len(parts)}: {text}")
        self.minute, self.hour, self.dom, self.month, self.dow = (_field(p, i) for i, p in enumerate(parts))
        self.dom_star = parts[2] in ("*", "?")
        self.dow_star = parts[4] in ("*", "?")

    def _day_ok(self, t: dt.datetime) -> bool:
        dom = t.day in self.dom
        dow = (t.isoweekday() % 7) in self.dow
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow  # cron's rule: both restricted means either matches

    def next_after(self, t: dt.datetime) -> dt.datetime:
        """The first scheduled minute strictly after ``t`` (aware datetime, same zone)."""
        cur = (t + dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
        for _ in range(366 * 24 * 60):
            if cur.month not in self.month:
                cur = (cur.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_ok(cur):
                cur = cur.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if cur.hour not in self.hour:
                cur = cur.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if cur.minute not in self.minute:
                cur += dt.timedelta(minutes=1)
                continue
            return cur
        raise CronError("no scheduled time within a year")


class CronJobController(Controller):
    name = "cronjob"
    component = "cronjob-controller"
    kind = "CronJob"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.api_version = "batch/v1" if ctx.minor >= 21 else "batch/v1beta1"

    def setup(self) -> None:
        self.cronjobs = self.ctx.informers.get(f"/apis/{self.api_version}/cronjobs")
        self.cronjobs.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.jobs = self.ctx.informers.get("/apis/batch/v1/jobs")
        self.jobs.add_handler(self._on_job)

    def _on_job(self, _kind: str, job: Obj, old: Obj | None) -> None:
        for o in (job, old):
            ref = util.controller_ref(o) if o else None
            if ref and ref.get("kind") == "CronJob":
                self.queue.add(f"{util.meta(job)['namespace']}/{ref['name']}")

    def _path(self, ns: str, plural: str, name: str = "", sub: str = "") -> str:
        group = self.api_version if plural == "cronjobs" else "batch/v1"
        return "/".join(x for x in (f"/apis/{group}/namespaces/{ns}/{plural}", name, sub) if x)

    def sync(self, key: str) -> float | None:
        cj = self.cronjobs.get(key)
        if cj is None or util.deleting(cj):
            return None
        m = util.meta(cj)
        spec = cj.get("spec") or {}
        old = cj.get("status") or {}
        status = copy.deepcopy(old)
        jobs = [j for j in self.jobs.items() if util.controller_uid(j) == m["uid"]]
        active = [j for j in jobs if not finished(j) and not util.deleting(j)]
        for j in jobs:
            if finished(j) and any(
                c.get("type") == "Complete" and c.get("status") == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            ):
                done = (j.get("status") or {}).get("completionTime")
                newer = not status.get("lastSuccessfulTime") or (done or "") > status["lastSuccessfulTime"]
                if done and newer and self.ctx.minor >= 21:  # lastSuccessfulTime is 1.21+
                    status["lastSuccessfulTime"] = done
        self._trim_history(spec, jobs)
        try:
            zone: dt.tzinfo = ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else dt.UTC
            sched = Schedule(spec.get("schedule", ""))
        except (CronError, ZoneInfoNotFoundError, ValueError) as e:
            self.event(
                cj, "Warning", "UnparseableSchedule", f"unparseable schedule: {spec.get('schedule')!r} : {e}"
            )
            return None
        now = dt.datetime.now(dt.UTC).astimezone(zone)
        since_text = status.get("lastScheduleTime") or m.get("creationTimestamp")
        since = dt.datetime.fromtimestamp(util.parse_time(since_text) or time.time(), dt.UTC).astimezone(zone)
        due: dt.datetime | None = None
        t = sched.next_after(since)
        while t <= now:  # the most recent missed time is the one that runs
            due = t
            t = sched.next_after(t)
        again = max(0.5, (t - now).total_seconds() + 0.2)
        if due is not None and not spec.get("suspend"):
            deadline = spec.get("startingDeadlineSeconds")
            late = (now - due).total_seconds()
            policy = spec.get("concurrencyPolicy", "Allow")
            if deadline is not None and late > int(deadline):
                self.event(
                    cj, "Warning", "MissSchedule", f"Missed scheduled time to start a job: {due.isoformat()}"
                )
            elif policy == "Forbid" and active:
                self.event(
                    cj,
                    "Normal",
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid",
                )
                again = min(again, 1.0)
                due = None
            else:
                if policy == "Replace":
                    for j in active:
                        self._delete_job(cj, j, "SuccessfulDelete")
                    active = []
                job = self._create_job(cj, due)
                if job is not None:
                    active.append(job)
            if due is not None:
                status["lastScheduleTime"] = due.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        refs = [
            {
                "kind": "Job",
                "namespace": util.meta(j)["namespace"],
                "name": util.meta(j)["name"],
                "uid": util.meta(j)["uid"],
                "apiVersion": "batch/v1",
                "resourceVersion": util.meta(j).get("resourceVersion", ""),
            }
            for j in active
        ]
        if refs:
            status["active"] = refs
        else:
            status.pop("active", None)
        if status != old:
            new = copy.deepcopy(cj)
            new["status"] = status
            try:
                self.kube.update(self._path(m["namespace"], "cronjobs", m["name"], "status"), new)
            except ApiError as e:
                if e.status not in (404, 409):
                    raise
        return again

    def _create_job(self, cj: Obj, due: dt.datetime) -> Obj | None:
        m = util.meta(cj)
        tmpl = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
        tmeta = tmpl.get("metadata") or {}
        name = f"{m['name']}-{int(due.timestamp() // 60)}"
        annotations = dict(tmeta.get("annotations") or {})
        if self.ctx.minor >= 28:
            annotations[SCHEDULED_ANNOTATION] = due.isoformat()
        meta: Obj = {
            "name": name,
            "namespace": m["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [util.owner_reference(cj, self.api_version, "CronJob")],
        }
        if annotations:
            meta["annotations"] = annotations
        body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": tmpl.get("spec") or {}}
        try:
            job = self.kube.create(self._path(m["namespace"], "jobs"), body)
        except ApiError as e:
            if e.status == 409:
                return None  # this time already ran
            self.event(cj, "Warning", "FailedCreate", f"Error creating job: {e}")
            return None
        self.event(cj, "Normal", "SuccessfulCreate", f"Created job {name}")
        return job

    def _delete_job(self, cj: Obj, job: Obj, reason: str) -> None:
        jm = util.meta(job)
        try:
            self.kube.delete(self._path(jm["namespace"], "jobs", jm["name"]), propagationPolicy="Background")
        except ApiError as e:
            if e.status != 404:
                return
        self.event(cj, "Normal", reason, f"Deleted job {jm['name']}")

    def _trim_history(self, spec: Obj, jobs: list[Obj]) -> None:
        def ok(j: Obj) -> bool:
            return any(
                c.get("type") == "Complete" and c.get("status") == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )

        for want_ok, limit in (
            (True, spec.get("successfulJobsHistoryLimit", 3)),
            (False, spec.get("failedJobsHistoryLimit", 1)),
        ):
            done = sorted(
                (j for j in jobs if finished(j) and ok(j) == want_ok and not util.deleting(j)),
                key=lambda j: util.meta(j).get("creationTimestamp", ""),
            )
            for j in done[: max(0, len(done) - int(limit))]:
                jm = util.meta(j)
                try:
                    self.kube.delete(
                        self._path(jm["namespace"], "jobs", jm["name"]), propagationPolicy="Background"
                    )
                except ApiError:
                    pass
