"""``testbed up --control-plane real``: etcd, kube-apiserver, kube-controller-manager and kube-scheduler of
the minor (built by :mod:`.build`), with the node agents registered under node credentials.

Flags follow kubeadm's static pods for the minor, with these deliberate changes (also in
testbed/DIFFERENCES.md): everything listens on loopback; etcd without TLS; no front-proxy /
aggregation flags; leader election off for the testbed's own controller manager and scheduler (one
member, and a restart on the kept data dir would otherwise wait out the previous lease); flags a minor
does not have (the insecure ports up to 1.23) are detected from the binary's ``--help``.

Identities, all client certificates signed by the testbed CA (``<data dir>/pki``):
``kubernetes-admin`` in ``system:masters`` (the kubeconfig handed out), ``system:kube-controller-manager``,
``system:kube-scheduler``, ``system:node:<name>`` in ``system:nodes`` (one node-agent process per
executed node, so the Node authorizer and NodeRestriction apply; simulated nodes share one process as
``testbed:simulated-node-agents`` in ``system:masters``), and ``kube-apiserver-kubelet-client`` for the
apiserver's calls to the node agents' kubelet API.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from testbed import pki
from testbed.components import Component, ComponentSet

from . import egress
from . import etcd as etcd_mod
from .build import Built, find
from .releases import k8s_cache

SERVICE_CIDR = "10.96.0.0/16"  # the node agents' service proxy serves this range (kind uses it too)
SERVICE_IP = "10.96.0.1"
DNS_IP = "10.96.0.10"
ISSUER = "https://kubernetes.default.svc.cluster.local"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXIT_NO_BUILD = 4
SIMULATED_NODES_USER = "testbed:simulated-node-agents"


class RealControlPlaneError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def require_build(minor: int) -> Built:
    """The cached build of ``minor``, or the error `up` exits 4 with before starting anything."""
    built = find(minor)
    if built is None:
        raise RealControlPlaneError(
            f"no real control plane is built for Kubernetes 1.{minor} (looked in {k8s_cache()}); "
            f"build it with `python -m testbed.controlplane build 1.{minor}`, or use "
            f"--control-plane emulated", code=EXIT_NO_BUILD)
    return built


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@functools.cache
def _help(binary: str) -> str:
    p = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60, check=False)
    return p.stdout + p.stderr


def has_flag(binary: Path, flag: str) -> bool:
    return f"--{flag} " in _help(str(binary)) or f"--{flag}=" in _help(str(binary))


@dataclass
class Identity:
    user: str
    groups: tuple[str, ...] = ()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, pair: pki.KeyPair, user: str) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testbed",
                      "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(pair.cert_pem),
                                          "client-key-data": _b64(pair.key_pem)}}],
        "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": user}}],
        "current-context": "testbed",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    return path


def _sa_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Layout:
    """Files of the real control plane under the data dir (``real/``; the CA is the testbed's)."""

    data_dir: Path

    @property
    def root(self) -> Path:
        return self.data_dir / "real"

    @property
    def pki(self) -> Path:
        return self.data_dir / "pki"

    @property
    def etcd(self) -> Path:
        return self.root / "etcd"

    def kubeconfig(self, who: str) -> Path:
        return self.root / f"{who}.conf"


class RealControlPlane(ComponentSet):
    """The processes of a real control plane plus one node-agent process per inventory node."""

    def __init__(self, built: Built, data_dir: Path, host: str, port: int, *, nodes: Path | None = None,
                 node_names: list[str] | None = None, scheduler: bool = True, controllers: bool = True,
                 image_catalog: Path | None = None, containment: Any = None, fresh: bool = False) -> None:
        super().__init__(kubeconfig=data_dir / "kubeconfig", data_dir=data_dir, minor=built.release.minor,
                         nodes=nodes, scheduler=scheduler, controllers=controllers,
                         image_catalog=image_catalog, containment=containment)
        self.built = built
        self.host = host
        self.port = port or free_port(host)
        self.node_names = node_names or []
        self.layout = Layout(data_dir)
        self.etcd = etcd_mod.locate()
        self.fresh = fresh
        self.url = f"https://{host}:{self.port}"
        self.egress_socket = ""
        # executed nodes: a process each, under its own node identity; simulated nodes (hundreds, for
        # scale) share one process and one identity, as a process per node would not fit in memory
        self.executed: list[str] = []
        self.simulated: list[str] = []
        if nodes is not None:
            from testbed.node.inventory import load_inventory

            wanted = set(self.node_names)
            for spec in load_inventory(nodes):
                if spec.name in wanted:
                    (self.simulated if spec.simulated else self.executed).append(spec.name)

    # -- files ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        lay = self.layout
        if self.fresh:
            shutil.rmtree(lay.root, ignore_errors=True)
        pki.private_dir(lay.root)
        pki.private_dir(lay.pki)
        self.ca = pki.load_or_create_ca(lay.pki)
        (lay.pki / "ca.crt").write_bytes(self.ca.cert_pem)
        hosts = sorted({self.host, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                        "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", SERVICE_IP})
        # the serving certificate is remade each start: the port (and so the URL) may change
        pki.make_serving_cert(self.ca, "kube-apiserver", hosts).write(lay.root / "apiserver.crt",
                                                                       lay.root / "apiserver.key")
        sa_pem = pki.load_or_create_key(lay.root / "sa.key", _sa_key, "service-account signing key")
        pub = serialization.load_pem_private_key(sa_pem, password=None).public_key()
        (lay.root / "sa.pub").write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
        # the front proxy (request-header authentication), as kubeadm sets it up
        front = lay.root / "front-proxy-ca.crt"
        if not front.exists():
            fca = pki.make_ca("front-proxy-ca")
            fca.write(front, lay.root / "front-proxy-ca.key")
        fca = pki.KeyPair(front.read_bytes(), (lay.root / "front-proxy-ca.key").read_bytes())
        pki.make_client_cert(fca, "front-proxy-client").write(lay.root / "front-proxy-client.crt",
                                                              lay.root / "front-proxy-client.key")
        pki.make_client_cert(self.ca, pki.KUBELET_CLIENT, ("system:masters",)).write(
            lay.root / "apiserver-kubelet-client.crt", lay.root / "apiserver-kubelet-client.key")
        who = {
            "admin": Identity("kubernetes-admin", ("system:masters",)),
            "controller-manager": Identity("system:kube-controller-manager"),
            "scheduler": Identity("system:kube-scheduler"),
        }
        for name in self.executed:
            who[f"node-{name}"] = Identity(f"system:node:{name}", ("system:nodes",))
        if self.simulated:
            who["node-agents"] = Identity(SIMULATED_NODES_USER, ("system:masters",))
        for key, ident in who.items():
            pair = pki.make_client_cert(self.ca, ident.user, ident.groups)
            write_kubeconfig(lay.kubeconfig(key), self.url, self.ca.cert_pem, pair, ident.user)
        shutil.copyfile(lay.kubeconfig("admin"), self.kubeconfig)
        os.chmod(self.kubeconfig, 0o600)

    # -- processes --------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = super()._env()
        env["TESTBED_IMAGE_CATALOG"] = str(self.image_catalog_file())
        return env

    def image_catalog_file(self) -> Path:
        """The node agents' catalog: the one given to `up` (its entries first), then kube-scheduler
        images mapped to this minor's real kube-scheduler (the chart's HAMi scheduler pod runs it;
        the chart names the command ``kube-scheduler``, so the build's ``bin/`` goes first on PATH)."""
        path = self.layout.root / "image-catalog.yaml"
        images: list[dict[str, Any]] = []
        if self.image_catalog is not None:
            images += (yaml.safe_load(Path(self.image_catalog).read_text()) or {}).get("images") or []
        binary = str(self.built.binary("kube-scheduler"))
        env = {"PATH": f"{self.built.path / 'bin'}:{SYSTEM_PATH}"}
        for registry in ("registry.k8s.io", "k8s.gcr.io"):
            images.append({"match": f"{registry}/kube-scheduler:*", "entrypoint": [binary], "env": env,
                           "paths": [str(self.built.path / "bin")]})
        if not path.exists() or yaml.safe_load(path.read_text()) != {"images": images}:
            path.write_text(yaml.safe_dump({"images": images}, sort_keys=False))
        return path

    def _bin(self, command: str) -> str:
        return str(self.built.binary(command))

    def apiserver_argv(self, etcd_url: str) -> list[str]:
        lay, api = self.layout, self.built.binary("kube-apiserver")
        argv = [
            str(api),
            f"--advertise-address={self.host}",
            f"--bind-address={self.host}",
            f"--secure-port={self.port}",
            "--allow-privileged=true",
            "--authorization-mode=Node,RBAC",
            f"--client-ca-file={lay.pki / 'ca.crt'}",
            "--enable-admission-plugins=NodeRestriction",
            "--enable-bootstrap-token-auth=true",
            # the advertised address is loopback, which Endpoints refuse (1.37 refuses to start with
            # the lease reconciler): the `kubernetes` Service gets no Endpoints; pods reach the
            # apiserver at KUBERNETES_SERVICE_HOST, which the node agents set to its real address
            "--endpoint-reconciler-type=none",
            f"--etcd-servers={etcd_url}",
            f"--kubelet-client-certificate={lay.root / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={lay.root / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={lay.root / 'sa.pub'}",
            f"--service-account-signing-key-file={lay.root / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={lay.root / 'apiserver.crt'}",
            f"--tls-private-key-file={lay.root / 'apiserver.key'}",
            f"--proxy-client-cert-file={lay.root / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={lay.root / 'front-proxy-client.key'}",
            "--requestheader-allowed-names=front-proxy-client",
            f"--requestheader-client-ca-file={lay.root / 'front-proxy-ca.crt'}",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
        ]
        if has_flag(api, "insecure-port"):
            argv.append("--insecure-port=0")
        if self.egress_socket:  # webhooks, pods and kubelets through the testbed's network (egress.py)
            argv.append(f"--egress-selector-config-file={lay.root / 'egress-selector.yaml'}")
        return argv

    def _component_argv(self, command: str, conf: str, extra: list[str]) -> list[str]:
        binary = self.built.binary(command)
        kc = str(self.layout.kubeconfig(conf))
        argv = [str(binary), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}", "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}", "--leader-elect=false", *extra]
        if has_flag(binary, "port"):
            argv.append("--port=0")  # the insecure port, where the minor still has one
        return argv

    def plan(self) -> list[Component]:
        lay = self.layout
        out: list[Component] = []
        if self.controllers:
            out.append(Component("kube-controller-manager", self._component_argv(
                "kube-controller-manager", "controller-manager", [
                    f"--client-ca-file={lay.pki / 'ca.crt'}",
                    "--cluster-name=kubernetes",
                    f"--cluster-signing-cert-file={lay.pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={lay.pki / 'ca.key'}",
                    "--controllers=*,bootstrapsigner,tokencleaner",
                    f"--root-ca-file={lay.pki / 'ca.crt'}",
                    f"--requestheader-client-ca-file={lay.root / 'front-proxy-ca.crt'}",
                    f"--service-account-private-key-file={lay.root / 'sa.key'}",
                    "--use-service-account-credentials=true",
                ])))
        if self.scheduler:
            out.append(Component("kube-scheduler", self._component_argv("kube-scheduler", "scheduler", [])))
        if self.nodes is not None:
            node = [sys.executable, "-m", "testbed.node", "--inventory", str(self.nodes),
                    "--data-dir", str(self.data_dir)]
            for name in self.executed:
                out.append(Component(f"node-{name}", [
                    *node, "--kubeconfig", str(lay.kubeconfig(f"node-{name}")), "--node", name]))
            if self.simulated:
                out.append(Component("nodes-simulated", [
                    *node, "--kubeconfig", str(lay.kubeconfig("node-agents")),
                    *(a for name in self.simulated for a in ("--node", name))]))
        return out

    def _start_one(self, c: Component) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        c.log = logs / f"{c.name}.log"
        self._spawn(c)
        self.components.append(c)

    def start(self) -> RealControlPlane:  # type: ignore[override]
        """etcd, then kube-apiserver (waits for /readyz), then the rest; raises with the log tail
        on failure."""
        self.prepare()
        client_port, peer_port = free_port(), free_port()
        self.layout.etcd.mkdir(parents=True, exist_ok=True)
        os.chmod(self.layout.etcd, 0o700)
        etcd = Component("etcd", etcd_mod.argv(self.etcd, self.layout.etcd, client_port, peer_port))
        self._start_one(etcd)
        etcd_url = f"http://127.0.0.1:{client_port}"
        self._wait(etcd, f"{etcd_url}/health", 30, tls=False)
        self.egress_socket = egress.socket_path(self.data_dir)
        (self.layout.root / "egress-selector.yaml").write_text(
            egress.config_yaml(self.egress_socket, self.built.release.minor))
        self._start_one(Component("egress-proxy", [
            sys.executable, "-m", "testbed.controlplane.egress",
            "--kubeconfig", str(self.layout.kubeconfig("admin")), "--socket", self.egress_socket,
            "--service-cidr", SERVICE_CIDR]))
        api = Component("kube-apiserver", self.apiserver_argv(etcd_url))
        self._start_one(api)
        self._wait(api, f"{self.url}/readyz", 90, tls=True)
        self.bootstrap()
        for c in self.plan():
            self._start_one(c)
        return self

    def bootstrap(self) -> None:
        """What kubeadm's addons would create, for the parts the node agents play: kube-proxy's
        permissions (the agents proxy Services: ``system:node-proxier`` for ``system:nodes``) and
        CoreDNS's Service at 10.96.0.10 (the agents answer DNS there). Existing objects are kept."""
        objs = [
            ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "testbed:node-proxier"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:node-proxier"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                              "name": "system:nodes"}]}),
            ("/api/v1/namespaces/kube-system/services", {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                             "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
                "spec": {"clusterIP": DNS_IP, "selector": {"k8s-app": "kube-dns"}, "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}),
        ]
        ctx = self._ssl()
        for path, body in objs:
            try:  # kept from an earlier start on this data dir (a second create could fail on its IP)
                self.get(f"{path}/{body['metadata']['name']}")
                continue
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise RealControlPlaneError(f"reading {path} as the admin failed: {e.code}") from e
            req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=10):
                    pass
            except urllib.error.HTTPError as e:
                if e.code != 409:
                    raise RealControlPlaneError(f"creating {path} as the admin failed: {e.code} "
                                                f"{e.read().decode(errors='replace')[:300]}") from e

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.layout.pki / "ca.crt"))
        kc = yaml.safe_load(self.layout.kubeconfig("admin").read_text())
        user = kc["users"][0]["user"]
        crt, key = self.layout.root / "admin.crt", self.layout.root / "admin.key"
        pki.KeyPair(base64.b64decode(user["client-certificate-data"]),
                    base64.b64decode(user["client-key-data"])).write(crt, key)
        ctx.load_cert_chain(crt, key)
        return ctx

    def get(self, path: str, timeout: float = 10) -> Any:
        """GET ``path`` on the apiserver as the admin; parsed JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", context=self._ssl(), timeout=timeout) as r:
            return json.loads(r.read())

    def _wait(self, c: Component, url: str, timeout: float, tls: bool) -> None:
        deadline = time.monotonic() + timeout
        ctx = self._ssl() if tls else None
        last = ""
        while time.monotonic() < deadline:
            if c.proc is not None and c.proc.poll() is not None:
                raise RealControlPlaneError(self.describe_failure(c))
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:
                last = str(getattr(e, "reason", e))
            time.sleep(0.1)
        raise RealControlPlaneError(f"{c.name} not ready within {timeout:.0f}s at {url} ({last}); "
                                    f"log: {c.log}")

    def versions(self) -> dict[str, Any]:
        """What the bundle records: the binaries' versions and the module checksums they came from."""
        m = self.built.manifest
        return {
            "controlPlane": "real",
            "binaries": {k: {"version": v["version"], "sha256": v["sha256"]}
                         for k, v in m["binaries"].items()},
            "go": m.get("go"),
            "goSumSha256": m.get("goSumSha256"),
            "kubernetesModuleSum": m.get("kubernetesModuleSum"),
            "etcd": {"version": self.etcd.version, "source": self.etcd.source},
        }


