"""Which GPUs are unhealthy, from the NVML health poll and Xid events (pure logic, a clock injected).

Rules:

* a GPU is unhealthy while its last poll says so (lost, failed query, memory needing a reset);
  it is healthy again on the first poll that finds it well, so a fault that is cleared, or a card
  that comes back on the bus, returns to service without a plugin restart;
* a critical Xid marks its GPU unhealthy at once; the mark lifts only when a poll finds the GPU well
  at least ``xid_recovery_s`` after the *last* such Xid. Many Xids leave no trace in the queries
  (the card answers, the failure was in the work), so a single good poll right after one is not
  proof of recovery; repeated Xids keep the GPU out.

Each GPU is judged alone: one card's fault never changes another card's health.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from .nvml import Probe


class HealthTracker:
    def __init__(self, xid_recovery_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.xid_recovery_s = xid_recovery_s
        self.clock = clock
        self._xids: dict[str, tuple[int, float]] = {}  # uuid -> (last critical Xid, when)
        self._polled: dict[str, str] = {}  # uuid -> reason, for GPUs the last poll found unwell
        self._lock = threading.Lock()

    def on_xid(self, uuid: str, xid: int) -> None:
        with self._lock:
            self._xids[uuid] = (xid, self.clock())

    def on_poll(self, results: Mapping[str, Probe]) -> None:
        """Record one poll of the GPUs in ``results`` (GPUs not polled keep their state)."""
        now = self.clock()
        with self._lock:
            for uuid, p in results.items():
                if p.healthy:
                    self._polled.pop(uuid, None)
                    mark = self._xids.get(uuid)
                    if mark is not None and now - mark[1] >= self.xid_recovery_s:
                        del self._xids[uuid]
                else:
                    self._polled[uuid] = p.reason or "lost"

    def unhealthy(self) -> dict[str, str]:
        """UUID -> why, for every GPU that is unhealthy now."""
        with self._lock:
            out = {uuid: f"Xid {xid}" for uuid, (xid, _) in self._xids.items()}
            for uuid, reason in self._polled.items():
                out[uuid] = f"{out[uuid]}; {reason}" if uuid in out else reason
            return out
