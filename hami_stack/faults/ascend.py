"""Deliberate Ascend faults (vendor ``ascend``), joined to the catalogue by :mod:`.catalogue`.

Names start with the prefix of the container they reach (``webhook-`` for the scheduler pod,
``plugin-`` for the device plugins), so the chart's per-container filter delivers them. Each names the
Ascend rules (``conformance/profiles/ascend.yaml``) of which one must fail.
"""

from __future__ import annotations

from .catalogue import Fault


def _a(name: str, component: str, description: str, *rules: str, dirty: bool = False) -> Fault:
    return Fault(name, component, description, tuple(rules), vendor="ascend", dirty=dirty)


ASCEND_FAULTS: tuple[Fault, ...] = (
    _a("webhook-ascend-no-template-rounding", "webhook",
       "hard-mode Ascend memory requests are admitted unrounded (no vNPU template is chosen)",
       "ASC-ADM-TEMPLATE-1"),
    _a("webhook-ascend-910c-odd-allowed", "webhook",
       "odd Ascend910C counts are admitted instead of refused (half a module)",
       "ASC-ADM-910C-2"),
    _a("plugin-ascend-no-vnpu-spec", "device-plugin",
       "Allocate omits ASCEND_VNPU_SPECS, so a template pod gets the whole NPU",
       "ASC-ALLOC-TEMPLATE-1"),
    _a("plugin-ascend-visible-all", "device-plugin",
       "Allocate lists every NPU of the node in ASCEND_VISIBLE_DEVICES",
       "ASC-ISO-1"),
    _a("plugin-ascend-no-limiter", "device-plugin",
       "hami-core mode: no NPU limiter is installed (empty ld.so.preload): NPU_MEM_QUOTA is not enforced",
       "ASC-ENF-MEM-1", "ASC-ENF-MEM-2", "ASC-ENF-MEM-3"),
    _a("plugin-ascend-no-mem-quota", "device-plugin",
       "hami-core Allocate omits NPU_MEM_QUOTA, so the limiter has no quota and passes every allocation",
       "ASC-ALLOC-CORE-1", "ASC-ENF-MEM-1", "ASC-ENF-MEM-2", "ASC-ENF-MEM-3"),
    _a("plugin-ascend-devices-unhealthy", "device-plugin",
       "the Ascend plugin reports every NPU unhealthy (kubelet and register annotation)",
       "ASC-REG-1", "ASC-SCHED-FIT-1", dirty=True),
)
