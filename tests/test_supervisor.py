"""The testbed supervisor: killed components come back with back-off, `down` leaves no process behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.supervisor import Backoff, Containment, descendants, marked

POD_SLEEP = "3131.5"  # an argument no other process on the host uses: finds the pod's process


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True,
                          timeout=90)


def wait_for(fn: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pod_processes() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[:2] == [b"sleep", POD_SLEEP.encode()] or (len(cmd) > 1 and cmd[0].endswith(b"/sleep")
                                                             and cmd[1] == POD_SLEEP.encode()):
                out.append(int(entry))
    return out


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_backoff_doubles_to_a_cap_and_resets_after_a_long_run() -> None:
    b = Backoff(first=0.5, cap=10.0, reset_after=30.0)
    assert [b.next_delay(1.0) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.next_delay(31.0) == 0.5  # it ran long enough: a fresh crash starts over


def test_the_supervisor_sleeps_until_a_restart_is_due_and_at_most_a_second(tmp_path: Path) -> None:
    from testbed.components import Component, ComponentSet

    cs = ComponentSet(kubeconfig=tmp_path / "kc", data_dir=tmp_path, minor=33)
    a, b = Component("a", ["true"]), Component("b", ["true"])
    cs.components = [a, b]
    assert cs.next_due() == 1.0  # nothing pending: wake on SIGCHLD or after a second
    now = time.monotonic()
    a.restart_at = now + 0.3
    b.restart_at = now + 5.0
    assert 0.2 < cs.next_due() <= 0.3  # the nearest pending restart, not the 1 s idle wait
    a.restart_at = now - 1.0
    assert cs.next_due() == 0.0  # overdue: look at once


def test_killed_components_restart_and_down_leaves_nothing(tmp_path: Path) -> None:
    from kubernetes import client, config

    inv = tmp_path / "nodes.yaml"
    inv.write_text("nodes:\n  - name: sv1\n    capacity: {cpu: '4', memory: 8Gi}\n")
    data = tmp_path / "tb"
    r = _run("up", "--k8s", "1.33", "--detach", "--port", "0", "--data-dir", str(data), "--nodes", str(inv))
    assert r.returncode == 0, r.stderr + r.stdout
    up_pid = json.loads((data / "state.json").read_text())["pid"]
    tree: set[int] = set()
    try:
        api = config.new_client_from_config(str(data / "kubeconfig"))
        core = client.CoreV1Api(api)
        core.create_namespaced_pod("default", {
            "metadata": {"name": "sleeper"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", POD_SLEEP]}]}})
        wait_for(lambda: core.read_namespaced_pod("sleeper", "default").status.phase == "Running",
                 what="pod Running")
        uid = core.read_namespaced_pod("sleeper", "default").metadata.uid
        # the pod's network namespace and the agents' cluster network (named after the data dir)
        namespaces = [f"tb-{uid[:18]}",
                      "tbsvc-" + hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:10]]
        assert all(Path("/run/netns", n).exists() for n in namespaces), namespaces
        pods = wait_for(pod_processes, what="the pod's process")

        def components() -> dict[str, Any]:
            return json.loads((data / "state.json").read_text())["components"]

        before = components()
        assert set(before) == {"apiserver", "controllers", "scheduler", "nodes"}
        # every component runs in a process group of its own
        for c in before.values():
            assert os.getpgid(c["pid"]) == c["pid"]
        os.kill(before["scheduler"]["pid"], signal.SIGKILL)
        os.kill(before["controllers"]["pid"], signal.SIGKILL)
        after = wait_for(lambda: (c := components())["scheduler"]["restarts"] == 1
                         and c["controllers"]["restarts"] == 1 and c, timeout=15, what="restarts")
        assert after["scheduler"]["pid"] != before["scheduler"]["pid"]
        assert alive(after["scheduler"]["pid"]) and alive(after["controllers"]["pid"])
        st = _run("status", "--data-dir", str(data))
        assert "component scheduler:" in st.stdout and "restarts 1, last exit status -9" in st.stdout
        log = (data / "testbed.log").read_text()
        assert "component scheduler restarted" in log
        # the node agent dies alone (SIGKILL, no clean-up): its pod's process runs on (adopted) and stays ours
        os.kill(before["nodes"]["pid"], signal.SIGKILL)
        wait_for(lambda: components()["nodes"]["restarts"] == 1, timeout=15, what="node agent restart")
        # the apiserver too: it comes back on the same port and state; the client built before reconnects
        os.kill(before["apiserver"]["pid"], signal.SIGKILL)
        wait_for(lambda: components()["apiserver"]["restarts"] == 1, timeout=15, what="apiserver restart")

        def pod_seen() -> bool:
            try:
                return core.read_namespaced_pod("sleeper", "default").status.phase == "Running"
            except Exception:
                return False

        wait_for(pod_seen, timeout=15, what="the old client reaching the restarted apiserver")
        # the restart woke the warm standby (imports done) rather than starting a process cold
        assert "component apiserver restarted" in (data / "testbed.log").read_text()
        assert "restart 1, warm standby)" in (data / "testbed.log").read_text()
        assert pod_processes() == pods  # neither restart touched the pod's process
        tree = set(descendants(up_pid)) | set(pods) | {up_pid}
        assert set(pods) <= set(Containment(data).pids()) | set(descendants(up_pid))
        # the killed agent's pod processes were re-parented to `up`; one that ends is reaped at once
        # (on SIGCHLD), not left a zombie until the supervisor's periodic sweep (ORPHAN_SWEEP_S)
        orphans = []
        for pid in pods:
            chain = [pid]
            while _ppid(chain[-1]) not in (up_pid, 0, 1) and len(chain) < 10:
                chain.append(_ppid(chain[-1]))
            if _ppid(chain[-1]) == up_pid:
                orphans.append(chain[-1])  # the top of the pod's process tree, re-parented to `up`
        assert orphans, f"no pod process descends from a child of the up process {up_pid} (pods {pods})"
        for pid in orphans:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        # (measured: 0.2 s on SIGCHLD; 1.8-2.9 s when only the sweep found them)
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in orphans), timeout=1.5,
                 what=f"the up process reaping its ended orphans {orphans} on SIGCHLD")
    finally:
        d = _run("down", "--data-dir", str(data))
    assert d.returncode == 0, d.stderr + d.stdout
    survivors = [p for p in tree if alive(p)]
    assert not survivors, f"processes of the testbed survived `down`: {survivors}"
    assert not pod_processes()
    assert not marked(str(data.resolve()))
    cg = Containment(data).cgroup
    assert cg is None or not cg.exists(), f"the testbed's cgroup {cg} was left behind"
    # the killed agent's pod namespace and the restarted agent's cluster network go too
    left = [n for n in namespaces if Path("/run/netns", n).exists()]
    assert not left, f"network namespaces of the testbed left behind: {left}"
