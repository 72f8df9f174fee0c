"""GPU health: the rules of :class:`HealthTracker` (pure, a fake clock) and :func:`nvml.probe` on the
emulated driver (a subprocess: the driver library is found through ``LD_LIBRARY_PATH`` at start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hami_stack.device_plugin import nvml as nvml_mod
from hami_stack.device_plugin import plugin as plugin_mod
from hami_stack.device_plugin.health import HealthTracker
from hami_stack.device_plugin.nvml import Probe
from hami_stack.device_plugin.options import OptionsError, resolve
from hami_stack.protocol import annotations as ann
from hami_stack.protocol.register import decode_register_json
from testbed.hardware import create_state, library_env

REPO = Path(__file__).resolve().parents[2]
WELL = Probe(True)
LOST = Probe(False, "handle not obtainable: GPU is lost")


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_poll_marks_and_clears_only_the_polled_gpu() -> None:
    h = HealthTracker(60, Clock())
    h.on_poll({"a": WELL, "b": Probe(True, "row remapping pending (GPU reset required)")})
    assert h.unhealthy() == {"b": "row remapping pending (GPU reset required)"}
    h.on_poll({"a": LOST})  # b not polled this time: keeps its state
    assert set(h.unhealthy()) == {"a", "b"}
    h.on_poll({"a": WELL, "b": WELL})
    assert h.unhealthy() == {}


def test_xid_mark_lifts_only_after_the_recovery_time_and_a_good_poll() -> None:
    clock = Clock()
    h = HealthTracker(60, clock)
    h.on_xid("a", 48)
    assert h.unhealthy() == {"a": "Xid 48"}
    clock.t += 30
    h.on_poll({"a": WELL})  # the card answers, but too soon after the Xid to trust it
    assert h.unhealthy() == {"a": "Xid 48"}
    clock.t += 29
    h.on_xid("a", 63)  # a new Xid restarts the wait
    clock.t += 59
    h.on_poll({"a": WELL})
    assert h.unhealthy() == {"a": "Xid 63"}
    clock.t += 1
    h.on_poll({"a": LOST})  # the time has passed, but the card is not well
    assert h.unhealthy() == {"a": "Xid 63; handle not obtainable: GPU is lost"}
    h.on_poll({"a": WELL})
    assert h.unhealthy() == {}


def test_one_gpu_xid_leaves_the_others_alone() -> None:
    h = HealthTracker(0, Clock())
    h.on_xid("gpu-3", 79)
    h.on_poll({f"gpu-{i}": (LOST if i == 3 else WELL) for i in range(8)})
    assert set(h.unhealthy()) == {"gpu-3"}
    h.on_poll({f"gpu-{i}": WELL for i in range(8)})
    assert h.unhealthy() == {}


_PROBE = """
import json, sys
from hami_stack.device_plugin import nvml
nvml.init()
print(json.dumps({u: [p.present, p.reason] for u in sys.argv[1:] for p in [nvml.probe(u)]}))
"""


def _probe(state_dir: Path, uuids: list[str]) -> dict[str, list[object]]:
    env = library_env(state_dir, "all", base=dict(os.environ), host_view=True)
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-c", _PROBE, *uuids]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.hardware
def test_probe_reads_health_from_the_driver(tmp_path: Path) -> None:
    st = create_state(
        tmp_path / "gpus",
        [{"model": "A100-SXM4-80GB", "count": 5}, {"model": "V100-SXM2-32GB", "count": 2}],
        node_name="n",
    )
    try:
        uuids = [g.uuid for g in st.gpus]
        st.set_health(1, "unhealthy")  # no Xid: the memory-health queries say so
        st.set_health(2, "lost")
        st.fail_next(3, 1)  # the next query on GPU 3 fails
        st.set_memory_query_supported(4, False)  # NOT_SUPPORTED says nothing about health
        st.set_health(6, "unhealthy")  # an older card: page retirement instead of row remapping
        got = _probe(st.path, [*uuids, "GPU-00000000-0000-0000-0000-000000000000"])
        assert got[uuids[0]] == [True, ""]
        assert got[uuids[1]] == [True, "row remapping failed (uncorrectable memory error)"]
        assert got[uuids[2]] == [False, "handle not obtainable: GPU is lost"]
        assert got[uuids[3]] == [True, "memory query failed: Unknown Error"]
        assert got[uuids[4]] == [True, ""]
        assert got[uuids[5]] == [True, ""]
        assert got[uuids[6]] == [True, "retired pages pending (GPU reset required)"]
        assert got["GPU-00000000-0000-0000-0000-000000000000"][0] is False
        for i in range(len(uuids)):
            st.clear_faults(i)
        assert all(v == [True, ""] for v in _probe(st.path, uuids).values())
    finally:
        st.close()


def test_health_options(tmp_path: Path) -> None:
    files = [f"--config-file={tmp_path / 'none.yaml'}", f"--node-config-file={tmp_path / 'x'}"]
    base = ["--node-name=n", *files]
    o = resolve(base, env={})
    assert (o.health_interval_s, o.xid_recovery_s) == (5.0, 60.0)
    o = resolve([*base, "--health-interval=0.5", "--xid-recovery=0"], env={})
    assert (o.health_interval_s, o.xid_recovery_s) == (0.5, 0.0)
    o = resolve(base, env={"HEALTH_INTERVAL": "2", "XID_RECOVERY": "300"})
    assert (o.health_interval_s, o.xid_recovery_s) == (2.0, 300.0)
    with pytest.raises(OptionsError, match=r"--health-interval: must be at least 0\.1 seconds"):
        resolve([*base, "--health-interval=0"], env={})
    with pytest.raises(OptionsError, match="--xid-recovery: invalid number of seconds 'soon'"):
        resolve([*base, "--xid-recovery=soon"], env={})
    with pytest.raises(OptionsError, match="--xid-recovery: must be at least"):
        resolve([*base, "--xid-recovery=nan"], env={})


class _Kube:
    """Records node patches; the plugin's event recorder may post to it too."""

    def __init__(self) -> None:
        self.patches: list[dict[str, str]] = []

    def patch(self, path: str, body: dict[str, Any], kind: str = "merge") -> dict[str, Any]:
        self.patches.append(body["metadata"]["annotations"])
        return {}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return body


