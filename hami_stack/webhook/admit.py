"""The mutating admission decision for pods (section 1.3 of the contract), as a pure function.

Order, first match wins:

1. object is not a decodable Pod -> error 400; no containers -> deny ``pod has no containers``.
2. the pod already carries scheduler-owned allocation annotations (``hami.io/vgpu-node``,
   ``hami.io/bind-phase``, any ``*-devices-to-allocate`` / ``*-devices-allocated``...) -> deny. HAMi
   lets these through, so a pod could forge its own assignment (the device plugin trusts them);
   this implementation closes that hole.
3. ``spec.schedulerName`` set, and (not ``default-scheduler`` or force-overwrite off), and (no
   configured scheduler name or a different one) -> allow unchanged,
   ``pod already has different scheduler assigned``.
4. every family's ``mutate_admission`` on every init and app container; an error -> error 500 with
   its message.
5. a privileged container while some family claimed a device -> deny ``container <name> is privileged``.
6. a device was claimed: set ``spec.schedulerName`` to the configured name; ``spec.nodeName`` already
   set -> deny ``pod has node assigned``; the quota pre-check fails -> deny ``exceeding resource quota``.
7. allow with the JSON patch from the original to the mutated pod (possibly empty).

Denials carry code 403 / reason ``Forbidden`` and errors only a code, as controller-runtime's
``admission.Denied`` / ``admission.Errored`` produce them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from ..devices.base import AdmissionError, DeviceFamily, containers
from ..devices.config import DeviceConfig
from ..devices.registry import build_families
from ..protocol.annotations import VGPU_NODE, is_scheduler_owned

DEFAULT_SCHEDULER = "default-scheduler"
MSG_NO_CONTAINERS = "pod has no containers"
MSG_DIFFERENT_SCHEDULER = "pod already has different scheduler assigned"
MSG_NODE_ASSIGNED = "pod has node assigned"
MSG_QUOTA = "exceeding resource quota"

Obj = dict[str, Any]


@dataclass(frozen=True)
class WebhookConfig:
    scheduler_name: str = "hami-scheduler"  # --scheduler-name; "" leaves schedulerName alone
    fault_skip_scheduler_name: bool = False  # see hami_stack/faults.py
    force_overwrite_default_scheduler: bool = True  # --force-overwrite-default-scheduler
    families: Sequence[DeviceFamily] = field(default_factory=lambda: build_families(DeviceConfig()))
    # The quota pre-check (section 5.7): pod -> whether namespace quotas still admit it. The scheduler's
    # usage cache supplies it; None skips the check.
    quota_fits: Callable[[Obj], bool] | None = None
    deny_forged_annotations: bool = True


@dataclass
class AdmissionResponse:
    allowed: bool
    patch: list[Obj] = field(default_factory=list)  # JSONPatch operations
    message: str = ""
    code: int = 200
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def status(self) -> Obj:
        out: Obj = {"metadata": {}, "code": self.code}
        if self.message:
            out["message"] = self.message
        if self.reason:
            out["reason"] = self.reason
        return out


def allowed(message: str = "", patch: list[Obj] | None = None) -> AdmissionResponse:
    return AdmissionResponse(True, patch or [], message)


def denied(message: str) -> AdmissionResponse:
    return AdmissionResponse(False, [], message, 403, "Forbidden")


def errored(code: int, message: str) -> AdmissionResponse:
    return AdmissionResponse(False, [], message, code)


def _privileged(container: Obj) -> bool:
    return bool((container.get("securityContext") or {}).get("privileged"))


def forged_keys(pod: Obj) -> list[str]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    keys = {k for k in annotations if is_scheduler_owned(k)}
    keys |= {k for k in labels if k == VGPU_NODE}
    return sorted(keys)


def admit(request: Obj, config: WebhookConfig) -> AdmissionResponse:
    """Decide one ``AdmissionReview.request`` (either review version; only the pod matters)."""
    pod = request.get("object")
    if not isinstance(pod, dict) or pod.get("kind", "Pod") != "Pod" or not isinstance(pod.get("spec"), dict):
        return errored(400, "couldn't decode the admission request object as a Pod")
    if request.get("operation", "CREATE") != "CREATE":
        return allowed()
    spec = pod["spec"]
    if not spec.get("containers"):
        return denied(MSG_NO_CONTAINERS)
    if config.deny_forged_annotations:
        forged = forged_keys(pod)
        if forged:
            return denied(
                f"pod carries scheduler-owned annotations ({', '.join(forged)}); only the HAMi "
                "scheduler and device plugin may set them"
            )
    current = spec.get("schedulerName") or ""
    if (
        current
        and (current != DEFAULT_SCHEDULER or not config.force_overwrite_default_scheduler)
        and (not config.scheduler_name or current != config.scheduler_name)
    ):
        return allowed(MSG_DIFFERENT_SCHEDULER)

    mutated = copy.deepcopy(pod)
    has_resource = False
    for container in containers_in_place(mutated):
        for family in config.families:
            try:
                claimed = family.mutate_admission(container, mutated)
            except AdmissionError as e:
                return errored(500, str(e))
            has_resource = has_resource or claimed
    if has_resource:
        for container in containers(mutated):
            if _privileged(container):
                return denied(f"container {container.get('name', '')} is privileged")
        if config.scheduler_name and not config.fault_skip_scheduler_name:
            mutated["spec"]["schedulerName"] = config.scheduler_name
        if mutated["spec"].get("nodeName"):
            return denied(MSG_NODE_ASSIGNED)
        if config.quota_fits is not None and not config.quota_fits(mutated):
            return denied(MSG_QUOTA)
    ops = jsonpatch.make_patch(pod, mutated).patch
    return allowed(patch=ops)


def containers_in_place(pod: Obj) -> list[Obj]:
    """The pod's own container dicts (init first), so families can edit them in place."""
    spec = pod.get("spec") or {}
    return [c for c in (spec.get("initContainers") or []) if isinstance(c, dict)] + [
        c for c in (spec.get("containers") or []) if isinstance(c, dict)
    ]
