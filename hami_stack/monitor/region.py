"""ctypes mirror of ``hami_stack/enforcer/include/vgpu_region.h`` (the per-container shared region).

tests/monitor compares every size and offset here with the C compiler's through the ``vgpu_layout``
program, so a change on either side that is not mirrored fails a test.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = 0x31504756494D4148  # "HAMIVGP1" little-endian
MAJOR = 1
MAX_DEVICES = 16
MAX_SLOTS = 1024
UUID_LEN = 96
LOCK_BYTES = 64
POLICIES = {0: "default", 1: "force", 2: "disable"}


class Slot(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_int32),
        ("hostpid", ctypes.c_int32),
        ("start_time", ctypes.c_uint64),
        ("status", ctypes.c_uint32),
        ("priority", ctypes.c_int32),
        ("last_kernel_unix_s", ctypes.c_int64),
        ("used", ctypes.c_uint64 * MAX_DEVICES),
        ("sm_util", ctypes.c_uint32 * MAX_DEVICES),
        ("launches", ctypes.c_uint64 * MAX_DEVICES),
    ]


class Region(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_uint64),
        ("major", ctypes.c_uint32),
        ("minor", ctypes.c_uint32),
        ("header_size", ctypes.c_uint32),
        ("slot_size", ctypes.c_uint32),
        ("max_devices", ctypes.c_uint32),
        ("max_slots", ctypes.c_uint32),
        ("lock", ctypes.c_uint8 * LOCK_BYTES),
        ("generation", ctypes.c_uint64),
        ("priority", ctypes.c_int32),
        ("policy", ctypes.c_uint32),
        ("utilization_switch", ctypes.c_uint32),
        ("device_count", ctypes.c_uint32),
        ("limit", ctypes.c_uint64 * MAX_DEVICES),
        ("sm_limit", ctypes.c_uint32 * MAX_DEVICES),
        ("used", ctypes.c_uint64 * MAX_DEVICES),
        ("uuid", (ctypes.c_char * UUID_LEN) * MAX_DEVICES),
        ("physical", ctypes.c_uint64 * MAX_DEVICES),
        ("slots", Slot * MAX_SLOTS),
    ]


class RegionError(ValueError):
    """The file is not a region this reader understands."""


@dataclass(frozen=True)
class ProcessUsage:
    pid: int
    hostpid: int
    used: tuple[int, ...]
    sm_util: tuple[int, ...]
    last_kernel_unix_s: int


@dataclass(frozen=True)
class DeviceUsage:
    index: int
    uuid: str
    limit: int
    sm_limit: int
    used: int
    physical: int
    sm_util: int
    last_kernel_unix_s: int


@dataclass(frozen=True)
class RegionSnapshot:
    path: Path
    minor: int
    priority: int
    policy: str
    devices: list[DeviceUsage] = field(default_factory=list)
    processes: list[ProcessUsage] = field(default_factory=list)


def _pid_alive(pid: int) -> bool:
    # the monitor runs in the host pid namespace: host pids are the ones it can check
    return pid > 0 and Path(f"/proc/{pid}").exists()


def read_region(path: str | os.PathLike[str], *, check_host_pids: bool = True) -> RegionSnapshot:
    """Snapshot one region file (read-only; the monitor never takes the shim's lock).

    Slots whose host pid is known and gone are left out, so a SIGKILLed process stops counting at
    once even before a surviving process of its container reclaims the slot."""
    p = Path(path)
    with open(p, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 16:
            raise RegionError(f"{p}: too short for a region header ({size} bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            head = bytes(mm[:16])
            magic = int.from_bytes(head[:8], "little")
            major = int.from_bytes(head[8:12], "little")
            if magic != MAGIC:
                raise RegionError(f"{p}: unknown magic {magic:#x}")
            if major != MAJOR:
                raise RegionError(f"{p}: layout major {major}, this reader understands {MAJOR}")
            if size < ctypes.sizeof(Region):
                raise RegionError(f"{p}: {size} bytes, layout needs {ctypes.sizeof(Region)}")
            reg = Region.from_buffer_copy(mm[: ctypes.sizeof(Region)])
    procs: list[ProcessUsage] = []
    for s in reg.slots:
        if s.pid == 0:
            continue
        if check_host_pids and s.hostpid and not _pid_alive(s.hostpid):
            continue
        procs.append(ProcessUsage(s.pid, s.hostpid, tuple(s.used), tuple(s.sm_util), s.last_kernel_unix_s))
    count = max(reg.device_count, *(i + 1 for i in range(MAX_DEVICES) if reg.limit[i] or reg.used[i]), 0)
    devices = []
    for i in range(min(count, MAX_DEVICES)):
        devices.append(DeviceUsage(
            index=i,
            uuid=reg.uuid[i].value.decode(errors="replace"),
            limit=reg.limit[i],
            sm_limit=reg.sm_limit[i],
            used=sum(pr.used[i] for pr in procs),
            physical=reg.physical[i],
            sm_util=min(100, sum(pr.sm_util[i] for pr in procs)),
            last_kernel_unix_s=max((pr.last_kernel_unix_s for pr in procs), default=0),
        ))
    policy = POLICIES.get(reg.policy, str(reg.policy))
    return RegionSnapshot(p, reg.minor, reg.priority, policy, devices, procs)