def test_a_gpu_that_leaves_the_device_list_is_unhealthy_until_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The device count drops (the driver no longer lists GPU 3): the GPU stays advertised, unhealthy,
    # and only its virtual devices; it is healthy again when NVML lists it again.
    gpus = [
        nvml_mod.Gpu(i, f"GPU-{i}", "NVIDIA A100-SXM4-80GB", 81920, 0, i, f"0000:0{i}:00.0") for i in range(8)
    ]
    listed = {"gpus": gpus}
    monkeypatch.setattr(nvml_mod, "discover", lambda: list(listed["gpus"]))
    monkeypatch.setattr(nvml_mod, "device_count", lambda: len(listed["gpus"]))
    present = lambda uuid: any(g.uuid == uuid for g in listed["gpus"])  # noqa: E731
    monkeypatch.setattr(
        nvml_mod, "probe", lambda uuid: Probe(True) if present(uuid) else Probe(False, "Not Found")
    )
    files = [f"--config-file={tmp_path / 'none.yaml'}", f"--node-config-file={tmp_path / 'x'}"]
    opts = resolve(["--node-name=n", f"--kubelet-socket={tmp_path / 'kubelet.sock'}", *files], env={})
    kube = _Kube()
    p = plugin_mod.NvidiaDevicePlugin(opts, kube)  # type: ignore[arg-type]

    def state() -> tuple[int, list[bool]]:
        healthy = sum(1 for d in p.server.devices if d.healthy)
        register = next(x for x in reversed(kube.patches) if ann.NVIDIA_KEYS.register in x)
        return healthy, [d.health for d in decode_register_json(register[ann.NVIDIA_KEYS.register])]

    p.refresh()
    assert state() == (80, [True] * 8)
    listed["gpus"] = [g for g in gpus if g.index != 3]
    assert p.poll_health()  # the count changed and GPU 3 is not found: refresh now
    p.refresh()
    assert state() == (70, [i != 3 for i in range(8)])
    assert len(p.server.devices) == 80  # still advertised, as unhealthy
    assert not p.poll_health()  # nothing new
    listed["gpus"] = gpus
    assert p.poll_health()
    p.refresh()
    assert state() == (80, [True] * 8)
