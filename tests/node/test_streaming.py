"""Issue 14 item 3: exec, attach, cp and port-forward through the apiserver to the node agent's kubelet
API, with real kubectl of the oldest and newest cached minors (SPDY; WebSocket first from 1.30/1.31)
and the official Python client's WebSocket ``stream()``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.clients import cached_minors, kubectl_path
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, ephemeral, parse_inventory, streaming

from .helpers import create_bound_pod, get_pod, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (pod namespaces)")
NS = "default"


def _minors() -> list[int]:
    have = cached_minors()
    return sorted({have[0], have[-1]}) if have else []


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory({"nodes": [{"name": "node-s", "capacity": {"cpu": "16"}}]})
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, tmp_path_factory.mktemp("streaming"), options=opts) as ag:
        yield ag


@pytest.fixture(scope="module")
def pod(kube: Kube, agents: NodeAgents) -> dict[str, Any]:
    spec = {"containers": [
        {"name": "web", "image": "nginx"},
        {"name": "sh", "image": "busybox", "command": ["sh", "-c", "echo started; sleep 3600"]},
        {"name": "ticker", "image": "busybox",
         "command": ["sh", "-c", "while true; do echo tick; sleep 0.2; done"]},
    ]}
    create_bound_pod(kube, NS, "node-s", "box", spec)
    return wait_for(lambda: (p := get_pod(kube, NS, "box"))["status"].get("phase") == "Running" and p, 30)


def _kubectl(testbed: EmbeddedTestbed, minor: int, home: Path, *args: str, input: str | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
    binary = kubectl_path(minor)
    assert binary is not None
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(testbed.kubeconfig_path)}
    return subprocess.run([str(binary), "--cache-dir", str(home / "cache"), *args], input=input,
                          capture_output=True, text=True, env=env, timeout=timeout)


@ROOT_ONLY
@pytest.mark.parametrize("minor", _minors(), ids=lambda m: f"kubectl-1.{m}")
def test_kubectl_exec_cp_port_forward(testbed: EmbeddedTestbed, pod: dict[str, Any], minor: int,
                                      tmp_path: Path) -> None:
    run = lambda *a, **kw: _kubectl(testbed, minor, tmp_path, *a, **kw)  # noqa: E731
    r = run("exec", "box", "-c", "sh", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3, r
    # kubectl 1.30+ speaks WebSocket (v5) first; older ones SPDY
    assert streaming.SEEN[-1][:2] == ("exec", "websocket" if minor >= 30 else "spdy"), streaming.SEEN
    assert r.stdout == "out\n" and "err" in r.stderr
    # stdin, and the command runs in the container's own root and network namespace
    r = run("exec", "-i", "box", "-c", "sh", "--", "sh", "-c", "tr a-z A-Z", input="hello\n")
    assert r.returncode == 0 and r.stdout.startswith("HELLO\n"), r
    r = run("exec", "box", "-c", "web", "--", "ls", "/docker-entrypoint.sh")
    assert r.returncode == 0 and r.stdout.strip() == "/docker-entrypoint.sh", r
    # cp both ways (tar over exec)
    src = tmp_path / "in.txt"
    src.write_text("payload 1\n" * 1000)
    r = run("cp", str(src), f"{NS}/box:/tmp/in.txt", "-c", "sh")
    assert r.returncode == 0, r
    r = run("exec", "box", "-c", "sh", "--", "wc", "-l", "/tmp/in.txt")
    assert r.stdout.split()[0] == "1000", r
    back = tmp_path / "back.txt"
    r = run("cp", f"{NS}/box:/tmp/in.txt", str(back), "-c", "sh")
    assert r.returncode == 0 and back.read_text() == src.read_text(), r
    # port-forward to the pod's nginx (no containerPort declared: reached inside the pod's namespace)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = kubectl_path(minor)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           "KUBECONFIG": str(testbed.kubeconfig_path)}
    pf = subprocess.Popen([str(binary), "--cache-dir", str(tmp_path / "cache"), "port-forward", "pod/box",
                           f"{port}:80"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        def fetch() -> bytes:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as resp:
                    return bytes(resp.read())
            except OSError:
                time.sleep(0.2)
                return b""

        assert b"Welcome to nginx!" in wait_for(fetch, timeout=20)
        assert b"Welcome to nginx!" in fetch()  # a second connection over the same session
        # kubectl 1.31+ tunnels SPDY in a WebSocket
        assert streaming.SEEN[-1][:2] == ("portforward", "websocket" if minor >= 31 else "spdy")
    finally:
        pf.terminate()
        pf.wait(10)


@ROOT_ONLY
def test_python_client_stream_exec(testbed: EmbeddedTestbed, pod: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(testbed.api_client())
    out = stream(core.connect_get_namespaced_pod_exec, "box", NS, container="sh",
                 command=["sh", "-c", "echo from-python; hostname"], stderr=True, stdin=False, stdout=True,
                 tty=False)
    assert out.splitlines()[0] == "from-python"
    ws = stream(core.connect_get_namespaced_pod_exec, "box", NS, container="sh",
                command=["sh", "-c", "read x; echo got $x; exit 4"], stderr=True, stdin=True, stdout=True,
                tty=False, _preload_content=False)
    ws.write_stdin("abc\n")
    out = ""
    deadline = time.monotonic() + 15
    while ws.is_open() and time.monotonic() < deadline:
        ws.update(timeout=1)
        out += ws.read_stdout() if ws.peek_stdout() else ""
    assert "got abc" in out
    assert ws.returncode == 4


@ROOT_ONLY
def test_errors_name_the_problem(kube: Kube, pod: dict[str, Any], testbed: EmbeddedTestbed) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from kubernetes.stream import stream

    core = client.CoreV1Api(testbed.api_client())
    with pytest.raises(ApiException) as e:
        stream(core.connect_get_namespaced_pod_exec, "box", NS, command=["true"], stdout=True)
    assert "a container name must be specified" in str(e.value.body or e.value)


@ROOT_ONLY
def test_tty_and_attach(testbed: EmbeddedTestbed, pod: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(testbed.api_client())
    out = stream(core.connect_get_namespaced_pod_exec, "box", NS, container="sh",
                 command=["sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty"], stderr=True, stdin=True,
                 stdout=True, tty=True)
    assert "is-a-tty" in out
    ws = stream(core.connect_get_namespaced_pod_attach, "box", NS, container="ticker", stdout=True,
                stderr=True, stdin=False, tty=False, _preload_content=False)
    seen = ""
    deadline = time.monotonic() + 10
    while "tick\ntick" not in seen and time.monotonic() < deadline:
        ws.update(timeout=1)
        seen += ws.read_stdout() if ws.peek_stdout() else ""
    ws.close()
    assert "tick\ntick" in seen


@ROOT_ONLY
def test_pod_service_and_node_proxy(kube: Kube, testbed: EmbeddedTestbed, pod: dict[str, Any]) -> None:
    from kubernetes import client

    core = client.CoreV1Api(testbed.api_client())
    # nginx declares no containerPort: reached inside the pod's namespace through its kubelet
    assert "Welcome to nginx!" in core.connect_get_namespaced_pod_proxy_with_path("box:80", NS, "index.html")
    assert core.connect_get_node_proxy_with_path("node-s", "healthz") == "ok"
    kube.create(f"/api/v1/namespaces/{NS}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "box-web"},
        "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 80}]}})
    kube.create(f"/api/v1/namespaces/{NS}/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "box-web"},
        "subsets": [{"addresses": [{"ip": pod["status"]["podIP"], "targetRef": {
            "kind": "Pod", "name": "box", "namespace": NS, "uid": pod["metadata"]["uid"]}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]})
    assert "Welcome to nginx!" in core.connect_get_namespaced_service_proxy_with_path("box-web:http", NS, "")


@ROOT_ONLY
def test_exec_differences_from_runc(testbed: EmbeddedTestbed, pod: dict[str, Any]) -> None:
    """A missing command is the runtime's error (InternalError with runc's message), not an exit code;
    a TTY is a terminal named in the container's own /dev/pts, as under runc."""
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(testbed.api_client())
    ws = stream(core.connect_get_namespaced_pod_exec, "box", NS, container="sh", command=["no-such-cmd"],
                stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    ws.run_forever(timeout=10)
    status = json.loads(ws.read_channel(3))
    assert status["reason"] == "InternalError" and status["code"] == 500, status
    assert status["message"].endswith(
        'unable to start container process: exec: "no-such-cmd": executable file not found in $PATH: unknown')
    out = stream(core.connect_get_namespaced_pod_exec, "box", NS, container="sh",
                 command=["sh", "-c", "test -t 1 && echo terminal; tty || echo no-name"], stderr=True,
                 stdin=True, stdout=True, tty=True)
    assert "terminal" in out and "/dev/pts/" in out and "no-name" not in out, out


def _running_cmdlines(needle: bytes) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().replace(b"\0", b" ").strip() == needle:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@ROOT_ONLY
def test_exec_is_killed_when_the_client_goes(testbed: EmbeddedTestbed, pod: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.stream import stream

    core = client.CoreV1Api(testbed.api_client())
    ws = stream(core.connect_get_namespaced_pod_exec, "box", NS, container="sh", command=["sleep", "3141"],
                stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    wait_for(lambda: _running_cmdlines(b"sleep 3141"), timeout=10)
    ws.close()
    wait_for(lambda: not _running_cmdlines(b"sleep 3141"), timeout=10)


def test_ephemeral_container_rules() -> None:
    pod = {"spec": {"containers": [{"name": "app", "image": "x"}], "ephemeralContainers": [
        {"name": "dbg", "image": "busybox", "terminationMessagePath": "/dev/termination-log",
         "terminationMessagePolicy": "File", "imagePullPolicy": "Always"}]}}
    current = pod["spec"]["ephemeralContainers"]
    added = ephemeral.apply_update(pod, [*current, {"name": "d2", "image": "alpine:3"}])
    assert added["spec"]["ephemeralContainers"][1]["imagePullPolicy"] == "IfNotPresent"
    for bad, why in (([], "may not be removed"), ([{"name": "dbg", "image": "other"}], "may not be changed"),
                     ([*pod["spec"]["ephemeralContainers"], {"name": "app", "image": "x"}], "Duplicate"),
                     ([*pod["spec"]["ephemeralContainers"], {"name": "p", "image": "x", "ports": [{}]}],
                      "Forbidden")):
        with pytest.raises(ephemeral.Invalid, match=why):
            ephemeral.apply_update(pod, bad)


@ROOT_ONLY
def test_kubectl_debug_adds_an_ephemeral_container(
    testbed: EmbeddedTestbed, pod: dict[str, Any], kube: Kube, tmp_path: Path
) -> None:
    minor = _minors()[-1] if _minors() else None
    if minor is None or minor < 23:
        pytest.skip("no kubectl 1.23+ cached (testbed.clients fetch)")
    r = _kubectl(testbed, minor, tmp_path, "debug", "box", "--image=busybox", "-c", "dbg", "--target=sh",
                 "--", "sleep", "300")
    assert r.returncode == 0, r

    def running() -> bool:
        sts = get_pod(kube, NS, "box")["status"].get("ephemeralContainerStatuses") or []
        return any(s["name"] == "dbg" and "running" in s["state"] for s in sts)

    wait_for(running, timeout=20)
    r = _kubectl(testbed, minor, tmp_path, "exec", "box", "-c", "dbg", "--", "sh", "-c", "echo from-debug")
    assert r.returncode == 0 and r.stdout == "from-debug\n", r


@ROOT_ONLY
def test_exec_terminal_never_opens_a_host_file_the_container_points_at(tmp_path: Path) -> None:
    """``kubectl exec -t`` opens the container's ``/dev/pts/ptmx`` from the host (as root). A container
    that replaced it with a symlink to a host path (absolute links under /proc/<pid>/root resolve in
    the host's root) must not make the node agent open that file: it gets a terminal regardless."""
    import ctypes
    import signal

    victim = tmp_path / "victim"
    os.mkfifo(victim)  # a file whose opening is observable and harmless
    root = tmp_path / "root"
    (root / "dev" / "pts").mkdir(parents=True)
    (root / "dev" / "pts" / "ptmx").symlink_to(victim)
    libc = ctypes.CDLL(None, use_errno=True)
    ino = libc.inotify_init1(os.O_NONBLOCK)
    assert ino >= 0 and libc.inotify_add_watch(ino, str(victim).encode(), 0x20) >= 0  # IN_OPEN
    pid = os.fork()
    if pid == 0:  # the "container": its root is the prepared directory
        try:
            os.chroot(root)
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        wait_for(lambda: os.readlink(f"/proc/{pid}/root") == str(root), 10)  # chrooted
        master, slave = streaming.container_pty(pid)
        try:
            assert os.isatty(slave)
        finally:
            os.close(master)
            os.close(slave)
        try:
            opened = os.read(ino, 4096)
        except BlockingIOError:
            opened = b""
        assert opened == b"", "the agent opened the host file the container's ptmx points at"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ino)
