"""Fixtures for the shim tests: the built libvgpu.so, the probe program (compiled here), a fresh
emulated node, and a runner that starts the probe the way a container process starts: the driver
libraries from the node's toolkit environment plus LD_PRELOAD of the shim."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from hami_stack.enforcer import ensure_built
from testbed.hardware import create_state, library_env
from testbed.hardware.state import DeviceState

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent.parent / "hami_stack" / "enforcer" / "include"


@dataclass
class ProbeResult:
    rc: int
    lines: list[str]
    stderr: str

    def line(self, cmd: str, n: int = 0) -> dict[str, str]:
        """The n-th output line of a command, as its key=value fields."""
        found = [ln for ln in self.lines if ln.split(" ", 1)[0] == cmd]
        return dict(kv.split("=", 1) for kv in found[n].split()[1:])

    def codes(self, cmd: str) -> list[int]:
        return [
            int(self.line(cmd, i)["rc"])
            for i in range(sum(1 for ln in self.lines if ln.startswith(cmd + " ")))
        ]

    def errors(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if " ERROR] " in ln]


@pytest.fixture(scope="session")
def shim() -> Path:
    return ensure_built()


@pytest.fixture(scope="session")
def probe_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "vgpu_probe"
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{INCLUDE}",
            "-o",
            str(out),
            str(HERE / "progs" / "vgpu_probe.c"),
            "-ldl",
        ],
        check=True,
    )
    return out


@pytest.fixture
def node(tmp_path: Path) -> DeviceState:
    return create_state(tmp_path / "gpus", {"model": "A100-SXM4-80GB", "count": 2}, node_name="node-a")


Runner = Callable[..., ProbeResult]


def probe_env(
    node: DeviceState, shim: Path, extra: Mapping[str, str], visible: str = "all"
) -> dict[str, str]:
    env = library_env(node.path, visible)
    for key in list(env):
        if key.startswith(("CUDA_DEVICE_", "GPU_CORE_", "LIBCUDA_", "CUDA_TASK_")):
            del env[key]
    env["LD_PRELOAD"] = str(shim)
    env.update(extra)
    return env


@pytest.fixture
def run_probe(node: DeviceState, shim: Path, probe_bin: Path, tmp_path: Path) -> Runner:
    def run(
        *cmds: str,
        mode: str = "dlsym",
        env: Mapping[str, str] | None = None,
        visible: str = "all",
        timeout: float = 30,
    ) -> ProbeResult:
        extra = {"CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "region.cache"), **(env or {})}
        proc = subprocess.run(
            [str(probe_bin), mode, *cmds],
            env=probe_env(node, shim, extra, visible),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return ProbeResult(proc.returncode, proc.stdout.splitlines(), proc.stderr)

    return run
