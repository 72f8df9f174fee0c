"""Per-node emulated GPU state: inventory file, shared-memory region, fault injection.

A state directory holds ``gpus.conf`` (static inventory, parsed by the C libraries) and ``shared.bin``
(live state, mmap'ed by every process). The ctypes structures below mirror ``src/emu_state.h``; a test
compares them with the C compiler's sizeof/offsetof (``emu_layout``), so the two cannot drift silently.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct as _struct
import time
import uuid as uuidlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..procutil import pid_alive

MAGIC = 0x31555047494D4148  # "HAMIGPU1" little-endian
LAYOUT_VERSION = 2
MAX_GPUS = 16
MAX_PROCS = 64
MAX_XIDS = 32
MAX_INTERVALS = 16384
MUTEX_BYTES = 64

HEALTHY, UNHEALTHY, LOST = 0, 1, 2
HEALTH_NAMES = {HEALTHY: "healthy", UNHEALTHY: "unhealthy", LOST: "lost"}

CONF_NAME = "gpus.conf"
SHARED_NAME = "shared.bin"

NVML_ERROR_UNKNOWN = 999
CUDA_ERROR_UNKNOWN = 999
XID_FALLEN_OFF_BUS = 79

# The CUDA 13.0 GA driver pair (CUDA 13.0 release notes, minimum driver 580.65.06): the oldest driver a
# libcudart 13 accepts; an inventory may pin any other pair (driver_version / cuda_driver_version).
DEFAULT_DRIVER_VERSION = "580.65.06"
DEFAULT_CUDA_DRIVER_VERSION = 13000
_UUID_NAMESPACE = uuidlib.UUID("6f0c5a52-1e0b-4c53-9c3a-48414d494750")


# ---- ctypes mirror of src/emu_state.h ----


class ProcEntry(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_int32), ("contexts", ctypes.c_uint32), ("used_bytes", ctypes.c_uint64)]


class XidEntry(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint64), ("xid", ctypes.c_uint64), ("time_ns", ctypes.c_int64)]


class IntervalEntry(ctypes.Structure):
    _fields_ = [
        ("start_ns", ctypes.c_int64),
        ("end_ns", ctypes.c_int64),
        ("pid", ctypes.c_int32),
        ("reserved", ctypes.c_uint32),
    ]


class GpuShared(ctypes.Structure):
    _fields_ = [
        ("used_bytes", ctypes.c_uint64),
        ("health", ctypes.c_uint32),
        ("mem_query_unsupported", ctypes.c_uint32),
        ("nvml_fail_count", ctypes.c_uint32),
        ("nvml_fail_code", ctypes.c_int32),
        ("cuda_fail_count", ctypes.c_uint32),
        ("cuda_fail_code", ctypes.c_int32),
        ("xid_seq", ctypes.c_uint64),
        ("kernel_launches", ctypes.c_uint64),
        ("interval_next", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint32),
        ("xids", XidEntry * MAX_XIDS),
        ("busy", IntervalEntry * MAX_INTERVALS),
        ("procs", ProcEntry * MAX_PROCS),
    ]


class LockSlot(ctypes.Union):
    _fields_ = [("bytes", ctypes.c_ubyte * MUTEX_BYTES), ("align", ctypes.c_uint64)]


class SharedRegion(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_uint64),
        ("layout_version", ctypes.c_uint32),
        ("gpu_count", ctypes.c_uint32),
        ("header_size", ctypes.c_uint32),
        ("gpu_struct_size", ctypes.c_uint32),
        ("generation", ctypes.c_uint64),
        ("lock", LockSlot),
        ("gpus", GpuShared * MAX_GPUS),
    ]


LAYOUT_STRUCTS: dict[str, type[ctypes.Structure]] = {
    "hami_emu_proc_t": ProcEntry,
    "hami_emu_xid_t": XidEntry,
    "hami_emu_interval_t": IntervalEntry,
    "hami_emu_gpu_t": GpuShared,
    "hami_emu_shared_t": SharedRegion,
}


def ctypes_layout() -> dict[str, Any]:
    """The Python side's view of the layout, in the same shape emu_layout prints."""
    out: dict[str, Any] = {
        "constants": {
            "magic": MAGIC,
            "layout_version": LAYOUT_VERSION,
            "max_gpus": MAX_GPUS,
            "max_procs": MAX_PROCS,
            "max_xids": MAX_XIDS,
            "max_intervals": MAX_INTERVALS,
        }
    }
    for cname, struct in LAYOUT_STRUCTS.items():
        fields = {}
        for name, _ in struct._fields_:
            desc = getattr(struct, name)
            fields[name] = [desc.offset, desc.size]
        out[cname] = {"size": ctypes.sizeof(struct), "fields": fields}
    return out


