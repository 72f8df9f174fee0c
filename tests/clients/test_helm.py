"""Real helm 3 (the 1.25 package) and helm 4 (the 1.33 package) against the testbed of the same minor."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from testbed.clients import kubectl_path, skip_reason
from testbed.embedded import EmbeddedTestbed

from .harness import Client

pytestmark = pytest.mark.helm

CHART = Path(__file__).parent / "charts" / "demo"
MINORS = (25, 33)  # 1.25 ships helm 3.11.1, 1.33 ships helm 4.1.4
_names = itertools.count()


class Helm:
    def __init__(self, minor: int, tb: EmbeddedTestbed, helm: Client) -> None:
        self.minor = minor
        self.tb = tb
        self.helm = helm
        self.api = tb.api_client()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        text = helm.run("version", "--template", "{{.Version}}").stdout
        m = re.match(r"v(\d+)\.(\d+)", text)
        assert m, text
        self.version = (int(m.group(1)), int(m.group(2)))

    def run(self, *args: str, **kw):  # type: ignore[no-untyped-def]
        return self.helm.run(*args, **kw)

    def namespace(self) -> str:
        name = f"h{next(_names)}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    @property
    def client_dry_run(self) -> str:
        # Helm 3.13 turned --dry-run into a string flag; helm 4 warns on the bare form.
        return "--dry-run=client" if self.version >= (3, 13) else "--dry-run"


def _helm_client(minor: int, tb: EmbeddedTestbed | None, home: Path) -> Client:
    kubectl = kubectl_path(minor)
    helm = kubectl.parent / "helm" if kubectl is not None else None
    if helm is None or not helm.is_file():
        pytest.skip(skip_reason(minor))
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return Client(helm, tb, home, extra_env=env)


@pytest.fixture(scope="module", params=MINORS, ids=lambda m: f"1.{m}")
def h(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    minor: int = request.param
    if kubectl_path(minor) is None:
        pytest.skip(skip_reason(minor))
    home = tmp_path_factory.mktemp(f"helm-1.{minor}-home")
    with EmbeddedTestbed(minor, bookmark_interval=0.5, history=2000) as tb:
        yield Helm(minor, tb, _helm_client(minor, tb, home))


def test_template_for_kube_1_20(tmp_path: Path) -> None:
    """``helm template`` renders offline: capabilities come from --kube-version, not a server."""
    minor = 33 if kubectl_path(33) is not None else 25
    if kubectl_path(minor) is None:
        pytest.skip(skip_reason(minor))
    helm = _helm_client(minor, None, tmp_path)
    out = helm.run("template", "demo", str(CHART), "--kube-version", "1.20.0").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ConfigMap", "demo-config"),
        ("Deployment", "demo-web"),
        ("Job", "demo-migrate"),
        ("Job", "demo-seed"),
        ("Service", "demo-svc"),
    ]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert cm["data"] == {"greeting": "hello", "kubeMinor": "20", "cronJobsInBatchV1": "false"}


def _release_secrets(h: Helm, ns: str, name: str) -> list[str]:
    items = h.core.list_namespaced_secret(ns, label_selector=f"owner=helm,name={name}").items
    return sorted(s.metadata.name for s in items)


def test_install_upgrade_uninstall(h: Helm) -> None:
    ns = h.namespace()
    out = h.run("install", "demo", str(CHART), "-n", ns).stdout
    assert "STATUS: deployed" in out and "REVISION: 1" in out
    cm = h.core.read_namespaced_config_map("demo-config", ns)
    # Capabilities came from the testbed's /version and discovery.
    assert cm.data == {"greeting": "hello", "kubeMinor": str(h.minor), "cronJobsInBatchV1": "true"}
    assert h.core.read_namespaced_service("demo-svc", ns).spec.ports[0].target_port == 8080
    assert h.apps.read_namespaced_deployment("demo-web", ns).spec.replicas == 1
    jobs = sorted(j.metadata.name for j in h.batch.list_namespaced_job(ns).items)
    assert jobs == ["demo-migrate", "demo-seed"]
    assert _release_secrets(h, ns, "demo") == ["sh.helm.release.v1.demo.v1"]

    listed = json.loads(h.run("list", "-n", ns, "-o", "json").stdout)
    assert [(r["name"], r["revision"], r["status"]) for r in listed] == [("demo", "1", "deployed")]

    out = h.run(
        "upgrade", "demo", str(CHART), "-n", ns, "--set", "greeting=bye", "--set", "replicas=3"
    ).stdout
    assert "has been upgraded" in out
    assert h.core.read_namespaced_config_map("demo-config", ns).data["greeting"] == "bye"
    assert h.apps.read_namespaced_deployment("demo-web", ns).spec.replicas == 3
    status = json.loads(h.run("status", "demo", "-n", ns, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    assert status["config"] == {"greeting": "bye", "replicas": 3}
    assert _release_secrets(h, ns, "demo") == ["sh.helm.release.v1.demo.v1", "sh.helm.release.v1.demo.v2"]

    assert h.run("uninstall", "demo", "-n", ns).stdout.strip() == 'release "demo" uninstalled'
    assert h.core.list_namespaced_config_map(ns, label_selector="app.kubernetes.io/instance=demo").items == []
    assert h.core.list_namespaced_service(ns).items == []
    assert h.apps.list_namespaced_deployment(ns).items == []
    assert h.batch.list_namespaced_job(ns).items == []
    assert _release_secrets(h, ns, "demo") == []
    assert json.loads(h.run("list", "-n", ns, "-o", "json").stdout) == []


def test_install_dry_run(h: Helm) -> None:
    ns = h.namespace()
    out = h.run("install", "dry", str(CHART), "-n", ns, h.client_dry_run, "--set", "greeting=dry").stdout
    assert "STATUS: pending-install" in out and 'greeting: "dry"' in out
    assert h.core.list_namespaced_config_map(ns, label_selector="app.kubernetes.io/instance=dry").items == []
    assert _release_secrets(h, ns, "dry") == []
    if h.version < (3, 13):
        return  # --dry-run=server arrived in helm 3.13
    out = h.run("install", "dry", str(CHART), "-n", ns, "--dry-run=server").stdout
    assert "STATUS: pending-install" in out and "kind: Deployment" in out
    # With a server dry run, capabilities are the server's, not helm's defaults.
    assert f'kubeMinor: "{h.minor}"' in out
    assert h.core.list_namespaced_config_map(ns, label_selector="app.kubernetes.io/instance=dry").items == []
    assert h.apps.list_namespaced_deployment(ns).items == []
