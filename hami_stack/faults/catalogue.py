"""The catalogue of deliberate faults: each a defect a real HAMi implementation could plausibly ship.

A fault is switched on only by whoever installs the stack:

* ``runtime`` faults: chart value ``faultInjection.faults: [name, ...]`` becomes ``HAMI_FAULTS`` in the
  environment of the stack's own containers (scheduler/webhook, device plugin, monitor), read once at
  process start (:mod:`hami_stack.faults`). A workload's environment never reaches those processes.
* ``shim`` faults: the device plugin's shim installer puts a *separate build* of ``libvgpu.so`` on the
  node, compiled with ``-DVGPU_FAULT_<X>`` (:func:`hami_stack.enforcer.build.ensure_built`). The default
  build is compiled without any fault code, so nothing inside a container can reach one.
* ``chart`` faults: the chart renders a wrong object (scheduler configuration, RBAC).

Each fault names the rule ids (``conformance/profiles/nvidia.yaml``) of which at least one must fail for
the fault to count as caught; ``uncatchable`` says why the suites cannot catch it by design (it still
counts against the self-test's score).
"""

from __future__ import annotations

from dataclasses import dataclass

RUNTIME, SHIM, CHART = "runtime", "shim", "chart"

# Which stack container a fault's name prefix reaches (the chart filters HAMI_FAULTS per container,
# so switching a webhook fault does not restart the device plugins).
SCHEDULER_PREFIXES = ("webhook-", "scheduler-", "nodelock-")
PLUGIN_PREFIXES = ("plugin-", "shim-", "nodelock-")
MONITOR_PREFIXES = ("monitor-",)


@dataclass(frozen=True)
class Fault:
    name: str
    component: str  # webhook | extender | device-plugin | shim | monitor | chart
    description: str
    expected_rules: tuple[str, ...]
    kind: str = RUNTIME
    vendor: str = "nvidia"
    # leaves state behind (node annotations, cache entries): the self-test cleans up after it
    dirty: bool = False
    uncatchable: str = ""

    @property
    def shim_define(self) -> str:
        """``VGPU_FAULT_<X>``: ``shim-managed-unlimited`` -> ``VGPU_FAULT_MANAGED_UNLIMITED``."""
        return "VGPU_FAULT_" + self.name.removeprefix("shim-").replace("-", "_").upper()

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "component": self.component,
            "vendor": self.vendor,
            "kind": self.kind,
            "description": self.description,
            "expected_rules": list(self.expected_rules),
            "dirty": self.dirty,
            "uncatchable": self.uncatchable,
        }


def _f(name: str, component: str, description: str, *rules: str, **kw: object) -> Fault:
    return Fault(name, component, description, tuple(rules), **kw)  # type: ignore[arg-type]


