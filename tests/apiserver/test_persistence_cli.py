"""`testbed up`/`down` keep the cluster in the data dir; a SIGKILLed apiserver loses no acknowledged write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client, config

from testbed.apiserver.persist import DB_NAME


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True,
                          timeout=120)


def _up(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run("up", "--k8s", "1.33", "--detach", "--port", "0", "--no-scheduler", "--no-controllers",
                "--data-dir", str(data), *extra)


def _core(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def _sigkill(data: Path) -> None:
    pid = json.loads((data / "state.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    # a detached testbed is not our child: wait until init has reaped it (`up` counts a zombie as running)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"testbed pid {pid} survived SIGKILL")


def test_sigkill_then_up_keeps_acknowledged_writes_and_old_kubeconfig_works(tmp_path: Path):
    data = tmp_path / "tb"
    r = _up(data)
    assert r.returncode == 0, r.stderr
    try:
        kubeconfig = data / "kubeconfig"
        old = kubeconfig.read_text()
        core = _core(kubeconfig)  # built once from the first run's kubeconfig and kept across the restart
        core.create_namespace({"metadata": {"name": "keep"}})
        names = [f"cm{i}" for i in range(40)]
        rvs = {}
        for n in names:
            cm = core.create_namespaced_config_map("keep", {"metadata": {"name": n}, "data": {"n": n}})
            rvs[n] = cm.metadata.resource_version
        _sigkill(data)  # straight after the last acknowledged create: no shutdown, no flush

        r = _up(data)
        assert r.returncode == 0, r.stderr
        assert kubeconfig.read_text() == old
        listed = core.list_namespaced_config_map("keep")
        mine = {c.metadata.name: c.metadata.resource_version for c in listed.items
                if c.metadata.name.startswith("cm")}  # kube-root-ca.crt is published there too
        assert mine == rvs
        assert int(listed.metadata.resource_version) >= max(int(v) for v in rvs.values())
        # down + up: the same again, through a clean shutdown this time
        assert _run("down", "--data-dir", str(data)).returncode == 0
        r = _up(data)
        assert r.returncode == 0, r.stderr
        assert len([c for c in core.list_namespaced_config_map("keep").items
                    if c.metadata.name.startswith("cm")]) == len(names)
        # --fresh: an empty cluster with a new identity; the old kubeconfig no longer fits
        assert _run("down", "--data-dir", str(data)).returncode == 0
        r = _up(data, "--fresh")
        assert r.returncode == 0, r.stderr
        assert kubeconfig.read_text() != old
        fresh = _core(kubeconfig)
        assert "keep" not in {n.metadata.name for n in fresh.list_namespace().items}
    finally:
        _run("down", "--data-dir", str(data))


def test_corrupt_data_dir_is_a_clear_error_not_a_reset(tmp_path: Path):
    data = tmp_path / "tb"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"\x00garbage" * 512)
    for detach in (True, False):
        args = ["up", "--k8s", "1.33", "--port", "0", "--no-scheduler", "--no-controllers",
                "--data-dir", str(data)]
        r = _run(*args, *(["--detach"] if detach else []))
        assert r.returncode != 0
        assert f"{data / DB_NAME}: not a testbed state database" in r.stderr
        assert "--fresh" in r.stderr
    assert (data / DB_NAME).read_bytes().startswith(b"\x00garbage")
    assert not (data / "pki" / "ca.key").exists()  # nothing generated beside the bad database


def test_data_dir_of_an_older_testbed_is_refused(tmp_path: Path):
    data = tmp_path / "tb"
    (data / "pki").mkdir(parents=True)
    (data / "pki" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")  # the old layout: no key kept
    r = _run("up", "--k8s", "1.33", "--port", "0", "--no-scheduler", "--no-controllers",
             "--data-dir", str(data))
    assert r.returncode == 1
    assert f"{data / 'pki' / 'ca.key'}: missing, but the CA certificate" in r.stderr
