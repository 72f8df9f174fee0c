"""hami-core mode end to end on one host: the emulated CANN runtime (libascendcl.so / libruntime.so over
the node's NPU state), this stack's limiter (libvnpu.so, preloaded as /etc/ld.so.preload would) and the
probe's AscendCL part, plus the plugin's hook directory and node config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hami_stack import faults
from hami_stack.device_plugin.ascend.plugin import (
    PluginConfigError,
    node_hami_core_override,
    prepare_hook_dir,
)
from hami_stack.enforcer.ascend.build import ensure_built
from testbed.hardware.ascend import create_npu_state, npu_library_env

pytestmark = pytest.mark.ascend

REPO = Path(__file__).resolve().parents[2]
OOM = 207001
MIB = 1 << 20


@pytest.fixture()
def npus(tmp_path: Path) -> Any:
    return create_npu_state(tmp_path / "npus", {"chip": "910B3", "count": 4}, node_name="n")


def probe(env: dict[str, str], *ops: str) -> dict[str, Any]:
    """The probe's acl part in a fresh process of a 'container' with ``env``."""
    code = ("import json, sys; from conformance.probe.acl import acl_part, parse_npu_op; "
            "print(json.dumps(acl_part([parse_npu_op(o) for o in sys.argv[1:]])))")
    env = {**env, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code, *ops], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def outcomes(doc: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(o.get("ok"), o.get("code")) for o in doc["ops"]]


def soft_env(npus: Any, tmp_path: Path, quota: int, visible: str = "1") -> dict[str, str]:
    env = npu_library_env(npus.path, visible)
    env.update(LD_PRELOAD=str(ensure_built()), NPU_MEM_QUOTA=str(quota),
               NPU_LOCAL_SHM_PATH=str(tmp_path / "shm" / "vnpu_local_shmem"))
    (tmp_path / "shm").mkdir(exist_ok=True)
    return env


def test_runtime_charges_the_card_shared_with_dcmi_and_frees_on_exit(npus: Any) -> None:
    env = npu_library_env(npus.path, "2")
    doc = probe(env, "meminfo", "alloc:60000", "alloc:6000", "proc:5000", "proc:1000", "meminfo")
    assert doc["device_count"] == 1 and doc["meminfo"]["total_mib"] == 65536
    assert outcomes(doc)[1:5] == [(True, 0), (False, OOM), (True, 0), (False, OOM)]  # card: 65536 MiB
    assert doc["ops"][5]["free_bytes"] == 536 * MIB
    # both processes ended: their memory is back; DCMI saw the runtime's usage meanwhile
    assert probe(env, "alloc:65536")["ops"][0]["ok"] is True
    code = "\n".join([
        "import json",
        "from conformance.probe.acl import Acl",
        "from conformance.probe.dcmi import inventory",
        "a = Acl(0)",
        "a.alloc(1500)",
        "print(json.dumps(inventory()))",
    ])
    r = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=60)
    dev = json.loads(r.stdout)["devices"][0]
    assert dev["memory_used_mib"] == 1500, dev


def test_template_view_and_no_device(npus: Any) -> None:
    doc = probe(npu_library_env(npus.path, "1", vnpu_spec="vir05_1c_16g"), "alloc:16384", "alloc:1")
    assert doc["meminfo"]["total_mib"] == 16384 and outcomes(doc) == [(True, 0), (False, OOM)]
    none = probe(npu_library_env(npus.path, None))  # a container given no NPU
    assert none == {"error": "aclrtSetDevice answered 107001", "code": 107001}  # invalid device id
    bare = {k: v for k, v in npu_library_env(npus.path, "1").items() if k != "LD_LIBRARY_PATH"}
    assert probe(bare)["unavailable"] is True  # an image without CANN: not a refusal


def test_limiter_enforces_the_quota_shared_by_processes(npus: Any, tmp_path: Path) -> None:
    env = soft_env(npus, tmp_path, 1000)
    doc = probe(env, "alloc:900", "alloc:200", "alloc:100", "proc:1", "free", "proc:600", "alloc:400",
                "alloc:500", "meminfo")
    assert doc["meminfo"]["total_mib"] == 1000 and doc["meminfo"]["free_bytes"] == (1000 - 128) * MIB
    assert outcomes(doc)[:8] == [(True, 0), (False, OOM), (True, 0), (False, OOM), (True, None), (True, 0),
                                 (True, 0), (False, OOM)]
    last = doc["ops"][8]
    assert last["total_mib"] == 1000 and last["free_bytes"] == 0  # 1000 used, 128 MiB kept back
    # the card itself only saw what the limiter let through
    assert probe(npu_library_env(npus.path, "1"), "meminfo")["meminfo"]["free_bytes"] == 65536 * MIB


