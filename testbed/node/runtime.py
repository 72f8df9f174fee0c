"""The pod runtime of one node: admission, volumes, network, container processes, status, deletion.

Each executed pod has a worker thread that walks the kubelet's sequence (admit -> volumes ->
sandbox -> init containers in order -> app containers -> probes/restarts) and writes the pod's
status after every change. Simulated pods get no process: a timer marks them Running (and optionally
Succeeded) after the node's configured delay, as KWOK stages do.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kubeclient.client import ApiError
from testbed.k8s.quantity import Quantity
from testbed.k8s.timefmt import now

from . import clusternet, ephemeral, etchosts, images, netns, podcheckpoint, podspec, probes, rootfs, toolkit
from .container import LaunchSpec, Process, StartError
from .devices_api import ContainerDevices
from .logs import pod_log_dir

if TYPE_CHECKING:
    from .agent import NodeAgent

log = logging.getLogger("testbed.node.runtime")

SIMULATE_ANNOTATION = "testbed.hami.io/simulate"
NATIVE = {"cpu", "memory", "ephemeral-storage", "pods", "storage"}


def is_extended(name: str) -> bool:
    if name in NATIVE or name.startswith(("hugepages-", "requests.", "attachable-volumes-")):
        return False
    return "/" in name and not name.split("/", 1)[0].endswith("kubernetes.io")


def _requests(cont: dict[str, Any]) -> dict[str, int]:
    res = cont.get("resources") or {}
    merged = {**(res.get("requests") or {}), **(res.get("limits") or {})}
    return {k: Quantity.parse(str(v)).value() for k, v in merged.items() if is_extended(k)}


def pod_extended(pod: dict[str, Any]) -> dict[str, int]:
    """Effective extended-resource request: max(largest init container, sum of app containers)."""
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for k, v in _requests(c).items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        for k, v in _requests(c).items():
            total[k] = max(total.get(k, 0), v)
    return total


def admission_requests(pod: dict[str, Any], allocatable: dict[str, str]) -> dict[str, int]:
    """The extended requests the kubelet's admission fit check sees.

    Like the kubelet (``removeMissingExtendedResources``), extended resources the node does not list
    in its allocatable at all are dropped before the check: they are someone else's business (HAMi's
    ``nvidia.com/gpumem`` is only ever counted by its scheduler extender). Resources the node lists,
    even with 0, are checked."""
    return {k: v for k, v in pod_extended(pod).items() if k in allocatable}


class Deleted(Exception):
    """The pod is being deleted (or the agent stops): unwind the worker."""


@dataclass
class CState:
    """What the runtime knows about one container of a pod."""

    name: str
    image: str
    init: bool = False
    restarts: int = 0
    proc: Process | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    container_id: str = ""
    env: dict[str, str] = field(default_factory=dict)
    probe_next: dict[str, float] = field(default_factory=dict)
    probe_fail: dict[str, int] = field(default_factory=dict)
    probe_ok: dict[str, int] = field(default_factory=dict)
    backoff_until: float = 0.0
    backoff: float = 0.0
    backoff_mark: float = 0.0  # monotonic time of the last back-off step
    pulled: bool = False

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "lastState": self.last,
            "ready": self.ready,
            "restartCount": self.restarts,
            "image": self.image,
            "imageID": images.image_id(self.image) if self.pulled else "",
        }
        if self.container_id:
            st["containerID"] = self.container_id
        if not self.init:
            st["started"] = self.started
        return st


def _device_source(node_root: Path, host: str) -> str:
    """Where a device spec's host path is on this machine: the node's emulated device node when it
    has one (testbed/hardware/families.py DEVICE_NODES), else the host path itself."""
    emulated = podspec.node_path(node_root, host)
    return str(emulated) if emulated.is_file() else host


class PodWorker:
    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.key = f"{self.ns}/{self.name}"
        spec = pod["spec"]
        self.init = [
            CState(c["name"], c.get("image", ""), init=True) for c in spec.get("initContainers") or []
        ]
        self.apps = [CState(c["name"], c.get("image", "")) for c in spec.get("containers") or []]
        self.specs = {
            c["name"]: c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
        }
        self.pod_dir = agent.root / "var" / "lib" / "kubelet" / "pods" / self.uid
        self.log_dir = pod_log_dir(agent.root, self.ns, self.name, self.uid)
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.pod_ip = ""
        self.leased_ip = ""  # the pod IP this worker took from the allocator (not the node's own)
        self.recovered_ip = ""  # the IP the previous agent gave this pod, re-claimed (podcheckpoint.py)
        self.resumed = False  # the previous agent admitted it: no second fit check (podcheckpoint.py)
        self.adopted_netns = ""  # the previous agent's network namespace, kept with its processes
        self.adopted = False  # its containers run on from the previous agent: never admitted again
        self.netns_name = ""
        self.netns_path: str | None = None
        self.listeners: list[Any] = []  # this pod's forwarders, closed at teardown
        self.initialized = False
        self.sandbox_ready = False
        self.start_time = now()
        self.cond_times: dict[str, tuple[str, str]] = {}
        self.delete_grace: float | None = None
        # set when one of this pod's containers ended (or the pod is stopping): the app loop waits on
        # it instead of polling its containers every 0.1 s (ten wake-ups a second per running pod)
        self._wake = threading.Event()
        self.stopping: threading.Event = _WakingEvent(self._wake)
        self.devices: dict[str, ContainerDevices] = {}
        self.volumes = podspec.Volumes()
        self.thread = threading.Thread(target=self._run, name=f"pod {self.key}", daemon=True)
        self._last_status: dict[str, Any] | None = None
        self._status_pending = ""  # "", "status" or "rejected": a write to retry (apiserver unreachable)
        self._status_retry_at = 0.0  # monotonic: not before (one retry a second)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def request_delete(self, grace: float) -> None:
        if self.delete_grace is None or grace < self.delete_grace:
            self.delete_grace = grace
        self.stopping.set()

    def _check(self) -> None:
        if self.stopping.is_set():
            raise Deleted()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            # a status the apiserver did not take (it was restarting) is sent again every second
            step = min(left, 1.0) if self._status_pending else left
            if step > 0 and self.stopping.wait(step):
                raise Deleted()
            if self._status_pending and time.monotonic() >= self._status_retry_at:
                self._write_status(self._status_pending == "rejected")
            if time.monotonic() >= end:
                return

    def _nap(self, seconds: float) -> None:
        """The app loop's wait: at most ``seconds``, less when a container ended (``_wake``)."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            step = min(left, 1.0) if self._status_pending else left
            if step > 0 and self._wake.wait(step):
                self._wake.clear()
                self._check()
                return
            self._check()
            if self._status_pending and time.monotonic() >= self._status_retry_at:
                self._write_status(self._status_pending == "rejected")
            if time.monotonic() >= end:
                return

    def _app_tick(self) -> float:
        """How long the app loop may wait: until the next probe or back-off is due, 1 s at most; 0.1 s
        while a container's end cannot wake it (adopted from a previous agent: not our child)."""
        t = time.monotonic()
        due = t + 1.0
        for c in self.apps:
            if c.proc is not None and not c.proc.wakes:
                return 0.1
            # only times still ahead: a kind that stopped applying (a startup probe once started)
            # keeps its last due time, which must not make the loop spin
            due = min([due] + [x for x in (*c.probe_next.values(), c.backoff_until) if x > t])
        return due - t

    def _flush_status(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._status_pending and time.monotonic() < deadline and not self.stopping.wait(1.0):
            self._write_status(self._status_pending == "rejected")

    def _run(self) -> None:
        try:
            if not self._admit():
                self._flush_status(30.0)  # a rejection the apiserver did not take yet
                return
            self._sandbox()
            if self.netns_path:
                # as CNI's ADD before the first container: the pod's link to Services and DNS is up
                clusternet.wait_linked(self.agent, self.netns_path, self.stopping)
            self._run_init()
            self._run_apps()
        except Deleted:
            pass
        except Exception:
            log.exception("pod %s: worker failed", self.key)
        finally:
            self._teardown()

    # -- admission --------------------------------------------------------------------------------

    def _reject(self, reason: str, message: str) -> None:
        self.phase, self.reason, self.message = "Failed", reason, message
        self.agent.recorder.pod(self.pod, "Warning", reason, message)
        self._write_status(rejected=True)

    def _admit(self) -> bool:
        alloc = self.agent.capacity()[1]
        need = admission_requests(self.pod, alloc)
        # a pod the previous agent admitted keeps its place: right after a restart the device plugins
        # have not re-registered yet and capacity reads 0 (the kubelet's UnexpectedAdmissionError bug)
        if need and not self.resumed:
            alloc = podcheckpoint.await_plugins(self.agent, need)
            used = self.agent.runtime.extended_in_use(exclude=self.uid)
            for res, n in sorted(need.items()):
                have = Quantity.parse(alloc[res]).value()
                if used.get(res, 0) + n > have:
                    self._reject(
                        f"OutOf{res}",
                        f"Node didn't have enough resource: {res}, requested: {n}, "
                        f"used: {used.get(res, 0)}, capacity: {have}",
                    )
                    return False
        if self.adopted:
            # running containers already hold their devices: the device manager answers from its
            # checkpoint (for later restarts); it never asks a plugin again, and no failure here may
            # fail a pod whose containers run
            for c in (self.pod["spec"].get("initContainers") or []) + self.pod["spec"]["containers"]:
                try:
                    self.devices[c["name"]] = podcheckpoint.cached_devices(self.agent, self.pod, c)
                except Exception as e:
                    log.warning("pod %s: no recorded devices for container %s after the agent restart (%s); "
                                "it keeps what it runs with", self.key, c["name"], e)
            self._write_status()
            return True
        try:
            for c in (self.pod["spec"].get("initContainers") or []) + self.pod["spec"]["containers"]:
                self.devices[c["name"]] = podcheckpoint.allocate(self.agent, self.pod, c)
        except Exception as e:
            # the device manager's admission errors already carry the kubelet's full wording
            msg = str(e) if str(e).startswith("Allocate failed due to ") else (
                f"Allocate failed due to {e}, which is unexpected")
            self._reject("UnexpectedAdmissionError", msg)
            return False
        self._write_status()
        return True

    # -- sandbox ----------------------------------------------------------------------------------

    def _sandbox(self) -> None:
        a = self.agent
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        owner = rootfs.volume_owner(self.pod)
        try:
            self.volumes = podspec.setup_volumes(
                a.kube, self.pod, self.pod_dir, a.root, a.ip, a.spec.allocatable(), a.ca_pem, owner
            )
        except podspec.MountError as e:
            a.recorder.pod(self.pod, "Warning", "FailedMount", str(e))
            while True:  # the kubelet keeps retrying the mount
                self._sleep(a.options.mount_retry)
                try:
                    self.volumes = podspec.setup_volumes(
                        a.kube, self.pod, self.pod_dir, a.root, a.ip, a.spec.allocatable(), a.ca_pem, owner
                    )
                    break
                except podspec.MountError as e2:
                    a.recorder.pod(self.pod, "Warning", "FailedMount", str(e2))
        if self.pod["spec"].get("hostNetwork"):
            self.pod_ip = a.ip
        else:
            self.pod_ip = self.leased_ip = self.recovered_ip or netns.next_pod_ip()
        if a.options.use_netns and not self.pod["spec"].get("hostNetwork"):
            self.netns_name = f"tb-{self.uid[:18]}"
            try:
                if self.adopted_netns and os.path.exists(f"{netns.NETNS_DIR}/{self.adopted_netns}"):
                    # adopted containers live in it: only the forwarders the dead agent held are new
                    self.netns_name = self.adopted_netns
                    self.netns_path = f"{netns.NETNS_DIR}/{self.adopted_netns}"
                else:
                    self.netns_path = netns.create_netns(self.netns_name, self.pod_ip)
                api_host, api_port = a.api_addr
                self.listeners.append(
                    a.forwarder.listen(self.netns_path, (api_host, api_port), None, (api_host, api_port))
                )
                for c in self.pod["spec"]["containers"]:
                    for p in c.get("ports") or []:
                        if (p.get("protocol") or "TCP") == "TCP":
                            cp = int(p["containerPort"])
                            inside = ("127.0.0.1", cp)
                            fwd = a.forwarder.listen(None, (self.pod_ip, cp), self.netns_path, inside)
                            self.listeners.append(fwd)
            except OSError as e:
                log.warning("pod %s: no network namespace (%s); using the host's", self.key, e)
                self.netns_path = None
        self.sandbox_ready = True
        self._write_status()

    def _teardown(self) -> None:
        for c in self.init + self.apps:
            if c.proc is not None and c.proc.poll() is None:
                self._kill(c, self.delete_grace if self.delete_grace is not None else 0)
        self.agent.devices.release(self.uid)
        self.agent.forwarder.unlisten(self.listeners)
        if self.netns_name:
            netns.delete_netns(self.netns_name)
        if self.leased_ip:
            netns.release_pod_ip(self.leased_ip)
        if self.delete_grace is not None:
            self.agent.runtime.finish_delete(self)
        self.agent.runtime.forget(self.uid)

    # -- containers ---------------------------------------------------------------------------------

    def _pull(self, c: CState) -> images.ImageEntry:
        spec = self.specs[c.name]
        fp = self._field_path(c)
        rec = self.agent.recorder
        policy = spec.get("imagePullPolicy") or (
            "Always" if images.normalise(c.image).endswith(":latest") else "IfNotPresent"
        )
        backoff = self.agent.options.backoff_base
        while True:
            self._check()
            entry = images.lookup(c.image)
            if entry is not None:
                if policy == "Always" or not c.pulled:
                    if policy == "Always":
                        rec.pod(self.pod, "Normal", "Pulling", f'Pulling image "{c.image}"', fp)
                        rec.pod(
                            self.pod,
                            "Normal",
                            "Pulled",
                            f'Successfully pulled image "{c.image}" in 1ms '
                            "(1ms including waiting). Image size: 0 bytes.",
                            fp,
                        )
                    else:
                        rec.pod(
                            self.pod,
                            "Normal",
                            "Pulled",
                            f'Container image "{c.image}" already present on machine',
                            fp,
                        )
                c.pulled = True
                return entry
            msg = images.not_found_message(c.image)  # containerd's words, and how to add the image
            if policy != "Never":
                rec.pod(self.pod, "Normal", "Pulling", f'Pulling image "{c.image}"', fp)
                rec.pod(self.pod, "Warning", "Failed", f'Failed to pull image "{c.image}": {msg}', fp)
                rec.pod(self.pod, "Warning", "Failed", "Error: ErrImagePull", fp)
                c.state = {"waiting": {"reason": "ErrImagePull", "message": msg}}
            else:
                c.state = {
                    "waiting": {
                        "reason": "ErrImageNeverPull",
                        "message": f'Container image "{c.image}" is not present with pull policy of Never',
                    }
                }
            self._write_status()
            self._sleep(min(backoff, 1.0))
            if policy != "Never":
                c.state = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{c.image}"',
                    }
                }
                rec.pod(self.pod, "Normal", "BackOff", f'Back-off pulling image "{c.image}"', fp)
                rec.pod(self.pod, "Warning", "Failed", "Error: ImagePullBackOff", fp)
                self._write_status()
            self._sleep(backoff)
            backoff = min(backoff * 2, 300)

    def _field_path(self, c: CState) -> str:
        return f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}"

    def _launch(self, c: CState) -> bool:
        """Pull, build and start one container; False when it could not start (status already set)."""
        a = self.agent
        spec = self.specs[c.name]
        entry = self._pull(c)
        res = podspec.Resolver(a.kube, self.ns)
        fp = self._field_path(c)
        links: dict[str, str] = {}  # the namespace's Services (enableServiceLinks, default on)
        if self.pod["spec"].get("enableServiceLinks") is not False:
            links = clusternet.service_env(a, self.ns)
        try:
            env = podspec.container_env(self._pod_with_ip(), spec, res, a.ip, a.spec.allocatable(), links)
            user = rootfs.user_for(self.pod, spec, entry.user)
        except (podspec.ConfigError, ApiError) as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            a.recorder.pod(self.pod, "Warning", "Failed", f"Error: {e}", fp)
            self._write_status()
            return False
        devs = self.devices.get(c.name) or ContainerDevices()
        full_env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": self.name,
        }
        full_env.update(entry.env)
        full_env.update(links)
        full_env.update(a.service_env())
        full_env.update(devs.envs)
        full_env.update(env)
        # the official clients read these; the runtime adds them for every container
        # Kubernetes rule: command replaces ENTRYPOINT (and drops CMD); args alone replace CMD
        if spec.get("command"):
            command, args = list(spec["command"]), list(spec.get("args") or [])
        else:
            command, args = list(entry.entrypoint), list(spec.get("args") or entry.cmd)
        argv = podspec.expand_args(command, full_env) + podspec.expand_args(args, full_env)
        if not a.options.use_mount_ns:
            argv = images.host_argv(entry, argv)  # no root of its own: the catalog's links are not there
        # an Allocate response names host paths of the node, resolved like hostPath volumes; a missing
        # source becomes a directory, as containerd's CRI plugin does for every mount it is handed
        dev_mounts = [(podspec.node_path(a.root, host), cpath, bool(ro)) for host, cpath, ro in devs.mounts]
        for host_path, _cpath, _ro in dev_mounts:
            if not host_path.exists():
                host_path.mkdir(parents=True, exist_ok=True)
        mounts = podspec.container_mounts(spec, self.volumes) + [(str(h), c, r) for h, c, r in dev_mounts]
        if a.options.use_mount_ns:  # the kubelet-managed /etc/hosts
            mounts += etchosts.mounts(self.pod_dir, self.pod, self.pod_ip or "", mounts)
        # Parents before children, as containerd orders a container's mounts: a file mounted inside a
        # mounted directory (the shim inside HAMi's per-container dir) must not be hidden by it.
        mounts.sort(key=lambda m: len(PurePosixPath(m[1]).parts))
        as_root = a.options.use_mount_ns
        if not as_root:
            full_env.update(_path_translation(mounts))
        c.env = full_env
        restart = c.restarts
        log_path = self.log_dir / c.name / f"{restart}.log"
        exit_path = self.pod_dir / "containers" / c.name / f"{restart}.exit"
        c.container_id = f"testbed://{os.urandom(32).hex()}"
        if not argv:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": "no command specified"}}
            a.recorder.pod(self.pod, "Warning", "Failed", "Error: no command specified", fp)
            self._write_status()
            return False
        launch = LaunchSpec(
            argv=argv,
            env=full_env,
            cwd=spec.get("workingDir") or entry.workdir or "",
            netns=self.netns_path,
            mount_ns=as_root,
            mounts=[(m[0], m[1], bool(m[2])) for m in mounts],
            # a device node the node's emulated hardware provides (under the node root) stands in
            # for the host's; any other stays the host path
            devices=[(_device_source(a.root, d[0]), d[1]) for d in devs.devices],
            user=user if as_root else None,
            # each container its own PID namespace (the Kubernetes default); hostPID and
            # shareProcessNamespace pods keep the host's (shared namespaces are not modelled)
            pid_ns=as_root and not self.pod["spec"].get("hostPID")
            and not self.pod["spec"].get("shareProcessNamespace"),
            stdin=bool(spec.get("stdin")),  # attach types into it (streaming.run_attach)
            stdin_once=bool(spec.get("stdinOnce")),
            tty=bool(spec.get("tty")),
            pid_ns_of=ephemeral.target_pid(self, spec) if as_root else None,  # kubectl debug --target
            hostname="" if self.pod["spec"].get("hostNetwork")
            else (self.pod["spec"].get("hostname") or self.name)[:63],
        )
        a.recorder.pod(self.pod, "Normal", "Created", f"Created container {c.name}", fp)
        try:
            launch.env = toolkit.inject(full_env, toolkit.nvidia_state_dir(a.root))
            launch.env = toolkit.inject_ascend(launch.env, toolkit.ascend_state_dir(a.root))
            launch.env = toolkit.inject_families(launch.env, toolkit.family_state_dir(a.root))
            c.env = launch.env
            if as_root:
                # the container's own root (isolation: rootfs.py); the toolkit's driver state is the
                # one part of the node root it sees, as the real toolkit mounts the driver's files
                launch.root = rootfs.root_spec(self.pod_dir, a.root.parent.parent, rootfs.privileged(spec))
                launch.root["links"] += images.root_links(entry)  # the image's programs at its paths
                launch.root["image"] += list(entry.paths)  # host directories the entry's programs need
                for key in ("HAMI_EMU_GPU_STATE_DIR", "HAMI_EMU_NPU_STATE_DIR", "HAMI_FAMILY_HARDWARE_DIR"):
                    state = launch.env.get(key)
                    if state and os.path.isdir(state):
                        launch.mounts.append((state, state, False))
            c.proc = Process(launch, log_path, exit_path)
            c.proc.on_exit(self._wake.set)
            # recorded before anything else: an agent killed now must find it, not start a second one
            a.runtime.save_checkpoint()
        except StartError as e:
            msg = (
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
                f"runc create failed: unable to start container process: {e}: unknown"
            )
            c.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": msg,
                    "startedAt": "1970-01-01T00:00:00Z",
                    "finishedAt": now(),
                    "containerID": c.container_id,
                }
            }
            c.proc = None
            a.recorder.pod(self.pod, "Warning", "Failed", f"Error: {msg}", fp)
            self._write_status()
            return False
        c.state = {"running": {"startedAt": now()}}
        c.started = spec.get("startupProbe") is None
        c.ready = spec.get("readinessProbe") is None and not c.init
        a.recorder.pod(self.pod, "Normal", "Started", f"Started container {c.name}", fp)
        hook = ((spec.get("lifecycle") or {}).get("postStart") or {}).get("exec")
        if hook:
            code, out = probes.exec_in(
                c.proc.pid, hook.get("command") or [], c.env, 30, a.options.use_mount_ns
            )
            if code != 0:
                msg = (
                    f'Exec lifecycle hook ({hook.get("command")}) for Container "{c.name}" in Pod '
                    f'"{self.name}_{self.ns}({self.uid})" failed - error: command exited with {code}, '
                    f"message: {out.strip()!r}"
                )
                a.recorder.pod(self.pod, "Warning", "FailedPostStartHook", msg, fp)
                self._kill(
                    c, float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), "FailedPostStartHook"
                )
                return False
        self._write_status()
        return True

    def _pod_with_ip(self) -> dict[str, Any]:
        p = dict(self.pod)
        p["status"] = {**(self.pod.get("status") or {}), "podIP": self.pod_ip}
        return p

    def _kill(self, c: CState, grace: float, reason: str = "") -> None:
        if c.proc is None:
            return
        self.agent.recorder.pod(
            self.pod, "Normal", "Killing", f"Stopping container {c.name}", self._field_path(c)
        )
        code = c.proc.stop(grace)
        self._terminated(c, code, reason)

    def _terminated(self, c: CState, code: int, reason: str = "") -> None:
        started = (c.state.get("running") or {}).get("startedAt", now())
        c.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason or ("Completed" if code == 0 else "Error"),
                "startedAt": started,
                "finishedAt": now(),
                "containerID": c.container_id,
            }
        }
        c.ready = False
        c.proc = None

    def _restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    def _backoff_wait(self, c: CState) -> None:
        """CrashLoopBackOff, as the kubelet's per-container back-off: the first exit restarts at once;
        each later one waits the current delay (base, doubling up to 5 min) from the exit. A container
        whose last restart is more than 10 min old starts over (the kubelet drops the entry)."""
        base = self.agent.options.backoff_base
        t = time.monotonic()
        if c.backoff and t - c.backoff_mark > 600:
            c.backoff = 0.0
        wait = c.backoff
        c.backoff = base if c.backoff == 0 else min(c.backoff * 2, 300)
        c.backoff_mark = t
        c.last = c.state
        c.backoff_until = t + wait
        if wait <= 0:
            self._write_status()
            return
        pod_ref = f"{self.name}_{self.ns}({self.uid})"
        msg = f"back-off {int(wait)}s restarting failed container={c.name} pod={pod_ref}"
        c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
        self.agent.recorder.pod(
            self.pod,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {c.name} in pod {self.name}_{self.ns}({self.uid})",
            self._field_path(c),
        )
        self._write_status()

    def _run_init(self) -> None:
        policy = self._restart_policy()
        for c in self.init:
            while True:
                self._check()
                if c.backoff_until:
                    self._sleep(max(0.0, c.backoff_until - time.monotonic()))
                    c.backoff_until = 0
                if "terminated" in c.state and c.state["terminated"].get("exitCode") == 0 and c.proc is None:
                    break  # it completed under the previous agent (adopted pod)
                ok = c.proc is not None or self._launch(c)  # an adopted init container is waited for
                if ok:
                    assert c.proc is not None
                    while c.proc.poll() is None:
                        self._sleep(0.05)
                    code = c.proc.exit_code()
                    self._terminated(c, code)
                    if code == 0:
                        self._write_status()
                        break
                if policy == "Never":
                    self.phase = "Failed"
                    self._write_status()
                    self._wait_forever()
                c.restarts += 1
                self._backoff_wait(c)
        self.initialized = True
        self._write_status()

    def _wait_forever(self) -> None:
        while True:
            self._sleep(3600)

    def _run_apps(self) -> None:
        policy = self._restart_policy()
        for c in self.apps:
            self._check()
            if c.proc is not None:
                continue  # adopted: it runs since the previous agent started it
            if not self._launch(c) and policy != "Never" and "terminated" in c.state:
                c.restarts += 1
                self._backoff_wait(c)
        self.phase = "Running" if any(c.proc for c in self.apps) else self.phase
        self._write_status()
        while True:
            self._nap(self._app_tick())
            changed = False
            for c in self.apps:
                if c.proc is not None:
                    code = c.proc.poll()
                    if code is not None:
                        self._terminated(c, c.proc.exit_code())
                        changed = True
                        if policy == "Always" or (
                            policy == "OnFailure" and c.state["terminated"]["exitCode"] != 0
                        ):
                            c.restarts += 1
                            self._backoff_wait(c)
                    else:
                        changed |= self._probe(c)
                elif c.backoff_until and time.monotonic() >= c.backoff_until:
                    c.backoff_until = 0
                    if not self._launch(c) and "terminated" in c.state:
                        c.restarts += 1
                        self._backoff_wait(c)
                    changed = True
                elif (
                    "waiting" in c.state
                    and not c.backoff_until
                    and c.state["waiting"]["reason"] in ("CreateContainerConfigError", "CreateContainerError")
                ):
                    self._sleep(self.agent.options.backoff_base)
                    self._launch(c)
                    changed = True
            if all(c.proc is None and not c.backoff_until and "terminated" in c.state for c in self.apps):
                codes = [c.state["terminated"]["exitCode"] for c in self.apps]
                self.phase = "Succeeded" if all(x == 0 for x in codes) else "Failed"
                self._write_status()
                self._wait_forever()
            if changed:
                self._write_status()

    def _probe(self, c: CState) -> bool:
        spec = self.specs[c.name]
        changed = False
        t = time.monotonic()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = spec.get(kind)
            if not probe or c.proc is None:
                continue
            if kind != "startupProbe" and not c.started:
                continue
            if kind == "startupProbe" and c.started:
                continue
            nxt = c.probe_next.get(kind)
            if nxt is None:
                c.probe_next[kind] = t + float(probe.get("initialDelaySeconds") or 0)
                continue
            if t < nxt:
                continue
            c.probe_next[kind] = t + float(probe.get("periodSeconds") or 10)
            ok, msg = probes.run_probe(
                probe,
                spec,
                self.pod_ip,
                self.netns_path,
                c.proc.pid,
                c.env,
                self.agent.minor,
                self.agent.options.use_mount_ns,
            )
            if ok:
                c.probe_fail[kind] = 0
                c.probe_ok[kind] = c.probe_ok.get(kind, 0) + 1
                if c.probe_ok[kind] >= int(probe.get("successThreshold") or 1):
                    if kind == "readinessProbe" and not c.ready:
                        c.ready, changed = True, True
                    if kind == "startupProbe":
                        c.started, changed = True, True
                continue
            c.probe_ok[kind] = 0
            c.probe_fail[kind] = c.probe_fail.get(kind, 0) + 1
            what = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}[
                kind
            ]
            self.agent.recorder.pod(
                self.pod, "Warning", "Unhealthy", f"{what} probe failed: {msg}", self._field_path(c)
            )
            if c.probe_fail[kind] < int(probe.get("failureThreshold") or 3):
                continue
            if kind == "readinessProbe":
                if c.ready:
                    c.ready, changed = False, True
                continue
            self.agent.recorder.pod(
                self.pod,
                "Normal",
                "Killing",
                f"Container {c.name} failed {what.lower()} probe, will be restarted",
                self._field_path(c),
            )
            grace = float(
                probe.get("terminationGracePeriodSeconds")
                or self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            )
            code = c.proc.stop(grace)
            self._terminated(c, code)
            c.probe_next.clear()
            c.probe_fail.clear()
            if self._restart_policy() != "Never":
                c.restarts += 1
                self._backoff_wait(c)
            return True
        return changed

    # -- status -------------------------------------------------------------------------------------

    def _cond(self, ctype: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self.cond_times.get(ctype)
        ts = prev[1] if prev and prev[0] == status else now()
        self.cond_times[ctype] = (status, ts)
        c: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": ts}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        return c

    def build_status(self, rejected: bool = False) -> dict[str, Any]:
        a = self.agent
        st: dict[str, Any] = {"phase": self.phase, "hostIP": a.ip, "startTime": self.start_time}
        if a.minor >= 28:
            st["hostIPs"] = [{"ip": a.ip}]
        if self.reason:
            st["reason"] = self.reason
        if self.message:
            st["message"] = self.message
        qos = (self.pod.get("status") or {}).get("qosClass")
        if qos:
            st["qosClass"] = qos
        if rejected:
            return st
        if self.pod_ip:
            st["podIP"] = self.pod_ip
            st["podIPs"] = [{"ip": self.pod_ip}]
        done = self.phase in ("Succeeded", "Failed")
        conds = []
        if a.minor >= 29:
            conds.append(self._cond("PodReadyToStartContainers", self.sandbox_ready and not done))
        if self.init and not self.initialized:
            pending = [
                c.name
                for c in self.init
                if "terminated" not in c.state or c.state["terminated"]["exitCode"] != 0
            ]
            conds.append(
                self._cond(
                    "Initialized",
                    False,
                    "ContainersNotInitialized",
                    f"containers with incomplete status: [{' '.join(pending)}]",
                )
            )
        else:
            conds.append(self._cond("Initialized", True, "PodCompleted" if done and self.init else ""))
        not_ready = [c.name for c in self.apps if not c.ready]
        if done:
            conds.append(self._cond("Ready", False, "PodCompleted"))
            conds.append(self._cond("ContainersReady", False, "PodCompleted"))
        elif not_ready:
            msg = f"containers with unready status: [{' '.join(not_ready)}]"
            conds.append(self._cond("Ready", False, "ContainersNotReady", msg))
            conds.append(self._cond("ContainersReady", False, "ContainersNotReady", msg))
        else:
            conds.append(self._cond("Ready", True))
            conds.append(self._cond("ContainersReady", True))
        conds.append(self._cond("PodScheduled", True))
        st["conditions"] = conds
        for c in self.apps:
            if (
                not self.initialized
                and "waiting" in c.state
                and c.state["waiting"].get("reason") == "ContainerCreating"
                and self.init
            ):
                c.state = {"waiting": {"reason": "PodInitializing"}}
        if self.init:
            st["initContainerStatuses"] = [c.status() for c in self.init]
        st["containerStatuses"] = [c.status() for c in self.apps]
        if getattr(self, "ephemeral", None):  # started by ephemeral.py
            st["ephemeralContainerStatuses"] = [c.status() for c in self.ephemeral]
        return st

    def _write_status(self, rejected: bool = False) -> None:
        st = self.build_status(rejected)
        if st == self._last_status:
            return
        try:
            self.agent.kube.patch(
                f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", {"status": st}, kind="merge"
            )
            self._last_status = st
            self._status_pending = ""
            self.agent.runtime.save_checkpoint()
        except ApiError as e:
            if e.status == 404:
                self.stopping.set()
                raise Deleted() from e
            log.warning("pod %s: status update failed: %s", self.key, e)
            self._status_pending = "rejected" if rejected else "status"
            self._status_retry_at = time.monotonic() + 1.0
        except Exception as e:
            # the apiserver is unreachable (restarting): the kubelet's status manager keeps the latest
            # status and sends it again; the pod's containers are not affected
            if not self._status_pending:
                log.warning("pod %s: status update failed (%r); retrying", self.key, e)
            self._status_pending = "rejected" if rejected else "status"
            self._status_retry_at = time.monotonic() + 1.0
            self.agent.runtime.save_checkpoint()

    def extended(self) -> dict[str, int]:
        return {} if self.phase in ("Succeeded", "Failed") else pod_extended(self.pod)


def _path_translation(mounts: list[tuple[str, str, bool]]) -> dict[str, str]:
    """Without root there are no mount namespaces: tell the process where each mount really is."""
    out = {}
    for i, (host, cpath, _ro) in enumerate(mounts):
        out[f"TESTBED_MOUNT_{i}"] = f"{cpath}={host}"
    if any(cpath == podspec.SA_DIR for _h, cpath, _r in mounts):
        out["TESTBED_SERVICEACCOUNT_DIR"] = next(h for h, cpath, _r in mounts if cpath == podspec.SA_DIR)
    return out


class PodRuntime:
    """All pods of one node: executed ones get a PodWorker; simulated ones a timer."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.workers: dict[str, PodWorker] = {}
        self.simulated: dict[str, dict[str, Any]] = {}
        self.sim_ips: dict[str, str] = {}  # uid -> pod IP of a simulated pod
        self.finished: set[str] = set()  # uids whose worker ended: never start them again
        self._lock = threading.Lock()
        # what a restarted agent reconciles with (podcheckpoint.py); kept as is when the agent stops
        self.checkpoint = podcheckpoint.PodCheckpoint(agent.root)
        self.recovered: dict[str, Any] = {}  # uid -> the previous agent's entry, until the pod is seen
        self._agent_stopping = False
        self.plugins_expected_until = 0.0  # monotonic: set by a restart (podcheckpoint.await_plugins)

    def extended_in_use(self, exclude: str = "") -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            if w.uid == exclude:
                continue
            for k, v in w.extended().items():
                out[k] = out.get(k, 0) + v
        return out

    def forget(self, uid: str) -> None:
        with self._lock:
            self.workers.pop(uid, None)
            self.finished.add(uid)
        if not self._agent_stopping:
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        with self._lock:
            workers = list(self.workers.values())
        try:
            self.checkpoint.save(workers)
        except OSError as e:
            log.error("cannot write the pod checkpoint %s: %s", self.checkpoint.path, e)

    def is_simulated(self, pod: dict[str, Any]) -> bool:
        ann = (pod["metadata"].get("annotations") or {}).get(SIMULATE_ANNOTATION)
        if ann is not None:
            return ann.lower() == "true"
        return self.agent.spec.simulated

    def on_pod(self, etype: str, pod: dict[str, Any]) -> None:
        """Called from the informer thread for every pod bound to this node."""
        meta = pod["metadata"]
        uid = meta["uid"]
        if etype == "DELETED":
            with self._lock:
                w = self.workers.get(uid)
                self.simulated.pop(uid, None)
            self._release_sim_ip(uid)
            if w is not None:
                w.request_delete(0)
            return
        deleting = meta.get("deletionTimestamp") is not None
        if self.is_simulated(pod):
            self._simulated(pod, deleting)
            return
        with self._lock:
            w = self.workers.get(uid)
            if w is None and not deleting and uid not in self.finished:
                phase = (pod.get("status") or {}).get("phase")
                entry = self.recovered.pop(uid, None)
                ran = phase in ("Succeeded", "Failed") or bool(
                    (pod.get("status") or {}).get("containerStatuses"))
                if ran and (entry is None or phase in ("Succeeded", "Failed")):
                    if entry is not None:
                        self.agent.submit(podcheckpoint.discard, entry)
                    return  # a pod another agent instance ran; a restarted kubelet does not rerun it
                w = PodWorker(self.agent, pod)
                if entry is not None and podcheckpoint.adoptable(entry):
                    podcheckpoint.adopt(w, pod, entry)  # its containers run on: re-attach, admit nothing
                elif entry is not None and ran:
                    if (pod["spec"].get("restartPolicy") or "Always") == "Never":
                        self.agent.submit(podcheckpoint.fail_never, self, pod, entry)
                        return
                    podcheckpoint.resume(w, pod, entry)
                elif entry is not None:
                    w.recovered_ip = entry.get("claimedIP") or ""
                self.workers[uid] = w
                w.start()
                return
            entry = self.recovered.pop(uid, None) if w is None and deleting else None
        if w is not None:
            # the spec too, for ephemeral containers added since (ephemeral.py starts them)
            eph = (pod.get("spec") or {}).get("ephemeralContainers") or []
            w.pod = {**w.pod, "metadata": meta, "spec": {**w.pod["spec"], "ephemeralContainers": eph}}
            if deleting:
                w.request_delete(float(meta.get("deletionGracePeriodSeconds") or 0))
        elif deleting:
            if entry is not None:  # deleted while the agent was down: its processes go first
                self.agent.submit(podcheckpoint.discard, entry, lambda: self._confirm_delete(pod))
            else:
                self._confirm_delete(pod)

    def _confirm_delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        for attempt in range(60):  # the apiserver may be restarting: keep trying for about 30 s
            try:
                self.agent.kube.delete(
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    gracePeriodSeconds=0,
                    preconditions={"uid": meta["uid"]},
                )
                return
            except ApiError as e:
                if e.status not in (404, 409):
                    log.warning("pod %s/%s: final delete failed: %s", meta["namespace"], meta["name"], e)
                return
            except Exception as e:
                if attempt == 0:
                    log.warning("pod %s/%s: final delete failed (%r); retrying", meta["namespace"],
                                meta["name"], e)
                time.sleep(0.5)

    def finish_delete(self, w: PodWorker) -> None:
        try:
            self.agent.kube.patch(
                f"/api/v1/namespaces/{w.ns}/pods/{w.name}/status", {"status": w.build_status()}, kind="merge"
            )
        except Exception:
            pass  # the final delete below is what matters (and is retried)
        self._confirm_delete(w.pod)
        podspec.cleanup(w.pod_dir)

    # -- simulated pods -------------------------------------------------------------------------------

    def _simulated(self, pod: dict[str, Any], deleting: bool) -> None:
        uid = pod["metadata"]["uid"]
        if deleting:
            with self._lock:
                self.simulated.pop(uid, None)
            self._release_sim_ip(uid)
            self.agent.submit(self._confirm_delete, pod)
            return
        with self._lock:
            if uid in self.simulated:
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Running", "Succeeded", "Failed"):
                self.simulated[uid] = pod
                return
            self.simulated[uid] = pod
        sim = self.agent.spec.simulate
        self.agent.later(sim.pod_start_seconds, self._sim_status, pod, "Running")
        if sim.pod_complete_seconds > 0:
            self.agent.later(
                sim.pod_start_seconds + sim.pod_complete_seconds, self._sim_status, pod, "Succeeded"
            )

    def _release_sim_ip(self, uid: str) -> None:
        with self._lock:
            ip = self.sim_ips.pop(uid, "")
        if ip:
            netns.release_pod_ip(ip)

    def _sim_status(self, pod: dict[str, Any], phase: str) -> None:
        meta = pod["metadata"]
        with self._lock:
            if meta["uid"] not in self.simulated:
                return
            ip = self.sim_ips.get(meta["uid"]) or ""
            if not ip:  # one address for the pod's whole life, given back when it is deleted
                ip = self.sim_ips[meta["uid"]] = netns.next_pod_ip()
        ts = now()
        running = phase == "Running"
        states = []
        for c in pod["spec"].get("containers") or []:
            state = (
                {"running": {"startedAt": ts}}
                if running
                else {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts, "finishedAt": ts}}
            )
            states.append(
                {
                    "name": c["name"],
                    "state": state,
                    "lastState": {},
                    "ready": running,
                    "restartCount": 0,
                    "image": c.get("image", ""),
                    "imageID": images.image_id(c.get("image", "")),
                    "containerID": f"testbed://{meta['uid']}-{c['name']}",
                    "started": running,
                }
            )
        conds = [
            {
                "type": t,
                "status": "True" if (running or t in ("PodScheduled", "Initialized")) else "False",
                "lastProbeTime": None,
                "lastTransitionTime": ts,
            }
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ]
        if not running:
            for c in conds:
                if c["type"] in ("Ready", "ContainersReady"):
                    c["reason"] = "PodCompleted"
        st = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.agent.ip,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": ts,
            "containerStatuses": states,
        }
        if pod["spec"].get("initContainers"):
            st["initContainerStatuses"] = [
                {
                    "name": c["name"],
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": ts,
                            "finishedAt": ts,
                        }
                    },
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": c.get("image", ""),
                    "imageID": images.image_id(c.get("image", "")),
                }
                for c in pod["spec"]["initContainers"]
            ]
        try:
            self.agent.kube.patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {"status": st},
                kind="merge",
            )
        except ApiError as e:
            if e.status != 404:
                log.warning("simulated pod %s/%s: %s", meta["namespace"], meta["name"], e)

    def stop(self, grace: float = 0) -> None:
        self._agent_stopping = True  # the checkpoint keeps these pods: the next agent restarts them
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.delete_grace = None
            w.stopping.set()
        for w in workers:
            w.thread.join(grace + 5)
        for w in workers:
            for c in w.init + w.apps:
                if c.proc is not None:
                    c.proc.signal(signal.SIGKILL)


def ensure_dirs(root: Path) -> None:
    for sub in (
        "var/lib/kubelet/pods",
        "var/lib/kubelet/device-plugins",
        "var/lib/kubelet/pod-resources",
        "var/lib/kubelet/plugins_registry",
        "var/log/pods",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)


def active_pods(runtime: PodRuntime) -> list[dict[str, Any]]:
    """The pods this node's runtime is running (what PodResources and the device manager call active).

    As the kubelet's active-pod filter does, a pod in a terminal phase (Succeeded, Failed) is not
    active, so the devices it held go back to the pool before its API object is deleted.
    """
    with runtime._lock:
        workers = list(runtime.workers.values())
    return [w.pod for w in workers if w.phase not in ("Succeeded", "Failed")]


class _WakingEvent(threading.Event):
    """A pod worker's ``stopping``: setting it also wakes the app loop's wait."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake_too = wake

    def set(self) -> None:
        super().set()
        self._wake_too.set()
