"""Enforcement shim on the emulated driver: added cost per call, and the compute limiter's band.

1. Cost. A small C program (built here) runs a loop of cuLaunchKernel, of cuMemAlloc_v2+cuMemFree_v2
   pairs, or of cuMemGetInfo_v2, without the shim and with LD_PRELOAD of it: with a memory limit and no
   SM limit (every container's fast path), and with CUDA_DEVICE_SM_LIMIT=30 too (the limiter idle: the
   kernels take no time). Instructions per call come from ``valgrind --tool=callgrind`` as the
   difference between two loop lengths (start-up cancels), collected inside main() only, so a
   limiter thread's own ticks do not count as per-call cost. Wall-clock ns per call are medians.
2. Band. For each kernel length (200 us .. 2 s), one process and three processes of one container
   launch kernels at CUDA_DEVICE_SM_LIMIT=30 (policy force) and wait for each; the container's share
   of the device comes from the emulated device's own record of kernel executions, over whole launch
   cycles from the first kernel (tests/enforcer/band.py). Goal: within +-10 points.

With ``--upstream DIR`` (a copy of upstream HAMi-core's source; never committed), it is built here
with its own CMake against the emulated libraries and headers from ``--upstream-include`` (a directory
with cuda.h and nvml.h), and measured the same way; ratios are ours/upstream.

Usage: python bench/enforcer.py [--iterations N] [--runs R] [--no-callgrind] [--no-band] [--quick]
                                [--upstream DIR --upstream-include DIR]
The last line printed is one JSON object.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hami_stack.enforcer import ensure_built
from testbed.hardware import create_state, library_env
from testbed.hardware.build import ensure_built as hardware_built
from tests.enforcer.band import run_band

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
         mfree = (fn_t)dlsym(h, "cuMemFree_v2"), sync = (fn_t)dlsym(h, "cuCtxSynchronize"),
         info = (fn_t)dlsym(h, "cuMemGetInfo_v2");
    int dev; void *ctx, *mod, *f;
    if (init(0) || get(&dev, 0) || retain(&ctx, dev) || setc(ctx)) return 2;
    if (load(&mod, "HAMIEMU-KERNEL name=nop duration_us=0\n") || getf(&f, mod, "nop")) return 3;
    double t0 = now();
    if (argv[1][0] == 'l') {
        for (long i = 0; i < n; i++)
            if (launch(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL)) return 4;
        sync();
    } else if (argv[1][0] == 'a') {
        unsigned long long p;
        for (long i = 0; i < n; i++)
            if (alloc(&p, (size_t)4096) || mfree(p)) return 5;
    } else {
        size_t fr, tot;
        for (long i = 0; i < n; i++)
            if (info(&fr, &tot)) return 6;
    }
    printf("%.2f\n", (now() - t0) / n);
    return 0;
}
"""

OPS = ("launch", "alloc", "info")  # per launch, per alloc+free pair, per cuMemGetInfo_v2
KERNELS_US = (200, 1_000, 10_000, 100_000, 300_000, 1_000_000, 2_000_000)
LIMIT = 30
BAND = 10.0


def build(tmp: Path) -> Path:
    src = tmp / "bench.c"
    src.write_text(PROGRAM)
    exe = tmp / "bench"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src), "-ldl"], check=True)
    return exe


def build_upstream(src: Path, include: Path, tmp: Path) -> Path:
    """Upstream's libvgpu.so from its own CMake files (its test/ tree needs a CUDA toolkit: left out),
    linked against the emulated libcuda.so.1 and libnvidia-ml.so.1."""
    work = tmp / "upstream"
    shutil.copytree(src, work, ignore=shutil.ignore_patterns(".git", "build"))
    top = work / "CMakeLists.txt"
    top.write_text(re.sub(r"^add_subdirectory\(test\)", "# test/ needs nvcc", top.read_text(), flags=re.M))
    out = work / "build"
    out.mkdir()
    env = {
        **os.environ,
        "CUDA_HOME": str(include.parent if include.name == "include" else include),
        "LIBRARY_PATH": str(hardware_built()),
    }
    # the options upstream's build.sh passes (its supported build)
    options = [
        "-DDLSYM_HOOK_ENABLE=1",
        "-DMULTIPROCESS_LIMIT_ENABLE=1",
        "-DHOOK_MEMINFO_ENABLE=1",
        "-DHOOK_NVML_ENABLE=1",
        "-DCMAKE_BUILD_TYPE=Debug",
    ]
    for cmd in (["cmake", "..", *options], ["make", "-j2", "vgpu"]):
        r = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, check=False)
        if r.returncode:
            raise RuntimeError(
                f"upstream build ({' '.join(cmd)}) failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
            )
    return out / "libvgpu.so"


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
        [
            "valgrind",
            "--tool=callgrind",
            "--toggle-collect=main",
            f"--callgrind-out-file={out}",
            str(exe),
            op,
            str(n),
        ],
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


def shim_env(base: dict[str, str], lib: Path, cache: Path, sm: bool) -> dict[str, str]:
    env = {
        **base,
        "LD_PRELOAD": str(lib),
        "CUDA_DEVICE_MEMORY_LIMIT": "64g",  # never reached: every call takes the charged path
        "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(cache),
        "LIBCUDA_LOG_LEVEL": "0",
        "CUDA_REDIRECT": str(lib),  # upstream resolves its own wrappers through this path (ours ignores it)
    }
    if sm:
        env |= {"CUDA_DEVICE_SM_LIMIT": str(LIMIT), "GPU_CORE_UTILIZATION_POLICY": "force"}
    return env


