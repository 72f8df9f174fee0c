"""CLI: ``python -m testbed.hardware create|show|fault|env|build``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from testbed.hardware.build import ensure_built, library_env
from testbed.hardware.state import DeviceState, create_state


def _spec(args: argparse.Namespace) -> object:
    if args.spec:
        return json.loads(args.spec)
    spec: dict[str, object] = {"model": args.model, "count": args.count}
    if args.memory_mib is not None:
        spec["memory_mib"] = args.memory_mib
    if args.numa:
        spec["numa"] = [int(x) for x in args.numa.split(",")]
    if args.driver_version:
        spec["driver_version"] = args.driver_version
    if args.cuda_driver_version:
        spec["cuda_driver_version"] = args.cuda_driver_version
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.hardware", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("create", help="write a node's GPU state directory")
    c.add_argument("state_dir")
    c.add_argument("--model", default="A100-SXM4-80GB")
    c.add_argument("--count", type=int, default=1)
    c.add_argument("--memory-mib", type=int)
    c.add_argument("--numa", help="comma-separated NUMA node per GPU, e.g. 0,0,1,1")
    c.add_argument("--driver-version")
    c.add_argument("--cuda-driver-version", type=int)
    c.add_argument("--node-name", default="node")
    c.add_argument("--spec", help="JSON spec instead of the flags above")

    s = sub.add_parser("show", help="print inventory and live usage as JSON")
    s.add_argument("state_dir")

    f = sub.add_parser("fault", help="inject a fault into one GPU")
    f.add_argument("state_dir")
    f.add_argument("--gpu", type=int, required=True)
    kinds = f.add_subparsers(dest="kind", required=True)
    kinds.add_parser("unhealthy")
    kinds.add_parser("lost")
    kinds.add_parser("healthy", help="clear every fault")
    x = kinds.add_parser("xid")
    x.add_argument("xid", type=int)
    x.add_argument("--lose", choices=["yes", "no"], help="default: only Xid 79 loses the GPU")
    n = kinds.add_parser("fail-next")
    n.add_argument("count", type=int)
    n.add_argument("--nvml-code", type=int)
    n.add_argument("--cuda-code", type=int)
    m = kinds.add_parser("memory-query")
    m.add_argument("mode", choices=["supported", "unsupported"])

    e = sub.add_parser("env", help="print the environment (KEY=VALUE) a process needs")
    e.add_argument("state_dir")
    e.add_argument("--visible", default="all")

    sub.add_parser("build", help="build the libraries and print their directory")

    args = p.parse_args(argv)
    if args.cmd == "create":
        with create_state(args.state_dir, _spec(args), node_name=args.node_name) as st:  # type: ignore[arg-type]
            print(json.dumps(st.describe(), indent=2))
    elif args.cmd == "show":
        with DeviceState(args.state_dir) as st:
            print(json.dumps(st.describe(), indent=2))
    elif args.cmd == "fault":
        with DeviceState(args.state_dir) as st:
            if args.kind in ("unhealthy", "lost"):
                st.set_health(args.gpu, args.kind)
            elif args.kind == "healthy":
                st.clear_faults(args.gpu)
            elif args.kind == "xid":
                st.raise_xid(args.gpu, args.xid, lose_gpu=None if args.lose is None else args.lose == "yes")
            elif args.kind == "fail-next":
                st.fail_next(args.gpu, args.count, nvml_code=args.nvml_code, cuda_code=args.cuda_code)
            else:
                st.set_memory_query_supported(args.gpu, args.mode == "supported")
            print(json.dumps(st.describe()["gpus"][args.gpu], indent=2))
    elif args.cmd == "env":
        env = library_env(args.state_dir, args.visible, base={})
        for k, v in sorted(env.items()):
            print(f"{k}={v}")
    else:
        print(ensure_built())
    return 0


if __name__ == "__main__":
    sys.exit(main())
