"""How far NVIDIA's CUDA runtime (libcudart 13) gets on the emulated driver. Opt-in: set HAMI_CUDART_LIB to
a libcudart.so.13 (for instance from `pip download nvidia-cuda-runtime==13.0.96`, unpacked under /tmp);
deselected otherwise (see conftest.py). testbed/DIFFERENCES.md records the outcome.

What it proves: libcudart opens the emulated libcuda.so.1, accepts its driver version (13000), resolves
the public entry points through cuGetProcAddress, then asks cuGetExportTable for the private table
6bd5fb6c-5bf4-e74a-8987-d93912fd9df9 (after f8cff951-2146-8b4e-b9e2-fb469e7c0dd9). No public document
describes those tables, so the emulation refuses them and every runtime call fails with the refusal's
code (cudaErrorNotSupported, 801); with a driver older than 13000 it fails with
cudaErrorInsufficientDriver (35) before asking for that table."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.hardware.state import DeviceState

from .conftest import CUDART_ENV, child_env

pytestmark = pytest.mark.cudart

PROGRAM = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stddef.h>
int main(int argc, char **argv) {
    void *rt = dlopen(argv[1], RTLD_NOW);
    if (!rt) { printf("dlopen %s\n", dlerror()); return 2; }
    int (*count)(int *) = (int (*)(int *))dlsym(rt, "cudaGetDeviceCount");
    int (*malloc_)(void **, size_t) = (int (*)(void **, size_t))dlsym(rt, "cudaMalloc");
    int (*info)(size_t *, size_t *) = (int (*)(size_t *, size_t *))dlsym(rt, "cudaMemGetInfo");
    int (*version)(int *) = (int (*)(int *))dlsym(rt, "cudaDriverGetVersion");
    int n = -1, v = -1; void *p = NULL; size_t f = 0, t = 0;
    int rv = version(&v);
    int rc = count(&n);
    int rm = malloc_(&p, 1 << 20);
    int ri = info(&f, &t);
    printf("version %d %d\ncount %d %d\nmalloc %d\ninfo %d\n", rv, v, rc, n, rm, ri);
    return 0;
}
"""


def _run(tmp_path: Path, st: DeviceState) -> tuple[dict[str, list[int]], str]:
    lib = os.environ[CUDART_ENV]
    src, exe, trace = tmp_path / "rt.c", tmp_path / "rt", tmp_path / "trace.log"
    src.write_text(PROGRAM)
    subprocess.run(["gcc", "-o", str(exe), str(src), "-ldl"], check=True)
    env = child_env(st, HAMI_EMU_CUDA_TRACE=str(trace))
    proc = subprocess.run([str(exe), lib], env=env, capture_output=True, text=True, timeout=60, check=True)
    out = proc.stdout
    res = {ln.split()[0]: [int(x) for x in ln.split()[1:]] for ln in out.splitlines()}
    return res, trace.read_text() if trace.exists() else ""


def test_cudart_stops_at_the_private_export_table(
    tmp_path: Path, make_state: Callable[..., DeviceState]
) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 1})
    res, trace = _run(tmp_path, st)
    assert res["version"] == [0, 13000]
    assert res["count"][0] == 801 and res["malloc"] == [801] and res["info"] == [801]
    queried = {ln.split()[1] for ln in trace.splitlines() if ln.startswith("proc ")}
    assert {"cuInit", "cuDeviceGetCount", "cuMemAlloc", "cuGetExportTable"} <= queried
    assert "export-table 6bd5fb6c5bf4e74a8987d93912fd9df9 -> 801" in trace


def test_cudart_refuses_an_old_driver(tmp_path: Path, make_state: Callable[..., DeviceState]) -> None:
    st = make_state({"model": "A100-SXM4-80GB", "count": 1, "cuda_driver_version": 12040})
    res, trace = _run(tmp_path, st)
    assert res["count"][0] == 35  # cudaErrorInsufficientDriver
    assert "export-table 6bd5fb6c" not in trace  # it gives up before asking for the table it needs
