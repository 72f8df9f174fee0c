"""Real kubectl 1.34 and 1.35 against the testbed apiserver of the same minor.

What changed in those minors for a client: ``resource.k8s.io/v1`` (Dynamic Resource Allocation, GA
in 1.34) is served by default, discovery is aggregated ``v2`` only, and ``/version`` carries the
emulation fields. Everything else behaves as 1.33 (tests/clients/test_kubectl.py covers that).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.clients import kubectl_path, skip_reason
from testbed.embedded import EmbeddedTestbed

from .harness import Client, table_rows

pytestmark = pytest.mark.kubectl

MINORS = (34, 35)


@pytest.fixture(scope="module", params=MINORS, ids=lambda m: f"1.{m}")
def kubectl(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    minor: int = request.param
    binary = kubectl_path(minor)
    if binary is None:
        pytest.skip(skip_reason(minor))
    home = tmp_path_factory.mktemp(f"kubectl-1.{minor}-home")
    with EmbeddedTestbed(minor, bookmark_interval=0.5, history=500) as tb:
        yield Client(binary, tb, home)


def _minor(c: Client) -> int:
    return int(c.binary.parent.name.rsplit(".", 1)[1])


def test_version_of_both_sides(kubectl: Client) -> None:
    out = json.loads(kubectl.run("version", "-o", "json").stdout)
    minor = str(_minor(kubectl))
    assert out["clientVersion"]["minor"] == minor
    assert out["serverVersion"]["minor"] == minor
    assert out["serverVersion"]["gitVersion"].startswith(f"v1.{minor}.")
    assert out["serverVersion"].get("emulationMinor") == minor


def test_dra_v1_is_served_and_usable(kubectl: Client, tmp_path: Path) -> None:
    versions = set(kubectl.run("api-versions").stdout.split())
    assert "resource.k8s.io/v1" in versions
    assert not {"resource.k8s.io/v1beta1", "resource.k8s.io/v1beta2", "batch/v1beta1"} & versions
    rows = {
        r[0]: r for r in table_rows(kubectl.run("api-resources", "--api-group=resource.k8s.io").stdout)[1:]
    }
    assert set(rows) == {"deviceclasses", "resourceclaims", "resourceclaimtemplates", "resourceslices"}
    assert rows["deviceclasses"][-2:] == ["false", "DeviceClass"]
    assert rows["resourceclaims"][-2:] == ["true", "ResourceClaim"]
    manifest = tmp_path / "dc.yaml"
    manifest.write_text(
        "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata:\n  name: gpu.example.com\n"
        "spec:\n  selectors:\n  - cel:\n      expression: device.driver == 'gpu.example.com'\n"
    )
    assert "created" in kubectl.run("apply", "-f", str(manifest)).stdout
    got = json.loads(kubectl.run("get", "deviceclass", "gpu.example.com", "-o", "json").stdout)
    assert got["apiVersion"] == "resource.k8s.io/v1" and got["kind"] == "DeviceClass"


def test_discovery_is_aggregated_v2(kubectl: Client) -> None:
    # -v=8 logs the response headers: a v2 aggregated document answers /apis, no per-group walk
    proc = kubectl.run("api-resources", "-v=8", "--cache-dir", str(kubectl.home / "fresh-cache"))
    log = proc.stderr
    assert (
        "as=APIGroupDiscoveryList" in log and "v=v2;" in log and "v=v2beta1" not in log.split("Response")[-1]
    )
    assert "/apis/resource.k8s.io/v1 " not in log  # no legacy per-group-version request
