"""Cluster backends: where the suites run.

* ``testbed`` (default): start the emulated cluster for a minor, ``helm install`` the stack's chart,
  wait for the device plugins to register; torn down at the end unless ``--keep-cluster``.
* ``kubeconfig``: an existing cluster with HAMi already installed (ours or upstream).
* ``k3s``: a k3s container of the minor through ``testcontainers`` (needs a container engine).

Only this package may import ``testbed`` (and only ``backends/testbed.py`` does), so the suites stay
testable against any cluster. Every backend hands back a :class:`ClusterInfo`, which the pytest
controller passes to xdist workers as JSON: one cluster per session, shared by all workers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

MINORS = tuple(f"1.{n}" for n in range(18, 36))
NEWEST_MINOR = MINORS[-1]
# Minors newer than the emulated profiles (1.18-1.35) whose real control plane the testbed builds
# (testbed.controlplane.releases.MINORS; tests/reports cross-check the two): a testbed cell of one
# runs only with `--control-plane real`, and an existing cluster of one is accepted as is.
REAL_ONLY_MINORS = ("1.36", "1.37")
DEFAULT_MINOR = "1.33"  # the cell `make run` certifies; 1.34 and 1.35 are cells of their own (tox)


class BackendError(Exception):
    """Bad input or an unusable cluster; the plugin turns it into a usage error (exit code 4)."""


class BackendUnavailable(Exception):
    """The backend cannot run on this machine (e.g. no container engine for k3s): skip, with reason."""


@dataclass
class Options:
    cluster: str = "testbed"
    kubeconfig: str | None = None
    k8s_version: str = DEFAULT_MINOR
    vendor: str = "nvidia"
    hami_namespace: str = "hami-system"
    scheduler_name: str = "hami-scheduler"
    keep_cluster: bool = False
    chart_set: list[str] = field(default_factory=list)
    inventory: str | None = None
    timeout: float = 180.0


@dataclass
class ClusterInfo:
    backend: str
    kubeconfig: str
    minor: str
    git_version: str
    hami_namespace: str
    scheduler_name: str
    vendors: list[str] = field(default_factory=list)
    chart_values: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # what teardown needs (data dir, container id)
    # What the backend can tell about the installed stack (chartValuesSha256, imageDigests,
    # shimSha256, ...): merged into the run's systemUnderTest record.
    system: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ClusterInfo:
        return cls(**json.loads(text))


class Backend(Protocol):
    name: str

    def provision(self, opts: Options) -> ClusterInfo: ...

    def teardown(self, info: ClusterInfo) -> None: ...


def check_minor(text: str) -> str:
    value = text.strip().lstrip("v")
    parts = value.split(".")
    minor = ".".join(parts[:2]) if len(parts) >= 2 else value
    if minor not in MINORS and minor not in REAL_ONLY_MINORS:
        raise BackendError(
            f'unknown Kubernetes minor "{text}": supported minors are {MINORS[0]} to {MINORS[-1]}, '
            f"and {', '.join(REAL_ONLY_MINORS)} on a real control plane"
        )
    return minor


def get_backend(name: str) -> Backend:
    if name == "testbed":
        from conformance.backends.testbed import TestbedBackend

        return TestbedBackend()
    if name == "kubeconfig":
        from conformance.backends.kubeconfig import KubeconfigBackend

        return KubeconfigBackend()
    if name == "k3s":
        from conformance.backends.k3s import K3sBackend

        return K3sBackend()
    raise BackendError(f'unknown cluster backend "{name}": use testbed, kubeconfig or k3s')
