"""The emulated lab's hosts: one network namespace per inventory host, on a bridge, each running sshd.

Layout (every name carries the lab's name, so two labs never share anything):

* a *gateway* namespace ``hcl-<lab>-gw`` holds the bridge ``br0`` and the subnet's first address; the
  controller (Ansible) reaches the hosts through it with an SSH ``ProxyCommand`` (``proxy.py``), so the
  controller's own namespace gets no address on the lab network;
* one namespace ``hcl-<lab>-<host>`` per host, linked to the bridge by a veth pair (``eth0`` inside,
  created directly in the two namespaces, never in the host's), with the host's ``lab_address``;
* in each host namespace Debian's ``/usr/sbin/sshd`` listens on that address with the host's own
  ed25519 host key and accepts one client key; the lab generates all keys (``cryptography``);
* pod networking across hosts, as a routing CNI (flannel's host-gw, Calico without overlay) does it:
  node host *i* owns the *i*-th /24 of ``lab_pod_subnet`` (its ``lab_pod_cidr``). That /24 is local
  in the node host's namespace (``ip route replace local CIDR dev lo``, so the node agent's pod-port
  forwarders can listen on any of its pod IPs) and every other host routes it via the node host's
  ``lab_address``; the control plane's webhooks, pod proxy and the other node's service proxy reach
  a pod by its IP across the bridge.

All hosts share this machine's file system: each host's files live under ``<state>/hosts/<host>/``.
``down`` always cleans up: every process inside the lab's namespaces is ended, then the namespaces go.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

SSHD = Path("/usr/sbin/sshd")
NETNS_DIR = Path("/var/run/netns")
PROXY = Path(__file__).with_name("proxy.py")
PREFIX = "hcl"
DEFAULT_POD_SUBNET = ipaddress.IPv4Network("10.244.0.0/16")  # flannel's and kubeadm examples' default
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")  # the testbed's (testbed/node/clusternet.py)


class LabError(Exception):
    """Bad lab inventory or a host that cannot be created; the message names the host and field."""


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    group: str  # control_plane | nodes
    pod_cidr: str = ""  # node hosts: the /24 of lab_pod_subnet their pods' IPs come from


@dataclass(frozen=True)
class LabSpec:
    name: str
    subnet: ipaddress.IPv4Network
    hosts: tuple[LabHost, ...]
    inventory: Path
    pod_subnet: ipaddress.IPv4Network = DEFAULT_POD_SUBNET

    @property
    def gateway(self) -> str:
        return str(next(self.subnet.hosts()))


def _hosts_of(group: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(group, dict) or not isinstance(group.get("hosts"), dict) or not group["hosts"]:
        raise LabError(f"{where}: needs a 'hosts' mapping with at least one host")
    return {str(k): (v or {}) for k, v in group["hosts"].items()}


def load_spec(inventory: str | Path) -> LabSpec:
    """Read the lab's Ansible inventory (YAML): ``all.vars.lab_name``, ``lab_subnet``, optional
    ``lab_pod_subnet`` (default 10.244.0.0/16) and the groups ``control_plane`` (one host) and
    ``nodes``, each host with ``lab_address`` inside the subnet."""
    path = Path(inventory).resolve()
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise LabError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise LabError(f"{path}: not YAML: {e}") from None
    top = (doc or {}).get("all") or {}
    gvars = top.get("vars") or {}
    name = str(gvars.get("lab_name", ""))
    if not name.isalnum() or len(name) > 8:
        raise LabError(f"{path}: all.vars.lab_name must be 1-8 letters/digits, got {name!r}")
    try:
        subnet = ipaddress.IPv4Network(str(gvars.get("lab_subnet", "")))
    except ValueError as e:
        raise LabError(f"{path}: all.vars.lab_subnet: {e}") from None
    if not subnet.is_private:
        raise LabError(f"{path}: all.vars.lab_subnet {subnet} is not a private range")
    try:
        pod_subnet = ipaddress.IPv4Network(str(gvars.get("lab_pod_subnet", DEFAULT_POD_SUBNET)))
    except ValueError as e:
        raise LabError(f"{path}: all.vars.lab_pod_subnet: {e}") from None
    if not pod_subnet.is_private or pod_subnet.prefixlen > 24:
        raise LabError(f"{path}: all.vars.lab_pod_subnet {pod_subnet} must be a private range of /24 or "
                       "wider (each node host gets one /24)")
    for other, what in ((subnet, "all.vars.lab_subnet"), (SERVICE_CIDR, "the Service CIDR")):
        if pod_subnet.overlaps(other):
            raise LabError(f"{path}: all.vars.lab_pod_subnet {pod_subnet} overlaps {what} {other}")
    children = top.get("children") or {}
    pod_cidrs = pod_subnet.subnets(new_prefix=24)
    hosts: list[LabHost] = []
    for group in ("control_plane", "nodes"):
        for hname, hvars in _hosts_of(children.get(group), f"{path}: all.children.{group}").items():
            raw = hvars.get("lab_address")
            try:
                addr = ipaddress.IPv4Address(str(raw))
            except ValueError:
                raise LabError(f"{path}: host {hname}: lab_address {raw!r} is not an IPv4 address") from None
            if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address,
                                              next(subnet.hosts())):
                raise LabError(f"{path}: host {hname}: lab_address {addr} is not a host address of "
                               f"{subnet} (the first one is the gateway's)")
            if not hname.replace("-", "").isalnum() or len(hname) > 20:
                raise LabError(f"{path}: host {hname}: names are letters, digits and '-', at most 20")
            cidr = ""
            if group == "nodes":
                try:
                    cidr = str(next(pod_cidrs))
                except StopIteration:
                    raise LabError(f"{path}: host {hname}: all.vars.lab_pod_subnet {pod_subnet} has no /24 "
                                   "left for it") from None
            hosts.append(LabHost(hname, str(addr), group, cidr))
    if sum(h.group == "control_plane" for h in hosts) != 1:
        raise LabError(f"{path}: all.children.control_plane must have exactly one host")
    seen: dict[str, str] = {}
    for h in hosts:
        if h.address in seen or h.name in seen.values():
            raise LabError(f"{path}: host {h.name}: duplicate name or lab_address {h.address}")
        seen[h.address] = h.name
    return LabSpec(name, subnet, tuple(hosts), path, pod_subnet)


def netns_name(spec: LabSpec, host: str) -> str:
    return f"{PREFIX}-{spec.name}-{host}"


def gateway_ns(spec: LabSpec) -> str:
    return f"{PREFIX}-{spec.name}-gw"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)
    if check and r.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _ns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _write_key(path: Path, key: ed25519.Ed25519PrivateKey) -> str:
    """Write an OpenSSH private key (0600) and its .pub; returns the public line."""
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    path.with_suffix(".pub").write_text(pub + "\n")
    return pub


def _key(path: Path) -> str:
    """The key at ``path``, generated on first use (keys stay across up/down so known_hosts holds)."""
    if path.exists():
        return path.with_suffix(".pub").read_text().strip()
    return _write_key(path, ed25519.Ed25519PrivateKey.generate())


SSHD_CONFIG = """\
# generated by testbed.lab for host {host}; only this lab's client key may log in
ListenAddress {address}
Port 22
HostKey {host_key}
AuthorizedKeysFile {authorized}
PidFile {pidfile}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
"""


class Lab:
    """Create, describe and remove one lab's hosts. ``state`` holds keys, sshd configs and host dirs."""

    def __init__(self, spec: LabSpec, state: Path) -> None:
        self.spec = spec
        self.state = state.resolve()

    # -- paths -------------------------------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.state / "keys" / "client"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"

    @property
    def connection_inventory(self) -> Path:
        return self.state / "connection.yml"

    def host_dir(self, host: str) -> Path:
        return self.state / "hosts" / host

    # -- up ----------------------------------------------------------------------------------------
    def up(self, python: str = sys.executable) -> dict[str, Any]:
        """Create whatever is missing (idempotent); returns what was created."""
        if not SSHD.exists():
            raise LabError(f"{SSHD} is missing: install Debian's openssh-server package "
                           "(apt-get install -y openssh-server) to run an emulated lab")
        if os.geteuid() != 0:
            raise LabError("an emulated lab needs root (network namespaces, sshd)")
        (self.state / "keys").mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        client_pub = _key(self.client_key)
        (self.state / "authorized_keys").write_text(client_pub + "\n")
        created: list[str] = []
        gw = gateway_ns(self.spec)
        if not _ns_exists(gw):
            _ip("netns", "add", gw)
            created.append(gw)
        _ip("-n", gw, "link", "set", "lo", "up")
        if _ip("-n", gw, "link", "show", "br0", check=False).returncode != 0:
            _ip("-n", gw, "link", "add", "br0", "type", "bridge")
        prefix = self.spec.subnet.prefixlen
        if f"{self.spec.gateway}/" not in _ip("-n", gw, "-o", "addr", "show", "dev", "br0").stdout:
            _ip("-n", gw, "addr", "add", f"{self.spec.gateway}/{prefix}", "dev", "br0")
        _ip("-n", gw, "link", "set", "br0", "up")
        known: list[str] = []
        for i, h in enumerate(self.spec.hosts):
            ns = netns_name(self.spec, h.name)
            if not _ns_exists(ns):
                _ip("netns", "add", ns)
                created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            peer = f"vh{i}"
            if _ip("-n", ns, "link", "show", "eth0", check=False).returncode != 0:
                _ip("-n", gw, "link", "del", peer, check=False)
                _ip("-n", gw, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", gw, "link", "set", peer, "master", "br0", "up")
            if f"{h.address}/" not in _ip("-n", ns, "-o", "addr", "show", "dev", "eth0").stdout:
                _ip("-n", ns, "addr", "add", f"{h.address}/{prefix}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            hdir = self.host_dir(h.name)
            hdir.mkdir(parents=True, exist_ok=True)
            host_pub = _key(self.state / "keys" / f"host-{h.name}")
            known.append(f"{h.address} {host_pub}")
            if self._start_sshd(h, ns):
                created.append(f"sshd@{h.name}")
        self._pod_routes()
        self.known_hosts.write_text("\n".join(known) + "\n")
        self._write_connection_inventory(python)
        self._wait_ssh()
        return {"lab": self.spec.name, "created": created, "state": str(self.state)}

    def _pod_routes(self) -> None:
        """Each node host's pod /24: local on the node host, routed via its lab address elsewhere
        (``replace``: a second ``up`` changes nothing). Only inside the lab's own namespaces."""
        for h in self.spec.hosts:
            ns = netns_name(self.spec, h.name)
            for other in self.spec.hosts:
                if not other.pod_cidr:
                    continue
                if other is h:
                    _ip("-n", ns, "route", "replace", "local", other.pod_cidr, "dev", "lo")
                else:
                    _ip("-n", ns, "route", "replace", other.pod_cidr, "via", other.address, "dev", "eth0")

    def _sshd_pidfile(self, host: str) -> Path:
        return self.state / "run" / f"sshd-{host}.pid"

    def _start_sshd(self, h: LabHost, ns: str) -> bool:
        pidfile = self._sshd_pidfile(h.name)
        pidfile.parent.mkdir(exist_ok=True)
        if _pid_alive(pidfile):
            return False
        conf = self.state / "run" / f"sshd-{h.name}.conf"
        conf.write_text(SSHD_CONFIG.format(
            host=h.name, address=h.address, host_key=self.state / "keys" / f"host-{h.name}",
            authorized=self.state / "authorized_keys", pidfile=pidfile))
        log = self.state / "run" / f"sshd-{h.name}.log"
        # sshd daemonises itself and writes the pid file; it lives in the host's namespace only
        r = subprocess.run(["ip", "netns", "exec", ns, str(SSHD), "-f", str(conf), "-E", str(log)],
                           capture_output=True, text=True, timeout=15)
        if r.returncode != 0:
            raise LabError(f"host {h.name}: sshd did not start: {r.stderr.strip() or log.read_text()}")
        return True

    def _wait_ssh(self, timeout: float = 15) -> None:
        """Every sshd answers its SSH banner through the gateway (what Ansible will use)."""
        deadline = time.monotonic() + timeout
        pending = list(self.spec.hosts)
        while pending:
            h = pending[0]
            r = subprocess.run([sys.executable, "-S", str(PROXY), str(NETNS_DIR / gateway_ns(self.spec)),
                                h.address, "22"], input=b"", capture_output=True, timeout=15)
            if r.stdout.startswith(b"SSH-2.0"):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise LabError(f"host {h.name}: sshd on {h.address}:22 does not answer: {r.stderr!r}")
            time.sleep(0.1)

    def _write_connection_inventory(self, python: str) -> None:
        """How Ansible reaches each host: a second inventory source beside the lab's own."""
        proxy = (f"{sys.executable} -S {PROXY} {NETNS_DIR / gateway_ns(self.spec)} %h %p")
        common = (f"-o ProxyCommand='{proxy}' -o UserKnownHostsFile={self.known_hosts} "
                  "-o StrictHostKeyChecking=yes -o ConnectTimeout=10")
        hosts = {
            h.name: {"ansible_host": h.address, "ansible_port": 22, "ansible_user": "root",
                     "ansible_ssh_private_key_file": str(self.client_key),
                     "ansible_ssh_common_args": common,
                     "ansible_python_interpreter": python,
                     "lab_host_dir": str(self.host_dir(h.name)),
                     **({"lab_pod_cidr": h.pod_cidr} if h.pod_cidr else {}),
                     "lab_netns": netns_name(self.spec, h.name)}
            for h in self.spec.hosts
        }
        doc = {"all": {"hosts": hosts, "vars": {"lab_state_dir": str(self.state)}}}
        self.connection_inventory.write_text(
            "# generated by testbed.lab: connection variables of the lab's hosts\n"
            + yaml.safe_dump(doc, sort_keys=True))

    # -- down --------------------------------------------------------------------------------------
    def down(self) -> dict[str, Any]:
        """End every process in the lab's namespaces (sshd, control plane, node agents, their pods'
        launchers), then delete the namespaces (the veths and the bridge go with them). Never fails
        on something already gone."""
        removed: list[str] = []
        names = [netns_name(self.spec, h.name) for h in self.spec.hosts] + [gateway_ns(self.spec)]
        # the node agents' own namespaces (pods', the service namespace) are named globally and their
        # container processes outlive an agent (adoptable shims): found from the agents' files
        names += self._agent_namespaces()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            # with their descendants: a node agent's containers live in pod namespaces of their own
            pids = _with_descendants([p for ns in names if _ns_exists(ns) for p in _ns_pids(ns)])
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + (10 if sig == signal.SIGTERM else 3)
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                time.sleep(0.1)
        for ns in names:
            if _ns_exists(ns):
                _ip("netns", "del", ns, check=False)
                removed.append(ns)
        # the hosts' files go too (cluster data, node roots, logs), so the next provision starts a new
        # cluster; the keys stay (known_hosts keeps matching). Mounts a killed agent left go first.
        hosts = self.state / "hosts"
        for mnt in sorted(_mounts_under(hosts), key=len, reverse=True):
            if subprocess.run(["umount", "-l", mnt], capture_output=True, timeout=15).returncode == 0:
                removed.append(f"mount {mnt}")
        if hosts.exists():
            shutil.rmtree(hosts, ignore_errors=True)
            removed.append(str(hosts))
        for p in (self.state / "run").glob("*.pid") if (self.state / "run").exists() else []:
            p.unlink(missing_ok=True)
        return {"lab": self.spec.name, "removed": removed}

    def _agent_namespaces(self) -> list[str]:
        from testbed.node.podcheckpoint import agent_namespaces

        out: list[str] = []
        for h in self.spec.hosts:
            data_dir = self.host_dir(h.name) / "agent"
            if data_dir.exists():
                out += agent_namespaces(data_dir)
        return sorted(set(out))

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lab": self.spec.name, "state": str(self.state), "hosts": {}}
        for h in self.spec.hosts:
            ns = netns_name(self.spec, h.name)
            out["hosts"][h.name] = {"address": h.address, "netns": _ns_exists(ns),
                                    "sshd": _pid_alive(self._sshd_pidfile(h.name)),
                                    "processes": len(_ns_pids(ns)) if _ns_exists(ns) else 0}
        return out


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in this mount namespace (octal escapes of /proc/mounts undone)."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            mnt = line.split()[1].encode().decode("unicode_escape")
            if mnt == str(root) or mnt.startswith(f"{root}/"):
                out.append(mnt)
    return out


def _ns_pids(ns: str) -> list[int]:
    r = _ip("netns", "pids", ns, check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit() and int(x) != os.getpid()]


def _with_descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in out and pid != os.getpid():
            out.add(pid)
            todo.extend(children.get(pid, []))
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie of ours counts as gone
        st = Path(f"/proc/{pid}/stat").read_text()
        return st.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return _alive(pid)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
