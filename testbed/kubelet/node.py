"""One node run by the real kubelet, with Debian's containerd and runc, joined to a running
``testbed up --control-plane real`` cluster.

Containment (nothing of the node is left on the host once it stops):

* A holder process (``unshare --mount --net``, private propagation) owns a mount and a network
  namespace; containerd and the kubelet are started inside both with ``nsenter``. In the mount
  namespace ``/run`` and ``/var/log`` are fresh tmpfs (containerd's shim sockets, the pods' netns
  files, the kubelet's ``/var/log/containers`` links), ``/var/lib`` is an overlay whose upper dir is the
  node's, and ``/var/lib/kubelet`` a bind of ``<node dir>/root`` (the kubelet's device-plugin socket
  path is fixed at ``/var/lib/kubelet/device-plugins/``, so this is how a host process reaches it).
  The kernel settings the kubelet insists on writing (``vm.overcommit_memory``, ``kernel.panic``, ...)
  are files of the node dir bound over their ``/proc/sys`` entries. Everything mounted there, the
  kubelet's volume tmpfs included, disappears with the namespace.
* The network namespace has ``lo`` and a bridge ``kube0`` (10.250.0.1/24, the node IP and the pods'
  gateway, Debian's bridge/host-local CNI plugins); the apiserver's port reaches it through
  :mod:`.forward`.
* cgroups (v1, cgroupfs driver) go under ``/<cgroup root>`` of each hierarchy, made here and removed
  on stop after their processes are killed.

Nothing is created on the host outside the data dir and those cgroups (and containerd's socket
in the temp dir when the data dir's path is too long for one; removed on stop too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testbed import pki
from testbed.controlplane.cluster import write_kubeconfig

from . import images
from .build import BuiltKubelet

NODE_IP = "10.250.0.1"
POD_SUBNET = "10.250.0.0/24"
BRIDGE = "kube0"
API_PORT_IN_NS = 6443
CGROUP_FS = Path("/sys/fs/cgroup")
KUBELET_MOUNTPOINT = Path("/var/lib/kubelet")
CNI_BIN = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
# what the kubelet sets with protectKernelDefaults off (it would write the host's otherwise)
KERNEL_TUNABLES = {
    "vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000",
}
REQUIRED_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "unshare", "nsenter", "ip", "gcc")


class NodeError(Exception):
    pass


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the node (empty: nothing), each with how to get it."""
    out = [f"{t} (apt-get install containerd runc util-linux iproute2 gcc)" for t in REQUIRED_TOOLS
           if shutil.which(t) is None]
    if not (CNI_BIN / "bridge").is_file():
        out.append(f"{CNI_BIN}/bridge (apt-get install containernetworking-plugins)")
    if not images.BUSYBOX.is_file():
        out.append(f"{images.BUSYBOX} (apt-get install busybox-static)")
    if os.geteuid() != 0:
        out.append("root (namespaces, mounts and cgroups)")
    if not (CGROUP_FS / "memory").is_dir():
        out.append(f"cgroup v1 hierarchies under {CGROUP_FS} (this runner is written for cgroup v1)")
    return out


