"""Issue 15, finding 1: a tenant's pod cannot read the cluster's keys, other pods' secrets or the host;
credential volumes and the data dir are private; the kubelet API authenticates and authorises."""

from __future__ import annotations

import json
import os
import ssl
import stat
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed import pki
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, parse_inventory

from .helpers import create_bound_pod, get_pod, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory({"nodes": [{"name": "node-i", "capacity": {"cpu": "16"}}]})
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, tmp_path_factory.mktemp("isolation"), options=opts) as ag:
        yield ag


def _finished(kube: Kube, ns: str, name: str, timeout: float = 40) -> dict[str, Any]:
    return wait_for(
        lambda: (p := get_pod(kube, ns, name))["status"].get("phase") in ("Succeeded", "Failed") and p,
        timeout=timeout,
    )


def _running(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return wait_for(lambda: (p := get_pod(kube, ns, name))["status"].get("phase") == "Running" and p, 30)


def _worker(agents: NodeAgents, pod: dict[str, Any]) -> Any:
    return agents.agent("node-i").runtime.workers[pod["metadata"]["uid"]]


def _secret(kube: Kube, ns: str, name: str, data: dict[str, str]) -> None:
    import base64

    kube.create(
        f"/api/v1/namespaces/{ns}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


HOSTILE = textwrap.dedent("""
    import ctypes, json, os, sys
    out = {}
    for p in json.loads(sys.argv[1]):
        try:
            if os.path.isdir(p):
                out[p] = "listed " + ",".join(sorted(os.listdir(p)))
            else:
                with open(p, "rb") as f:
                    out[p] = "read " + f.read(64).decode(errors="replace")
        except OSError as e:
            out[p] = "denied " + type(e).__name__
    libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs("/tmp/m", exist_ok=True)
    out["mount"] = "mounted" if libc.mount(b"tmpfs", b"/tmp/m", b"tmpfs", 0, None) == 0 else "denied"
    out["whoami"] = os.getuid()
    print("RESULT " + json.dumps(out))
""")


def _result(core: Any, ns: str, name: str) -> dict[str, Any]:
    log = core.read_namespaced_pod_log(name, ns)  # through the apiserver: its kubelet-client cert
    line = next((ln for ln in log.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, log
    return json.loads(line[len("RESULT "):])


@ROOT_ONLY
def test_hostile_pod_reads_no_secret(
    agents: NodeAgents, kube: Kube, core: Any, ns: str, testbed: EmbeddedTestbed
) -> None:
    # a victim pod holding a secret volume, running when the hostile pod looks for it
    _secret(kube, ns, "victim-secret", {"password": "hunter2"})
    victim_spec = {
        "containers": [
            {
                "name": "v",
                "image": "busybox",
                "command": ["sleep", "300"],
                "volumeMounts": [{"name": "s", "mountPath": "/etc/victim"}],
            }
        ],
        "volumes": [{"name": "s", "secret": {"secretName": "victim-secret"}}],
        "terminationGracePeriodSeconds": 0,
    }
    victim = create_bound_pod(kube, ns, "node-i", "victim", victim_spec)
    _running(kube, ns, "victim")
    w = _worker(agents, victim)
    victim_pid = w.apps[0].proc.pid
    victim_file = w.pod_dir / "volumes" / "s" / "password"
    node_root = agents.agent("node-i").root
    keys = sorted(str(p) for p in (testbed.data_dir / "pki").glob("*.key"))
    targets = {
        "kubeconfig": str(testbed.kubeconfig_path),
        "node root": str(node_root),
        "device-plugin dir (host)": str(node_root / "var/lib/kubelet/device-plugins"),
        "victim secret (host path)": str(victim_file),
        "victim secret (its root)": f"/proc/{victim_pid}/root/etc/victim/password",
        # pid 1 is the pod's own init, whose /etc/hostname is the pod's: a host-only file is the test
        "host root via pid 1": "/proc/1/root/etc/shadow",
        "kubeconfig via pid 1": f"/proc/1/root{testbed.kubeconfig_path}",
        "kubeconfig via the agent": f"/proc/{os.getpid()}/root{testbed.kubeconfig_path}",
        "kubelet sockets": "/var/lib/kubelet/device-plugins",
        "testbed data dirs": str(testbed.data_dir),
        "agents data dir": str(agents.data_dir),
        **{f"key {Path(k).name}": k for k in keys},
    }
    # the targets exist on the host: the test would prove nothing otherwise
    assert keys and victim_file.read_text() == "hunter2"
    for what in ("kubeconfig", "node root", "victim secret (host path)", "testbed data dirs"):
        assert Path(targets[what]).exists(), what
    assert os.path.exists(targets["victim secret (its root)"])  # the host (root) can see it

    own = [SA_TOKEN, "/etc/passwd"]
    spec = {
        "containers": [
            {
                "name": "h",
                "image": "python:3.11",
                "command": [sys.executable, "-c", HOSTILE, json.dumps(list(targets.values()) + own)],
            }
        ],
        "restartPolicy": "Never",
    }
    create_bound_pod(kube, ns, "node-i", "hostile", spec)
    pod = _finished(kube, ns, "hostile")
    out = _result(core, ns, "hostile")
    assert pod["status"]["phase"] == "Succeeded", out
    # positive controls: the reads themselves work
    assert out[SA_TOKEN].startswith("read ey"), out[SA_TOKEN]
    assert out["/etc/passwd"].startswith("read root:"), out["/etc/passwd"]
    leaked = {what: out[p] for what, p in targets.items() if not out[p].startswith("denied")}
    assert not leaked, leaked
    assert out["mount"] == "denied"
    assert out["whoami"] == 0  # root in its own user namespace, still unable to reach anything


@ROOT_ONLY
def test_hostpath_exposes_exactly_that_path(agents: NodeAgents, kube: Kube, core: Any, ns: str) -> None:
    node_root = agents.agent("node-i").root
    shared = node_root / "srv" / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "hello").write_text("hi")
    probe = [
        "/srv/shared/hello",
        str(node_root / "srv" / "shared" / "hello"),
        "/var/lib/kubelet",
        "/srv",
    ]
    spec = {
        "containers": [
            {
                "name": "h",
                "image": "python:3.11",
                "command": [sys.executable, "-c", HOSTILE, json.dumps(probe)],
                "volumeMounts": [{"name": "hp", "mountPath": "/srv/shared"}],
            }
        ],
        "volumes": [{"name": "hp", "hostPath": {"path": "/srv/shared"}}],
        "restartPolicy": "Never",
    }
    create_bound_pod(kube, ns, "node-i", "hp", spec)
    _finished(kube, ns, "hp")
    out = _result(core, ns, "hp")
    assert out["/srv/shared/hello"] == "read hi"
    assert out["/srv"] == "listed shared"  # only the mount point, nothing else of the node's /srv
    assert out[probe[1]].startswith("denied") and out["/var/lib/kubelet"].startswith("denied")


@ROOT_ONLY
def test_data_dir_under_an_image_path_is_covered(kube: Kube, core: Any, ns: str) -> None:
    """`testbed up` keeps its data dir in ./.testbed, inside the checkout every image shows: it must be
    covered there too."""
    import shutil

    from testbed.node.rootfs import REPO

    data = REPO / ".cache" / f"isolation-test-{os.getpid()}"
    inv = parse_inventory({"nodes": [{"name": "node-r", "capacity": {"cpu": "4"}}]})
    try:
        with NodeAgents(kube, inv, data, options=AgentOptions(lease_interval=0.3, backoff_base=0.3)):
            decoy = data / "pki" / "decoy.key"
            decoy.parent.mkdir(parents=True, exist_ok=True)
            decoy.write_text("secret")
            probe = [str(decoy), str(data), str(REPO / "testbed" / "__init__.py")]
            argv = [sys.executable, "-c", HOSTILE, json.dumps(probe)]
            spec = {
                "containers": [{"name": "h", "image": "python:3.11", "command": argv}],
                "restartPolicy": "Never",
            }
            create_bound_pod(kube, ns, "node-r", "inrepo", spec)
            _finished(kube, ns, "inrepo")
            out = _result(core, ns, "inrepo")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert out[probe[2]].startswith("read ")  # the checkout itself is there (the images' contents)
    assert out[str(decoy)].startswith("denied"), out
    assert out[str(data)] == "listed ", out  # an empty directory


@ROOT_ONLY
def test_exec_probe_runs_without_host_privileges(
    agents: NodeAgents, kube: Kube, core: Any, ns: str, testbed: EmbeddedTestbed
) -> None:
    """An exec probe runs a command of the pod's choosing: it must not carry the host's capabilities."""
    target = f"/proc/{os.getpid()}/root{testbed.kubeconfig_path}"  # the node agent: host root
    probe_cmd = textwrap.dedent(f"""
        import os
        try:
            r = "read " + open({target!r}).read(16)
        except OSError as e:
            r = "denied " + type(e).__name__
        open("/tmp/probe-out.tmp", "w").write(r + " uid=%d" % os.getuid())
        os.rename("/tmp/probe-out.tmp", "/tmp/probe-out")
    """)
    main = textwrap.dedent("""
        import os, time
        while not os.path.exists("/tmp/probe-out"):
            time.sleep(0.1)
        time.sleep(0.2)
        print("RESULT " + __import__("json").dumps({"probe": open("/tmp/probe-out").read()}), flush=True)
    """)
    spec = {
        "containers": [
            {
                "name": "c",
                "image": "python:3.11",
                "command": [sys.executable, "-c", main],
                "readinessProbe": {
                    "exec": {"command": [sys.executable, "-c", probe_cmd]}, "periodSeconds": 1
                },
            }
        ],
        "restartPolicy": "Never",
    }
    assert Path(testbed.kubeconfig_path).exists()
    create_bound_pod(kube, ns, "node-i", "prober", spec)
    _finished(kube, ns, "prober")
    out = _result(core, ns, "prober")["probe"]
    assert out.startswith("denied") and out.endswith(" uid=0"), out
    # a probe runs as the container's user
    spec["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1000}
    create_bound_pod(kube, ns, "node-i", "prober-user", spec)
    _finished(kube, ns, "prober-user")
    out = _result(core, ns, "prober-user")["probe"]
    assert out.startswith("denied") and out.endswith(" uid=1000"), out


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@ROOT_ONLY
def test_credential_volume_modes_and_users(agents: NodeAgents, kube: Kube, core: Any, ns: str) -> None:
    _secret(kube, ns, "creds", {"key": "v"})
    script = textwrap.dedent(f"""
        import os
        print("uid", os.getuid(), "gid", os.getgid(), "groups", sorted(os.getgroups()))
        print("token", len(open("{SA_TOKEN}").read()) > 0)
        print("secret", open("/etc/creds/key").read())
    """)

    def pod(name: str, psc: dict[str, Any], secret_mode: int | None = None) -> dict[str, Any]:
        sec: dict[str, Any] = {"secretName": "creds"}
        if secret_mode is not None:
            sec["defaultMode"] = secret_mode
        spec = {
            "securityContext": psc,
            "containers": [
                {
                    "name": "c",
                    "image": "python:3.11",
                    "command": [sys.executable, "-u", "-c", script + "import time; time.sleep(300)"],
                    "volumeMounts": [{"name": "s", "mountPath": "/etc/creds"}],
                }
            ],
            "volumes": [{"name": "s", "secret": sec}],
            "terminationGracePeriodSeconds": 0,
        }
        return create_bound_pod(kube, ns, "node-i", name, spec)

    plain = pod("plain", {})
    user = pod("user", {"runAsUser": 1000, "runAsGroup": 3000})
    group = pod("group", {"runAsUser": 1000, "fsGroup": 2000})
    explicit = pod("explicit", {}, secret_mode=0o440)
    for name in ("plain", "user", "group", "explicit"):
        _running(kube, ns, name)

    def vol(p: dict[str, Any], name: str) -> Path:
        return _worker(agents, p).pod_dir / "volumes" / name

    def token_vol(p: dict[str, Any]) -> str:
        return next(v["name"] for v in p["spec"]["volumes"] if v["name"].startswith("kube-api-access"))

    # no fsGroup: 0600 files in 0700 directories, owned by the user the containers run as
    for p, uid in ((plain, 0), (user, 1000)):
        for name, f in (("s", "key"), (token_vol(p), "token"), (token_vol(p), "ca.crt")):
            assert _mode(vol(p, name)) == 0o700 and _mode(vol(p, name) / f) == 0o600, (name, f)
            assert (vol(p, name) / f).stat().st_uid == uid
    # fsGroup: 0640 in 0750, group fsGroup
    for name, f in (("s", "key"), (token_vol(group), "token")):
        assert _mode(vol(group, name)) == 0o750 and _mode(vol(group, name) / f) == 0o640
        assert (vol(group, name) / f).stat().st_gid == 2000
    assert _mode(vol(explicit, "s") / "key") == 0o440  # defaultMode honoured
    assert _mode(_worker(agents, plain).pod_dir) == 0o750

    def log(name: str) -> str:
        return wait_for(lambda: (t := core.read_namespaced_pod_log(name, ns)).count("\n") >= 3 and t, 20)

    assert "uid 0 gid 0" in log("plain")
    assert "uid 1000 gid 3000 groups []" in log("user") and "token True" in log("user")
    assert "secret v" in log("user")
    assert "uid 1000 gid 0 groups [2000]" in log("group") and "secret v" in log("group")


@ROOT_ONLY
def test_image_user_and_run_as_non_root(agents: NodeAgents, kube: Kube, ns: str) -> None:
    create_bound_pod(
        kube, ns, "node-i", "pause",
        {"containers": [{"name": "p", "image": "registry.k8s.io/pause:3.9"}],
         "terminationGracePeriodSeconds": 0},
    )
    pod = _running(kube, ns, "pause")
    pid = _worker(agents, pod).apps[0].proc.pid
    uids = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    assert uids.split()[1:] == ["65535"] * 4  # the pause image's user
    create_bound_pod(
        kube, ns, "node-i", "nonroot",
        {
            "securityContext": {"runAsNonRoot": True},
            "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
        },
    )
    def config_error() -> dict[str, Any] | None:
        st = (get_pod(kube, ns, "nonroot")["status"].get("containerStatuses") or [{}])[0]
        w = (st.get("state") or {}).get("waiting") or {}
        return w if w.get("reason") == "CreateContainerConfigError" else None

    waiting = wait_for(config_error, timeout=20)
    assert "runAsNonRoot" in waiting["message"]


def test_data_dir_and_keys_private(testbed: EmbeddedTestbed) -> None:
    assert _mode(testbed.data_dir) == 0o700
    keys = list((testbed.data_dir / "pki").glob("*.key"))
    assert keys
    for k in keys:
        assert _mode(k) == 0o600, k
    assert _mode(testbed.kubeconfig_path) == 0o600


# -- the kubelet API ------------------------------------------------------------------------------


def _get(
    url: str, headers: dict[str, str] | None = None, ctx: ssl.SSLContext | None = None
) -> tuple[int, str]:
    if ctx is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _tenant_token(kube: Kube, ns: str) -> str:
    kube.create(
        f"/api/v1/namespaces/{ns}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "tenant"}},
    )
    body = {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}
    }
    return str(kube.create(f"/api/v1/namespaces/{ns}/serviceaccounts/tenant/token", body)["status"]["token"])


def _cert_ctx(testbed: EmbeddedTestbed, tmp: Path, user: str) -> ssl.SSLContext:
    ca_dir = testbed.data_dir / "pki"
    ca = pki.KeyPair((ca_dir / "ca.crt").read_bytes(), (ca_dir / "ca.key").read_bytes())
    pair = pki.make_client_cert(ca, user)
    pair.write(tmp / f"{user}.crt", tmp / f"{user}.key")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(tmp / f"{user}.crt", tmp / f"{user}.key")
    return ctx


def test_kubelet_api_authn_authz(
    agents: NodeAgents, kube: Kube, ns: str, testbed: EmbeddedTestbed, tmp_path: Path
) -> None:
    a = agents.agent("node-i")
    base = f"https://{a.ip}:{a.kubelet_port}"
    for path in ("/pods", "/healthz", f"/containerLogs/{ns}/x/c"):
        code, text = _get(base + path)
        assert code == 401, (path, code, text)
    tenant = {"Authorization": f"Bearer {_tenant_token(kube, ns)}"}
    code, text = _get(base + "/pods", tenant)
    assert code == 403 and f"user=system:serviceaccount:{ns}:tenant" in text and "subresource=proxy" in text
    code, text = _get(base + "/stats/summary", tenant)
    assert code == 403 and "subresource=stats" in text
    code, _ = _get(base + "/pods", {"Authorization": "Bearer not-a-token"})
    assert code == 401
    code, text = _get(base + "/pods", {"Authorization": f"Bearer {testbed.admin_token}"})
    assert code == 200 and json.loads(text)["kind"] == "PodList"
    # client certificates signed by the cluster CA: the apiserver's identity passes, a stranger's not
    code, _ = _get(base + "/pods", ctx=_cert_ctx(testbed, tmp_path, pki.KUBELET_CLIENT))
    assert code == 200
    code, text = _get(base + "/pods", ctx=_cert_ctx(testbed, tmp_path, "mallory"))
    assert code == 403 and "user=mallory" in text


PIDS = textwrap.dedent("""
    import json, os, time
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    print("RESULT " + json.dumps({"me": os.getpid(), "pids": pids}), flush=True)
    time.sleep(float(os.environ.get("HOLD", "0")))
""")


@ROOT_ONLY
def test_each_container_sees_only_its_own_processes(agents: NodeAgents, kube: Kube, core: Any,
                                                     ns: str) -> None:
    spec = {
        "containers": [{"name": "p", "image": "python:3.11", "command": [sys.executable, "-c", PIDS]}],
        "restartPolicy": "Never",
    }
    create_bound_pod(kube, ns, "node-i", "pids", spec)
    create_bound_pod(kube, ns, "node-i", "hostpid", {**spec, "hostPID": True})
    for name in ("pids", "hostpid"):
        assert _finished(kube, ns, name)["status"]["phase"] == "Succeeded"
    own, host = _result(core, ns, "pids"), _result(core, ns, "hostpid")
    # its own PID namespace: the runtime's init is pid 1, then the command, nothing of the host
    assert own["me"] > 1 and own["pids"] == [1, own["me"]], own
    assert host["me"] > 2 and len(host["pids"]) > 10  # hostPID: the host's processes, as asked
