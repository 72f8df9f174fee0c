"""Added cost of the enforcement shim per cuMemAlloc_v2 and per cuLaunchKernel, on the emulated driver.

Runs a small C program (built here) with and without LD_PRELOAD of libvgpu.so, with no compute limit
(the fast path every unthrottled container takes) and a memory limit set (so allocations are charged).
Wall-clock ns per call are medians of several runs; instructions per call come from
``valgrind --tool=callgrind`` as the difference between two loop lengths, which cancels start-up costs
and is stable on a noisy machine. The last line printed is one JSON object.

Usage: python bench/enforcer.py [--iterations N] [--runs R] [--no-callgrind]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hami_stack.enforcer import ensure_built
from testbed.hardware import create_state, library_env

PROGRAM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef int (*fn_t)();
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    fn_t init = (fn_t)dlsym(h, "cuInit"), get = (fn_t)dlsym(h, "cuDeviceGet"),
         retain = (fn_t)dlsym(h, "cuDevicePrimaryCtxRetain"), setc = (fn_t)dlsym(h, "cuCtxSetCurrent"),
         load = (fn_t)dlsym(h, "cuModuleLoadData"), getf = (fn_t)dlsym(h, "cuModuleGetFunction"),
         launch = (fn_t)dlsym(h, "cuLaunchKernel"), alloc = (fn_t)dlsym(h, "cuMemAlloc_v2"),
         mfree = (fn_t)dlsym(h, "cuMemFree_v2"), sync = (fn_t)dlsym(h, "cuCtxSynchronize");
    int dev; void *ctx, *mod, *f;
    if (init(0) || get(&dev, 0) || retain(&ctx, dev) || setc(ctx)) return 2;
    if (load(&mod, "HAMIEMU-KERNEL name=nop duration_us=0\n") || getf(&f, mod, "nop")) return 3;
    double t0 = now();
    if (argv[1][0] == 'l') {
        for (long i = 0; i < n; i++)
            if (launch(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL)) return 4;
        sync();
    } else {
        unsigned long long p;
        for (long i = 0; i < n; i++)
            if (alloc(&p, (size_t)4096) || mfree(p)) return 5;
    }
    printf("%.2f\n", (now() - t0) / n);
    return 0;
}
"""


def build(tmp: Path) -> Path:
    src = tmp / "bench.c"
    src.write_text(PROGRAM)
    exe = tmp / "bench"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src), "-ldl"], check=True)
    return exe


def ns_per_call(exe: Path, env: dict[str, str], op: str, n: int, runs: int) -> float:
    vals = [
        float(
            subprocess.run([str(exe), op, str(n)], env=env, capture_output=True, text=True, check=True).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(vals)


def instructions(exe: Path, env: dict[str, str], op: str, n: int, tmp: Path) -> int:
    out = tmp / f"cg.{op}.{n}.{os.getpid()}"
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(exe), op, str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    m = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
    if not m:
        raise RuntimeError("no callgrind summary")
    return int(m.group(1))


def per_call_instructions(exe: Path, env: dict[str, str], op: str, n: int, tmp: Path) -> float:
    return (instructions(exe, env, op, 2 * n, tmp) - instructions(exe, env, op, n, tmp)) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-callgrind", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        node = create_state(tmp / "gpus", {"model": "A100-SXM4-80GB", "count": 1})
        exe = build(tmp)
        base = library_env(node.path, "all")
        # a large emulated device and limit: the loop never runs out, every call takes the charged path
        shim = {
            **base,
            "LD_PRELOAD": str(ensure_built()),
            "CUDA_DEVICE_MEMORY_LIMIT": "64g",
            "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp / "bench.cache"),
            "LIBCUDA_LOG_LEVEL": "0",
        }
        res: dict[str, float | int | None] = {}
        for op, key in (("launch", "launch"), ("alloc", "alloc")):
            n = args.iterations if op == "launch" else args.iterations // 4
            without = ns_per_call(exe, base, op, n, args.runs)
            with_shim = ns_per_call(exe, shim, op, n, args.runs)
            res[f"{key}_ns_without"] = round(without, 1)
            res[f"{key}_ns_with"] = round(with_shim, 1)
            res[f"{key}_added_ns"] = round(with_shim - without, 1)
            res[f"{key}_ratio"] = round(with_shim / without, 3) if without else None
            print(
                f"{op}: {without:.1f} ns without, {with_shim:.1f} ns with the shim "
                f"(+{with_shim - without:.1f} ns, x{with_shim / without:.2f})"
            )
        if not args.no_callgrind and shutil.which("valgrind"):
            for op in ("launch", "alloc"):
                n = 2000
                a = per_call_instructions(exe, base, op, n, tmp)
                b = per_call_instructions(exe, shim, op, n, tmp)
                res[f"{op}_instructions_without"] = round(a, 1)
                res[f"{op}_instructions_with"] = round(b, 1)
                res[f"{op}_added_instructions"] = round(b - a, 1)
                print(f"{op}: {a:.0f} instructions without, {b:.0f} with (+{b - a:.0f})")
        else:
            res["launch_added_instructions"] = None
        res["launch_goal_ns"] = 100
        res["launch_goal_met"] = isinstance(res["launch_added_ns"], float) and res["launch_added_ns"] < 100
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
