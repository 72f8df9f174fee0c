"""The generic family plugin as a process (``--family dcu``) over emulated hardware files, a fake
kubelet and an EmbeddedTestbed: kubelet registration, node annotations, health from the hardware."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hami_stack.protocol.register import decode_register_csv
from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed
from testbed.hardware import families as hw
from testbed.hardware.build import ensure_built
from tests.hami.test_device_plugin import FakeKubelet, wait_for

pytestmark = pytest.mark.hygon
REPO = Path(__file__).resolve().parents[2]
NODE = "dcu-node"
REGISTER = "hami.io/node-dcu-register"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, FakeKubelet, Path]]:
    base = tmp_path_factory.mktemp("fdp")
    for d in ("sock", "hw", "hook"):
        (base / d).mkdir()
    hw.create_state(base / "hw", "hygon", "Z100L", 2, node_name=NODE)
    (base / "device-config.yaml").write_text(json.dumps({"hygon": {"resourceCountName": "hygon.com/dcunum"}}))
    with EmbeddedTestbed(33) as tb:
        kube = Kube.from_config(str(tb.kubeconfig_path))
        kube.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
        kubelet = FakeKubelet(base / "sock")
        kubelet.start()
        log = open(base / "plugin.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hami_stack.device_plugin.families",
                "--family=dcu",
                f"--node-name={NODE}",
                f"--kubeconfig={tb.kubeconfig_path}",
                f"--config-file={base / 'device-config.yaml'}",
                f"--hardware-dir={base / 'hw'}",
                f"--socket-dir={base / 'sock'}",
                "--register-interval=0.5",
            ],
            cwd=REPO,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(REPO),
                "HOOK_PATH": str(base / "hook"),
                "LD_LIBRARY_PATH": str(ensure_built()),  # the DCUs come through ROCm SMI
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: kubelet.requests or proc.poll() is not None, 30, "registration")
            if proc.poll() is not None:
                raise AssertionError((base / "plugin.log").read_text())
            yield kube, kubelet, base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            kubelet.stop()


def _ann(kube: Kube) -> dict[str, Any]:
    return kube.get(f"/api/v1/nodes/{NODE}")["metadata"].get("annotations") or {}


def test_plugin_registers_with_the_kubelet_and_annotates_the_node(setup: Any) -> None:
    kube, kubelet, _ = setup
    req = kubelet.requests[0]
    assert (req.resource_name, req.endpoint) == ("hygon.com/dcunum", "hami-dcu.sock")
    a = wait_for(lambda: (v := _ann(kube)).get(REGISTER) and v, what="register annotation")
    devs = decode_register_csv(a[REGISTER])
    assert [(d.count, d.devmem, d.type, d.health) for d in devs] == [(4, 32768, "DCU-Z100L", True)] * 2
    assert a["hami.io/node-handshake-dcu"].startswith("Reported_")


def test_a_device_going_unhealthy_reaches_the_register(setup: Any) -> None:
    kube, _, base = setup
    hw.set_health(base / "hw", "hygon", 1, False)
    wait_for(
        lambda: [d.health for d in decode_register_csv(_ann(kube).get(REGISTER) or ":")] == [True, False],
        15,
        "DCU 1 unhealthy in the register",
    )
