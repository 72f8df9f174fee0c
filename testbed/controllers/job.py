"""Job controller (NonIndexed): runs up to ``parallelism`` pods until ``completions`` succeed,
counts failures against ``backoffLimit`` with the exponential re-create delay, honours
``activeDeadlineSeconds`` and ``suspend``, and writes the counts and conditions the real one writes."""

from __future__ import annotations

import copy
import time
from typing import Any

from kubeclient.client import ApiError
from kubeclient.informer import key_of

from . import util
from .base import Context, Controller, Expectations, Obj
from .workload import pod_from_template

JOB_PATH = "/apis/batch/v1/jobs"


def _cond(job: Obj, ctype: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def finished(job: Obj) -> bool:
    return _cond(job, "Complete") is not None or _cond(job, "Failed") is not None


class JobController(Controller):
    name = "job"
    component = "job-controller"
    api_version = "batch/v1"
    kind = "Job"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.expect = Expectations()

    def setup(self) -> None:
        self.jobs = self.ctx.informers.get(JOB_PATH)
        self.jobs.add_handler(lambda _t, o, _old: self.enqueue(o))
        self.by_owner = self.ctx.pods_by_owner()
        self.ctx.pods().add_handler(self._on_pod)

    def _on_pod(self, _kind: str, pod: Obj, old: Obj | None) -> None:
        for o in (pod, old):
            ref = util.controller_ref(o) if o else None
            if ref and ref.get("kind") == "Job":
                self.queue.add(f"{util.meta(pod)['namespace']}/{ref['name']}")

    def _condition(self, ctype: str, reason: str, message: str) -> Obj:
        at = util.now()
        c: dict[str, Any] = {"type": ctype, "status": "True", "lastProbeTime": at, "lastTransitionTime": at}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        return c

    def sync(self, key: str) -> float | None:
        job = self.jobs.get(key)
        if job is None or util.deleting(job):
            return None
        m = util.meta(job)
        spec = job.get("spec") or {}
        pods = self.expect.merge(m["uid"], self.by_owner.get(m["uid"]))
        active = [p for p in pods if util.pod_active(p)]
        succeeded_pods = [p for p in pods if util.pod_phase(p) == "Succeeded"]
        failed_pods = [p for p in pods if util.pod_phase(p) == "Failed"]
        old = job.get("status") or {}
        # counts never go down when a finished pod is removed by someone else
        succeeded = max(len(succeeded_pods), int(old.get("succeeded") or 0))
        failed = max(len(failed_pods), int(old.get("failed") or 0))
        status = copy.deepcopy(old)
        conds: list[Obj] = status.get("conditions") or []
        if finished(job):
            for p in active:
                self._delete(job, p)
            return None
        if not status.get("startTime") and not spec.get("suspend"):
            status["startTime"] = util.now()
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1) or 0)
        backoff_limit = int(spec.get("backoffLimit", 6))
        again: float | None = None
        terminal: tuple[str, str, str] | None = None  # (condition, reason, message)
        deadline = spec.get("activeDeadlineSeconds")
        started = util.parse_time(status.get("startTime"))
        if failed > backoff_limit:
            terminal = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and started is not None and not spec.get("suspend"):
            left = started + int(deadline) - time.time()
            if left <= 0:
                terminal = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
            else:
                again = left + 0.05
        if terminal is None:
            done = (
                (succeeded >= int(completions)) if completions is not None else (succeeded > 0 and not active)
            )
            if done:
                reason, msg = (
                    ("CompletionsReached", "Reached expected number of succeeded pods")
                    if self.ctx.minor >= 31
                    else ("", "")
                )
                terminal = ("Complete", reason, msg)
        if terminal is not None:
            ctype, reason, msg = terminal
            for p in active:
                self._delete(job, p)
            interim = {"Failed": "FailureTarget", "Complete": "SuccessCriteriaMet"}[ctype]
            # from 1.31 an interim condition precedes the terminal one (which the real controller adds once
            # the pods it deletes have stopped; here both are written together)
            if self.ctx.minor >= 31 and not any(c.get("type") == interim for c in conds):
                conds.append(self._condition(interim, reason, msg))
            if ctype == "Complete":
                status["completionTime"] = util.now()
            conds.append(self._condition(ctype, reason, msg))
            if ctype == "Failed":
                self.event(job, "Warning", reason, msg)
            else:
                self.event(job, "Normal", "Completed", "Job completed")
            active = []
        elif spec.get("suspend"):
            for p in active:
                self._delete(job, p)
            active = []
        else:
            want = parallelism if completions is None else min(parallelism, int(completions) - succeeded)
            if completions is None and succeeded > 0:
                want = 0  # a work-queue job starts nothing new once one pod has succeeded
            missing = want - len(active)
            if missing > 0:
                wait = self._backoff_left(spec, failed, failed_pods)
                if wait > 0:
                    again = wait if again is None else min(again, wait)
                else:
                    active.extend(self._create(job, missing))
            elif missing < 0:
                for p in sorted(active, key=lambda p: util.pod_ready(p))[:-missing]:
                    self._delete(job, p)
                    active.remove(p)
        status["active"] = len(active)
        status["succeeded"] = succeeded
        status["failed"] = failed
        for k in ("active", "succeeded", "failed"):
            if not status[k]:
                status.pop(k)
        if self.ctx.minor >= 24:
            status["ready"] = sum(1 for p in active if util.pod_ready(p))
        if self.ctx.minor >= 26:
            status.setdefault("uncountedTerminatedPods", {})
        if self.ctx.minor >= 29:
            status["terminating"] = sum(1 for p in pods if util.deleting(p) and not util.pod_terminated(p))
        if conds:
            status["conditions"] = conds
        if status != old:
            new = copy.deepcopy(job)
            new["status"] = status
            self.kube.update(f"/apis/batch/v1/namespaces/{m['namespace']}/jobs/{m['name']}/status", new)
        return again

    def _backoff_left(self, spec: Obj, failed: int, failed_pods: list[Obj]) -> float:
        """Seconds before a replacement may start after the latest failure (10 s, 20 s, ... capped)."""
        if failed <= 0 or not failed_pods:
            return 0.0
        opts = self.ctx.options
        delay = min(opts.job_backoff_base * 2 ** (failed - 1), opts.job_backoff_max)
        last = 0.0
        for p in failed_pods:
            for cs in (p.get("status") or {}).get("containerStatuses") or []:
                t = util.parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
                last = max(last, t or 0.0)
            if not last:
                last = max(
                    last,
                    util.parse_time((util.pod_condition(p, "Ready") or {}).get("lastTransitionTime")) or 0.0,
                )
        return max(0.0, last + delay - time.time())

    def _create(self, job: Obj, count: int) -> list[Obj]:
        m = util.meta(job)
        out = []
        for _ in range(count):
            body = pod_from_template(
                (job.get("spec") or {}).get("template") or {}, job, "batch/v1", "Job", f"{m['name']}-"
            )
            try:
                pod = self.kube.create(f"/api/v1/namespaces/{m['namespace']}/pods", body)
            except ApiError as e:
                self.event(job, "Warning", "FailedCreate", f"Error creating: {e}")
                break
            self.expect.created(m["uid"], pod)
            self.event(job, "Normal", "SuccessfulCreate", f"Created pod: {util.meta(pod)['name']}")
            out.append(pod)
        return out

    def _delete(self, job: Obj, pod: Obj) -> None:
        pm = util.meta(pod)
        try:
            self.kube.delete(f"/api/v1/namespaces/{pm['namespace']}/pods/{pm['name']}")
        except ApiError as e:
            if e.status != 404:
                return
        self.expect.deleted(util.meta(job)["uid"], key_of(pod))
        self.event(job, "Normal", "SuccessfulDelete", f"Deleted pod: {pm['name']}")
