"""``python -m testbed.lab``: the emulated lab's hosts and the helpers its Ansible roles call.

    python -m testbed.lab up -i inventories/emulated/lab.yml [--state DIR]   # namespaces, bridge, sshd
    python -m testbed.lab status -i ... | down -i ...
    python -m testbed.lab service start --state F --log L [--ready FILE] -- ARGV...   (roles)
    python -m testbed.lab service stop --state F
    python -m testbed.lab facts --nodes NODES.yaml       # device inventory and driver versions, JSON
    python -m testbed.lab wait-nodes --kubeconfig K --names a,b [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import service
from .hosts import Lab, LabError, dump, load_spec

REPO = Path(__file__).resolve().parents[2]


def default_state(inventory: str) -> Path:
    return REPO / ".cache" / "lab" / load_spec(inventory).name


def facts(nodes_file: str) -> dict:
    """What a host's emulated hardware looks like, as a real lab's vendor_runtime role would report it."""
    from testbed.hardware.state import DEFAULT_CUDA_DRIVER_VERSION, DEFAULT_DRIVER_VERSION
    from testbed.node.inventory import load_inventory

    out: dict = {"runtime": "testbed.node (emulated kubelet)", "devices": []}
    for node in load_inventory(nodes_file):
        for vendor, spec in node.hardware.items():
            entry = {"node": node.name, "vendor": vendor, **{k: v for k, v in spec.items()
                                                             if isinstance(v, str | int)}}
            if vendor == "nvidia":
                entry.setdefault("driver_version", DEFAULT_DRIVER_VERSION)
                entry.setdefault("cuda_driver_version", DEFAULT_CUDA_DRIVER_VERSION)
            out["devices"].append(entry)
    return out


def wait_nodes(kubeconfig: str, names: list[str], timeout: float) -> dict:
    from kubeclient.client import Kube

    kube = Kube.from_config(kubeconfig, user_agent="testbed-lab")
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    try:
        while True:
            ready = {n["metadata"]["name"] for n in kube.get("/api/v1/nodes")["items"]
                     if any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in (n.get("status") or {}).get("conditions") or [])}
            if set(names) <= ready:
                return {"ready": sorted(ready)}
            if time.monotonic() > deadline:
                raise LabError(f"nodes not Ready within {timeout:.0f}s: {sorted(set(names) - ready)}")
            time.sleep(0.3)
    finally:
        kube.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status"):
        sp = sub.add_parser(name)
        sp.add_argument("-i", "--inventory", required=True)
        sp.add_argument("--state", help="keys, sshd configs and host dirs (default .cache/lab/<lab_name>)")
    sv = sub.add_parser("service")
    sv.add_argument("action", choices=["start", "stop"])
    sv.add_argument("--state", required=True)
    sv.add_argument("--log")
    sv.add_argument("--ready")
    fa = sub.add_parser("facts")
    fa.add_argument("--nodes", required=True)
    wn = sub.add_parser("wait-nodes")
    wn.add_argument("--kubeconfig", required=True)
    wn.add_argument("--names", required=True)
    wn.add_argument("--timeout", type=float, default=120)
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.argv = argv[cut + 1:]
    try:
        if args.cmd in ("up", "down", "status"):
            spec = load_spec(args.inventory)
            lab = Lab(spec, Path(args.state) if args.state else default_state(args.inventory))
            print(dump(getattr(lab, args.cmd)()))
        elif args.cmd == "service":
            if args.action == "start":
                if not args.argv or not args.log:
                    p.error("service start needs --log and -- ARGV")
                print(service.start(Path(args.state), Path(args.log), args.argv,
                                    ready_file=Path(args.ready) if args.ready else None))
            else:
                print(service.stop(Path(args.state)))
        elif args.cmd == "facts":
            print(json.dumps(facts(args.nodes), sort_keys=True))
        else:
            print(json.dumps(wait_nodes(args.kubeconfig, args.names.split(","), args.timeout)))
    except (LabError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
