"""The control-plane and node processes that run beside the testbed apiserver.

``testbed up`` (and :class:`testbed.embedded.EmbeddedTestbed` when asked) starts the controller
manager, the default scheduler and the node agents as separate processes, as on a real cluster,
each logging to ``<data dir>/logs/<component>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Component:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None


@dataclass
class ComponentSet:
    kubeconfig: Path
    data_dir: Path
    minor: int
    nodes: Path | None = None
    scheduler: bool = True
    controllers: bool = True
    node_monitor_grace_period: str = ""
    image_catalog: Path | None = None
    components: list[Component] = field(default_factory=list)

    def plan(self) -> list[Component]:
        kc = ["--kubeconfig", str(self.kubeconfig)]
        out = []
        if self.controllers:
            argv = [sys.executable, "-m", "testbed.controllers", *kc, "--k8s", f"1.{self.minor}"]
            if self.node_monitor_grace_period:
                argv.append(f"--node-monitor-grace-period={self.node_monitor_grace_period}")
            out.append(Component("controllers", argv))
        if self.scheduler:
            out.append(Component("scheduler", [sys.executable, "-m", "testbed.scheduler", *kc,
                                               "--k8s", f"1.{self.minor}"]))
        if self.nodes is not None:
            out.append(Component("nodes", [sys.executable, "-m", "testbed.node", *kc, "--inventory",
                                           str(self.nodes), "--data-dir", str(self.data_dir)]))
        return out

    def start(self) -> ComponentSet:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.image_catalog is not None:
            env["TESTBED_IMAGE_CATALOG"] = str(self.image_catalog)
        for c in self.plan():
            c.log = logs / f"{c.name}.log"
            with open(c.log, "ab") as fh:
                c.proc = subprocess.Popen(
                    c.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env=env)
            self.components.append(c)
        return self

    def failed(self) -> list[Component]:
        """Components that have exited (each should run until stopped)."""
        return [c for c in self.components if c.proc is not None and c.proc.poll() is not None]

    def describe_failure(self, c: Component) -> str:
        tail = ""
        if c.log is not None and c.log.exists():
            tail = "\n  ".join(c.log.read_text(errors="replace").strip().splitlines()[-8:])
        code = c.proc.returncode if c.proc is not None else "?"
        return f"{c.name} exited with status {code}; last lines of {c.log}:\n  {tail}"

    def stop(self, timeout: float = 15) -> None:
        for c in self.components:
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in self.components:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait(5)
        self.components.clear()