# ---- the process-shared robust mutex, driven through libc ----

_libc = ctypes.CDLL(None, use_errno=True)
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1


def _init_mutex(addr: int) -> None:
    attr = ctypes.create_string_buffer(64)  # pthread_mutexattr_t is 4-8 bytes on glibc
    for call in (
        lambda: _libc.pthread_mutexattr_init(attr),
        lambda: _libc.pthread_mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED),
        lambda: _libc.pthread_mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST),
        lambda: _libc.pthread_mutex_init(ctypes.c_void_p(addr), attr),
    ):
        rc = call()
        if rc:
            raise OSError(rc, f"pthread mutex setup failed: {os.strerror(rc)}")
    _libc.pthread_mutexattr_destroy(attr)


# ---- model catalog ----


@dataclass(frozen=True)
class GpuModel:
    key: str
    name: str
    memory_mib: int
    compute_capability: str
    sm_count: int
    pci_device_id: int
    pci_subsystem_id: int
    nvlink_count: int
    mig_capable: bool
    max_sm_clock_mhz: int
    max_mem_clock_mhz: int
    power_limit_mw: int
    idle_power_mw: int
    mem_bus_width: int
    l2_cache_bytes: int
    max_threads_per_sm: int = 2048


MODELS: dict[str, GpuModel] = {
    m.key: m
    for m in (
        GpuModel(
            "A100-SXM4-80GB",
            "NVIDIA A100-SXM4-80GB",
            81920,
            "8.0",
            108,
            0x20B210DE,
            0x147F10DE,
            12,
            True,
            1410,
            1593,
            400000,
            60000,
            5120,
            41943040,
        ),
        GpuModel(
            "A100-SXM4-40GB",
            "NVIDIA A100-SXM4-40GB",
            40960,
            "8.0",
            108,
            0x20B010DE,
            0x134F10DE,
            12,
            True,
            1410,
            1215,
            400000,
            55000,
            5120,
            41943040,
        ),
        GpuModel(
            "A100-PCIE-40GB",
            "NVIDIA A100-PCIE-40GB",
            40960,
            "8.0",
            108,
            0x20F110DE,
            0x145F10DE,
            0,
            True,
            1410,
            1215,
            250000,
            35000,
            5120,
            41943040,
        ),
        GpuModel(
            "H100-SXM5-80GB",
            "NVIDIA H100 80GB HBM3",
            81559,
            "9.0",
            132,
            0x233010DE,
            0x16C110DE,
            18,
            True,
            1980,
            2619,
            700000,
            70000,
            5120,
            52428800,
        ),
        GpuModel(
            "H200",
            "NVIDIA H200",
            143771,
            "9.0",
            132,
            0x233510DE,
            0x18A510DE,
            18,
            True,
            1980,
            3201,
            700000,
            75000,
            6144,
            52428800,
        ),
        GpuModel(
            "Tesla T4",
            "Tesla T4",
            15360,
            "7.5",
            40,
            0x1EB810DE,
            0x12A210DE,
            0,
            False,
            1590,
            5001,
            70000,
            10000,
            256,
            4194304,
            1024,
        ),
        GpuModel(
            "L4",
            "NVIDIA L4",
            23034,
            "8.9",
            58,
            0x27B810DE,
            0x16CA10DE,
            0,
            False,
            2040,
            6251,
            72000,
            16000,
            192,
            50331648,
            1536,
        ),
        GpuModel(
            "V100-SXM2-32GB",
            "Tesla V100-SXM2-32GB",
            32768,
            "7.0",
            80,
            0x1DB510DE,
            0x124910DE,
            6,
            False,
            1530,
            877,
            300000,
            40000,
            4096,
            6291456,
        ),
    )
}
# accept the forms people type: "T4", "NVIDIA H200", "a100-sxm4-80gb"
_ALIASES = {"T4": "Tesla T4", "TESLA-T4": "Tesla T4", "H100": "H100-SXM5-80GB", "A100": "A100-SXM4-80GB"}