def _ready_nodes(cp: RealControlPlane) -> int:
    try:
        items = cp.get("/api/v1/nodes").get("items") or []
    except (urllib.error.URLError, OSError, ValueError):
        return 0
    return sum(1 for n in items if any(c.get("type") == "Ready" and c.get("status") == "True"
                                       for c in (n.get("status") or {}).get("conditions") or []))


def serve(args: Any, data_dir: Path, built: Built) -> int:
    """The foreground `testbed up --control-plane real` (the CLI's detach path runs this in a child)."""
    from testbed.supervisor import Containment, become_subreaper, reap_orphans

    started = time.monotonic()
    containment = Containment(data_dir)
    containment.enter()
    become_subreaper()
    catalog = Path(args.image_catalog).resolve() if args.image_catalog else None
    try:
        cp = RealControlPlane(built, data_dir, args.host, args.port, nodes=args.node_inventory,
                              node_names=args.node_names, scheduler=not args.no_scheduler,
                              controllers=not args.no_controllers, image_catalog=catalog,
                              containment=containment, fresh=getattr(args, "fresh", False))
    except etcd_mod.EtcdMissing as e:
        raise RealControlPlaneError(str(e), code=EXIT_NO_BUILD) from e
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    state: dict[str, Any] = {}
    try:
        cp.start()
        expected = len(args.node_names) if args.node_inventory else 0
        shown, deadline = -1, time.monotonic() + 180
        while expected:
            ready = _ready_nodes(cp)
            if ready != shown:
                print(f"nodes ready: {ready}/{expected}", flush=True)
                shown = ready
            if ready >= expected:
                break
            dead = cp.failed()
            if dead:
                raise RealControlPlaneError(cp.describe_failure(dead[0]))
            if time.monotonic() > deadline or stop["now"]:
                raise RealControlPlaneError(f"only {ready} of {expected} nodes became Ready within 180s; "
                                            f"see {data_dir / 'logs'}")
            time.sleep(0.2)
        ver = cp.get("/version")
        state = {
            "pid": os.getpid(),
            "url": cp.url,
            "minor": f"1.{built.release.minor}",
            "gitVersion": ver.get("gitVersion", built.release.version),
            "kubeconfig": str(cp.kubeconfig),
            "started": time.time(),
            **cp.versions(),
            "components": cp.describe(),
        }
        _write_state(data_dir, state)
        print(f"testbed {state['gitVersion']} (real control plane) ready at {cp.url} in "
              f"{time.monotonic() - started:.2f}s", flush=True)
        names = ", ".join(c.name for c in cp.components)
        print(f"components: {names}; logs in {data_dir / 'logs'}", flush=True)
        print(f"kubeconfig: {cp.kubeconfig}", flush=True)
        print(f"  export KUBECONFIG={cp.kubeconfig}", flush=True)
        while not stop["now"]:
            time.sleep(0.25)
            events = cp.supervise()
            for line in events:
                print(f"supervisor: {line}", file=sys.stderr, flush=True)
            if events:
                state["components"] = cp.describe()
                _write_state(data_dir, state)
            reap_orphans({c.proc.pid for c in cp.components if c.proc is not None})
    finally:
        # nodes first (their pods get their grace while the apiserver still answers), etcd last
        order = sorted(cp.components, key=lambda c: {"etcd": 3, "kube-apiserver": 2}.get(c.name, 0))
        cp.components[:] = order
        _stop_in_order(cp)
        with contextlib.suppress(OSError):
            st = json.loads((data_dir / "state.json").read_text())
            if st.get("pid") == os.getpid():
                (data_dir / "state.json").unlink()
        print("testbed stopped", flush=True)
    return 0


def _stop_in_order(cp: RealControlPlane) -> None:
    groups = [[c for c in cp.components if c.name not in ("etcd", "kube-apiserver")],
              [c for c in cp.components if c.name == "kube-apiserver"],
              [c for c in cp.components if c.name == "etcd"]]
    containment = cp.containment
    for group in groups:
        sub = ComponentSet(cp.kubeconfig, cp.data_dir, cp.minor, components=group)
        sub.stop()
    cp.components.clear()
    if containment is not None:
        containment.kill_all(grace=2.0)


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    path = data_dir / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)
