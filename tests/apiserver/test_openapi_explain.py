"""Real kubectl of the oldest (1.20: OpenAPI v2 in gnostic protobuf) and newest (1.35: OpenAPI v3 per
group-version) cached minors run ``kubectl explain`` against emulated testbeds of 1.20, 1.33 and 1.35,
and kubectl 1.20 validates objects client-side against the served v2 schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.apiserver import k8sproto
from testbed.clients import kubectl_path, skip_reason
from testbed.embedded import EmbeddedTestbed
from tests.clients.harness import Client

pytestmark = pytest.mark.kubectl

SERVERS = (20, 33, 35)
KUBECTLS = (20, 35)


@pytest.fixture(scope="module", params=SERVERS, ids=lambda m: f"server-1.{m}")
def server(request: pytest.FixtureRequest) -> Iterator[EmbeddedTestbed]:
    k8sproto.build(request.param)  # cached by `make clients`; fetched here when missing
    with EmbeddedTestbed(request.param) as tb:
        yield tb


@pytest.fixture(scope="module")
def homes(server: EmbeddedTestbed, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """One HOME (and so one discovery cache) per kubectl minor and testbed."""
    return {m: tmp_path_factory.mktemp(f"kubectl-1.{m}-vs-1.{server.minor}") for m in KUBECTLS}


def _client(minor: int, server: EmbeddedTestbed, home: Path) -> Client:
    binary = kubectl_path(minor)
    if binary is None:
        pytest.skip(skip_reason(minor))
    return Client(binary, server, home)


@pytest.fixture(params=KUBECTLS, ids=lambda m: f"kubectl-1.{m}")
def kubectl(request: pytest.FixtureRequest, server: EmbeddedTestbed, homes: dict[int, Path]) -> Client:
    c = _client(request.param, server, homes[request.param])
    c.minor = request.param  # type: ignore[attr-defined]
    return c


def _explain(kubectl: Client, *args: str) -> str:
    return kubectl.run("explain", *args).stdout


def test_explain_kinds_and_fields(kubectl: Client, server: EmbeddedTestbed) -> None:
    pods = _explain(kubectl, "pods")
    assert "KIND:" in pods and "Pod" in pods
    assert "Specification of the desired behavior of the pod." in " ".join(pods.split())
    containers = _explain(kubectl, "pods.spec.containers")
    assert "imagePullPolicy" in containers
    assert any(line.split()[:1] == ["name"] and "-required-" in line for line in containers.splitlines())
    strategy = _explain(kubectl, "deployments.spec.strategy")
    assert "rollingUpdate" in strategy and "Recreate" in strategy
    # one recursive walk: nested fields and their types (the pod template, the rolling-update knobs)
    recursive = _explain(kubectl, "deployments.spec", "--recursive")
    for field in ("containerPort", "nodeSelector", "tolerations", "maxUnavailable"):
        assert field in recursive
    # v3 names the int-or-string type; v2 (kubectl 1.20, or a server before 1.24) says string
    v3 = kubectl.minor >= 27 and server.minor >= 24  # type: ignore[attr-defined]
    assert ("maxSurge\t<IntOrString>" if v3 else "maxSurge\t<string>") in recursive
    if v3:  # +enum arrived in the API sources after 1.20, and only the v3 template prints the list
        assert "enum: Recreate, RollingUpdate" in strategy
    for resource, kind in (("cronjobs", "CronJob"), ("ingresses", "Ingress")):
        assert kind in _explain(kubectl, resource)
    proc = kubectl.run("explain", "pods.spec.nosuchfield", check=False)
    assert proc.returncode != 0 and "nosuchfield" in proc.stderr


def test_kubectl_1_20_validates_against_the_schemas(server: EmbeddedTestbed, homes: dict[int, Path]) -> None:
    """kubectl 1.20 validates client-side with the v2 protobuf document: an unknown field is refused
    before anything is sent, a well-formed object goes through."""
    kubectl = _client(20, server, homes[20])
    bad = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: default\n"
           "data:\n  a: b\nbogusField: 1\n")
    proc = kubectl.run("apply", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0 and 'unknown field "bogusField"' in proc.stderr
    good = bad.replace("bogusField: 1\n", "").replace("name: bad", "name: good")
    kubectl.run("apply", "-f", "-", input=good)
    got = kubectl.run("get", "configmap", "good", "-n", "default", "-o", "name").stdout
    assert got.strip() == "configmap/good"