def cost(
    exe: Path, base: dict[str, str], shims: dict[str, Path], tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    configs = {"none": base}
    for name, lib in shims.items():
        configs[name] = shim_env(base, lib, tmp / f"{name}.cache", sm=False)
        configs[f"{name}_sm"] = shim_env(base, lib, tmp / f"{name}_sm.cache", sm=True)
    use_cg = not args.no_callgrind and shutil.which("valgrind") is not None
    for op in OPS:
        n = args.iterations if op != "alloc" else args.iterations // 4
        ns = {k: ns_per_call(exe, env, op, n, args.runs) for k, env in configs.items()}
        ins = (
            {k: per_call_instructions(exe, env, op, 2000, tmp) for k, env in configs.items()}
            if use_cg
            else {}
        )
        for k in configs:
            if k == "none":
                continue
            res[f"{op}_{k}_added_ns"] = round(ns[k] - ns["none"], 1)
            if use_cg:
                res[f"{op}_{k}_added_instructions"] = round(ins[k] - ins["none"], 1)
        line = f"{op:7s} ns/call: " + ", ".join(f"{k} {v:.0f}" for k, v in ns.items())
        if use_cg:
            line += " | added instructions/call: " + ", ".join(
                f"{k} +{ins[k] - ins['none']:.0f}" for k in configs if k != "none"
            )
        print(line, flush=True)
        if "upstream" in shims and use_cg:
            for suffix in ("", "_sm"):
                up = res[f"{op}_upstream{suffix}_added_instructions"]
                ours = res[f"{op}_ours{suffix}_added_instructions"]
                res[f"{op}{suffix}_ratio_ours_upstream"] = round(ours / up, 3) if up > 0 else None
    return res


def band(shims: dict[str, Path], probe: Path, tmp: Path, quick: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    kernels = KERNELS_US[:3] if quick else KERNELS_US
    print(
        f"{'shim':9s} {'kernel':>8s} {'procs':>5s} {'util %':>7s} {'1st s %':>8s} {'span s':>7s} in band",
        flush=True,
    )
    for name, lib in shims.items():
        for us in kernels:
            for procs in (1, 3):
                cycle_s = us / 1e6 * 100 / LIMIT
                secs = max(3.0, 3 * cycle_s + us / 1e6)  # at least three launch cycles
                node = create_state(
                    tmp / f"band-{name}-{us}-{procs}", {"model": "A100-SXM4-80GB", "count": 1}
                )
                try:
                    b = run_band(
                        node, lib, probe, tmp / f"band-{name}-{us}-{procs}.cache", us, secs, LIMIT, procs
                    )
                    util, first, span = b.util, b.first_second, b.span_s
                except AssertionError as e:  # an implementation that crashes or hangs is out of band
                    util, first, span = None, None, None
                    print(f"{name}: {us} us x{procs}: {str(e)[:200]}", flush=True)
                finally:
                    node.close()
                ok = (
                    util is not None
                    and abs(util - LIMIT) <= BAND
                    and (first is None or abs(first - LIMIT) <= BAND)
                )
                rows.append(
                    {
                        "shim": name,
                        "kernel_us": us,
                        "procs": procs,
                        "util": util,
                        "first_second": first,
                        "in_band": ok,
                    }
                )
                print(
                    f"{name:9s} {us:>8d} {procs:>5d} {util if util is not None else '-':>7} "
                    f"{first if first is not None else '-':>8} {span if span is not None else '-':>7} "
                    f"{'yes' if ok else 'NO'}",
                    flush=True,
                )
    return {"band": rows, "band_all_in": all(r["in_band"] for r in rows if r["shim"] == "ours")}


def build_probe(tmp: Path) -> Path:
    root = Path(__file__).resolve().parents[1]
    out = tmp / "vgpu_probe"
    subprocess.run(
        [
            "gcc",
            "-O1",
            "-std=gnu11",
            f"-I{root / 'hami_stack/enforcer/include'}",
            "-o",
            str(out),
            str(root / "tests/enforcer/progs/vgpu_probe.c"),
            "-ldl",
        ],
        check=True,
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-band", action="store_true")
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--quick", action="store_true", help="band for the three shortest kernels only")
    ap.add_argument("--upstream", type=Path, help="a copy of upstream HAMi-core's source tree")
    ap.add_argument("--upstream-include", type=Path, help="directory with cuda.h and nvml.h for --upstream")
    args = ap.parse_args()
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        shims = {"ours": ensure_built()}
        if args.upstream:
            if not args.upstream_include:
                ap.error("--upstream needs --upstream-include (a directory with cuda.h and nvml.h)")
            shims["upstream"] = build_upstream(args.upstream, args.upstream_include, tmp)
            res["upstream_commit"] = (
                subprocess.run(
                    ["git", "-C", str(args.upstream), "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
                or None
            )
        if not args.no_cost:
            node = create_state(tmp / "gpus", {"model": "A100-SXM4-80GB", "count": 1})
            res |= cost(build(tmp), library_env(node.path, "all"), shims, tmp, args)
        if not args.no_band:
            res |= band(shims, build_probe(tmp), tmp, args.quick)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
