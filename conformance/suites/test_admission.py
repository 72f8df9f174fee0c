"""Admission: what HAMi's mutating webhook does to pods (schedulerName, denials, defaults)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conformance import contract as C
from conformance.cases import rule, unknown, violated
from conformance.kube import (
    ContainerSpec,
    Pod,
    Workloads,
    container_limits,
    gpu_pod,
    parse_probe_output,
    pod_manifest,
    poll,
)
from conformance.suites.common import (
    MIB,
    QUICK,
    Gpu,
    all_gpus,
    cuda_devices,
    failure_messages,
    idle_gpu,
    nvml_devices,
    on_gpu,
    probe_limit_mib,
)
from kubeclient.client import ApiError

pytestmark = [pytest.mark.nvidia, pytest.mark.admission]


@rule("ADM-SCHED-1", "A pod requesting nvidia.com/gpu is given spec.schedulerName of the HAMi scheduler")
def test_scheduler_name_set(workloads: Workloads, cluster: Any) -> None:
    pod = workloads.create(gpu_pod("sched-name", gpus=1, mem=1000))
    got = pod["spec"].get("schedulerName")
    assert got == cluster.scheduler_name, violated(
        "ADM-SCHED-1",
        f"schedulerName is {got!r}, want {cluster.scheduler_name!r} (webhook not called or not mutating)",
    )


@rule("ADM-SCHED-2", "A pod without HAMi resources keeps the default scheduler")
def test_plain_pod_untouched(workloads: Workloads) -> None:
    pod = workloads.create(pod_manifest("plain", [ContainerSpec()]))
    assert pod["spec"].get("schedulerName") == "default-scheduler", violated(
        "ADM-SCHED-2",
        f"schedulerName of a pod without GPU requests became {pod['spec'].get('schedulerName')!r}",
    )


@rule("ADM-SCHED-3", "A GPU pod that names another custom scheduler is left to that scheduler")
def test_other_scheduler_respected(workloads: Workloads) -> None:
    manifest = pod_manifest("custom", [ContainerSpec(gpus=1, mem=1000)], scheduler_name="volcano")
    pod = workloads.create(manifest)
    assert pod["spec"].get("schedulerName") == "volcano", violated(
        "ADM-SCHED-3", f"schedulerName volcano was overwritten with {pod['spec'].get('schedulerName')!r}"
    )


@rule("ADM-DENY-1", "A privileged container requesting a GPU is denied: container <name> is privileged")
def test_privileged_denied(workloads: Workloads) -> None:
    _, err = workloads.try_create(pod_manifest("priv", [ContainerSpec(name="cuda", gpus=1, privileged=True)]))
    assert err is not None, violated("ADM-DENY-1", "a privileged GPU container was admitted")
    assert "container cuda is privileged" in str(err), violated("ADM-DENY-1", f"denied with {str(err)!r}")


@rule("ADM-DENY-2", "A GPU pod with spec.nodeName already set is denied: pod has node assigned")
def test_node_name_denied(workloads: Workloads, kube: Any) -> None:
    node = kube.get("/api/v1/nodes")["items"][0]["metadata"]["name"]
    _, err = workloads.try_create(pod_manifest("pinned", [ContainerSpec(gpus=1, mem=1000)], node_name=node))
    assert err is not None, violated("ADM-DENY-2", "a GPU pod with nodeName set was admitted")
    assert C.DENY_NODE_ASSIGNED in str(err), violated("ADM-DENY-2", f"denied with {str(err)!r}")


@rule(
    "ADM-DENY-3",
    "nvidia.com/gpumem-percentage 150 (outside 0..100) is denied naming the resource and container",
)
def test_percentage_out_of_range_denied(workloads: Workloads) -> None:
    _, err = workloads.try_create(pod_manifest("pct", [ContainerSpec(name="cuda", gpus=1, mem_pct=150)]))
    assert err is not None, violated("ADM-DENY-3", "gpumem-percentage 150 was admitted")
    text = str(err)
    assert C.GPUMEM_PCT in text and "cuda" in text, violated("ADM-DENY-3", f"denied with {text!r}")


@rule("ADM-DEFAULT-1", "A container with only nvidia.com/gpumem is given nvidia.com/gpu: 1 by default")
def test_default_gpu_count(workloads: Workloads) -> None:
    pod = workloads.create(pod_manifest("memonly", [ContainerSpec(mem=1000)]))
    limits = container_limits(pod)
    assert limits.get(C.GPU) == "1", violated("ADM-DEFAULT-1", f"limits after admission: {limits}")


@rule("ADM-DEFAULT-2", "nvidia.com/gpu alone means an exclusive card: nvidia.com/gpucores: 100 is injected")
def test_exclusive_default(workloads: Workloads) -> None:
    pod = workloads.create(pod_manifest("whole", [ContainerSpec(gpus=1)]))
    limits = container_limits(pod)
    assert limits.get(C.GPUCORES) == "100", violated("ADM-DEFAULT-2", f"limits after admission: {limits}")


# --- forged allocation annotations --------------------------------------------------------------------
# A tenant writes HAMi's scheduler-owned annotations itself, granting its container a whole GPU's
# memory. The property checked is the one a tenant can observe: the forgery is denied at admission,
# or the pod never runs with a device limit the scheduler did not grant (a pod the scheduler never
# handled must not run with any GPU at all).
FORGE_WAIT_S = 30  # how long a pod that is not refused outright gets to show what it runs with


def _forged_annotations(gpu: Gpu) -> dict[str, str]:
    grant = f"{gpu.uuid},NVIDIA,{gpu.devmem},0:;"
    now = str(int(time.time()))
    return {
        C.NVIDIA_TO_ALLOCATE: grant,
        C.NVIDIA_ALLOCATED: grant,
        C.VGPU_NODE: gpu.node,
        C.VGPU_TIME: now,
        C.BIND_PHASE: "allocating",
        C.BIND_TIME: now,
    }


def _outcome(w: Workloads, name: str) -> dict[str, Any] | None:
    """The probe document if the pod's container ran, None if it never ran (refused, failed at
    admission on the node, or still not started after FORGE_WAIT_S)."""
    deadline = time.monotonic() + FORGE_WAIT_S
    phase = ""
    while time.monotonic() < deadline:
        phase = (w.get(name).get("status") or {}).get("phase") or ""
        if phase in ("Running", "Succeeded", "Failed"):
            break
        time.sleep(0.5)
    if phase == "Running":
        w.wait_phase(name, ("Succeeded", "Failed"))
    if phase not in ("Running", "Succeeded", "Failed"):
        return None
    try:
        return parse_probe_output(w.log(name))
    except ApiError:
        return None


def _check_granted(
    w: Workloads, name: str, gpu: Gpu, granted_mib: int | None, rule_id: str, attach: Any
) -> None:
    doc = _outcome(w, name)
    if doc is None:
        return  # never ran: safe
    attach(f"probe-{name}.json", json.dumps(doc, indent=2))
    limit = probe_limit_mib(doc)
    devices = cuda_devices(doc)
    if granted_mib is None:
        assert not devices and not nvml_devices(doc), violated(
            rule_id,
            f"pod {name} with forged annotations ({gpu.devmem} MiB on {gpu.uuid}) was never scheduled "
            f"by HAMi but ran with GPUs {[d.get('uuid') for d in devices or nvml_devices(doc)]}, "
            f"memory limit {limit} MiB",
        )
        return
    totals = [int((doc.get("cuda") or {}).get("mem_before", {}).get("total", 0)) // MIB]
    assert limit is not None and limit <= granted_mib, violated(
        rule_id,
        f"pod {name} asked {granted_mib} MiB, forged {gpu.devmem} MiB, and ran with "
        f"CUDA_DEVICE_MEMORY_LIMIT_0={limit} MiB",
    )
    assert devices and all(0 < t <= granted_mib for t in totals), violated(
        rule_id,
        f"pod {name} asked {granted_mib} MiB, forged {gpu.devmem} MiB; cuMemGetInfo total {totals} MiB",
    )


@rule(
    "ADM-FORGE-1",
    "A pod created with forged hami.io allocation annotations is denied or runs with no more than the "
    "scheduler granted",
    ai=("secure_accelerator_access",),
)
def test_forged_on_create(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = all_gpus(kube)[0]
    manifest = pod_manifest(
        "forge-create", [ContainerSpec(gpus=1, mem=1000, args=QUICK)], annotations=_forged_annotations(gpu)
    )
    _, err = workloads.try_create(manifest)
    if err is not None:
        attach("denied.txt", str(err))  # refused at admission: safe
        return
    _check_granted(workloads, "forge-create", gpu, 1000, "ADM-FORGE-1", attach)


@rule(
    "ADM-FORGE-10",
    "A device pod created with scheduler-owned allocation annotations is denied at admission with a "
    "message naming one of them, whichever scheduler it names (HAMi since PR #3042)",
    ai=("secure_accelerator_access",),
)
def test_forged_on_create_is_denied(workloads: Workloads, kube: Any, attach: Any) -> None:
    # ADM-FORGE-1/3/7 accept a safe run, which later layers (scheduler, plugin) can give on their own;
    # this one holds the webhook to its own duty, so a webhook that lets forgeries through is seen
    gpu = all_gpus(kube)[0]
    forged = _forged_annotations(gpu)
    for name, scheduler in (("forge-deny", None), ("forge-deny-other", SQUATTER_SCHEDULER)):
        manifest = pod_manifest(
            name, [ContainerSpec(gpus=1, mem=1000, args=QUICK)], annotations=forged, scheduler_name=scheduler
        )
        _, err = workloads.try_create(manifest)
        assert err is not None, violated(
            "ADM-FORGE-10",
            f"pod {name} (schedulerName {scheduler or 'unset'}) carrying {', '.join(sorted(forged))} "
            "was admitted",
        )
        attach(f"denied-{name}.txt", str(err))
        assert any(key in str(err) for key in forged), violated(
            "ADM-FORGE-10",
            f"pod {name} was refused, but the message names none of the forged annotations: {err}",
        )


@rule(
    "ADM-FORGE-3",
    "A pod with forged allocation annotations and the webhook's opt-out label hami.io/webhook: ignore is "
    "denied or runs with no more than the scheduler granted",
    ai=("secure_accelerator_access",),
)
def test_forged_with_opt_out_label(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    gpu = all_gpus(kube)[0]
    manifest = pod_manifest(
        "forge-optout",
        [ContainerSpec(gpus=1, mem=1000, args=QUICK)],
        annotations=_forged_annotations(gpu),
        scheduler_name=cluster.scheduler_name,  # the webhook is skipped: ask for HAMi's scheduler directly
    )
    manifest["metadata"]["labels"][C.WEBHOOK_IGNORE_LABEL] = "ignore"
    _, err = workloads.try_create(manifest)
    if err is not None:
        attach("denied.txt", str(err))  # refused at admission: safe
        return
    _check_granted(workloads, "forge-optout", gpu, 1000, "ADM-FORGE-3", attach)


@rule(
    "ADM-FORGE-4",
    "A GPU pod with spec.nodeName set and forged allocation annotations is denied or never runs with a GPU",
    ai=("secure_accelerator_access",),
)
def test_forged_with_node_name(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = all_gpus(kube)[0]
    manifest = pod_manifest(
        "forge-node",
        [ContainerSpec(gpus=1, mem=1000, args=QUICK)],
        annotations=_forged_annotations(gpu),
        node_name=gpu.node,
        scheduler_name="default-scheduler",  # what the apiserver defaults: no scheduler is involved
    )
    _, err = workloads.try_create(manifest)
    if err is not None:
        attach("denied.txt", str(err))  # refused at admission: safe
        return
    _check_granted(workloads, "forge-node", gpu, None, "ADM-FORGE-4", attach)


@rule(
    "ADM-FORGE-5",
    "A GPU pod with the opt-out label, spec.nodeName and forged allocation annotations is denied or never "
    "runs with a GPU",
    ai=("secure_accelerator_access",),
)
def test_forged_with_opt_out_and_node_name(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = all_gpus(kube)[0]
    manifest = pod_manifest(
        "forge-bypass",
        [ContainerSpec(gpus=1, mem=1000, args=QUICK)],
        annotations=_forged_annotations(gpu),
        node_name=gpu.node,
        scheduler_name="default-scheduler",  # what the apiserver defaults: no scheduler is involved
    )
    manifest["metadata"]["labels"][C.WEBHOOK_IGNORE_LABEL] = "ignore"
    _, err = workloads.try_create(manifest)
    if err is not None:
        attach("denied.txt", str(err))  # refused at admission: safe
        return
    _check_granted(workloads, "forge-bypass", gpu, None, "ADM-FORGE-5", attach)


@rule(
    "ADM-FORGE-2",
    "Forged allocation annotations written by an update to a pending GPU pod are denied, or the pod, once "
    "bound, never runs with a GPU the scheduler did not grant",
    ai=("secure_accelerator_access",),
)
def test_forged_on_update(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = all_gpus(kube)[0]
    # another scheduler's pod: HAMi neither schedules it nor grants it anything
    manifest = pod_manifest(
        "forge-update", [ContainerSpec(gpus=1, mem=1000, args=QUICK)], scheduler_name="hc-no-such-scheduler"
    )
    workloads.create(manifest)
    path = f"{workloads.pods_path}/forge-update"
    try:
        kube.patch(path, {"metadata": {"annotations": _forged_annotations(gpu)}}, kind="merge")
    except ApiError as e:
        attach("denied.txt", str(e))  # the update was refused: safe
        return
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "forge-update"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": gpu.node},
    }
    kube.create(f"{path}/binding", binding)
    _check_granted(workloads, "forge-update", gpu, None, "ADM-FORGE-2", attach)


MUTATING = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@contextlib.contextmanager
def _webhook_unreachable(kube: Any, cluster: Any, *, ignore_failures: bool = False) -> Iterator[None]:
    """HAMi's webhooks point at a path its server does not serve (as if the server were gone) for the
    duration; with ``ignore_failures`` their failurePolicy is Ignore too (admission goes on without
    them, as on a cluster whose HAMi webhook is not installed or not enforced). Restored afterwards."""
    configs = [
        c
        for c in kube.get(MUTATING).get("items") or []
        if any(
            ((w.get("clientConfig") or {}).get("service") or {}).get("namespace") == cluster.hami_namespace
            for w in c.get("webhooks") or []
        )
    ]
    if not configs:
        unknown(f"no mutating webhook configuration calls a service in {cluster.hami_namespace}")
    saved = {c["metadata"]["name"]: c["webhooks"] for c in configs}
    try:
        for name, hooks in saved.items():
            broken = json.loads(json.dumps(hooks))
            for w in broken:
                svc = (w.get("clientConfig") or {}).get("service")
                if svc and svc.get("namespace") == cluster.hami_namespace:
                    svc["path"] = "/hami-conformance-webhook-down"  # fails as if the server were gone
                    if ignore_failures:
                        w["failurePolicy"] = "Ignore"
            kube.patch(f"{MUTATING}/{name}", {"webhooks": broken}, kind="merge")
        yield
    finally:
        for name, hooks in saved.items():
            kube.patch(f"{MUTATING}/{name}", {"webhooks": hooks}, kind="merge")


def _forged_bound(gpu: Gpu, name: str) -> Pod:
    """A GPU pod placed on the GPU's node by spec.nodeName, carrying a forged whole-GPU assignment."""
    return pod_manifest(
        name,
        [ContainerSpec(gpus=1, mem=1000, args=QUICK)],
        annotations=_forged_annotations(gpu),
        node_name=gpu.node,
        scheduler_name="default-scheduler",
    )


