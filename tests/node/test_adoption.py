"""A restarted node agent reconciles with what its predecessor left: no orphan, same pod IPs, pods Running."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.node.podcheckpoint import PodCheckpoint
from testbed.node.podips import PodIPAllocator

from .helpers import wait_for

SLEEP_ARG = "4242.25"  # finds the pods' processes on the host


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True,
                          timeout=90)


def _sleepers() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if len(cmd) > 1 and cmd[0].endswith(b"sleep") and cmd[1] == SLEEP_ARG.encode() and state != "Z":
                out.append(int(entry))
    return out


def test_claim_takes_a_dead_agents_address_but_not_a_live_ones(tmp_path: Path) -> None:
    reg = tmp_path / "leases.json"
    code = ("import sys; from testbed.node.podips import PodIPAllocator; "
            "a = PodIPAllocator(sys.argv[1]); [a.allocate() for _ in range(4)]; print(a.allocate())")
    out = subprocess.run([sys.executable, "-c", code, str(reg)], capture_output=True, text=True, check=True)
    dead_ip = out.stdout.strip()
    live = PodIPAllocator(reg)
    mine = PodIPAllocator(reg)
    try:
        assert mine.claim(dead_ip)  # the dead process's block comes to us, with that exact address
        held_by_live = live.allocate()
        assert held_by_live.rsplit(".", 1)[0] != dead_ip.rsplit(".", 1)[0]
        assert dead_ip not in {mine.allocate() for _ in range(20)}  # and it is not handed out twice
        assert not mine.claim(held_by_live)  # a live allocator's block is never taken
        assert not mine.claim("10.0.0.1")
    finally:
        live.close()
        mine.close()


def test_a_damaged_checkpoint_is_reported_by_name_and_set_aside(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    ck = PodCheckpoint(tmp_path)
    ck.path.parent.mkdir(parents=True)
    ck.path.write_text("{not json")
    with caplog.at_level(logging.ERROR):
        assert ck.load() == {}
    assert str(ck.path) in caplog.text
    assert ck.path.with_suffix(".corrupt").read_text() == "{not json"


def _ticks(core: object, name: str) -> list[int]:
    from kubernetes.client.exceptions import ApiException

    try:  # the restarted agent serves its kubelet API on a new port, posted with its node status
        text = core.read_namespaced_pod_log(name, "default")  # type: ignore[attr-defined]
    except ApiException:
        return []
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("tick ")]


def test_restarted_agent_adopts_its_running_pods(tmp_path: Path) -> None:
    from kubernetes import client, config

    inv = tmp_path / "nodes.yaml"
    inv.write_text("nodes:\n  - name: ad1\n    capacity: {cpu: '8', memory: 8Gi}\n")
    data = tmp_path / "tb"
    r = _run("up", "--k8s", "1.33", "--detach", "--port", "0", "--data-dir", str(data), "--nodes", str(inv))
    assert r.returncode == 0, r.stderr + r.stdout
    try:
        core = client.CoreV1Api(config.new_client_from_config(str(data / "kubeconfig")))
        for name, policy in (("a", "Always"), ("b", "OnFailure"), ("never", "Never")):
            core.create_namespaced_pod("default", {
                "metadata": {"name": name},
                "spec": {"restartPolicy": policy,
                         "containers": [{"name": "c", "image": "busybox", "command": ["sleep", SLEEP_ARG]}]}})
        core.create_namespaced_pod("default", {
            "metadata": {"name": "talker"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": [
                "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]}]}})

        def running() -> dict[str, client.V1Pod] | None:
            pods = {p.metadata.name: p for p in core.list_namespaced_pod("default").items}
            ok = len(pods) == 4 and all(p.status.phase == "Running" and p.status.pod_ip
                                        for p in pods.values())
            return pods if ok else None

        before = wait_for(running, timeout=30)
        old_procs = wait_for(lambda: len(p := _sleepers()) == 3 and p, timeout=10)
        ckpt_path = data / "nodes" / "ad1" / "var/lib/kubelet/testbed_pods_checkpoint.json"
        ckpt = json.loads(ckpt_path.read_text())
        assert {e["name"] for e in ckpt["pods"].values()} == {"a", "b", "never", "talker"}
        # each sleeper is a recorded container process, or the child of one (the PID namespace's init)
        recorded = {p["pid"] for e in ckpt["pods"].values() for p in e["processes"]}
        for pid in old_procs:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert pid in recorded or ppid in recorded, (pid, ppid, recorded)

        agent = json.loads((data / "state.json").read_text())["components"]["nodes"]["pid"]
        os.kill(agent, signal.SIGKILL)  # no clean-up at all: its pods' processes run on, unwatched
        time.sleep(1.0)
        assert sorted(_sleepers()) == sorted(old_procs)

        def restarted() -> bool:
            st = json.loads((data / "state.json").read_text())["components"]["nodes"]
            return bool(st["restarts"] >= 1 and st["running"])

        wait_for(restarted, timeout=30)

        def adopted() -> dict[str, client.V1Pod] | None:
            pods = {p.metadata.name: p for p in core.list_namespaced_pod("default").items}
            lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease("ad1", "kube-node-lease")
            ok = (all(p.status.phase == "Running" and p.status.container_statuses[0].ready
                      for p in pods.values())
                  and lease.spec.renew_time.timestamp() > time.time() - 5)
            return pods if ok else None

        after = wait_for(adopted, timeout=40)
        # the very same processes, IPs and container IDs; no restart counted
        assert sorted(_sleepers()) == sorted(old_procs)
        for name in ("a", "b", "never", "talker"):
            assert after[name].status.pod_ip == before[name].status.pod_ip
            cs, old = after[name].status.container_statuses[0], before[name].status.container_statuses[0]
            assert cs.restart_count == 0 and cs.container_id == old.container_id, cs
        # the talker's output while no agent ran reached its log, without a gap
        ticks = wait_for(lambda: len(t := _ticks(core, "talker")) > 40 and t, timeout=20)
        assert ticks == list(range(len(ticks)))
        # an adopted container that exits is seen through its shim (not the agent's child): its exit code,
        # restart policy and restart count apply as before the restart
        by_pod = {e["name"]: e for e in json.loads(ckpt_path.read_text())["pods"].values()}
        os.kill(by_pod["a"]["processes"][0]["pid"], signal.SIGKILL)
        os.kill(by_pod["never"]["processes"][0]["pid"], signal.SIGKILL)

        def ended() -> bool:
            a = core.read_namespaced_pod("a", "default").status
            never = core.read_namespaced_pod("never", "default").status
            last = a.container_statuses[0].last_state.terminated
            term = never.container_statuses[0].state.terminated
            return bool(a.container_statuses[0].restart_count == 1 and last and last.exit_code == 137
                        and never.phase == "Failed" and term and term.exit_code == 137)

        wait_for(ended, timeout=30)
        # a new pod gets none of the addresses in use
        core.create_namespaced_pod("default", {
            "metadata": {"name": "new"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", SLEEP_ARG]}]}})
        new = wait_for(lambda: (p := core.read_namespaced_pod("new", "default")).status.pod_ip and p,
                       timeout=30)
        assert new.status.pod_ip not in {p.status.pod_ip for p in after.values()}
    finally:
        d = _run("down", "--data-dir", str(data))
    assert d.returncode == 0, d.stderr
    deadline = time.monotonic() + 5
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _sleepers()


def test_adopted_pod_never_asks_a_plugin_again() -> None:
    from types import SimpleNamespace

    from testbed.node.devices_api import ContainerDevices
    from testbed.node.podcheckpoint import cached_devices

    calls: list[str] = []

    class Manager:
        def __init__(self, missing: list[str]) -> None:
            self.missing = missing

        def unrecorded(self, pod: dict, container: dict) -> list[str]:
            return self.missing

        def allocate(self, pod: dict, container: dict) -> ContainerDevices:
            calls.append(container["name"])
            return ContainerDevices(envs={"FROM": "checkpoint"})

    pod = {"metadata": {"uid": "u1"}, "spec": {"containers": [{"name": "c"}]}}
    recorded = SimpleNamespace(devices=Manager([]))
    assert cached_devices(recorded, pod, {"name": "c"}).envs == {"FROM": "checkpoint"}
    lost = SimpleNamespace(devices=Manager(["nvidia.com/gpu"]))
    with pytest.raises(RuntimeError, match=r"nvidia\.com/gpu"):
        cached_devices(lost, pod, {"name": "c"})
    assert calls == ["c"]  # the checkpoint-less container never reached allocate (a plugin)