def test_limiter_drops_dead_processes_and_passes_through_without_quota(npus: Any, tmp_path: Path) -> None:
    env = soft_env(npus, tmp_path, 1000)
    code = "from conformance.probe.acl import Acl; import os; a = Acl(0); a.alloc(800); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO)}, check=True, timeout=60)
    assert outcomes(probe(env, "alloc:1000")) == [(True, 0)]  # the crashed process's 800 MiB returned
    open_env = {**env, "NPU_MEM_QUOTA": "0"}
    doc = probe(open_env, "alloc:2000")
    assert doc["meminfo"]["total_mib"] == 65536 and outcomes(doc) == [(True, 0)]


def test_forked_child_charges_the_same_quota(npus: Any, tmp_path: Path) -> None:
    code = "\n".join([
        "import os",
        "from conformance.probe.acl import Acl",
        "a = Acl(0)",
        "print(a.alloc(600), flush=True)",
        "pid = os.fork()",
        "if pid == 0:",
        "    child = Acl.__new__(Acl); child.lib = a.lib; child.held = []",
        "    print(child.alloc(500), child.alloc(300), flush=True)",
        "    os._exit(0)",
        "os.waitpid(pid, 0)",
        "print(a.alloc(400), flush=True)",  # the child's 300 MiB went with it
    ])
    env = {**soft_env(npus, tmp_path, 1000), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["0", str(OOM), "0", "0"], r.stderr


def test_hook_dir_installs_the_limiter_and_the_fault_leaves_it_out(tmp_path: Path, monkeypatch: Any) -> None:
    hook = tmp_path / "hook"
    prepare_hook_dir(hook)
    assert (hook / "ld.so.preload").read_text() == "/hami-vnpu-core/libvnpu.so\n"
    assert (hook / "libvnpu.so").read_bytes() == ensure_built().read_bytes()
    assert (hook / "containers").is_dir()
    monkeypatch.setenv(faults.ENV, "plugin-ascend-no-limiter")
    faults.reset_for_tests()
    try:
        prepare_hook_dir(hook)
    finally:
        monkeypatch.delenv(faults.ENV)
        faults.reset_for_tests()
    assert (hook / "ld.so.preload").read_text() == ""


def test_node_config_overrides_the_global_mode(tmp_path: Path) -> None:
    cfg = tmp_path / "node-config.yaml"
    assert node_hami_core_override(cfg, "a") is None  # no node config at all
    cfg.write_text("nodes:\n- {name: a, hamiVnpuMode: hami-core}\n- {name: b, hami-vnpu-core: false}\n")
    assert [node_hami_core_override(cfg, n) for n in ("a", "b", "c")] == [True, False, None]
    cfg.write_text("nodes:\n- {name: a, hami-vnpu-core: 'yes'}\n")
    with pytest.raises(PluginConfigError, match=r"nodes\[0\].hami-vnpu-core: want true or false"):
        node_hami_core_override(cfg, "a")
    cfg.write_text("nodes: 3\n")
    with pytest.raises(PluginConfigError, match="want a mapping with a nodes list"):
        node_hami_core_override(cfg, "a")


def test_no_preload_env_leaks_into_this_process() -> None:
    assert "NPU_MEM_QUOTA" not in os.environ


def test_a_huge_request_cannot_wrap_the_quota_check(npus: Any, tmp_path: Path) -> None:
    """A size near 2^64 must be refused by the quota, not wrap ``used + size`` below it: the card then
    refuses the block, and the limiter's undo (uncharging that size) used to zero the process's
    usage, so the same quota could be allocated again and again."""
    code = "\n".join([
        "import ctypes, json",
        "from conformance.probe.acl import Acl, MIB",
        "a = Acl(0)",
        "out = [a.alloc(800)]",
        "p = ctypes.c_void_p()",
        "out.append(int(a.lib.aclrtMalloc(ctypes.byref(p), (1 << 64) - 800 * MIB + 1, 0)))",
        "out.append(a.alloc(800))",
        "print(json.dumps(out))",
    ])
    env = {**soft_env(npus, tmp_path, 1000), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, huge, again = json.loads(r.stdout.splitlines()[-1])
    assert first == 0 and huge != 0
    assert again == OOM, "800 MiB more under a 1000 MiB quota that already holds 800 MiB"
    # without a quota the card itself refuses it (64 GiB), and still has all its memory
    env.pop("NPU_MEM_QUOTA")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [0, OOM, 0]


def test_a_process_cannot_raise_the_containers_quota(npus: Any, tmp_path: Path) -> None:
    # the container's first process fixes the shared quota; a child started with a larger
    # NPU_MEM_QUOTA (the env is the tenant's to change) gets no more than the container was given
    env = soft_env(npus, tmp_path, 1000)
    assert outcomes(probe(env, "alloc:100")) == [(True, 0)]
    raised = probe({**env, "NPU_MEM_QUOTA": "5000"}, "alloc:2000", "meminfo")
    assert outcomes(raised)[0] == (False, OOM)
    assert raised["meminfo"]["total_mib"] == 1000
    # a smaller value lowers it for every later process of the container
    assert probe({**env, "NPU_MEM_QUOTA": "500"}, "meminfo")["meminfo"]["total_mib"] == 500
    assert outcomes(probe(env, "alloc:800")) == [(False, OOM)]
