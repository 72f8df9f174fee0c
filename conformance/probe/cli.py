"""Command line of the probe workload."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from conformance.probe.acl import parse_npu_op
from conformance.probe.ops import parse_op
from conformance.probe.result import MARKER, result_line
from conformance.probe.run import run_probe

DESCRIPTION = f"""Print ONE line of compact JSON whose first member is "marker": "{MARKER}" (so a
test finds it in a log whatever else the container wrote): the relevant environment,
/etc/ld.so.preload, the devices NVML lists, the CUDA view (devices, cuMemGetInfo_v2 before/after an
allocation, a copy round trip), and the requested actions: allocate N MiB (a refusal is reported,
not raised), one timed kernel with NVML utilisation sampled, and optionally full load for T seconds
with the achieved utilisation."""


def main(argv: Sequence[str] | None = None, prog: str = "python -m conformance.probe") -> int:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    p.add_argument("--alloc-mib", type=int, default=64, help="MiB to allocate on the device (0: none)")
    p.add_argument("--kernel-seconds", type=float, default=1.0, help="one busy kernel of T seconds (0: none)")
    p.add_argument("--load-seconds", type=float, default=0.0, help="back-to-back kernels for T seconds")
    p.add_argument("--slice-ms", type=float, default=20.0, help="length of one kernel of the load loop")
    p.add_argument("--device", type=int, default=0, help="CUDA ordinal to use")
    p.add_argument(
        "--hold-seconds", type=float, default=0.0, help="stay alive this long after printing (metrics tests)"
    )
    p.add_argument("--compact", action="store_true", help="accepted for compatibility (always compact)")
    p.add_argument(
        "--op",
        action="append",
        default=[],
        metavar="OP",
        help="after the allocation, in order: PATH:MIB, PATH:MIBxN, proc:PATH:MIB, meminfo, free "
        "(paths: mem managed pitch async pool vmm; see conformance/probe/ops.py)",
    )
    p.add_argument(
        "--npu-op",
        action="append",
        default=[],
        metavar="OP",
        help="Ascend containers, through AscendCL: alloc:MIB, alloc:MIBxN, proc:MIB, meminfo, free "
        "(see conformance/probe/acl.py)",
    )
    p.add_argument("--pretty", action="store_true", help="indented JSON for a human (no longer one line)")
    args = p.parse_args(argv)
    try:
        ops = [parse_op(o) for o in args.op]
        npu_ops = [parse_npu_op(o) for o in args.npu_op]
    except ValueError as e:
        p.error(str(e))
    doc = run_probe(
        args.alloc_mib,
        args.kernel_seconds,
        args.device,
        load_seconds=args.load_seconds,
        slice_ms=args.slice_ms,
        ops=ops,
        npu_ops=npu_ops,
    )
    sys.stderr.flush()  # whatever went to stderr lands before the result, not inside it
    text = json.dumps(doc, indent=2) if args.pretty else result_line(doc)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if args.hold_seconds > 0:
        time.sleep(args.hold_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
