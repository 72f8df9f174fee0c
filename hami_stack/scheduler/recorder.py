"""Pod events (``FilteringFailed``, ``FilteringSucceed``, ``BindingFailed``, ``BindingSucceed``).

Written as core/v1 Events with ``source.component`` = the scheduler name, as client-go's recorder
does. A background thread posts them so a decision never waits on the apiserver for an event.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import socket
import threading
import time
from typing import Any

from kubeclient.client import ApiError, Kube

log = logging.getLogger("hami.scheduler.events")
Obj = dict[str, Any]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, kube: Kube, component: str) -> None:
        self.kube = kube
        self.component = component
        self.host = socket.gethostname()
        self._q: queue.Queue[Obj | None] = queue.Queue(maxsize=10000)
        self._thread = threading.Thread(target=self._run, name="hami-events", daemon=True)
        self._thread.start()

    def pod_event(self, pod: Obj, etype: str, reason: str, message: str) -> None:
        meta = pod.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        stamp = _now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{time.time_ns():x}", "namespace": ns},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": ns,
                "name": meta.get("name", ""),
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": etype,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        try:
            self._q.put_nowait(event)
        except queue.Full:
            log.warning("event queue full; dropped %s %s", reason, meta.get("name"))

    def _run(self) -> None:
        while True:
            event = self._q.get()
            if event is None:
                return
            ns = event["metadata"]["namespace"]
            try:
                self.kube.create(f"/api/v1/namespaces/{ns}/events", event)
            except (ApiError, OSError) as e:
                log.debug("event %s: %s", event["reason"], e)
            except Exception:  # the recorder must outlive one bad event
                log.exception("event %s", event["reason"])
            finally:
                self._q.task_done()

    def flush(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._q.put(None)
