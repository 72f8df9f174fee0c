"""The node agent's pod checkpoint: what a restarted agent needs to reconcile with what the last one ran.

``<node root>/var/lib/kubelet/testbed_pods_checkpoint.json`` lists, per pod the agent runs: its
namespace/name, pod IP (the one it leased), network namespace, phase, and each container's process
record (``container.Process.record``: the container's and its shim's pids and start times in clock
ticks, so a reused pid is told apart, its log and exit files, its container ID). It is rewritten after
every status change and whenever a container starts.

A restarted agent (:func:`recover`) reconciles as the kubelet does with its runtime after a restart:
container processes run under shims of their own (``nsexec.py``), not under the agent, so they
outlived it and are **adopted** — the worker that takes the pod over re-attaches to each process by
pid + start time, keeps the pod IP (re-claimed from the host registry before anything else can take
it), the network namespace and the device assignment (the device manager's own checkpoint), admits
nothing again (no second fit check, no second Allocate) and leaves every restart count as it was. A
container that ended while no agent watched is seen through its shim's exit file and handled as any
exit (restart policy, restart count + 1). Pods deleted meanwhile lose their processes, network
namespace and address (:func:`discard`). Checkpoints of the earlier format (no shim records: processes
whose output went through pipes into the dead agent) are handled as before: processes stopped, pods
started again in the same sandbox identity with one more restart, ``restartPolicy: Never`` pods Failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.k8s.timefmt import now

from . import netns
from .container import LOST_EXIT, Process
from .podips import _start_time, default_allocator

if TYPE_CHECKING:
    from .runtime import PodRuntime, PodWorker

log = logging.getLogger("testbed.node.checkpoint")

NAME = "var/lib/kubelet/testbed_pods_checkpoint.json"
VERSION = 2  # 2: container processes under shims (adoptable); 1: processes piped into the agent
RELEASE_UNCLAIMED_AFTER = 60.0  # seconds: recovered pods the apiserver no longer lists give their IP back


class PodCheckpoint:
    def __init__(self, root: Path) -> None:
        self.path = root / NAME
        self._lock = threading.Lock()

    def save(self, workers: list[PodWorker]) -> None:
        entries: dict[str, Any] = {}
        for w in workers:
            procs = []
            for c in w.init + w.apps:
                proc = c.proc
                if proc is not None:
                    procs.append({"container": c.name, "containerID": c.container_id,
                                  "startedAt": (c.state.get("running") or {}).get("startedAt", ""),
                                  **proc.record()})
            entries[w.uid] = {"namespace": w.ns, "name": w.name, "podIP": w.leased_ip,
                              "netns": w.netns_name, "phase": w.phase, "processes": procs, "adopt": True}
        body = json.dumps({"version": VERSION, "pods": entries}, sort_keys=True)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_text(body)
            os.replace(tmp, self.path)

    def load(self) -> dict[str, Any]:
        """The last agent's pods; {} when there was none. A damaged file is reported, by name, and
        set aside (``.corrupt``), never silently taken for an empty node."""
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
            pods = data["pods"]
            if not isinstance(pods, dict):
                raise ValueError("'pods' is not an object")
            return pods
        except (ValueError, KeyError, TypeError) as e:
            bad = self.path.with_suffix(".corrupt")
            log.error("pod checkpoint %s is damaged (%s); moved to %s, pods it listed are not recovered",
                      self.path, e, bad)
            with contextlib.suppress(OSError):
                os.replace(self.path, bad)
            return {}


def agent_namespaces(data_dir: Path) -> list[str]:
    """The network namespaces the node agents running from ``data_dir`` made, that still exist: the
    cluster network's and every pod's their checkpoints name (what a tear-down removes when an agent
    did not: killed, or stopped before its pods)."""
    data_dir = Path(data_dir).resolve()
    names = [netns.service_netns_name(data_dir)]
    for cp in data_dir.glob(f"nodes/*/{NAME}"):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            pods = json.loads(cp.read_text()).get("pods") or {}
            names += [str(e["netns"]) for e in pods.values()
                      if isinstance(e, dict) and str(e.get("netns") or "").startswith("tb-")]
    return sorted(n for n in set(names) if os.path.exists(f"{netns.NETNS_DIR}/{n}"))


def _same_process(pid: int, start: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return not start or _start_time(pid) == start


def _entry_processes(entry: dict[str, Any]) -> list[tuple[int, str]]:
    out = []
    for p in entry.get("processes") or []:
        out.append((int(p["pid"]), str(p.get("start", ""))))
        if p.get("shimPid"):
            out.append((int(p["shimPid"]), str(p.get("shimStart", ""))))
    return out


def stop_orphans(entries: dict[str, Any], grace: float = 2.0) -> list[int]:
    """Stop every container process (and shim) the dead agent left (each is its own process group)."""
    live = [(pid, start) for e in entries.values() for pid, start in _entry_processes(e)
            if _same_process(pid, start)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid, _start in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            live = [(p, s) for p, s in live if _same_process(p, s)]
            time.sleep(0.05)
        if not live:
            break
    return [p for p, _ in live]


def adoptable(entry: dict[str, Any]) -> bool:
    """A pod whose containers run under shims (this format) and had not ended: the new agent adopts it."""
    return bool(entry.get("adopt")) and entry.get("phase") not in ("Succeeded", "Failed")


def recover(runtime: PodRuntime) -> None:
    """Reconcile with what the previous agent of this node left; called before the pod informer starts."""
    ckpt = runtime.checkpoint
    entries = ckpt.load()
    if not entries:
        return
    resumable: dict[str, Any] = {}
    alloc = default_allocator()
    stopped = adopted = 0
    for uid, e in entries.items():
        terminal = e.get("phase") in ("Succeeded", "Failed")
        if not adoptable(e):
            # the earlier format (processes cannot be re-attached), or a pod that had ended
            left = stop_orphans({uid: e})
            stopped += len(e.get("processes") or [])
            if left:
                log.error("node %s: processes of the previous agent survived SIGKILL: %s",
                          runtime.agent.name, left)
            if e.get("netns"):
                netns.delete_netns(e["netns"])
            e["netns"] = ""
            if terminal:
                continue
        else:
            adopted += 1
        ip = e.get("podIP") or ""
        e["claimedIP"] = ip if ip and alloc.claim(ip) else ""
        if ip and not e["claimedIP"]:
            log.warning("pod %s/%s: its IP %s is held by another live process; it gets a new one",
                        e.get("namespace"), e.get("name"), ip)
        resumable[uid] = e
    runtime.recovered = resumable
    if hasattr(runtime.agent.devices, "pending_uids"):
        # the device manager must not take back what the pods still to resume hold
        runtime.agent.devices.pending_uids = lambda: _resumable_or_running(runtime)
    runtime.plugins_expected_until = time.monotonic() + PLUGIN_WAIT_S
    log.info("node %s: previous agent left %d pod(s): %d to adopt with their processes, %d process(es) "
             "stopped, %d pod(s) to restart", runtime.agent.name, len(entries), adopted, stopped,
             len(resumable) - adopted)
    runtime.agent.later(RELEASE_UNCLAIMED_AFTER, release_unclaimed, runtime)


def _resumable_or_running(runtime: PodRuntime) -> list[str]:
    # one view under the runtime's lock: a pod moving from "to resume" to "has a worker" is in one of
    # the two whenever the device manager looks, never in neither
    with runtime._lock:
        return [*runtime.recovered, *runtime.workers]


def discard(entry: dict[str, Any], then: Callable[[], None] | None = None) -> None:
    """A recovered pod that is not to run again (deleted meanwhile): its processes, netns, IP go."""
    stop_orphans({"_": entry})
    if entry.get("netns"):
        netns.delete_netns(entry["netns"])
    if entry.get("claimedIP"):
        netns.release_pod_ip(entry["claimedIP"])
    if then is not None:
        then()


def release_unclaimed(runtime: PodRuntime) -> None:
    """Recovered pods the apiserver never listed again (deleted meanwhile) end and give their IPs back."""
    with runtime._lock:
        gone = list(runtime.recovered.items())
        runtime.recovered = {}
    for _uid, e in gone:
        discard(e)


def _environ(pid: int) -> dict[str, str]:
    """An adopted container's environment (what exec probes and hooks run with)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def adopt(w: PodWorker, pod: dict[str, Any], entry: dict[str, Any]) -> None:
    """Prepare a worker for a pod whose containers the previous agent left running: take over its
    status as the apiserver has it, its IP and netns, and re-attach to each container's process."""
    w.resumed = w.adopted = True
    w.recovered_ip = entry.get("claimedIP") or ""
    w.adopted_netns = entry.get("netns") or ""
    status = pod.get("status") or {}
    w.phase = status.get("phase") or "Pending"
    w.start_time = status.get("startTime") or w.start_time
    for cond in status.get("conditions") or []:
        w.cond_times[cond["type"]] = (cond.get("status", ""), cond.get("lastTransitionTime") or now())
        if cond["type"] == "Initialized" and cond.get("status") == "True":
            w.initialized = True
    before = {s.get("name"): s for s in (status.get("containerStatuses") or [])
              + (status.get("initContainerStatuses") or [])}
    records = {p["container"]: p for p in entry.get("processes") or [] if p.get("shimPid")}
    for c in w.init + w.apps:
        st = before.get(c.name) or {}
        c.restarts = int(st.get("restartCount") or 0)
        c.last = st.get("lastState") or {}
        c.ready = bool(st.get("ready"))
        c.started = bool(st.get("started", c.ready))
        c.container_id = st.get("containerID") or ""
        c.pulled = bool(st.get("imageID"))
        if st.get("state"):
            c.state = st["state"]
        rec = records.get(c.name)
        if rec is not None:
            c.proc = Process.adopt(rec, Path(rec["logPath"]), Path(rec["exitPath"]))
            c.pulled = True
            c.env = _environ(c.proc.pid)
            c.container_id = rec.get("containerID") or c.container_id
            if "running" not in c.state:
                c.state = {"running": {"startedAt": rec.get("startedAt") or now()}}
        elif "running" in c.state:
            # the status says it runs, but no process was recorded for it: it ended unseen
            started = c.state["running"].get("startedAt")
            c.last = {"terminated": {"exitCode": LOST_EXIT, "reason": "ContainerStatusUnknown",
                                     "message": "The container could not be located after the node agent "
                                                "restarted", "startedAt": started, "finishedAt": now()}}
            c.state = {"waiting": {"reason": "ContainerCreating"}}
            c.restarts += 1
            c.ready = False


