"""The mutating admission decision for pods (section 1.3 of the contract), as a pure function.

Every request is first checked for shape (:mod:`.shape`): a field of the wrong JSON type is an
error 400 naming it. Operations other than CREATE and UPDATE are allowed untouched.

UPDATE (HAMi checks only CREATE; see :mod:`.trust`):

* an update that adds, changes or removes an allocation annotation (``hami.io/vgpu-node``,
  ``hami.io/bind-phase``, any ``*-devices-to-allocate`` / ``*-devices-allocated``...) or the
  ``hami.io/vgpu-node`` label -> deny, unless ``request.userInfo.username`` is one of
  :attr:`WebhookConfig.trusted_users` (the scheduler's and device plugin's service accounts);
* an update that puts the opt-out label on a pod that asks for devices -> deny;
* otherwise allow, never patched.

CREATE, first match wins:

1. no containers -> deny ``pod has no containers``.
2. every family checks its values (:meth:`~hami_stack.devices.base.DeviceFamily.admission_problem`)
   and mutates a copy of every init and app container; whether some family claimed a device (or
   found a device value it refuses) decides what follows.
3. the pod is labelled ``hami.io/webhook: ignore`` and asks for a device -> deny. The label keeps
   HAMi's own pods out of the webhook; with a device request it would let a pod skip it.
4. the pod asks for a device and already carries allocation annotations -> deny (HAMi lets these
   through and the device plugin trusts them). A pod without device requests keeps them and is
   admitted as HAMi admits it (``get -o yaml | create`` round trips, restores of bare pods).
5. ``spec.schedulerName`` set, and (not ``default-scheduler`` or force-overwrite off), and (no
   configured scheduler name or a different one) -> allow unchanged,
   ``pod already has different scheduler assigned``.
6. a value refused at step 2 -> error 400 with the family's message (HAMi answers its one check,
   the memory percentage, with 500).
7. a privileged container while some family claimed a device -> deny ``container <name> is privileged``.
8. a device was claimed: set ``spec.schedulerName`` to the configured name; ``spec.nodeName`` already
   set -> deny ``pod has node assigned``; the quota pre-check fails -> deny ``exceeding resource quota``.
9. allow with the JSON patch from the original to the mutated pod (possibly empty), plus an
   admission warning per container asking ``huawei.com/Ascend*`` when no Ascend family serves it
   (Ascend disabled in the chart): the pod is left alone, as upstream leaves it, and the warning
   says why the HAMi scheduler will not place it.

Denials carry code 403 / reason ``Forbidden`` and errors only a code, as controller-runtime's
``admission.Denied`` / ``admission.Errored`` produce them.

Quantities (decided against HAMi v2.10's ``pkg/device/nvidia``, which reads ``gpumem`` with
``AsInt64`` and so takes ``1Gi`` as 1,073,741,824 MiB): a memory value written with a binary unit
is refused with the MiB count to write (``nvidia.com/gpumem is in MiB, not a quantity with a unit:
got 1Gi in container c; write 1024 for 1Gi``) rather than silently reinterpreted, so the scheduler,
quota and device plugin keep reading one number the same way. Decimal suffixes stay accepted: the
apiserver itself stores ``2000`` as ``2k``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from .. import faults
from ..devices.ascend import unsupported_ascend_message
from ..devices.base import AdmissionError, DeviceFamily, containers
from ..devices.config import DeviceConfig
from ..devices.registry import build_families
from ..protocol.annotations import WEBHOOK_IGNORE_LABEL
from .shape import ShapeError, check_request
from .trust import allocation_changes, is_trusted, owned_entries, trusted_users_from_env

DEFAULT_SCHEDULER = "default-scheduler"
IGNORE_VALUE = "ignore"
MSG_NO_CONTAINERS = "pod has no containers"
MSG_DIFFERENT_SCHEDULER = "pod already has different scheduler assigned"
MSG_NODE_ASSIGNED = "pod has node assigned"
MSG_QUOTA = "exceeding resource quota"
MSG_OPT_OUT = (
    f"pod is labelled {WEBHOOK_IGNORE_LABEL}={IGNORE_VALUE} but requests devices ({{what}}); the label "
    "is only for pods that use no device: remove it to have the pod scheduled by HAMi"
)

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
    # Usernames that may write allocation annotations on UPDATE (``*`` at the end: prefix). Default:
    # HAMI_WEBHOOK_TRUSTED_USERS, else every service account of POD_NAMESPACE (see .trust).
    trusted_users: tuple[str, ...] = field(default_factory=trusted_users_from_env)


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
    """Allocation annotations (and the ``hami.io/vgpu-node`` label) a pod carries."""
    return sorted({k.removeprefix("label:") for k in owned_entries(pod)})


def _opted_out(pod: Obj) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(WEBHOOK_IGNORE_LABEL) == IGNORE_VALUE


@dataclass
class _Claims:
    mutated: Obj
    claimed: bool  # some family claimed a device
    problem: str = ""  # the first value a family refuses
    asked: list[str] = field(default_factory=list)  # "<resource> in container <c>" for messages

    @property
    def requests_device(self) -> bool:
        return self.claimed or bool(self.problem)


def _claims(pod: Obj, families: Sequence[DeviceFamily]) -> _Claims:
    """Run every family's check and mutation on a copy of the pod."""
    mutated = copy.deepcopy(pod)
    out = _Claims(mutated, False)
    for container in containers_in_place(mutated):
        name = container.get("name", "")
        before = copy.deepcopy((container.get("resources") or {}).get("limits") or {})
        for family in families:
            problem = family.admission_problem(container)
            if problem:
                out.problem = out.problem or problem
                out.asked.append(f"{family.count_resource} in container {name}")
                continue
            try:
                claimed = family.mutate_admission(container, mutated)
            except AdmissionError as e:
                out.problem = out.problem or str(e)
                claimed = True
            if claimed:
                out.claimed = True
                out.asked.append(f"{family.count_resource} in container {name}")
        if faults.active():
            _fault_undo_defaults(container, before)
    return out