def lookup_model(key: str) -> GpuModel:
    k = key.strip()
    if k.upper().startswith("NVIDIA "):
        k = k[7:]
    k = _ALIASES.get(k.upper(), k)
    for mk, model in MODELS.items():
        if mk.upper() == k.upper() or model.name.upper() == key.strip().upper():
            return model
    raise KeyError(f"unknown GPU model {key!r}; known: {', '.join(MODELS)}")


# Device memory one CUDA context occupies on each model (MiB): what nvidia-smi lists for a process that
# has only initialised CUDA and created its primary context (driver-side module images, per-SM stacks,
# printf FIFO and device heap; CUDA 12+ with lazy module loading). These are typical figures seen on
# such cards, not NVIDIA specifications; they grow with the SM count. An inventory overrides them with
# `context_mib` (0 turns context memory off).
CONTEXT_MEMORY_MIB: dict[str, int] = {
    "A100-SXM4-80GB": 420,
    "A100-SXM4-40GB": 420,
    "A100-PCIE-40GB": 420,
    "H100-SXM5-80GB": 520,
    "H200": 520,
    "Tesla T4": 260,
    "L4": 300,
    "V100-SXM2-32GB": 310,
}
DEFAULT_CONTEXT_MIB = 400


def _context_mib(group: Mapping[str, Any], model: GpuModel) -> int:
    mib = int(group.get("context_mib", CONTEXT_MEMORY_MIB.get(model.key, DEFAULT_CONTEXT_MIB)))
    if mib < 0:
        raise ValueError("context_mib must be >= 0")
    return mib


# ---- inventory ----

