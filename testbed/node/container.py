"""One container process: started through ``nsexec.py`` (namespaces, bind mounts, exec) under a shim
that logs it in CRI format and records its exit code; stopped with SIGTERM then SIGKILL.

The shim (``nsexec.py``) is the container's parent, not the node agent: the agent only holds the
shim's pid. A container therefore outlives a killed agent (its output still reaches its log file), and
a restarted agent re-attaches to it with :meth:`Process.adopt` from what the pod checkpoint recorded
(pids and start times, so a reused pid is told apart); the exit code comes from the shim's exit file.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .podips import _alive, _start_time

MARKER_ENV = "TESTBED_INSTANCE"  # testbed.supervisor.MARKER_ENV (not imported: the node side stands alone)

NSEXEC = str(Path(__file__).with_name("nsexec.py"))
LOST_EXIT = 137  # the shim vanished without recording the exit: reported as a kill


@dataclass
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: str = ""
    netns: str | None = None
    mount_ns: bool = False
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)
    devices: list[tuple[str, str]] = field(default_factory=list)
    root: dict[str, Any] | None = None  # the container's own root (rootfs.root_spec), None: the host's
    user: dict[str, Any] | None = None  # {uid, gid, groups}, None: root
    pid_ns: bool = False  # a PID namespace of its own (nsexec.py runs a small init as its pid 1)
    pid_ns_of: int | None = None  # join the PID namespace of this process instead (kubectl debug --target)
    stdin: bool = False  # the container's stdin is held open for attach (``stdin: true``)
    stdin_once: bool = False  # ... and closed when the first attached session's input ends
    tty: bool = False  # a terminal from the container's own /dev/pts as its stdio
    hostname: str = ""  # a UTS namespace of its own with this name (with mount_ns; "": the host's)


class StartError(Exception):
    """The runtime could not start the process (``StartError``, exit code 128)."""


class Process:
    """A container's process and its shim; ``pid`` is the container's (probes, exec enter its namespaces)."""

    def __init__(self, spec: LaunchSpec, log_path: Path, exit_path: Path) -> None:
        self.log_path = log_path
        self.exit_path = exit_path
        self._code: int | None = None
        self._pidfd: int | None = None
        with contextlib.suppress(FileNotFoundError):
            exit_path.unlink()  # a previous run's record (same restart number after an agent restart)
        r, w = os.pipe()
        payload = {
            "argv": spec.argv,
            "env": spec.env,
            "cwd": spec.cwd,
            "netns": spec.netns,
            "mount_ns": spec.mount_ns,
            "mounts": spec.mounts,
            "devices": spec.devices,
            "root": spec.root,
            "user": spec.user,
            "pid_ns": spec.pid_ns,
            "pid_ns_of": spec.pid_ns_of,
            "stdin": spec.stdin,
            "stdin_once": spec.stdin_once,
            "tty": spec.tty,
            "hostname": spec.hostname,
            "attach_path": str(attach_socket(exit_path)),
            "status_fd": w,
            "log_path": str(log_path),
            "exit_path": str(exit_path),
        }
        try:
            # the spec goes through the shim's stdin, not its argv: a large environment would exceed the
            # kernel's limit on one argument (128 KiB), and the container's `ps` would show it all
            self.shim: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-S", NSEXEC, "-"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(w,),
                start_new_session=True,
                env=_shim_env(),
            )
        except OSError as e:
            os.close(r)
            os.close(w)
            raise StartError(str(e)) from e
        os.close(w)
        assert self.shim.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a shim that died early says why on the status pipe
            self.shim.stdin.write(json.dumps(payload).encode())
        with contextlib.suppress(BrokenPipeError):
            self.shim.stdin.close()
        self.shim_pid = self.shim.pid
        self.shim_start = _start_time(self.shim_pid)
        # the shim writes "pid N" first; anything after it is why the exec failed (empty: it succeeded)
        os.set_blocking(r, True)
        with os.fdopen(r, "rb") as f:
            raw = f.read().decode(errors="replace")
        first, _, msg = raw.partition("\n")
        self.pid = int(first.split()[1]) if first.startswith("pid ") else 0
        if not first.startswith("pid "):
            msg = raw
        self.start = _start_time(self.pid) if self.pid else ""
        self.started_at = time.time()
        if msg or not self.pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.shim.wait(5)
            raise StartError(msg or "the container shim exited before starting the container")

    @classmethod
    def adopt(cls, entry: dict[str, Any], log_path: Path, exit_path: Path) -> Process:
        """Re-attach to a container a previous agent started (``entry``: its pod checkpoint record)."""
        self = cls.__new__(cls)
        self.log_path, self.exit_path = log_path, exit_path
        self.shim = None
        self._code = None
        self._pidfd = None
        self.pid, self.start = int(entry["pid"]), str(entry.get("start") or "")
        self.shim_pid, self.shim_start = int(entry["shimPid"]), str(entry.get("shimStart") or "")
        self.started_at = time.time()
        if _alive(self.shim_pid, self.shim_start) and not _zombie(self.shim_pid):
            # not our child: a pidfd says when it ends (no pid-reuse race once opened)
            with contextlib.suppress(OSError, AttributeError):
                self._pidfd = os.pidfd_open(self.shim_pid)
            if _start_time(self.shim_pid) != self.shim_start and self.shim_start:
                self._close_pidfd()
                self._finish()
        else:
            self._finish()
        return self

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None

    def _shim_running(self) -> bool:
        if self.shim is not None:
            return self.shim.poll() is None
        if self._pidfd is not None:
            ready, _, _ = select.select([self._pidfd], [], [], 0)
            return not ready
        return _alive(self.shim_pid, self.shim_start) and not _zombie(self.shim_pid)

    def _finish(self) -> None:
        self._close_pidfd()
        try:
            self._code = int(json.loads(self.exit_path.read_text())["exitCode"])
        except (OSError, ValueError, KeyError, TypeError):
            # the shim was killed: whatever is left of the container goes too, and the exit is unknown
            if self.pid and _alive(self.pid, self.start):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
            self._code = LOST_EXIT

    @property
    def wakes(self) -> bool:
        """Whether ``on_exit`` was armed: the container's end then calls back (its shim is our child)."""
        return getattr(self, "_waiter", None) is not None

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from a thread) once the shim, so the container, ended. A no-op for an
        adopted container (its shim is not our child: the caller keeps polling it)."""
        shim = self.shim
        if shim is None:
            return

        def wait() -> None:
            # Popen.wait holds the waitpid lock while it blocks: poll() meanwhile answers "running",
            # then sees the return code this wait collected
            with contextlib.suppress(Exception):
                shim.wait()
            callback()

        self._waiter = threading.Thread(target=wait, name=f"shim {shim.pid}", daemon=True)
        self._waiter.start()

    def poll(self) -> int | None:
        """None while the container runs; its exit code once it (and its shim) ended."""
        if self._code is not None:
            return self._code
        if self._shim_running():
            return None
        self._finish()
        return self._code

    def signal(self, sig: int) -> None:
        if self._code is not None or not self.pid:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0)
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, grace: float) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit code."""
        if self.poll() is None:
            self.signal(signal.SIGTERM)
            if not self._wait(grace):
                self.signal(signal.SIGKILL)
                if not self._wait(5.0) and self.shim_pid:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(self.shim_pid, signal.SIGKILL)
                    self._wait(2.0)
        return self.exit_code()

    def exit_code(self) -> int:
        return self._code if self._code is not None else 0

    def record(self) -> dict[str, Any]:
        """What the pod checkpoint keeps to adopt this container after an agent restart."""
        return {"pid": self.pid, "start": self.start, "shimPid": self.shim_pid, "shimStart": self.shim_start,
                "logPath": str(self.log_path), "exitPath": str(self.exit_path)}


def attach_socket(exit_path: Path) -> Path:
    """Where a container's shim serves attach (next to its exit file: an adopting agent finds it)."""
    return exit_path.with_suffix(".attach")


def _shim_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    # the testbed's marker (testbed/supervisor.py): `down` finds the shim, and through it the container,
    # even when the node agent and the `up` process are both gone
    if os.environ.get(MARKER_ENV):
        env[MARKER_ENV] = os.environ[MARKER_ENV]
    return env


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