def admit(request: Obj, config: WebhookConfig) -> AdmissionResponse:
    """Decide one ``AdmissionReview.request`` (either review version; only the pod matters)."""
    try:
        check_request(request)
    except ShapeError as e:
        return errored(400, str(e))
    operation = request.get("operation") or "CREATE"
    if operation not in ("CREATE", "UPDATE"):
        return allowed()
    pod = request["object"]
    if pod.get("kind", "Pod") != "Pod":
        return errored(400, f"request.object.kind: expected Pod, got {pod.get('kind')}")
    if operation == "UPDATE":
        return admit_update(request, config)
    return admit_create(pod, config)


def admit_update(request: Obj, config: WebhookConfig) -> AdmissionResponse:
    old, new = request["oldObject"], request["object"]
    changed = allocation_changes(old, new)
    username = (request.get("userInfo") or {}).get("username") or ""
    if (
        changed
        and not is_trusted(username, config.trusted_users)
        and not faults.on("webhook-allows-forged-annotations-on-update")
    ):
        return denied(
            f"{username or 'an anonymous user'} may not set, change or remove {', '.join(changed)}: "
            "allocation annotations are written only by the HAMi scheduler and device plugin"
        )
    if _opted_out(new) and not _opted_out(old):
        claims = _claims(new, config.families)
        if claims.requests_device:
            return denied(MSG_OPT_OUT.format(what=", ".join(claims.asked)))
    return allowed()


