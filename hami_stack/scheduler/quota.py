"""Namespace ResourceQuotas on device memory and cores (section 5.7), fed by a resourcequotas informer.

Only hard keys ``limits.<memory or core resource of a family>`` count (``requests.`` is ignored);
memory limits are multiplied by the family's memory factor. Usage is what the usage cache holds
for the namespace's pods (collapsed per section 5.6). ``used + asked > limit`` does not fit; a
limit of 0 blocks all use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..devices.base import ContainerDeviceRequest, DeviceFamily
from ..protocol.quantity import quantity_int
from ..protocol.resources import QUOTA_LIMITS_PREFIX
from .cache import UsageCache

Obj = dict[str, Any]


@dataclass(frozen=True)
class QuotaLimit:
    namespace: str
    quota: str
    resource: str  # e.g. nvidia.com/gpumem
    family: str
    kind: str  # "memory" | "cores"
    limit: int


class QuotaCache:
    def __init__(self, families: Sequence[DeviceFamily], usage: UsageCache) -> None:
        self.families = list(families)
        self.usage = usage
        self._lock = threading.Lock()
        self._by_key: dict[str, list[QuotaLimit]] = {}  # "<ns>/<quota>" -> limits
        self._by_ns: dict[str, list[QuotaLimit]] = {}
        self.version = 0
        self._names: dict[str, tuple[DeviceFamily, str, int]] = {}
        for f in self.families:
            mem, core = f.quota_resources()
            if mem:
                self._names[mem] = (f, "memory", max(f.memory_factor, 1))
            if core:
                self._names[core] = (f, "cores", 1)

    def on_quota(self, kind: str, quota: Obj) -> None:
        meta = quota.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        limits: list[QuotaLimit] = []
        if kind != "DELETED":
            for key, raw in ((quota.get("spec") or {}).get("hard") or {}).items():
                if not key.startswith(QUOTA_LIMITS_PREFIX):
                    continue
                resource = key[len(QUOTA_LIMITS_PREFIX) :]
                known = self._names.get(resource)
                value = quantity_int(raw)
                if known is None or value is None:
                    continue
                family, what, factor = known
                limits.append(QuotaLimit(ns, name, resource, family.common_word, what, value * factor))
        with self._lock:
            if limits:
                self._by_key[f"{ns}/{name}"] = limits
            else:
                self._by_key.pop(f"{ns}/{name}", None)
            by_ns: dict[str, list[QuotaLimit]] = {}
            for ls in self._by_key.values():
                for q in ls:
                    by_ns.setdefault(q.namespace, []).append(q)
            self._by_ns = by_ns
            self.version += 1

    def limits(self, namespace: str) -> list[QuotaLimit]:
        return self._by_ns.get(namespace, [])

    def all_limits(self) -> list[QuotaLimit]:
        with self._lock:
            return [q for ls in self._by_key.values() for q in ls]

    def used(self, q: QuotaLimit) -> int:
        mem, cores = self.usage.namespace_usage(q.namespace, q.family)
        return mem if q.kind == "memory" else cores

    def fits(self, namespace: str, family: DeviceFamily, mem: int, cores: int) -> bool:
        """The per-device check of ``fit`` (``FitContext.quota_fits``)."""
        for q in self._by_ns.get(namespace, ()):
            if q.family != family.common_word:
                continue
            asked = mem if q.kind == "memory" else cores
            if self.used(q) + asked > q.limit:
                return False
        return True

    def pod_fits(self, pod: Obj) -> bool:
        """The webhook's pre-check: the pod's collapsed memory and cores per family fit every quota.

        Percentage-only memory requests are not counted here (the device size is not known yet);
        ``fit`` re-checks per device with the resolved value.
        """
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        limits = self._by_ns.get(namespace)
        if not limits:
            return True
        n_init = len((pod.get("spec") or {}).get("initContainers") or [])
        for f in self.families:
            mem, cores = _pod_totals(f.pod_requests(pod), n_init)
            if not self.fits(namespace, f, mem, cores):
                return False
        return True


def _pod_totals(reqs: Sequence[ContainerDeviceRequest | None], n_init: int) -> tuple[int, int]:
    init_mem = init_cores = app_mem = app_cores = 0
    for i, r in enumerate(reqs):
        if r is None:
            continue
        mem, cores = r.nums * r.memreq, r.nums * min(r.coresreq, 100)
        if i < n_init:
            init_mem, init_cores = max(init_mem, mem), max(init_cores, cores)
        else:
            app_mem, app_cores = app_mem + mem, app_cores + cores
    return max(init_mem, app_mem), max(init_cores, app_cores)
