"""One container process: started through ``nsexec.py`` (namespaces, bind mounts, exec), logged in CRI
format, stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .logs import LogWriter

NSEXEC = str(Path(__file__).with_name("nsexec.py"))


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


class StartError(Exception):
    """The runtime could not start the process (``StartError``, exit code 128)."""


class Process:
    def __init__(self, spec: LaunchSpec, log_path: Path) -> None:
        self.log_path = log_path
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
            "status_fd": w,
        }
        self.log = LogWriter(log_path)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-S", NSEXEC, json.dumps(payload)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(w,),
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", os.defpath)},
            )
        except OSError as e:
            os.close(r)
            os.close(w)
            raise StartError(str(e)) from e
        os.close(w)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.log.attach(self.proc.stdout, "stdout")
        self.log.attach(self.proc.stderr, "stderr")
        # the helper marks the status fd close-on-exec: EOF with no data means exec succeeded
        os.set_blocking(r, True)
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode(errors="replace")
        self.started_at = time.time()
        if msg:
            self.proc.wait()
            self.log.done.wait(2)
            raise StartError(msg)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(max(grace, 0))
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        self.signal(signal.SIGKILL)  # stragglers of the process group
        self.log.done.wait(2)
        return self.exit_code()

    def exit_code(self) -> int:
        rc = self.proc.returncode
        if rc is None:
            return 0
        return 128 - rc if rc < 0 else rc  # -15 -> 143, as shells and runtimes report signals