CATALOGUE: tuple[Fault, ...] = (
    # --- webhook ---------------------------------------------------------------------------------
    _f("webhook-skip-scheduler-name", "webhook",
       "the webhook leaves spec.schedulerName alone, so device pods go to the default scheduler",
       "ADM-SCHED-1"),
    _f("webhook-overrides-other-scheduler", "webhook",
       "a GPU pod that names another custom scheduler is taken over by the HAMi scheduler",
       "ADM-SCHED-3"),
    _f("webhook-claims-plain-pods", "webhook",
       "pods without HAMi resources are sent to the HAMi scheduler too",
       "ADM-SCHED-2"),
    _f("webhook-allows-privileged", "webhook",
       "a privileged container requesting a GPU is admitted",
       "ADM-DENY-1"),
    _f("webhook-allows-node-name", "webhook",
       "a GPU pod with spec.nodeName already set is admitted (it bypasses the scheduler)",
       "ADM-DENY-2"),
    _f("webhook-accepts-bad-percentage", "webhook",
       "nvidia.com/gpumem-percentage outside 0..100 is admitted instead of denied",
       "ADM-DENY-3"),
    _f("webhook-no-default-gpu-count", "webhook",
       "a container with only nvidia.com/gpumem is not given nvidia.com/gpu: 1",
       "ADM-DEFAULT-1"),
    _f("webhook-no-exclusive-cores", "webhook",
       "nvidia.com/gpu alone is not made exclusive (no nvidia.com/gpucores: 100 injected)",
       "ADM-DEFAULT-2", "ALLOC-SHAPE-1"),
    _f("webhook-allows-forged-annotations", "webhook",
       "a pod created with hami.io/* allocation annotations (a forged assignment) is admitted",
       "ADM-FORGE-1", "ADM-FORGE-3", "ADM-FORGE-7", "ADM-FORGE-10"),
    _f("webhook-allows-forged-annotations-on-update", "webhook",
       "allocation annotations added to an existing pod by an update are admitted",
       "ADM-FORGE-2", "ADM-FORGE-8"),
    # --- scheduler extender ----------------------------------------------------------------------
    _f("scheduler-ignores-memory-fit", "extender",
       "the filter does not compare the requested device memory with the GPU's memory",
       "SCHED-REJECT-1"),
    _f("scheduler-ignores-used-memory", "extender",
       "the filter ignores memory already given out on a GPU (a full GPU takes another pod)",
       "SCHED-USEDMEM-1", "SCHED-USEDMEM-3", "SCHED-USEDMEM-5"),
    _f("scheduler-ignores-used-cores", "extender",
       "the filter ignores cores already given out on a GPU (two 60-core pods on one GPU)",
       "SCHED-USEDCORE-1", "SCHED-USEDCORE-3", "SCHED-EXCL-1"),
    _f("scheduler-ignores-slot-count", "extender",
       "the filter ignores how many tasks already share a GPU (more pods than deviceSplitCount)",
       "SCHED-SLOTS-1"),
    _f("scheduler-ignores-gputype", "extender",
       "nvidia.com/use-gputype and nouse-gputype are ignored",
       "SCHED-TYPE-1"),
    _f("scheduler-ignores-gpuuuid", "extender",
       "nvidia.com/use-gpuuuid and nouse-gpuuuid are ignored",
       "SCHED-UUID-1", "SCHED-NOUUID-1"),
    _f("scheduler-ignores-cordon", "extender",
       "GPUs listed in the node's hami.io/device-cordon still receive allocations",
       "SCHED-CORDON-1"),
    _f("scheduler-ignores-numa-bind", "extender",
       "nvidia.com/numa-bind: true is ignored, so a multi-GPU container may span NUMA nodes",
       "SCHED-NUMA-1"),
    _f("scheduler-gpu-policy-swapped", "extender",
       "GPU-level binpack and spread are swapped",
       "SCHED-BINPACK-1", "SCHED-SPREAD-1"),
    _f("scheduler-node-policy-swapped", "extender",
       "node-level binpack and spread are swapped",
       "SCHED-NODEPOLICY-1", "SCHED-NODEPOLICY-2"),
    _f("scheduler-ignores-quota", "extender",
       "namespace limits.nvidia.com/gpumem quotas are not enforced (neither webhook nor filter)",
       "SCHED-QUOTA-1"),
    _f("scheduler-bind-drops-binding", "extender",
       "/bind answers success without creating the Binding: pods stay Pending",
       "SCHED-FIT-1"),
    _f("scheduler-leaks-deleted-pods", "extender",
       "the usage cache keeps charging pods that were deleted, so freed GPUs never come back",
       "SCHED-USEDMEM-2", "SCHED-USEDMEM-3", "SCHED-USEDCORE-1", "SCHED-SLOTS-1", dirty=True),
    _f("scheduler-no-failure-events", "extender",
       "no FilteringFailed event is recorded for a pod that fits nowhere",
       "SCHED-EVENT-3"),
    _f("scheduler-no-success-events", "extender",
       "no FilteringSucceed / BindingSucceed events are recorded",
       "SCHED-EVENT-1", "SCHED-EVENT-2"),
    _f("scheduler-metrics-memory-zero", "extender",
       "the scheduler's metrics report 0 allocated device memory",
       "MET-SCHED-1"),
    _f("scheduler-multi-gpu-one-segment", "extender",
       "a container asking nvidia.com/gpu: 2 is recorded with only one device in its segment",
       "SCHED-MULTI-1", "ALLOC-MULTI-1", "ALLOC-SHAPE-2"),
    # --- node lock -------------------------------------------------------------------------------
    _f("nodelock-not-taken", "extender",
       "/bind does not take the node lock (hami.io/mutex.lock)",
       "SCHED-LOCK-1"),
    _f("nodelock-never-released", "device-plugin",
       "the node lock is not released after Allocate (nor after a failed bind)",
       "SCHED-LOCK-1", dirty=True),
    _f("nodelock-never-expires", "extender",
       "an expired node lock is never taken over",
       "SCHED-LOCK-2", "SCHED-LOCK-3", dirty=True),
    # --- device plugin ---------------------------------------------------------------------------
    _f("plugin-trusts-pod-annotations", "device-plugin",
       "Allocate serves any pod on the node whose own annotations ask for devices (no lock holder "
       "check), so forged allocation annotations reach a GPU when the webhook is bypassed",
       "ADM-FORGE-4", "ADM-FORGE-5", "ADM-FORGE-6", "ADM-FORGE-9"),
    _f("plugin-register-bad-encoding", "device-plugin",
       "the register annotation numbers GPUs from 1 instead of 0 (indexes 1..n)",
       "REG-ANNOT-2"),
    _f("plugin-capacity-short", "device-plugin",
       "the kubelet is offered one virtual device fewer per GPU than the split count registered",
       "REG-CAP-1"),
    _f("plugin-stale-handshake", "device-plugin",
       "the handshake annotation is written as a stale Requesting_ instead of Reported_",
       "REG-HANDSHAKE-1", dirty=True),
    _f("plugin-memory-limit-skew", "device-plugin",
       "Allocate answers CUDA_DEVICE_MEMORY_LIMIT_<i> 512 MiB above the assigned memory",
       "ALLOC-ENV-1", "ENF-MEM-1", "ENF-MEM-2"),
    _f("plugin-no-core-limit", "device-plugin",
       "Allocate answers CUDA_DEVICE_SM_LIMIT=0 (no compute limit) whatever gpucores says",
       "ENF-CORE-1", "ENF-CORE-2", "ENF-CORE-3", "ALLOC-SHAPE-4"),
    _f("plugin-visible-all-devices", "device-plugin",
       "Allocate answers NVIDIA_VISIBLE_DEVICES=all instead of the assigned GPUs",
       "ALLOC-ENV-1", "ISO-CROSS-1"),
    _f("plugin-visible-first-device-only", "device-plugin",
       "a multi-GPU container is shown only its first assigned GPU",
       "ALLOC-MULTI-1", "ALLOC-SHAPE-2"),
    _f("plugin-limit-first-device-only", "device-plugin",
       "Allocate sets CUDA_DEVICE_MEMORY_LIMIT_0 only: the second GPU of a container is unlimited",
       "ENF-MEM-4", "ALLOC-MULTI-1"),
    _f("plugin-no-preload-mount", "device-plugin",
       "Allocate omits the /etc/ld.so.preload mount, so the shim is never loaded",
       "ENF-MEM-1", "ENF-MEM-2"),
    _f("plugin-no-region-mount", "device-plugin",
       "Allocate omits the container's shared-region directory mount (the monitor sees nothing)",
       "MET-MON-1"),
    _f("plugin-devices-unhealthy", "device-plugin",
       "every virtual device is listed to the kubelet as Unhealthy",
       "REG-HANDSHAKE-1", "REG-CAP-1"),
    # --- enforcement shim (separate fault builds) --------------------------------------------------
    _f("shim-alloc-unlimited", "shim", "cuMemAlloc is not charged against the limit",
       "ENF-MEM-2", "ENF-MEM-CUMUL-1", kind=SHIM),
    _f("shim-managed-unlimited", "shim", "cuMemAllocManaged is not charged against the limit",
       "ENF-MEM-MANAGED-1", kind=SHIM),
    _f("shim-pitch-unlimited", "shim", "cuMemAllocPitch is not charged against the limit",
       "ENF-MEM-PITCH-1", kind=SHIM),
    _f("shim-async-unlimited", "shim",
       "stream-ordered allocations (cuMemAllocAsync, pools) are not charged against the limit",
       "ENF-MEM-ASYNC-1", kind=SHIM),
    _f("shim-vmm-unlimited", "shim", "cuMemCreate (VMM) is not charged against the limit",
       "ENF-MEM-VMM-1", kind=SHIM),
    _f("shim-per-call-limit", "shim",
       "each allocation is checked against the limit alone, not the container's cumulative use",
       "ENF-MEM-CUMUL-1", "ENF-MEM-CUMUL-2", kind=SHIM),
    _f("shim-per-process-limit", "shim",
       "the limit is checked per process instead of shared by every process of the container",
       "ENF-MEM-MULTIPROC-1", kind=SHIM),
    _f("shim-cuda-total-unclamped", "shim",
       "cuMemGetInfo / cuDeviceTotalMem report the GPU's total instead of the container's limit",
       "ENF-MEM-1", "ENF-MEM-3", kind=SHIM),
    _f("shim-nvml-total-unclamped", "shim",
       "nvmlDeviceGetMemoryInfo reports the GPU's total instead of the container's limit",
       "ENF-MEM-NVML-1", "ENF-MEM-NVML-2", kind=SHIM),
    _f("shim-limiter-off", "shim", "the compute limiter never throttles kernel launches",
       "ENF-CORE-1", "ENF-CORE-2", "ENF-CORE-3", kind=SHIM),
    _f("shim-free-not-credited", "shim",
       "cuMemFree does not give the freed memory back to the container's limit (only exit does)",
       "ENF-MEM-FREE-1", kind=SHIM),
    _f("shim-unlimited-throttled", "shim",
       "a container without a core limit (CUDA_DEVICE_SM_LIMIT unset or 0) is throttled to a default "
       "50 % share instead of running unthrottled",
       "ENF-CORE-4", kind=SHIM),
    # --- monitor ---------------------------------------------------------------------------------
    _f("monitor-memory-used-zero", "monitor", "the monitor reports 0 memory used for every container",
       "MET-MON-USED-1"),
    _f("monitor-utilization-zero", "monitor", "the monitor reports 0 SM utilisation for every container",
       "MET-MON-UTIL-1"),
    _f("monitor-utilization-is-limit", "monitor",
       "the monitor reports each container's gpucores limit as its SM utilisation (not a measure)",
       "MET-MON-UTIL-2"),
    _f("monitor-limit-halved", "monitor", "the monitor reports half of each container's memory limit",
       "MET-MON-1"),
    _f("monitor-host-memory-is-total", "monitor",
       "the monitor's hami_host_gpu_memory_used_bytes reports each GPU's total memory, not what is used",
       "MET-MON-HOST-1"),
    # --- chart -----------------------------------------------------------------------------------
    _f("chart-scheduler-config-old-api", "chart",
       "the scheduler configuration uses kubescheduler.config.k8s.io/v1beta2 on every minor >= 1.22",
       "VER-SCHEDCFG-1", "VER-SCHED-2", kind=CHART),
    # (not pods/binding: the built-in system:kube-scheduler role the chart also binds grants that)
    _f("chart-rbac-no-node-patch", "chart",
       "the scheduler's ClusterRole lacks patch on nodes, so the extender cannot take the node lock "
       "(or answer handshakes) and /bind fails",
       "SCHED-FIT-1", "SCHED-LOCK-1", kind=CHART),
    # --- other vendors (the NVIDIA self-test refuses them) ---------------------------------------
    _f("ascend-webhook-skip-scheduler-name", "webhook",
       "Ascend pods keep their scheduler name", "ADM-SCHED-1", vendor="ascend"),
)

# Ascend's faults live in their own module (vendor "ascend")
from .ascend import ASCEND_FAULTS  # noqa: E402 - needs Fault defined above
from .families import FAMILY_FAULTS  # noqa: E402 - needs Fault defined above

CATALOGUE = (*CATALOGUE, *ASCEND_FAULTS, *FAMILY_FAULTS)
BY_NAME: dict[str, Fault] = {f.name: f for f in CATALOGUE}
NAMES: frozenset[str] = frozenset(BY_NAME)


def get(name: str) -> Fault:
    return BY_NAME[name]


def for_vendor(vendor: str) -> list[Fault]:
    return [f for f in CATALOGUE if f.vendor == vendor]


def shim_defines(names: frozenset[str] | set[str] | list[str]) -> list[str]:
    """``-D`` flags (without ``-D``) of the shim faults among ``names``, sorted."""
    return sorted(BY_NAME[n].shim_define for n in names if n in BY_NAME and BY_NAME[n].kind == SHIM)
