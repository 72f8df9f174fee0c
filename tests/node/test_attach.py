"""Issue 14, node side: attach with live stdin (``kubectl run -i``/``-it``, ``kubectl attach -i``,
``kubectl debug -it``), terminals from the container's own ``/dev/pts``, exec inside the container's
PID namespace. Real kubectl of the oldest and newest cached minors (SPDY before 1.30, WebSocket after);
``-t`` sessions run kubectl on a pseudo-terminal of the test's, as a user's shell would."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.clients import cached_minors, kubectl_path
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, parse_inventory, streaming

from .helpers import create_bound_pod, get_pod, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (pod namespaces)")
NS = "default"
NODE = "node-a"
ON_NODE = json.dumps({"apiVersion": "v1", "spec": {"nodeName": NODE}})


def _minors() -> list[int]:
    have = cached_minors()
    return sorted({have[0], have[-1]}) if have else []


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory({"nodes": [{"name": NODE, "capacity": {"cpu": "16"}}]})
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, tmp_path_factory.mktemp("attach"), options=opts) as ag:
        yield ag


@pytest.fixture(scope="module")
def core(testbed: EmbeddedTestbed) -> Any:
    """One official-client API for the module (a discarded ApiClient's pool can stall its successor)."""
    from kubernetes import client

    return client.CoreV1Api(testbed.api_client())


def _env(testbed: EmbeddedTestbed, home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(testbed.kubeconfig_path),
            "TERM": "xterm"}


def _argv(minor: int, home: Path, *args: str) -> list[str]:
    binary = kubectl_path(minor)
    assert binary is not None
    return [str(binary), "--cache-dir", str(home / "cache"), *args]


def _on_terminal(argv: list[str], env: dict[str, str], lines: list[str], wait_for_text: str,
                 timeout: float = 40) -> str:
    """Run kubectl with a pseudo-terminal as its stdin/stdout (``-t`` needs one); once its output
    shows ``wait_for_text``, type ``lines``; return everything it wrote when it exits."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # rows, columns
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                out += data
            if not typed and wait_for_text.encode() in out:
                time.sleep(0.3)
                for line in lines:
                    os.write(master, line.encode() + b"\r")
                    time.sleep(0.2)
                typed = True
            if proc.poll() is not None and not ready:
                break
        assert typed, f"never saw {wait_for_text!r}: {out.decode(errors='replace')}"
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    return out.decode(errors="replace").replace("\r", "")


@pytest.mark.parametrize("minor", _minors(), ids=lambda m: f"kubectl-1.{m}")
def test_kubectl_run_i_feeds_stdin(testbed: EmbeddedTestbed, agents: NodeAgents, kube: Kube, minor: int,
                                   tmp_path: Path) -> None:
    """`kubectl run -i --rm`: the pod gets ``stdin``/``stdinOnce``; what kubectl reads from its stdin
    reaches the container's shell, whose input ends when kubectl's does."""
    name = f"run-i-{minor}"
    r = subprocess.run(_argv(minor, tmp_path, "run", name, "-i", "--rm", "--restart=Never", "--image=busybox",
                             f"--overrides={ON_NODE}", "--", "sh"),
                       input="echo got-$((6*7)) from $(hostname)\nexit 0\n", capture_output=True, text=True,
                       env=_env(testbed, tmp_path), timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"got-42 from {name}" in r.stdout, r
    assert streaming.SEEN[-1][0] == "attach"
    assert streaming.SEEN[-1][1] == ("websocket" if minor >= 30 else "spdy"), streaming.SEEN


def test_kubectl_run_i_streams_megabytes_both_ways(testbed: EmbeddedTestbed, agents: NodeAgents,
                                                   tmp_path: Path) -> None:
    """1 MB through `kubectl run -i ... -- cat`: stdin and output flow at once (a shim that stopped
    reading output while the container's stdin is full would deadlock)."""
    minor = _minors()[-1]
    data = "".join(f"line {i:07d} of the input\n" for i in range(40_000))
    r = subprocess.run(_argv(minor, tmp_path, "run", "cat-big", "-i", "--rm", "--restart=Never",
                             "--image=busybox", f"--overrides={ON_NODE}", "--", "cat"),
                       input=data, capture_output=True, text=True, env=_env(testbed, tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(data), (len(r.stdout), len(data), r.stdout[-200:])


@pytest.mark.parametrize("minor", _minors(), ids=lambda m: f"kubectl-1.{m}")
def test_kubectl_run_it_is_a_terminal_in_the_pod(testbed: EmbeddedTestbed, agents: NodeAgents, minor: int,
                                                 tmp_path: Path) -> None:
    """`kubectl run -it --rm ... -- sh`: typed commands run in the container's shell on a terminal named
    in its own /dev/pts, sized as kubectl's terminal is; the shell has a low pid of the container's PID
    namespace (pid 1 is its init)."""
    name = f"run-it-{minor}"
    out = _on_terminal(
        _argv(minor, tmp_path, "run", name, "-it", "--rm", "--restart=Never", "--image=busybox",
              f"--overrides={ON_NODE}", "--", "sh"),
        _env(testbed, tmp_path), ["tty; echo pid=$$ size=$(stty size)", "exit"],
        "If you don't see a command prompt")
    assert re.search(r"^/dev/pts/\d+$", out, re.M), out
    m = re.search(r"^pid=(\d+) size=(\d+ \d+)$", out, re.M)
    assert m and int(m.group(1)) < 10 and m.group(2) == "40 100", out


@pytest.mark.parametrize("minor", _minors(), ids=lambda m: f"kubectl-1.{m}")
def test_kubectl_attach_i_types_into_a_running_container(testbed: EmbeddedTestbed, agents: NodeAgents,
                                                         kube: Kube, minor: int, tmp_path: Path) -> None:
    """`stdin: true` without `stdinOnce`: each `kubectl attach -i` session types into the same stdin,
    which stays open between sessions; output comes live, not from the log."""
    name = f"echoer-{minor}"
    create_bound_pod(kube, NS, NODE, name, {"containers": [{
        "name": "c", "image": "busybox", "stdin": True,
        "command": ["sh", "-c", 'while read l; do echo "echo:$l"; done; echo stdin-closed']}]})
    wait_for(lambda: get_pod(kube, NS, name)["status"].get("phase") == "Running", 30)
    for word in ("first", "second"):
        proc = subprocess.Popen(_argv(minor, tmp_path, "attach", "-i", name, "-c", "c"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_env(testbed, tmp_path))
        assert proc.stdin is not None and proc.stdout is not None
        try:
            time.sleep(1.0)  # attached (kubectl sends nothing before its streams are up)
            proc.stdin.write(f"{word}\n".encode())
            proc.stdin.flush()
            seen = b""
            deadline = time.monotonic() + 20
            while f"echo:{word}".encode() not in seen and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    seen += os.read(proc.stdout.fileno(), 4096)
            assert f"echo:{word}".encode() in seen, seen
        finally:
            proc.kill()
            proc.wait(5)
    time.sleep(0.5)
    st = get_pod(kube, NS, name)["status"]["containerStatuses"][0]
    assert "running" in st["state"], st  # the sessions' ends did not close its stdin


def test_exec_sees_only_the_container_processes(agents: NodeAgents, kube: Kube, core: Any) -> None:
    """exec enters the container's PID namespace: ``ps`` lists its init, its command and itself only;
    a TTY exec gets a terminal named in the container's /dev/pts; exec probes run in the namespace too
    (the probe's shell has a low pid, so the pod becomes Ready)."""
    from kubernetes.stream import stream

    create_bound_pod(kube, NS, NODE, "pidns", {"containers": [
        {"name": "c", "image": "busybox", "command": ["sh", "-c", "sleep 3600"],
         "readinessProbe": {"exec": {"command": ["sh", "-c", "test $$ -lt 20"]}, "periodSeconds": 1}}]})
    wait_for(lambda: get_pod(kube, NS, "pidns")["status"].get("phase") == "Running", 30)
    wait_for(lambda: get_pod(kube, NS, "pidns")["status"]["containerStatuses"][0]["ready"], 20)
    out = stream(core.connect_get_namespaced_pod_exec, "pidns", NS, container="c",
                 command=["ps", "-e", "-o", "pid=,args="], stderr=True, stdin=False, stdout=True, tty=False)
    procs = {int(ln.split(None, 1)[0]): ln.split(None, 1)[1] for ln in out.strip().splitlines()}
    # its init (pid 1), sh and sleep, and ps: no host process
    assert 1 in procs and "sleep 3600" in procs.values() and len(procs) == 4 and max(procs) < 20, procs
    out = stream(core.connect_get_namespaced_pod_exec, "pidns", NS, container="c",
                 command=["sh", "-c", "tty; echo pid=$$"], stderr=True, stdin=True, stdout=True, tty=True)
    assert re.search(r"^/dev/pts/\d+\r?$", out, re.M), out
    assert int(re.search(r"pid=(\d+)", out).group(1)) < 100, out  # type: ignore[union-attr]


@pytest.mark.parametrize("minor", _minors(), ids=lambda m: f"kubectl-1.{m}")
def test_exec_of_a_missing_command_is_the_runtime_error(testbed: EmbeddedTestbed, agents: NodeAgents,
                                                        kube: Kube, minor: int, tmp_path: Path) -> None:
    """kubectl exec of a command the container lacks: containerd's error (runc's message), kubectl's
    exit code 1; a missing absolute path names the failed stat."""
    name = f"no-cmd-{minor}"
    create_bound_pod(kube, NS, NODE, name, {"containers": [
        {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]})
    wait_for(lambda: get_pod(kube, NS, name)["status"].get("phase") == "Running", 30)
    for cmd, why in (("no-such-cmd", 'exec: "no-such-cmd": executable file not found in $PATH'),
                     ("/no/such", 'exec: "/no/such": stat /no/such: no such file or directory')):
        r = subprocess.run(_argv(minor, tmp_path, "exec", name, "--", cmd), capture_output=True, text=True,
                           env=_env(testbed, tmp_path), timeout=30)
        assert r.returncode == 1, r
        assert r.stderr.startswith("error: Internal error occurred: error executing command in container: "
                                   'failed to exec in container: failed to start exec "'), r.stderr
        assert r.stderr.rstrip().endswith(f"OCI runtime exec failed: exec failed: unable to start container "
                                          f"process: {why}: unknown"), r.stderr


@pytest.mark.parametrize("minor", _minors(), ids=lambda m: f"kubectl-1.{m}")
def test_kubectl_debug_it_targets_the_container(testbed: EmbeddedTestbed, agents: NodeAgents, kube: Kube,
                                                minor: int, tmp_path: Path) -> None:
    """`kubectl debug -it --target` (SPDY before 1.30, WebSocket after): the ephemeral container
    shares the target's PID namespace and takes what is typed at kubectl's terminal."""
    name = f"dbg-target-{minor}"
    create_bound_pod(kube, NS, NODE, name, {"containers": [
        {"name": "app", "image": "busybox", "command": ["sh", "-c", "sleep 2718"]}]})
    wait_for(lambda: get_pod(kube, NS, name)["status"].get("phase") == "Running", 30)
    out = _on_terminal(
        _argv(minor, tmp_path, "debug", "-it", name, "--image=busybox", "-c", "dbg", "--target=app", "--",
              "sh"),
        _env(testbed, tmp_path), ["ps -e -o args= | grep -c '^sleep 2718'", "exit 0"],
        "If you don't see a command prompt")
    assert re.search(r"^1$", out, re.M), out


def test_attach_output_is_live_and_ends_with_the_container(agents: NodeAgents, kube: Kube, core: Any) -> None:
    """An output-only attach (Python client, WebSocket) gets a partial line at once (no log line
    buffering) and ends when the container does."""
    from kubernetes.stream import stream

    create_bound_pod(kube, NS, NODE, "prompt", {"containers": [{
        "name": "c", "image": "busybox",
        "command": ["sh", "-c", "for i in 1 2 3 4; do printf 'ready> '; sleep 1; done"]}]})
    wait_for(lambda: get_pod(kube, NS, "prompt")["status"].get("phase") == "Running", 30)
    ws = stream(core.connect_get_namespaced_pod_attach, "prompt", NS, container="c", stdout=True, stderr=True,
                stdin=False, tty=False, _preload_content=False)
    seen = ""
    deadline = time.monotonic() + 2.5  # the container runs 4 s: what comes before is not its final flush
    while "ready> " not in seen and time.monotonic() < deadline:
        ws.update(timeout=0.5)
        seen += ws.read_stdout() if ws.peek_stdout() else ""
    assert seen.startswith("ready> ") and "\n" not in seen, seen
    ws.run_forever(timeout=10)
    assert not ws.is_open()


def test_large_environment_and_no_spec_on_the_command_line(agents: NodeAgents, kube: Kube, core: Any) -> None:
    """The shim takes the container's spec on stdin: an environment of 180 KB (the spec is over the
    kernel's 128 KiB limit on one argument; each variable is under it) starts, and the container's
    pid 1 shows no spec (env, host paths) in its args."""
    from kubernetes.stream import stream

    create_bound_pod(kube, NS, NODE, "bigenv", {"containers": [
        {"name": "c", "image": "busybox", "command": ["sleep", "3600"],
         "env": [{"name": f"BIG{i}", "value": "x" * 60_000} for i in range(3)]}]})
    wait_for(lambda: get_pod(kube, NS, "bigenv")["status"].get("phase") == "Running", 30)
    out = stream(core.connect_get_namespaced_pod_exec, "bigenv", NS, container="c",
                 command=["sh", "-c", "echo ${#BIG0}${#BIG2}; tr '\\0' ' ' < /proc/1/cmdline"], stderr=True,
                 stdin=False, stdout=True, tty=False)
    size, cmdline = out.splitlines()[:2]
    assert size == "6000060000", out
    assert cmdline.strip().endswith("nsexec.py -") and "BIG" not in cmdline, cmdline


def test_websocket_base64_subprotocol(testbed: EmbeddedTestbed, agents: NodeAgents, kube: Kube) -> None:
    """``v4.base64.channel.k8s.io`` (what browser terminals speak): text frames, an ASCII channel
    digit and base64 data both ways; the error channel carries the v4 Status with the exit code."""
    import base64
    import ssl
    import urllib.parse

    import websocket

    create_bound_pod(kube, NS, NODE, "b64", {"containers": [
        {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]})
    wait_for(lambda: get_pod(kube, NS, "b64")["status"].get("phase") == "Running", 30)
    query = urllib.parse.urlencode([("command", "sh"), ("command", "-c"),
                                    ("command", "read x; echo got-$x; echo oops >&2; exit 3"),
                                    ("stdin", "true"), ("stdout", "true"), ("stderr", "true")])
    url = testbed.url.replace("https://", "wss://") + f"/api/v1/namespaces/{NS}/pods/b64/exec?{query}"
    tls = {"ca_certs": str(testbed.ca_path), "cert_reqs": ssl.CERT_REQUIRED}
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {testbed.admin_token}"],
                                     subprotocols=["v4.base64.channel.k8s.io"], sslopt=tls, timeout=15)
    assert ws.subprotocol == "v4.base64.channel.k8s.io"
    ws.send("0" + base64.b64encode(b"abc\n").decode())
    got: dict[str, bytes] = {}
    while True:
        try:
            frame = ws.recv()
        except websocket.WebSocketConnectionClosedException:
            break
        if not frame:
            break
        assert isinstance(frame, str), frame  # text frames only
        got[frame[0]] = got.get(frame[0], b"") + base64.b64decode(frame[1:])
    assert got.get("1") == b"got-abc\n" and got.get("2") == b"oops\n", got
    status = json.loads(got["3"])
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "3", status