@rule(
    "ADM-FORGE-6",
    "While HAMi's webhook is unreachable, a GPU pod with spec.nodeName and forged allocation annotations is "
    "denied or never runs with a GPU",
    ai=("secure_accelerator_access",),
)
def test_forged_while_webhook_down(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    gpu = all_gpus(kube)[0]
    with _webhook_unreachable(kube, cluster):
        _, err = workloads.try_create(_forged_bound(gpu, "forge-down"))
    if err is not None:
        attach("denied.txt", str(err))  # refused at admission: safe
        return
    _check_granted(workloads, "forge-down", gpu, None, "ADM-FORGE-6", attach)


@rule(
    "ADM-FORGE-9",
    "Without admission by HAMi's webhook (its failures ignored), a GPU pod placed by spec.nodeName with a "
    "forged allocation never runs with a GPU: the node side serves only what the scheduler allocated",
    ai=("secure_accelerator_access",),
)
def test_forged_without_webhook(workloads: Workloads, kube: Any, cluster: Any, attach: Any) -> None:
    # defence in depth: the device plugin must not take a pod's own annotations as a grant (HAMi's
    # node lock names the pod the scheduler is binding); the webhook is out of the way here
    gpu = all_gpus(kube)[0]
    with _webhook_unreachable(kube, cluster, ignore_failures=True):
        _, err = workloads.try_create(_forged_bound(gpu, "forge-nohook"))
    if err is not None:
        attach("denied.txt", str(err))  # refused at admission anyway: safe
        return
    _check_granted(workloads, "forge-nohook", gpu, None, "ADM-FORGE-9", attach)


# --- forged annotations must not take capacity ------------------------------------------------------
# A pod no scheduler ever places (it names a scheduler that does not exist) but that carries a forged
# assignment of a whole GPU: HAMi's usage bookkeeping reads assignments from pod annotations, so a
# forgery that is admitted keeps every other tenant off that GPU (a denial of service without ever
# running). The property: another pod asking 1 MiB-scale memory on that GPU is still placed there.
SQUATTER_SCHEDULER = "hc-no-such-scheduler"
VICTIM_GRACE_S = 10


def _victim_placed(w: Workloads, kube: Any, gpu: Gpu, squatter: str, rule_id: str) -> None:
    w.create(on_gpu("victim", gpu.uuid, mem=1000, args=QUICK))

    def observe() -> tuple[str, list[str]]:
        return (w.get("victim").get("spec") or {}).get("nodeName") or "", failure_messages(w, "victim")

    node, msgs = poll(
        f"pod {w.ns}/victim (1000 MiB on {gpu.uuid}) to be bound, or refused",
        observe,
        lambda obs: bool(obs[0]) or bool(obs[1]),
        w.timeout,
        describe=lambda obs: f"failure messages {obs[1]!r}" if obs else "nothing",
        rule_id=rule_id,
    )
    if not node:  # a refusal may be transient (a retry after the scheduler's backoff): a short grace
        try:
            node = (w.wait_scheduled("victim", VICTIM_GRACE_S).get("spec") or {}).get("nodeName") or ""
        except AssertionError:
            node = ""
    ann = (w.get(squatter).get("metadata") or {}).get("annotations") or {}
    assert node, violated(
        rule_id,
        f"pod victim asking 1000 MiB on idle GPU {gpu.uuid} was refused ({msgs!r}) while pod {squatter}, "
        f"never scheduled, carries the forged assignment {ann.get(C.NVIDIA_ALLOCATED)!r}",
    )


@rule(
    "ADM-FORGE-7",
    "A GPU pod created with a forged assignment of a whole GPU, which no scheduler ever places, is denied "
    "or takes no capacity: another pod is still placed on that GPU",
    ai=("secure_accelerator_access",),
)
def test_forged_on_create_takes_no_capacity(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = idle_gpu(kube)
    manifest = pod_manifest(
        "squat-create",
        [ContainerSpec(gpus=1, mem=1000, args=QUICK)],
        annotations=_forged_annotations(gpu),
        scheduler_name=SQUATTER_SCHEDULER,
    )
    _, err = workloads.try_create(manifest)
    if err is not None:
        attach("denied.txt", str(err))  # refused at admission: safe, nothing to squat
        return
    _victim_placed(workloads, kube, gpu, "squat-create", "ADM-FORGE-7")


@rule(
    "ADM-FORGE-8",
    "A forged assignment of a whole GPU written by an update to a pod no scheduler places is denied or "
    "takes no capacity: another pod is still placed on that GPU",
    ai=("secure_accelerator_access",),
)
def test_forged_on_update_takes_no_capacity(workloads: Workloads, kube: Any, attach: Any) -> None:
    gpu = idle_gpu(kube)
    workloads.create(
        pod_manifest(
            "squat-update", [ContainerSpec(gpus=1, mem=1000, args=QUICK)], scheduler_name=SQUATTER_SCHEDULER
        )
    )
    try:
        kube.patch(
            f"{workloads.pods_path}/squat-update",
            {"metadata": {"annotations": _forged_annotations(gpu)}},
            kind="merge",
        )
    except ApiError as e:
        attach("denied.txt", str(e))  # the update was refused: safe
        return
    _victim_placed(workloads, kube, gpu, "squat-update", "ADM-FORGE-8")
