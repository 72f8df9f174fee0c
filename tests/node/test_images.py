"""Issue 14 item 4: images start like images (entrypoint + cmd, args override cmd, the image's env and
working directory), the stand-in servers answer, and an unknown image fails to pull with a hint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.node import AgentOptions, NodeAgents, images, netns, parse_inventory

from .helpers import create_bound_pod, get_pod, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (pod network namespaces)")


def test_catalog_records_image_configs() -> None:
    nginx = images.lookup("docker.io/library/nginx:1.27")
    assert nginx is not None and nginx.entrypoint == ("/docker-entrypoint.sh",)
    assert nginx.cmd == ("nginx", "-g", "daemon off;") and "NGINX_VERSION" in nginx.env
    redis = images.lookup("redis")
    assert redis is not None and redis.cmd == ("redis-server",) and redis.workdir == "/data"
    for ref, cmd in (("busybox:1.36", ("sh",)), ("alpine", ("/bin/sh",)), ("ubuntu:22.04", ("/bin/bash",)),
                     ("python:3.12-slim", ("python3",)),
                     ("nvidia/cuda:12.4.1-base-ubuntu22.04", ("/bin/bash",))):
        entry = images.lookup(ref)
        assert entry is not None and entry.cmd == cmd, ref
    sample = images.lookup("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04")
    assert sample is not None and dict(sample.links)["/cuda-samples/vectorAdd"].endswith("bin/vectorAdd")
    assert images.lookup("quay.io/someone/unknown:1") is None
    assert images.canonical("nginx") == "docker.io/library/nginx:latest"
    assert images.canonical("bitnami/redis:7") == "docker.io/bitnami/redis:7"
    msg = images.not_found_message("example.org/app:1")
    assert 'failed to resolve reference "example.org/app:1"' in msg and "TESTBED_IMAGE_CATALOG" in msg


def test_register_links_and_host_argv() -> None:
    images.register("example.test/linked:*", entrypoint=["/entry"], links={"/entry": "/bin/true"})
    entry = images.lookup("example.test/linked:v1")
    assert entry is not None and images.root_links(entry) == [["/entry", "/bin/true"]]
    assert images.host_argv(entry, ["/entry", "x"]) == ["/bin/true", "x"]
    assert images.host_argv(entry, ["entry"]) == ["/bin/true"]  # by name, as PATH would find it
    py = images.lookup("python:3")
    assert py is not None and "/usr/local/bin/python" in dict(py.links)  # the image's `python`


@pytest.fixture(scope="module")
def kube(testbed: EmbeddedTestbed) -> Kube:
    return Kube.from_config(str(testbed.kubeconfig_path))


@pytest.fixture(scope="module")
def agents(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgents]:
    inv = parse_inventory({"nodes": [{"name": "node-img", "capacity": {"cpu": "16"}}]})
    opts = AgentOptions(lease_interval=0.3, backoff_base=0.3)
    with NodeAgents(kube, inv, tmp_path_factory.mktemp("images"), options=opts) as ag:
        yield ag


def _phase(kube: Kube, name: str, phases: tuple[str, ...]) -> dict[str, Any]:
    return wait_for(lambda: (p := get_pod(kube, "default", name))["status"].get("phase") in phases and p, 30)


def _running(kube: Kube, name: str) -> dict[str, Any]:
    return _phase(kube, name, ("Running",))


def _ask(agents: NodeAgents, pod: dict[str, Any], port: int, request: bytes) -> bytes:
    w = agents.agent("node-img").runtime.workers[pod["metadata"]["uid"]]

    def once() -> bytes:
        try:
            s = netns.connect(w.netns_path, "127.0.0.1", port, 2)
        except OSError:
            return b""
        with s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
                if request.startswith(b"*") and data.endswith(b"\r\n"):
                    break
            return data

    return wait_for(once, timeout=15, every=0.2)


@ROOT_ONLY
def test_nginx_and_redis_without_command(kube: Kube, agents: NodeAgents) -> None:
    create_bound_pod(kube, "default", "node-img", "web", {"containers": [{"name": "c", "image": "nginx"}]})
    create_bound_pod(kube, "default", "node-img", "kv", {"containers": [{"name": "c", "image": "redis:7"}]})
    web = _running(kube, "web")
    reply = _ask(agents, web, 80, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and b"Server: nginx/" in reply and b"Welcome to nginx!" in reply
    kv = _running(kube, "kv")
    set_cmd = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n"
    assert _ask(agents, kv, 6379, set_cmd) == b"+OK\r\n"
    assert _ask(agents, kv, 6379, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") == b"$2\r\nv1\r\n"


@ROOT_ONLY
def test_args_replace_cmd_and_image_env_and_workdir(kube: Kube, agents: NodeAgents) -> None:
    # python's CMD (python3) is replaced by args; the image's env and WORKDIR apply under the pod's
    spec = {"restartPolicy": "Never", "containers": [{
        "name": "c", "image": "python:3.11", "env": [{"name": "LANG", "value": "pod"}],
        "args": ["python3", "-c",
                 "import os; print(os.environ['PYTHON_VERSION'], os.environ['LANG'], os.getcwd())"],
    }]}
    create_bound_pod(kube, "default", "node-img", "py", spec)
    done = _phase(kube, "py", ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", done["status"]
    w = agents.agent("node-img")
    logs = list((w.root / "var/log/pods").glob(f"default_py_{done['metadata']['uid']}/c/0.log"))
    assert logs and "3.11.7 pod /\n" in logs[0].read_text()
    # busybox with no command and no args runs its CMD (sh), which exits at once without stdin
    create_bound_pod(kube, "default", "node-img", "bb", {"restartPolicy": "Never",
                                                         "containers": [{"name": "c", "image": "busybox"}]})
    bb = _phase(kube, "bb", ("Succeeded", "Failed"))
    assert bb["status"]["phase"] == "Succeeded"


def test_unknown_image_says_how_to_add_it(kube: Kube, agents: NodeAgents) -> None:
    create_bound_pod(kube, "default", "node-img", "nope",
                     {"containers": [{"name": "c", "image": "registry.example/team/app:2"}]})

    def waiting() -> dict[str, Any] | None:
        st = (get_pod(kube, "default", "nope")["status"].get("containerStatuses") or [{}])[0]
        w = (st.get("state") or {}).get("waiting") or {}
        return w if w.get("reason") in ("ErrImagePull", "ImagePullBackOff") else None

    w = wait_for(waiting, timeout=20)
    if w["reason"] == "ErrImagePull":
        assert "image catalog" in w["message"] and "registry.example/team/app:2" in w["message"]
    wait_for(lambda: (waiting() or {}).get("reason") == "ImagePullBackOff", timeout=20)
