"""Fixtures for the emulated driver library tests: a built library directory, fresh state
directories, and a runner that executes a ctypes snippet in a child process with the environment
the node agent would give a container."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from testbed.hardware.build import ensure_built, library_env
from testbed.hardware.state import DeviceState, create_state

# Loaded before every snippet: both libraries, small ctypes helpers, and emit() for the JSON result.
PRELUDE = r"""
import ctypes, json, os, sys, time
cu = ctypes.CDLL("libcuda.so.1")
nv = ctypes.CDLL("libnvidia-ml.so.1")
nv.nvmlErrorString.restype = ctypes.c_char_p
c_int, c_uint, c_size_t, c_u64 = ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_uint64
byref = ctypes.byref

def ck(rc, what="call"):
    if rc != 0:
        raise SystemExit(f"{what} failed with {rc}")

def cuda_ctx(ordinal=0):
    ck(cu.cuInit(0), "cuInit")
    ctx = ctypes.c_void_p()
    ck(cu.cuDevicePrimaryCtxRetain(byref(ctx), ordinal), "retain")
    ck(cu.cuCtxSetCurrent(ctx), "setcurrent")
    return ctx

def alloc(nbytes):
    p = c_u64()
    rc = cu.cuMemAlloc_v2(byref(p), c_size_t(nbytes))
    return rc, p.value

def mem_info():
    f, t = c_size_t(), c_size_t()
    ck(cu.cuMemGetInfo_v2(byref(f), byref(t)), "meminfo")
    return f.value, t.value

def nvml_handle(i):
    h = ctypes.c_void_p()
    rc = nv.nvmlDeviceGetHandleByIndex_v2(i, byref(h))
    return rc, h

class Util(ctypes.Structure):
    _fields_ = [("gpu", c_uint), ("memory", c_uint)]

def nvml_util(h):
    u = Util()
    ck(nv.nvmlDeviceGetUtilizationRates(h, byref(u)), "util")
    return u.gpu

def emit(obj):
    print("RESULT " + json.dumps(obj), flush=True)
"""

MIB = 1 << 20


@pytest.fixture(scope="session")
def lib_dir() -> Path:
    return ensure_built()


@pytest.fixture
def make_state(tmp_path: Path, lib_dir: Path) -> Iterator[Callable[..., DeviceState]]:
    opened: list[DeviceState] = []

    def factory(spec: Any = None, name: str = "node-a") -> DeviceState:
        st = create_state(tmp_path / name, spec or {"model": "A100-SXM4-80GB", "count": 2}, node_name=name)
        opened.append(st)
        return st

    yield factory
    for st in opened:
        st.close()


def child_env(state: DeviceState | Path | str, visible: Any = "all", **extra: str) -> dict[str, str]:
    path = state.path if isinstance(state, DeviceState) else state
    env = library_env(path, visible)
    env.update(extra)
    return env


def run_snippet(code: str, env: Mapping[str, str], timeout: float = 30) -> Any:
    """Run PRELUDE + code in a child interpreter and return what it passed to emit()."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError(f"child printed no result:\n{proc.stdout}\n{proc.stderr}")


def start_snippet(code: str, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Start a long-lived child; it reads commands from stdin as the snippet decides."""
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + code],
        env=dict(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_result(proc: subprocess.Popen[str]) -> Any:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child ended early: {proc.stderr.read() if proc.stderr else ''}")
        if line.startswith("RESULT "):
            return json.loads(line[7:])


# ---- opt-in: NVIDIA's CUDA runtime on the emulated driver ----
# test_cudart.py needs a libcudart.so.13 that CI does not have (it would have to be downloaded); it runs only
# when HAMI_CUDART_LIB names one (e.g. from `pip download nvidia-cuda-runtime` unpacked under /tmp) and is
# deselected otherwise, so no run reports it as skipped.
CUDART_ENV = "HAMI_CUDART_LIB"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"cudart: runs NVIDIA's libcudart on the emulated driver (opt-in: ${CUDART_ENV})"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    if os.environ.get(CUDART_ENV):
        return
    dropped = [it for it in items if it.get_closest_marker("cudart")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [it for it in items if not it.get_closest_marker("cudart")]