def resume(w: PodWorker, pod: dict[str, Any], entry: dict[str, Any]) -> None:
    """Prepare a fresh worker for a pod the previous agent ran (earlier checkpoint format, processes
    stopped): keep its IP and restart counts."""
    w.recovered_ip = entry.get("claimedIP") or ""
    w.resumed = True
    status = pod.get("status") or {}
    before = {s.get("name"): s for s in (status.get("containerStatuses") or [])
              + (status.get("initContainerStatuses") or [])}
    for c in w.init + w.apps:
        st = before.get(c.name) or {}
        c.restarts = int(st.get("restartCount") or 0)
        running = (st.get("state") or {}).get("running")
        if running is not None and not c.init:
            # it was killed with the agent: counted as one more restart, as a crash would be
            c.restarts += 1
            c.last = {"terminated": {"exitCode": 137, "reason": "Error",
                                     "startedAt": running.get("startedAt"),
                                     "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}


def fail_never(runtime: PodRuntime, pod: dict[str, Any], entry: dict[str, Any]) -> None:
    """A ``restartPolicy: Never`` pod whose containers went with the agent: it ends Failed."""
    from kubeclient.client import ApiError

    if entry.get("claimedIP"):
        netns.release_pod_ip(entry["claimedIP"])
    meta = pod["metadata"]
    st = {"phase": "Failed", "reason": "NodeAgentRestarted",
          "message": "the node agent restarted and the pod's containers were stopped with it"}
    try:
        runtime.agent.kube.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                                 {"status": st}, kind="merge")
    except ApiError as e:
        log.warning("pod %s/%s: %s", meta["namespace"], meta["name"], e)


PLUGIN_WAIT_S = 30.0  # how long after a restart a new pod waits for the device plugins to re-register


def await_plugins(agent: Any, need: dict[str, int]) -> dict[str, str]:
    """Right after an agent restart, wait (bounded) until the device plugins have re-registered.

    The restart removed every plugin socket and recreated ``kubelet.sock``; plugins notice and register
    again within seconds. A pod admitted in that window would see 0 allocatable (or a plugin with no
    endpoint), fail with ``UnexpectedAdmissionError`` and, with HAMi, keep its node lock until expiry.
    Returns the allocatable to check against."""
    from testbed.k8s.quantity import Quantity

    alloc: dict[str, str] = agent.capacity()[1]
    until = getattr(agent.runtime, "plugins_expected_until", 0.0)
    while time.monotonic() < until:
        short = [r for r, n in need.items() if r in alloc and Quantity.parse(alloc[r]).value() < n]
        if not short:
            break
        time.sleep(0.2)
        alloc = agent.capacity()[1]
    return alloc


def cached_devices(agent: Any, pod: dict[str, Any], container: dict[str, Any]) -> Any:
    """An adopted pod's devices, from the device manager's checkpoint only: a plugin is never asked
    again for a container that already runs (HAMi's plugin would refuse a second Allocate)."""
    from .devices_api import run_allocate

    unrecorded = getattr(agent.devices, "unrecorded", None)
    if unrecorded is not None:
        missing = unrecorded(pod, container)
        if missing:
            raise RuntimeError(f"the device manager's checkpoint has no assignment of {', '.join(missing)}")
    return run_allocate(agent.devices, pod, container)


def allocate(agent: Any, pod: dict[str, Any], container: dict[str, Any]) -> Any:
    """``run_allocate``, retried while a restart is settling (until ``plugins_expected_until``).

    What a plugin's Allocate needs may still be coming back with the agent's restarted pods (HAMi's
    plugin patches the pod, and that passes the stack's webhook, served by a pod the restart stopped
    too); outside that window an error rejects the pod at once, as the kubelet does."""
    from .devices_api import run_allocate

    while True:
        try:
            return run_allocate(agent.devices, pod, container)
        except Exception as e:
            if time.monotonic() >= getattr(agent.runtime, "plugins_expected_until", 0.0) or agent.stopped:
                raise
            log.info("pod %s/%s: Allocate failed during the restart (%s); retrying",
                     pod["metadata"].get("namespace"), pod["metadata"].get("name"), e)
            time.sleep(1.0)
