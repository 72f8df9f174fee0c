"""The control-plane and node processes that run beside the testbed apiserver.

``testbed up`` (and :class:`testbed.embedded.EmbeddedTestbed` when asked) starts the apiserver
(:meth:`ComponentSet.start_apiserver`, ``testbed.apiserver_process``), then the controller manager, the
default scheduler and the node agents as separate processes, as on a real cluster, each logging to
``<data dir>/logs/<component>.log``. :meth:`ComponentSet.supervise` restarts one that exits (back-off
from :mod:`testbed.supervisor`; the apiserver comes back on its persisted state and port);
:meth:`ComponentSet.stop` ends every process of the testbed, pods' included, the apiserver last. The
apiserver has a warm standby (imports done, waiting on a pipe) that a restart wakes, and a killed
scheduler's leader lease is released before its restart (``LEADER_LEASES``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .apiserver_process import EXIT_DATA_DIR, EXIT_PORT, read_ready
from .supervisor import MARKER_ENV, Backoff, Containment, instance_id

PR_SET_PDEATHSIG = 1
# Leader-election leases a component holds alone in a testbed: when it was killed, the supervisor
# releases the lease for it before the restart (as its own clean stop would), so the new process leads
# at once instead of waiting out the dead holder's leaseDuration (15 s for kube-scheduler).
LEADER_LEASES = {"scheduler": ("kube-system", "kube-scheduler")}


def _die_with_parent() -> None:
    # runs in the child before exec; the parent *thread* must outlive it, so spawn from the main thread
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ComponentError(Exception):
    """A component could not start (the message says why, from its log)."""


@dataclass
class Component:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    restarts: int = 0
    started_at: float = 0.0  # monotonic
    restart_at: float | None = None  # monotonic time of the pending restart, if it exited
    last_exit: int | None = None
    backoff: Backoff = field(default_factory=Backoff)
    die_with_parent: bool = False  # SIGKILLed by the kernel when the `up` process dies
    # a warm standby (imports done, waiting on a pipe) that a restart wakes instead of a cold start
    standby: subprocess.Popen[bytes] | None = None
    standby_go: int | None = None  # the pipe's write end
    warm_standby: bool = False


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
    containment: Containment | None = None
    apiserver: Component | None = None

    def start_apiserver(self, argv: list[str], timeout: float = 60.0) -> dict[str, object]:
        """Start the apiserver process and wait until it serves; returns what it reported
        (``apiserver_process.READY_FILE``). Raises ComponentError with its own words when it exits."""
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # it dies with `up` (as when it ran inside it): a later `up` must find the data dir unlocked
        c = Component("apiserver", argv, log=logs / "apiserver.log", die_with_parent=True, warm_standby=True)
        self._spawn(c)
        assert c.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            ready = read_ready(self.data_dir, c.proc.pid)
            if ready is not None:
                break
            if c.proc.poll() is not None:
                lines = (c.log.read_text(errors="replace").strip().splitlines() if c.log and c.log.exists()
                         else [])
                if c.proc.returncode in (EXIT_DATA_DIR, EXIT_PORT) and lines:
                    raise ComponentError(lines[-1])
                raise ComponentError(self.describe_failure(c))
            if time.monotonic() > deadline:
                self._kill(c)
                raise ComponentError(f"the apiserver did not serve within {timeout:.0f}s; see {c.log}")
            time.sleep(0.05)
        # a restart comes back on the state the first start made (or found)
        c.argv = [a for a in argv if a != "--fresh"]
        self.apiserver = c
        self.components.insert(0, c)
        self._spawn_standby(c)
        return ready

    def _spawn_standby(self, c: Component) -> None:
        """A second process of the component that imports everything, then waits for a byte on a pipe
        (``--wait-fd``): most of a restart is Python start-up and imports, done before it is needed."""
        assert c.log is not None
        r, w = os.pipe()
        try:
            with open(c.log, "ab") as fh:
                c.standby = subprocess.Popen(
                    [*c.argv, "--wait-fd", str(r)], stdout=fh, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, env=self._env(), pass_fds=(r,),
                    preexec_fn=_die_with_parent if c.die_with_parent else None)
            c.standby_go = w
        except OSError:
            os.close(w)
            c.standby = None
        finally:
            os.close(r)

    def _wake_standby(self, c: Component) -> bool:
        sb, go = c.standby, c.standby_go
        c.standby, c.standby_go = None, None
        if sb is None or go is None:
            return False
        try:
            if sb.poll() is not None:
                return False
            os.write(go, b"x")
        except OSError:
            return False
        finally:
            os.close(go)
        c.proc = sb
        c.started_at = time.monotonic()
        c.restart_at = None
        return True

    def _stop_standby(self, c: Component) -> None:
        sb, go = c.standby, c.standby_go
        c.standby, c.standby_go = None, None
        if go is not None:
            os.close(go)  # EOF: the standby exits on its own
        if sb is not None and sb.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sb.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                sb.wait(5)

    @staticmethod
    def _kill(c: Component) -> None:
        if c.proc is not None and c.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait(5)

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

    def _env(self) -> dict[str, str]:
        # the marker lets `testbed down` find a component even after the `up` process was killed
        env = {**os.environ, "PYTHONUNBUFFERED": "1", MARKER_ENV: instance_id(self.data_dir)}
        if self.image_catalog is not None:
            env["TESTBED_IMAGE_CATALOG"] = str(self.image_catalog)
        return env

    def _spawn(self, c: Component) -> None:
        # each component in a session (so a process group) of its own: stopped as a whole
        assert c.log is not None
        with open(c.log, "ab") as fh:
            c.proc = subprocess.Popen(
                c.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=self._env(),
                preexec_fn=_die_with_parent if c.die_with_parent else None)
        c.started_at = time.monotonic()
        c.restart_at = None

    def start(self) -> ComponentSet:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for c in self.plan():
            c.log = logs / f"{c.name}.log"
            self._spawn(c)
            self.components.append(c)
        return self

    def _stop_all(self, group: list[Component], timeout: float) -> None:
        for c in group:
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in group:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
                c.proc.wait(5)

    def next_due(self, idle: float = 1.0) -> float:
        """Seconds until a pending restart is due (``idle`` when none is): how long the supervisor may
        sleep when no child exits meanwhile."""
        now = time.monotonic()
        due = [c.restart_at - now for c in self.components if c.restart_at is not None]
        return max(0.0, min([idle, *due]))

    def supervise(self) -> list[str]:
        """Restart components that exited, after their back-off; returns what happened, one line each."""
        events = []
        now = time.monotonic()
        for c in self.components:
            if c.proc is None or c.proc.poll() is None:
                continue
            if c.restart_at is None:
                c.last_exit = c.proc.returncode
                delay = c.backoff.next_delay(now - c.started_at)
                c.restart_at = now + delay
                events.append(f"component {c.name} (pid {c.proc.pid}) exited with status {c.last_exit}; "
                              f"restarting in {delay:.1f}s")
            elif now >= c.restart_at:
                released = self._release_dead_leader(c)
                if released:
                    events.append(f"component {c.name}: released lease {released} of the killed process")
                c.restarts += 1
                warm = c.warm_standby and self._wake_standby(c)
                if not warm:
                    self._spawn(c)
                assert c.proc is not None
                events.append(f"component {c.name} restarted (pid {c.proc.pid}, restart {c.restarts}"
                              f"{', warm standby' if warm else ''})")
                if c.warm_standby:
                    self._spawn_standby(c)  # for the next time
                if c.log is not None:
                    with open(c.log, "a") as fh:
                        fh.write(f"--- restarted by the testbed supervisor (restart {c.restarts}, "
                                 f"previous exit status {c.last_exit}) ---\n")
        return events

    def _release_dead_leader(self, c: Component) -> str:
        lease = LEADER_LEASES.get(c.name)
        if lease is None or not self.kubeconfig.exists():
            return ""
        from kubeclient.client import Kube
        from testbed.scheduler.config import LeaderElection, default_lock
        from testbed.scheduler.leader import locks_for, release_locks

        ns, name = lease
        try:
            kube = Kube.from_config(str(self.kubeconfig), user_agent="testbed-supervisor")
        except Exception:
            return ""
        # the minor's default lock: a Lease, or (1.18/1.19) an Endpoints record and the Lease after it
        cfg = LeaderElection(resource_lock=default_lock(self.minor), resource_name=name,
                             resource_namespace=ns)
        try:
            return f"{ns}/{name}" if release_locks(locks_for(kube, cfg)) else ""
        except Exception:
            return ""  # no lease, or the apiserver is down too: the new process waits the lease out
        finally:
            kube.close()

    def describe(self) -> dict[str, dict[str, object]]:
        """Each component's pid, restart count and last exit status (for the state file)."""
        return {c.name: {"pid": c.proc.pid if c.proc is not None else None, "restarts": c.restarts,
                         "lastExit": c.last_exit, "running": c.proc is not None and c.proc.poll() is None}
                for c in self.components}

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
        # the apiserver last: node agents stopping their pods still report to it
        self._stop_all([c for c in self.components if c is not self.apiserver], timeout)
        if self.apiserver is not None:
            self._stop_standby(self.apiserver)
            self._stop_all([self.apiserver], timeout)
        self.components.clear()
        # what the components left behind (pod processes of a node agent that died, re-parented to us)
        if self.containment is not None:
            left = self.containment.kill_all(grace=min(5.0, timeout))
            if left:
                print(f"warning: processes of the testbed still alive after SIGKILL: {left}",
                      file=sys.stderr, flush=True)