@dataclass
class NodeLayout:
    data_dir: Path
    name: str

    @property
    def dir(self) -> Path:
        return self.data_dir / "kubelet" / self.name

    @property
    def root(self) -> Path:  # the kubelet's --root-dir, seen as /var/lib/kubelet inside the node
        return self.dir / "root"

    @property
    def device_plugins(self) -> Path:
        return self.root / "device-plugins"

    @property
    def pod_logs(self) -> Path:
        return self.dir / "pod-logs"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def containerd_socket(self) -> Path:
        """Under the node dir, or in the temp dir when that path is too long for a unix socket."""
        path = self.dir / "containerd" / "containerd.sock"
        if len(str(path).encode()) < 100:
            return path
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"hami-kubelet-{digest}.sock"

    @property
    def cgroup_root(self) -> str:
        digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:8]
        return f"/hami-testbed-{self.name}-{digest}"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class RealKubeletNode:
    built: BuiltKubelet
    data_dir: Path
    name: str = "kubelet-node-1"
    gpus: str = ""  # "MODEL:COUNT" for the HAMi device plugin on emulated GPUs, "" for none
    procs: list[Proc] = field(default_factory=list)
    holder: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.lay = NodeLayout(self.data_dir, self.name)

    # -- cluster ---------------------------------------------------------------------------------

    def cluster(self) -> dict[str, Any]:
        try:
            state = json.loads((self.data_dir / "state.json").read_text())
        except (OSError, ValueError) as e:
            raise NodeError(f"no running testbed in {self.data_dir} (state.json: {e}); start one with "
                            "`python -m testbed up --control-plane real --detach --data-dir "
                            f"{self.data_dir}`") from e
        if state.get("controlPlane") != "real":
            raise NodeError("the testbed in the data dir runs the emulated control plane; the real kubelet "
                            "needs `--control-plane real`")
        return dict(state)

    def kube(self) -> Any:
        from kubeclient.client import Kube

        return Kube.from_config(str(self.data_dir / "kubeconfig"), user_agent="testbed-kubelet")

    # -- files -----------------------------------------------------------------------------------

    def prepare(self) -> None:
        lay = self.lay
        for d in (lay.dir, lay.root, lay.device_plugins, lay.pod_logs, lay.logs, lay.dir / "containerd",
                  lay.dir / "cni" / "net.d", lay.dir / "sysctl", lay.dir / "pki"):
            d.mkdir(parents=True, exist_ok=True)
        ca = pki.load_or_create_ca(self.data_dir / "pki")
        pair = pki.make_client_cert(ca, f"system:node:{self.name}", ("system:nodes",))
        write_kubeconfig(lay.dir / "kubelet.conf", f"https://127.0.0.1:{API_PORT_IN_NS}", ca.cert_pem, pair,
                         f"system:node:{self.name}")
        (lay.dir / "pki" / "ca.crt").write_bytes(ca.cert_pem)
        for key in KERNEL_TUNABLES:
            f = lay.dir / "sysctl" / key.replace("/", ".")
            f.write_text(Path("/proc/sys", key).read_text())  # the host's value; the kubelet writes its own
        (lay.dir / "cni" / "net.d" / "10-testbed.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "testbed-kubelet",
            "plugins": [{"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                         "ipam": {"type": "host-local",
                                  "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                                  "dataDir": str(lay.dir / "cni" / "ipam")}}]}, indent=1))
        c = lay.dir / "containerd"
        (c / "config.toml").write_text(f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{lay.containerd_socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # this machine's root lacks CAP_SYS_RESOURCE, so runc cannot lower a sandbox's oom_score_adj to
  # -998 ("can't get final child's PID from pipe: EOF"); never below containerd's own, instead
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{lay.dir / 'cni' / 'net.d'}"
""")
        cfg: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(lay.dir / "pki" / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{lay.containerd_socket}",
            "cgroupDriver": "cgroupfs", "cgroupRoot": lay.cgroup_root, "cgroupsPerQOS": True,
            # this machine is cgroup v1 (hybrid); 1.35 refuses v1 unless told
            "failCgroupV1": False, "failSwapOn": False,
            "podLogsDir": str(lay.pod_logs),
            "clusterDNS": ["10.96.0.10"], "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "rotateCertificates": False, "serverTLSBootstrap": False,
            # the shared disk of a test machine runs near full: the node must not report DiskPressure
            # or collect our locally imported images (they cannot be pulled back)
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                             "imagefs.available": "1%", "imagefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "staticPodPath": "", "registerNode": True,
        }
        (lay.dir / "kubelet-config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    # -- cgroups ---------------------------------------------------------------------------------

    def make_cgroups(self) -> None:
        """The cgroup root in every v1 hierarchy (the kubelet checks it exists); cpuset needs its
        cpus and mems copied from the parent before a task may join."""
        for h in _hierarchies():
            d = h / self.lay.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            if h.name == "cpuset":
                for f in ("cpuset.cpus", "cpuset.mems"):
                    (d / f).write_text((h / f).read_text())

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.lay.logs / f"{name}.log"
        fh = open(log, "ab")  # noqa: SIM115 - the child keeps it
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)
        fh.close()
        proc = Proc(name, p, log)
        self.procs.append(proc)
        self._save()
        return proc

    def _in_node(self, argv: list[str]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv]

    def mark_ready(self) -> None:
        """Record that the node is up (what `up --detach` waits for)."""
        self._save(ready=True)

    def _save(self, **extra: Any) -> None:
        state = {"pid": os.getpid(), "holder": self.holder.pid if self.holder else None,
                 "cgroupRoot": self.lay.cgroup_root,
                 "node": self.name, "procs": {p.name: p.popen.pid for p in self.procs}}
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(self.lay.state_file.read_text())
            state = {**{k: v for k, v in old.items() if k in ("ready", "timings")}, **state}
        state.update(extra)
        self.lay.state_file.write_text(json.dumps(state, indent=1))

    def _wait_for(self, what: str, check: Any, timeout: float, proc: Proc | None = None) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if proc is not None and proc.popen.poll() is not None:
                raise NodeError(f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n"
                                + _tail(proc.log))
            with contextlib.suppress(Exception):
                if check():
                    return time.monotonic() - t0
            time.sleep(0.2)
        log = f"; {proc.name} log:\n{_tail(proc.log)}" if proc else ""
        raise NodeError(f"{what}: not within {timeout:.0f}s{log}")

    def start(self) -> dict[str, float]:
        """Everything up to the node Ready (and the GPUs registered, with ``gpus``); the seconds each
        step took."""
        missing = missing_prerequisites()
        if missing:
            raise NodeError("missing: " + "; ".join(missing))
        for bad in ("/run", "/var/log", "/var/lib"):
            if str(self.data_dir) == bad or str(self.data_dir).startswith(bad + "/"):
                raise NodeError(f"the data dir may not lie under {bad} (the node mounts over it)")
        if any(c in str(self.data_dir) for c in ",: \t\n\"'"):
            raise NodeError(f"the data dir's path {self.data_dir} may not hold ',', ':', quotes or blanks "
                            "(it goes into mount options and a shell script)")
        t: dict[str, float] = {}
        t0 = time.monotonic()
        cluster = self.cluster()
        self.lay.state_file.unlink(missing_ok=True)  # a previous run's record (its "ready" in particular)
        api = cluster["url"].removeprefix("https://")
        self.prepare()
        archives = images.build_all(self.lay.dir / "images")
        t["prepare"] = time.monotonic() - t0
        self.make_cgroups()
        ready = self.lay.dir / "holder.ready"
        ready.unlink(missing_ok=True)
        # /var/lib as an overlay whose upper dir is the node's: the kubelet's fixed paths under it
        # (device-plugins) appear there without a directory made on the host
        varlib = self.lay.dir / "varlib"
        overlay = f"lowerdir=/var/lib,upperdir={varlib}/upper,workdir={varlib}/work"
        binds = "\n".join(f"mount --bind {self.lay.dir / 'sysctl' / k.replace('/', '.')} /proc/sys/{k}"
                          for k in KERNEL_TUNABLES)
        script = f"""set -e
mount -t tmpfs -o mode=755 testbed-node-run /run
mkdir -p /run/netns
mount -t tmpfs -o mode=755 testbed-node-log /var/log
mkdir -p /var/log/containers /var/log/pods
mkdir -p {varlib}/upper {varlib}/work
mount -t overlay testbed-node-varlib -o {overlay} /var/lib
mkdir -p {KUBELET_MOUNTPOINT}
mount --bind {self.lay.root} {KUBELET_MOUNTPOINT}
{binds}
ip link set lo up
ip link add {BRIDGE} type bridge
ip addr add {NODE_IP}/24 dev {BRIDGE}
ip link set {BRIDGE} up
touch {ready}
exec sleep infinity
"""
        log = open(self.lay.logs / "holder.log", "ab")  # noqa: SIM115
        self.holder = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c",
                                        script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._save()
        self._wait_for("the node's namespaces", ready.exists, 20,
                       Proc("namespace holder", self.holder, self.lay.logs / "holder.log"))
        containerd = self._spawn("containerd", self._in_node(
            ["containerd", "--config", str(self.lay.dir / "containerd" / "config.toml")]))
        sock = self.lay.containerd_socket
        t["containerd"] = self._wait_for("containerd's socket", sock.exists, 60, containerd)
        t1 = time.monotonic()
        for a in archives:
            p = subprocess.run(["ctr", "--address", str(sock), "-n", "k8s.io", "images", "import",
                                str(a.path)], capture_output=True, text=True, timeout=300,
                               check=False)
            if p.returncode != 0:
                raise NodeError(f"ctr images import {a.path} failed: {p.stderr.strip()}")
        t["images"] = time.monotonic() - t1
        self._spawn("forward", [sys.executable, "-m", "testbed.kubelet.forward",
                                "--netns", f"/proc/{self.holder.pid}/ns/net",
                                "--listen", f"127.0.0.1:{API_PORT_IN_NS}", "--to", api])
        t1 = time.monotonic()
        kubelet = self._spawn("kubelet", self._in_node([
            str(self.built.binary), f"--config={self.lay.dir / 'kubelet-config.yaml'}",
            f"--kubeconfig={self.lay.dir / 'kubelet.conf'}", f"--hostname-override={self.name}",
            f"--node-ip={NODE_IP}", f"--cert-dir={self.lay.dir / 'pki'}", "--v=2"]))
        kube = self.kube()

        def node_ready() -> bool:
            node = kube.get(f"/api/v1/nodes/{self.name}")
            return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])

        t["nodeReady"] = self._wait_for(f"node {self.name} Ready", node_ready, 180, kubelet)
        t["total"] = time.monotonic() - t0
        if self.gpus:
            t["gpus"] = self.start_device_plugin(kube)
        self._save(timings={k: round(v, 2) for k, v in t.items()})
        return t

    def start_device_plugin(self, kube: Any) -> float:
        """HAMi's NVIDIA device plugin on the host, on emulated GPUs, registering with the real
        kubelet's device manager through the socket directory both see."""
        from testbed.hardware import create_state, library_env

        model, _, count = self.gpus.partition(":")
        state = create_state(self.lay.dir / "gpus", {"model": model, "count": int(count or 1)},
                             node_name=self.name)
        env = library_env(state.path, "all", host_view=True)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        # the hook dir Allocate mounts into GPU containers (libvgpu.so, ld.so.preload, per-container
        # caches): the node's own, not the host's /usr/local. containerd makes a missing mount source
        # as a directory, so the shim is installed first, as the chart's postStart step does
        hook = self.lay.dir / "hook"
        env["HOOK_PATH"] = str(hook)
        p = subprocess.run([sys.executable, "-m", "hami_stack.device_plugin.shim", f"{hook / 'vgpu'}/"],
                           env=env, capture_output=True, text=True, timeout=600, check=False)
        if p.returncode != 0:
            raise NodeError(f"installing the enforcement shim into {hook} failed: {p.stderr.strip()[-2000:]}")
        plugin = self._spawn("device-plugin", [
            sys.executable, "-m", "hami_stack.device_plugin.nvidia", f"--node-name={self.name}",
            f"--kubelet-socket={self.lay.device_plugins / 'kubelet.sock'}",
            f"--kubeconfig={self.data_dir / 'kubeconfig'}",
            f"--config-file={self.lay.dir / 'no-device-config.yaml'}",
            f"--node-config-file={self.lay.dir / 'no-node-config.json'}"], env=env)

        def registered() -> bool:
            node = kube.get(f"/api/v1/nodes/{self.name}")
            cap = node["status"].get("capacity") or {}
            return int(cap.get("nvidia.com/gpu", "0")) > 0

        return self._wait_for("nvidia.com/gpu in the node's capacity", registered, 120, plugin)

    def stop(self) -> list[str]:
        """Stop everything this node started; returns what could not be cleaned (empty: all)."""
        by_name = {p.name: p.popen for p in self.procs}
        if self.holder is not None:
            by_name["holder"] = self.holder

        def terminate(name: str, grace: float) -> None:
            if name in by_name:
                _terminate(by_name[name], grace)

        holder = self.holder.pid if self.holder else None
        problems = teardown(self.lay, holder, terminate)
        self.procs.clear()
        self._save(stopped=True, problems=problems)
        return problems


def _hierarchies(unified: bool = False) -> list[Path]:
    """The mounted v1 hierarchies; with ``unified`` also the hybrid layout's v2 mount (runc makes each
    container's cgroup there too, so it is cleaned, but the kubelet needs no root there)."""
    return [d for d in sorted(CGROUP_FS.iterdir()) if d.is_dir() and not d.is_symlink()
            and (d / "cgroup.procs").exists() and (unified or d.name != "unified")]


def remove_cgroups(cgroup_root: str, timeout: float = 15) -> list[str]:
    """Kill every task left under ``cgroup_root`` and remove its cgroups, leaves first; returns the
    cgroups that stayed. containerd and the kubelet may remove some at the same time: a cgroup that
    is gone is not an error."""
    deadline = time.monotonic() + timeout
    while True:
        left: list[str] = []
        for h in _hierarchies(unified=True):
            top = h / cgroup_root.lstrip("/")
            if not top.exists():
                continue
            for d, _, _ in os.walk(top, topdown=False):  # os.walk skips what vanished under it
                with contextlib.suppress(OSError, ValueError):
                    for pid in (Path(d) / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


def teardown(lay: NodeLayout, holder: int | None, terminate: Callable[[str, float], None]) -> list[str]:
    """Stop the node in order and clean the host; ``terminate(name, grace)`` stops one recorded
    process ("device-plugin", "kubelet", "containerd", "forward", "holder"). Each step runs whatever
    the one before it raised; returns what could not be cleaned."""
    problems: list[str] = []

    def step(what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # keep cleaning; report it
            problems.append(f"{what}: {e!r}")
            return None

    for name in ("device-plugin", "kubelet"):
        step(f"stopping {name}", lambda n=name: terminate(n, 15))  # type: ignore[misc]
    # the pods' processes: the kubelet leaves its containers running when it stops
    step("pods' cgroups", lambda: remove_cgroups(lay.cgroup_root))
    mnt_ns = _ns_inode(holder, "mnt") if holder else None
    step("stopping containerd", lambda: terminate("containerd", 15))
    if mnt_ns is not None:  # containerd's shims re-parent away from it; they share its mount namespace

        def kill_shims() -> None:
            for pid in _pids_in_ns(mnt_ns, "mnt"):
                if pid != holder:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

        step("stopping containerd's shims", kill_shims)
    step("stopping the forwarder", lambda: terminate("forward", 5))
    step("stopping the namespace holder", lambda: terminate("holder", 5))
    left = step("cgroups", lambda: remove_cgroups(lay.cgroup_root, 5)) or []
    problems += [f"cgroup {d} not removed" for d in left]
    if lay.dir not in lay.containerd_socket.parents:  # the temp-dir socket of a long data-dir path
        step("containerd's socket", lambda: lay.containerd_socket.unlink(missing_ok=True))
    return problems


def teardown_recorded(lay: NodeLayout, state: dict[str, Any]) -> list[str]:
    """:func:`teardown` from the node's state file, for a runner that died without cleaning up.
    A recorded pid is only signalled while its command line still names this node (pids are reused)."""
    holder = state.get("holder")
    pids = {**(state.get("procs") or {}), "holder": holder}
    marks = {name: f"/proc/{holder}/ns/net" if name == "forward" else str(lay.dir) for name in pids}
    marks["holder"] = "sleep"  # the holder's script ends in `exec sleep infinity`
    if holder and _ns_inode(holder, "net") == _ns_inode(os.getpid(), "net"):
        pids["holder"] = None  # not a namespace holder (a reused pid)

    def terminate(name: str, grace: float) -> None:
        pid = pids.get(name)
        if not pid:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return
        if marks[name] in cmdline:
            _kill_pid(int(pid), grace)

    live_holder = pids["holder"] if pids["holder"] and alive(int(pids["holder"])) else None
    return teardown(lay, live_holder, terminate)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_pid(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _pids_in_ns(inode: int, kind: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and _ns_inode(int(d.name), kind) == inode:
            out.append(int(d.name))
    return out


def _terminate(p: subprocess.Popen[bytes], grace: float) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