# PCI buses of a DGX-style 8-GPU board; larger nodes continue past them
_BUSES = [0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    model: str
    memory_bytes: int
    pci_bus_id: str
    numa_node: int
    compute_capability: str
    sm_count: int
    serial: str
    minor_number: int
    pci_device_id: int
    pci_subsystem_id: int
    pci_switch: int
    nvlink_count: int
    mig_capable: bool
    mig_mode: int = 0
    reserved_bytes: int = 0
    cpu_affinity: str = ""
    max_sm_clock_mhz: int = 1410
    max_mem_clock_mhz: int = 1593
    power_limit_mw: int = 300000
    idle_power_mw: int = 60000
    mem_bus_width: int = 5120
    l2_cache_bytes: int = 41943040
    max_threads_per_sm: int = 2048
    context_bytes: int = 0

    @property
    def memory_mib(self) -> int:
        return self.memory_bytes // (1 << 20)


@dataclass(frozen=True)
class NodeInventory:
    driver_version: str
    cuda_driver_version: int
    nvml_version: str
    gpus: tuple[GpuInfo, ...] = field(default_factory=tuple)


def _groups(
    spec: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if isinstance(spec, Mapping):
        if "gpus" in spec:
            node_keys = {k: v for k, v in spec.items() if k != "gpus"}
            return node_keys, [dict(g) for g in spec["gpus"]]
        return dict(spec), [dict(spec)]
    return {}, [dict(g) for g in spec]


def build_inventory(
    spec: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, node_name: str = "node"
) -> NodeInventory:
    """Turn a spec like ``{model: A100-SXM4-80GB, count: 4, memory_mib: 81920, numa: [0,0,1,1]}``
    (or ``{gpus: [group, ...]}`` / a list of groups for mixed nodes) into a full inventory.
    UUIDs and serials derive from ``node_name`` so the same node always gets the same cards."""
    node_keys, groups = _groups(spec)
    driver = str(node_keys.get("driver_version", groups[0].get("driver_version", DEFAULT_DRIVER_VERSION)))
    cuda = int(
        node_keys.get(
            "cuda_driver_version", groups[0].get("cuda_driver_version", DEFAULT_CUDA_DRIVER_VERSION)
        )
    )
    major = cuda // 1000
    nvml = str(node_keys.get("nvml_version", f"{major}.{driver}"))
    gpus: list[GpuInfo] = []
    for group in groups:
        model = lookup_model(str(group.get("model", "A100-SXM4-80GB")))
        count = int(group.get("count", 1))
        if count < 0:
            raise ValueError("count must be >= 0")
        numa = list(group.get("numa", []))
        cpus_per_numa = int(group.get("cpus_per_numa", 32))
        memory_mib = int(group.get("memory_mib", model.memory_mib))
        for i in range(count):
            idx = len(gpus)
            if idx >= MAX_GPUS:
                raise ValueError(f"at most {MAX_GPUS} GPUs per node")
            node_numa = int(numa[i]) if i < len(numa) else (0 if count < 4 else (2 * i) // count)
            uuids = group.get("uuids") or []
            gid = (
                str(uuids[i])
                if i < len(uuids)
                else f"GPU-{uuidlib.uuid5(_UUID_NAMESPACE, f'{node_name}/{idx}')}"
            )
            if not gid.startswith("GPU-") or len(gid) != 40:
                raise ValueError(f"bad GPU UUID {gid!r}: want GPU- and the 36-character form")
            bus = _BUSES[idx] if idx < len(_BUSES) else 0x07 + 8 * idx
            digest = uuidlib.uuid5(_UUID_NAMESPACE, f"serial/{node_name}/{idx}").int
            first_cpu = node_numa * cpus_per_numa
            gpus.append(
                GpuInfo(
                    index=idx,
                    uuid=gid,
                    name=model.name,
                    model=model.key,
                    memory_bytes=memory_mib << 20,
                    pci_bus_id=f"00000000:{bus:02X}:00.0",
                    numa_node=node_numa,
                    compute_capability=model.compute_capability,
                    sm_count=model.sm_count,
                    serial=f"1{digest % 10**12:012d}",
                    minor_number=idx,
                    pci_device_id=model.pci_device_id,
                    pci_subsystem_id=model.pci_subsystem_id,
                    pci_switch=idx // 2,
                    nvlink_count=model.nvlink_count if group.get("nvlink", True) else 0,
                    mig_capable=model.mig_capable,
                    reserved_bytes=int(group.get("reserved_mib", 0)) << 20,
                    cpu_affinity=f"{first_cpu}-{first_cpu + cpus_per_numa - 1}",
                    max_sm_clock_mhz=model.max_sm_clock_mhz,
                    max_mem_clock_mhz=model.max_mem_clock_mhz,
                    power_limit_mw=model.power_limit_mw,
                    idle_power_mw=model.idle_power_mw,
                    mem_bus_width=model.mem_bus_width,
                    l2_cache_bytes=model.l2_cache_bytes,
                    max_threads_per_sm=model.max_threads_per_sm,
                    context_bytes=_context_mib(group, model) << 20,
                )
            )
    return NodeInventory(driver, cuda, nvml, tuple(gpus))


_CONF_KEYS = (
    "index",
    "uuid",
    "name",
    "model",
    "memory_bytes",
    "reserved_bytes",
    "pci_bus_id",
    "pci_device_id",
    "pci_subsystem_id",
    "numa_node",
    "compute_capability",
    "sm_count",
    "serial",
    "minor_number",
    "mig_mode",
    "mig_capable",
    "pci_switch",
    "nvlink_count",
    "cpu_affinity",
    "max_sm_clock_mhz",
    "max_mem_clock_mhz",
    "power_limit_mw",
    "idle_power_mw",
    "mem_bus_width",
    "l2_cache_bytes",
    "max_threads_per_sm",
    "context_bytes",
)


def render_conf(inv: NodeInventory) -> str:
    lines = [
        "# emulated NVIDIA node inventory, read by the emulated libnvidia-ml.so.1 / libcuda.so.1",
        f"driver_version={inv.driver_version}",
        f"cuda_driver_version={inv.cuda_driver_version}",
        f"nvml_version={inv.nvml_version}",
        f"gpu_count={len(inv.gpus)}",
    ]
    for g in inv.gpus:
        lines.append(f"[gpu.{g.index}]")
        d = asdict(g)
        for k in _CONF_KEYS:
            v = d[k]
            if isinstance(v, bool):
                v = int(v)
            elif k in ("pci_device_id", "pci_subsystem_id"):
                v = f"0x{v:08X}"
            lines.append(f"{k}={v}")
    return "\n".join(lines) + "\n"


def parse_conf(text: str) -> NodeInventory:
    top: dict[str, str] = {}
    sections: list[dict[str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[gpu.") and line.endswith("]"):
            sections.append({})
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"malformed line {raw!r}")
        (sections[-1] if sections else top)[key.strip()] = value.strip()
    ints = {f.name for f in GpuInfo.__dataclass_fields__.values() if f.type in ("int",)}
    gpus = []
    for s in sections:
        kw: dict[str, Any] = {}
        for k in _CONF_KEYS:
            if k not in s:
                continue
            v: Any = s[k]
            if k == "mig_capable":
                v = v not in ("0", "")
            elif k in ints:
                v = int(v, 0)
            kw[k] = v
        kw.setdefault("model", kw.get("name", ""))
        gpus.append(GpuInfo(**kw))
    return NodeInventory(
        top["driver_version"], int(top["cuda_driver_version"]), top.get("nvml_version", ""), tuple(gpus)
    )


# ---- live state ----


@dataclass(frozen=True)
class ProcessUsage:
    pid: int
    used_bytes: int
    contexts: int


@dataclass(frozen=True)
class GpuUsage:
    index: int
    used_bytes: int
    utilization_gpu: int
    health: str
    processes: tuple[ProcessUsage, ...]
    xids: tuple[int, ...]
    kernel_launches: int
    memory_query_unsupported: bool
    nvml_fail_count: int
    cuda_fail_count: int


def utilization(gpu: GpuShared, now_ns: int, window_ns: int = 1_000_000_000) -> int:
    """Percent of the last window covered by kernel intervals (same rule as the C side)."""
    lo = now_ns - window_ns
    raw = bytes(gpu.busy)  # one copy, then unpack: attribute access per ctypes entry is slow
    spans = sorted(
        (max(start, lo), min(end, now_ns))
        for start, end, _pid, _r in _struct.iter_unpack("<qqiI", raw)
        if end > start and min(end, now_ns) > max(start, lo)
    )
    covered, cs, ce = 0, 0, 0
    for i, (s, e) in enumerate(spans):
        if i == 0 or s > ce:
            covered += ce - cs
            cs, ce = s, e
        else:
            ce = max(ce, e)
    covered += ce - cs
    return min(100, (covered * 100 + window_ns // 2) // window_ns)


class DeviceState:
    """An open state directory: the parsed inventory plus a writable mapping of shared.bin."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir)
        self.inventory = parse_conf((self.path / CONF_NAME).read_text())
        fd = os.open(self.path / SHARED_NAME, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < ctypes.sizeof(SharedRegion):
                raise ValueError(
                    f"{self.path / SHARED_NAME}: {size} bytes, layout needs {ctypes.sizeof(SharedRegion)}"
                )
            self._mm = mmap.mmap(fd, ctypes.sizeof(SharedRegion), mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._region: SharedRegion | None = SharedRegion.from_buffer(self._mm)
        ok = (
            self._region.magic == MAGIC
            and self._region.layout_version == LAYOUT_VERSION
            and self._region.header_size == ctypes.sizeof(SharedRegion)
        )
        if not ok:
            self.close()
            raise ValueError(f"{self.path}: shared region has another layout (magic/version mismatch)")

    # context management
    def close(self) -> None:
        self._region = None  # drop the buffer export before unmapping
        if not self._mm.closed:
            self._mm.close()

    def __enter__(self) -> DeviceState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def gpus(self) -> tuple[GpuInfo, ...]:
        return self.inventory.gpus

    @property
    def region(self) -> SharedRegion:
        if self._region is None:
            raise ValueError("device state is closed")
        return self._region

    @contextmanager
    def locked(self) -> Iterator[SharedRegion]:
        region = self.region
        addr = ctypes.c_void_p(ctypes.addressof(region.lock))
        rc = _libc.pthread_mutex_lock(addr)
        if rc == errno.EOWNERDEAD:
            _libc.pthread_mutex_consistent(addr)  # a holder died; the data is simple enough to trust
        elif rc:
            raise OSError(rc, os.strerror(rc))
        try:
            yield region
        finally:
            region.generation += 1
            _libc.pthread_mutex_unlock(addr)

    def _gpu(self, region: SharedRegion, index: int) -> GpuShared:
        if not 0 <= index < len(self.gpus):
            raise IndexError(f"no GPU {index} on this node ({len(self.gpus)} GPUs)")
        return region.gpus[index]

    # reading
    def usage(self, index: int) -> GpuUsage:
        with self.locked() as region:
            g = self._gpu(region, index)
            for p in g.procs:
                if p.pid and not pid_alive(p.pid):
                    g.used_bytes = max(0, g.used_bytes - p.used_bytes)
                    ctypes.memset(ctypes.addressof(p), 0, ctypes.sizeof(p))
            procs = tuple(ProcessUsage(p.pid, p.used_bytes, p.contexts) for p in g.procs if p.pid)
            first = max(1, g.xid_seq - MAX_XIDS + 1)
            xids = tuple(g.xids[(s - 1) % MAX_XIDS].xid for s in range(first, g.xid_seq + 1))
            return GpuUsage(
                index=index,
                used_bytes=g.used_bytes,
                utilization_gpu=utilization(g, time.monotonic_ns()),
                health=HEALTH_NAMES.get(g.health, str(g.health)),
                processes=procs,
                xids=xids,
                kernel_launches=g.kernel_launches,
                memory_query_unsupported=bool(g.mem_query_unsupported),
                nvml_fail_count=g.nvml_fail_count,
                cuda_fail_count=g.cuda_fail_count,
            )

    def usages(self) -> list[GpuUsage]:
        return [self.usage(i) for i in range(len(self.gpus))]

    # fault injection
    def set_health(self, index: int, health: str) -> None:
        value = {v: k for k, v in HEALTH_NAMES.items()}.get(health)
        if value is None:
            raise ValueError(f"health must be one of {sorted(HEALTH_NAMES.values())}")
        with self.locked() as region:
            self._gpu(region, index).health = value

    def raise_xid(self, index: int, xid: int, *, lose_gpu: bool | None = None) -> None:
        """Queue an Xid event for NVML event sets. The GPU turns unhealthy; Xid 79 (fallen off the bus)
        also makes it lost unless ``lose_gpu`` says otherwise."""
        if xid <= 0:
            raise ValueError("xid must be positive")
        lose = xid == XID_FALLEN_OFF_BUS if lose_gpu is None else lose_gpu
        with self.locked() as region:
            g = self._gpu(region, index)
            g.xid_seq += 1
            slot = g.xids[(g.xid_seq - 1) % MAX_XIDS]
            slot.seq, slot.xid, slot.time_ns = g.xid_seq, xid, time.monotonic_ns()
            g.health = LOST if lose else max(g.health, UNHEALTHY)

    def fail_next(
        self, index: int, count: int, *, nvml_code: int | None = None, cuda_code: int | None = None
    ) -> None:
        """Make the next ``count`` NVML and/or CUDA calls on this GPU fail with the given codes
        (both libraries with code 999 / UNKNOWN when neither code is given)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        if nvml_code is None and cuda_code is None:
            nvml_code, cuda_code = NVML_ERROR_UNKNOWN, CUDA_ERROR_UNKNOWN
        with self.locked() as region:
            g = self._gpu(region, index)
            if nvml_code is not None:
                g.nvml_fail_count, g.nvml_fail_code = count, nvml_code
            if cuda_code is not None:
                g.cuda_fail_count, g.cuda_fail_code = count, cuda_code

    def set_memory_query_supported(self, index: int, supported: bool) -> None:
        with self.locked() as region:
            self._gpu(region, index).mem_query_unsupported = 0 if supported else 1

    def clear_faults(self, index: int) -> None:
        """Back to a healthy card: health, armed failures and memory-query support (Xid history stays)."""
        with self.locked() as region:
            g = self._gpu(region, index)
            g.health = HEALTHY
            g.nvml_fail_count = g.cuda_fail_count = 0
            g.mem_query_unsupported = 0

    def describe(self) -> dict[str, Any]:
        inv = self.inventory
        return {
            "state_dir": str(self.path),
            "driver_version": inv.driver_version,
            "cuda_driver_version": inv.cuda_driver_version,
            "nvml_version": inv.nvml_version,
            "gpus": [
                {
                    **asdict(g),
                    **{f"live_{k}": v for k, v in asdict(self.usage(g.index)).items() if k != "index"},
                }
                for g in inv.gpus
            ],
        }


def create_state(
    state_dir: str | os.PathLike[str],
    spec: Mapping[str, Any] | Sequence[Mapping[str, Any]] | NodeInventory,
    *,
    node_name: str = "node",
) -> DeviceState:
    """Write gpus.conf and a fresh shared.bin into ``state_dir`` and return it opened. Both files are
    replaced by rename, so processes still mapping an older region keep a consistent (stale) view."""
    inv = spec if isinstance(spec, NodeInventory) else build_inventory(spec, node_name=node_name)
    path = Path(state_dir)
    path.mkdir(parents=True, exist_ok=True)
    tmp_conf = path / f".{CONF_NAME}.{os.getpid()}"
    tmp_conf.write_text(render_conf(inv))
    tmp_shared = path / f".{SHARED_NAME}.{os.getpid()}"
    size = ctypes.sizeof(SharedRegion)
    with open(tmp_shared, "wb") as f:
        f.truncate(size)
    fd = os.open(tmp_shared, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED)
    finally:
        os.close(fd)
    region = SharedRegion.from_buffer(mm)
    region.layout_version = LAYOUT_VERSION
    region.gpu_count = len(inv.gpus)
    region.header_size = size
    region.gpu_struct_size = ctypes.sizeof(GpuShared)
    _init_mutex(ctypes.addressof(region.lock))
    region.magic = MAGIC  # last: a reader never sees a valid magic over a half-built header
    del region
    mm.flush()
    mm.close()
    os.replace(tmp_shared, path / SHARED_NAME)
    os.replace(tmp_conf, path / CONF_NAME)
    return DeviceState(path)


def with_overrides(inv: NodeInventory, **gpu_changes: Any) -> NodeInventory:
    """Copy of an inventory with the same field changes applied to every GPU (tests use it)."""
    return replace(inv, gpus=tuple(replace(g, **gpu_changes) for g in inv.gpus))
