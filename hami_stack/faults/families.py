"""Deliberate faults of the data-driven families (one or more per family), joined to the catalogue
by :mod:`.catalogue`. Names start with the container they reach (``webhook-``, ``plugin-``); each
names the family rules (``conformance/profiles/<vendor>.yaml``) of which one must fail.
"""

from __future__ import annotations

from .catalogue import Fault

FAMILY_FAULTS: tuple[Fault, ...] = (
    Fault(
        "webhook-hygon-zero-admitted",
        "webhook",
        "a pod asking hygon.com/dcunum: 0 is admitted instead of refused",
        ("DCU-ADM-1",),
        vendor="hygon",
    ),
    Fault(
        "plugin-hygon-register-half-memory",
        "device-plugin",
        "the DCU plugin registers half of each card's memory in hami.io/node-dcu-register",
        ("DCU-REG-1",),
        vendor="hygon",
        dirty=True,
    ),
    Fault(
        "plugin-cambricon-capacity-half-memory",
        "device-plugin",
        "the MLU plugin advertises half of each card's cambricon.com/mlu.smlu.vmemory capacity",
        ("MLU-REG-1",),
        vendor="cambricon",
        dirty=True,
    ),
    Fault(
        "webhook-iluvatar-no-multi-core",
        "webhook",
        "a pod asking several Iluvatar devices keeps its core limit instead of count x 100 (shares cards)",
        ("ILUVATAR-ADM-REWRITE-1",),
        vendor="iluvatar",
    ),
    Fault(
        "webhook-mthreads-any-memory",
        "webhook",
        "a pod asking an sGPU memory value Moore Threads cannot slice (3 units) is admitted",
        ("MTHREADS-ADM-2",),
        vendor="mthreads",
    ),
    Fault(
        "scheduler-metax-ignores-link-zone",
        "extender",
        "a pod asking several whole MetaX sGPUs is given cards of different MetaLink zones",
        ("METAX-SCHED-TOPO-1",),
        vendor="metax",
    ),
    Fault(
        "scheduler-metax-ignores-app-class",
        "extender",
        "MetaX sGPU app classes are ignored: an offline pod joins a device that runs an online pod",
        ("METAX-SGPU-APPCLASS-1",),
        vendor="metax",
    ),
    Fault(
        "webhook-kunlun-no-memory-rounding",
        "webhook",
        "a vXPU pod keeps the memory it asked instead of the 24576/49152/98304 MiB partition",
        ("KUNLUNXIN-ADM-REWRITE-1",),
        vendor="kunlunxin",
    ),
    Fault(
        "plugin-vastai-register-half-memory",
        "device-plugin",
        "the Vastai plugin registers half of each card's memory in hami.io/node-va-register",
        ("VASTAI-REG-1",),
        vendor="vastai",
        dirty=True,
    ),
    Fault(
        "plugin-biren-register-half-memory",
        "device-plugin",
        "the Biren plugin registers half of each card's memory in hami.io/node-biren-register",
        ("BIREN-REG-1",),
        vendor="biren",
        dirty=True,
    ),
    Fault(
        "scheduler-enflame-gcu-shared",
        "extender",
        "a GCU already given to a pod is handed to another pod (whole GCUs are never shared)",
        ("ENFLAME-GCU-SCHED-EXCL-1",),
        vendor="enflame",
    ),
    Fault(
        "scheduler-enflame-drs-overcommit",
        "extender",
        "Enflame DRS slices already handed out are given again (a full card takes another instance)",
        ("ENFLAME-DRS-SCHED-EXHAUST-1",),
        vendor="enflame",
    ),
    Fault(
        "webhook-neuron-cores-not-claimed",
        "webhook",
        "a pod asking aws.amazon.com/neuroncore is not routed to the HAMi scheduler",
        ("AWSNEURON-CORE-ADM-SCHED-1",),
        vendor="awsneuron",
    ),
    Fault(
        "webhook-amd-cores-unchecked",
        "webhook",
        "a pod asking amd.com/gpucores above 100 % is admitted instead of refused",
        ("AMD-ADM-1",),
        vendor="amd",
    ),
)

# one per family the generic plugin serves beyond Hygon and Cambricon: Allocate's visibility variable
# names the next device of the node (hami_stack/device_plugin/families/wrongvisible.py); name ->
# (vendor, the rule prefix of its ALLOC case)
WRONG_VISIBLE: dict[str, tuple[str, str]] = {
    "plugin-iluvatar-wrong-visible": ("iluvatar", "ILUVATAR"),
    "plugin-mthreads-wrong-visible": ("mthreads", "MTHREADS"),
    "plugin-metax-wrong-visible": ("metax", "METAX"),
    "plugin-kunlunxin-wrong-visible": ("kunlunxin", "KUNLUNXIN"),
    "plugin-enflame-wrong-visible": ("enflame", "ENFLAME-GCU"),
    "plugin-awsneuron-wrong-visible": ("awsneuron", "AWSNEURON"),
    "plugin-amd-wrong-visible": ("amd", "AMD"),
    "plugin-vastai-wrong-visible": ("vastai", "VASTAI"),
    "plugin-biren-wrong-visible": ("biren", "BIREN"),
}
FAMILY_FAULTS += tuple(
    Fault(
        name,
        "device-plugin",
        f"the {vendor} plugin's Allocate names the next device of the node in the container's visibility "
        "variable, not the one the scheduler assigned",
        (f"{rule}-ALLOC-1",),
        vendor=vendor,
    )
    for name, (vendor, rule) in WRONG_VISIBLE.items()
)
