"""Keep the testbed's component processes alive, and leave none behind when it stops.

Two duties, both owned by the ``testbed up`` process:

* **Restart** (:class:`Backoff`): a component that exits while the testbed runs is started again after
  an exponential back-off (0.5 s doubling to a 10 s cap, back to 0.5 s once it has stayed up for 30 s),
  as a kubelet restarts a crashing static pod. Every restart is logged and counted; ``testbed status``
  shows the counts.
* **Containment** (:class:`Containment`): every process the testbed starts — components and the pods'
  processes, which run in process groups of their own — must end with it. Three nets, widest first:
  a cgroup v2 of its own when the host lets us make one (root with a writable cgroup2 mount; a
  ``cgroup.kill`` ends the whole tree at once), the ``testbed up`` process as *child subreaper* (a pod
  process whose node agent died is re-parented to it rather than to init, so it is still a
  descendant), and the ``TESTBED_INSTANCE`` marker every component carries in its environment (found by
  scanning ``/proc`` when the ``up`` process itself was killed).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .procutil import pid_alive

MARKER_ENV = "TESTBED_INSTANCE"
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Backoff:
    """Exponential restart delay, capped; a run longer than ``reset_after`` seconds starts it over."""

    first: float = 0.5
    cap: float = 10.0
    reset_after: float = 30.0
    current: float = 0.0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after or self.current == 0.0:
            self.current = self.first
        else:
            self.current = min(self.cap, self.current * 2)
        return self.current


def instance_id(data_dir: Path) -> str:
    """The marker value of the testbed that runs from this data directory."""
    return str(Path(data_dir).resolve())


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False when not possible."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry)] = int(fields[1])
    return out


def descendants(root: int | list[int]) -> list[int]:
    """Every live descendant of ``root`` (or of each of several roots), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = [c for r in ([root] if isinstance(root, int) else root) for c in children.get(r, [])]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def marked(instance: str) -> list[int]:
    """Processes whose environment carries this testbed's marker (ours: same user or root)."""
    needle = f"{MARKER_ENV}={instance}".encode() + b"\0"
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"\0" + needle in b"\0" + env + b"\0":
            out.append(int(entry))
    return out


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def reap_orphans(keep: set[int]) -> None:
    """Collect exited children that are not ours to wait for (re-parented pod processes)."""
    me = os.getpid()
    _reap([pid for pid, ppid in _ppid_map().items() if ppid == me and pid not in keep])


def _live(pids: set[int]) -> list[int]:
    return sorted(p for p in pids if pid_alive(p) and not is_zombie(p))


def _reap(pids: list[int]) -> None:
    """Collect those of ``pids`` that exited and are our children (others are not ours to wait for)."""
    for pid in pids:
        if is_zombie(pid):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


def _cgroup2_mount() -> Path | None:
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    except OSError:
        pass
    return None


def _own_cgroup2() -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip()
    except OSError:
        pass
    return "/"


class Containment:
    """Where this testbed's processes are, and how to end every one of them."""

    def __init__(self, data_dir: Path) -> None:
        self.instance = instance_id(data_dir)
        self.cgroup: Path | None = None
        name = "testbed-" + hashlib.sha256(self.instance.encode()).hexdigest()[:12]
        mount = _cgroup2_mount()
        if mount is not None:
            # nested under our own cgroup so anything tracking the caller's tree still sees us
            base = mount / _own_cgroup2().lstrip("/")
            if base.name.startswith("testbed-"):
                base = base.parent
            self.cgroup = base / name

    def enter(self) -> bool:
        """Move this process (and so everything it starts) into the testbed's cgroup, if possible."""
        if self.cgroup is None:
            return False
        try:
            self.cgroup.mkdir(exist_ok=True)
            (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))
            return True
        except OSError:
            self.cgroup = None  # not root, or a read-only mount: the other nets still hold
            return False

    def cgroup_pids(self) -> list[int]:
        if self.cgroup is None:
            return []
        try:
            return [int(x) for x in (self.cgroup / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def pids(self, extra: list[int] | None = None) -> list[int]:
        """Every process of this testbed except the caller."""
        me = os.getpid()
        tagged = marked(self.instance)
        found = set(self.cgroup_pids()) | set(descendants(me)) | set(tagged)
        found |= set(descendants(tagged))  # a marked container shim's container (its env is the pod's)
        found |= set(extra or [])
        found.discard(me)
        return _live(found)

    def _still_alive(self, known: list[int]) -> list[int]:
        """Which of ``known`` (and of the cgroup's members) still run: cheap, no /proc-wide search."""
        return _live((set(known) | set(self.cgroup_pids())) - {os.getpid()})

    def kill_all(self, grace: float = 5.0, extra: list[int] | None = None) -> list[int]:
        """SIGTERM every process group of the testbed, wait ``grace`` s, SIGKILL what is left.

        Returns the pids still alive afterwards (empty when all went)."""
        me = os.getpid()
        my_group = os.getpgrp()
        targets = self.pids(extra)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            for pid in targets:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    pgid = os.getpgid(pid)
                    if pgid != my_group:
                        os.killpg(pgid, sig)
                    os.kill(pid, sig)
            # While they go, only the known targets and the cgroup are looked at: the full search
            # (every process's stat and environ, `pids`: 91 ms of CPU with 1,100 processes on the
            # machine, 18 matrix cells) at 20 Hz kept a core busy for each tearing-down testbed
            # through its grace periods. One full search at the end catches what these missed.
            deadline = time.monotonic() + wait
            pause = 0.02
            while time.monotonic() < deadline:
                _reap(targets)
                targets = self._still_alive(targets)
                if not targets:
                    break
                time.sleep(pause)
                pause = min(0.25, pause * 1.5)
            reap_orphans(set())
            targets = self.pids(extra)
            if not targets:
                break
        if self.cgroup is not None and self.cgroup_pids() and not any(p == me for p in self.cgroup_pids()):
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.kill").write_text("1")
        reap_orphans(set())
        return self.pids(extra)

    def remove(self) -> None:
        """Remove the (empty) cgroup; a no-op while a process is still in it."""
        if self.cgroup is None:
            return
        # killed processes leave the cgroup only once reaped (by whoever is their parent): retry briefly
        deadline = time.monotonic() + 3.0
        while True:
            try:
                self.cgroup.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