def admit_create(pod: Obj, config: WebhookConfig) -> AdmissionResponse:
    spec = pod["spec"]
    if not spec.get("containers"):
        return denied(MSG_NO_CONTAINERS)
    claims = _claims(pod, config.families)
    if claims.requests_device and _opted_out(pod):
        return denied(MSG_OPT_OUT.format(what=", ".join(claims.asked)))
    if (
        claims.requests_device
        and config.deny_forged_annotations
        and not faults.on("webhook-allows-forged-annotations")
    ):
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
        and not faults.on("webhook-overrides-other-scheduler")
    ):
        return allowed(MSG_DIFFERENT_SCHEDULER)
    if claims.problem and not faults.on("webhook-accepts-bad-percentage"):
        return errored(400, claims.problem)
    mutated = claims.mutated
    if not claims.claimed and faults.on("webhook-claims-plain-pods") and not mutated["spec"].get("nodeName"):
        mutated["spec"]["schedulerName"] = config.scheduler_name or mutated["spec"].get("schedulerName")
    if claims.claimed:
        for container in containers(mutated):
            if _privileged(container) and not faults.on("webhook-allows-privileged"):
                return denied(f"container {container.get('name', '')} is privileged")
        skip = config.fault_skip_scheduler_name or faults.on("webhook-skip-scheduler-name")
        if config.scheduler_name and not skip and not _fault_ascend_skip(claims):
            mutated["spec"]["schedulerName"] = config.scheduler_name
        if mutated["spec"].get("nodeName") and not faults.on("webhook-allows-node-name"):
            return denied(MSG_NODE_ASSIGNED)
        if (
            config.quota_fits is not None
            and not faults.on("scheduler-ignores-quota")
            and not config.quota_fits(mutated)
        ):
            return denied(MSG_QUOTA)
    ops = jsonpatch.make_patch(pod, mutated).patch
    resp = allowed(patch=ops)
    resp.warnings.extend(_unserved_ascend(pod, config.families))
    if not _opted_out(pod):  # a pod that opted out of HAMi asked for nothing from it
        resp.warnings.extend(unserved_family_warnings(pod, config.families))
    return resp


def unserved_family_warnings(pod: Obj, families: Sequence[DeviceFamily]) -> list[str]:
    """Admission warnings for requests of a data-driven family (``device_plugin.families.specs``)
    this installation does not enable: the pod is admitted unchanged (its scheduler reports it
    unschedulable), and the warning says the family is not enabled rather than leaving the user
    with a bare ``Insufficient <resource>``."""
    from ..device_plugin.families.specs import SPECS

    def resources(f: DeviceFamily) -> set[str]:
        return {r for a in ("count_resource", "memory_resource", "core_resource") if (r := getattr(f, a, ""))}

    served = {r for f in families for r in resources(f)}
    out = []
    for spec in SPECS.values():
        known = spec.make_family(None)
        names = resources(known)
        if known.count_resource in served:
            continue
        for container in containers(pod):
            res = container.get("resources") or {}
            asked = sorted({str(k) for part in ("limits", "requests") for k in (res.get(part) or {})} & names)
            if asked:
                out.append(
                    f"container {container.get('name', '')} asks for {', '.join(asked)}, but the "
                    f"{spec.vendor} family ({known.common_word}) is not enabled in this HAMi installation "
                    f"(chart value devices.{spec.chart_values_key}.enabled=false, or the scheduler's device "
                    f"config has no {spec.config_section} section): the HAMi scheduler will not place it"
                )
    return out


def _unserved_ascend(pod: Obj, families: Sequence[DeviceFamily]) -> list[str]:
    """Admission warnings for Ascend requests this installation has no family for (Ascend disabled):
    the pod is admitted unchanged, as upstream admits it, but the user learns why nothing places it."""
    served = {f.count_resource for f in families}
    out = []
    for container in containers(pod):
        limits = (container.get("resources") or {}).get("limits") or {}
        if any(str(k).startswith("huawei.com/Ascend") and k not in served for k in limits):
            message = unsupported_ascend_message(container)
            if message:
                out.append(message)
    return out


def _fault_ascend_skip(claims: _Claims) -> bool:
    """Fault ``ascend-webhook-skip-scheduler-name``: pods asking Ascend devices keep their scheduler."""
    return faults.on("ascend-webhook-skip-scheduler-name") and any("Ascend" in a for a in claims.asked)


def _fault_undo_defaults(container: Obj, before: Obj) -> None:
    """Faults ``webhook-no-default-gpu-count`` / ``-no-exclusive-cores``: drop what defaulting added."""
    limits = (container.get("resources") or {}).get("limits") or {}
    for fault, key in (("webhook-no-default-gpu-count", "nvidia.com/gpu"),
                       ("webhook-no-exclusive-cores", "nvidia.com/gpucores")):
        if key in limits and key not in before and faults.on(fault):
            del limits[key]


def containers_in_place(pod: Obj) -> list[Obj]:
    """The pod's own container dicts (init first), so families can edit them in place."""
    spec = pod.get("spec") or {}
    return [c for c in (spec.get("initContainers") or []) if isinstance(c, dict)] + [
        c for c in (spec.get("containers") or []) if isinstance(c, dict)
    ]
