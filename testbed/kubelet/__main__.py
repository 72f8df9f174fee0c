"""``python -m testbed.kubelet``: build the real kubelet, and run one node with it.

python -m testbed.kubelet build 1.35                  # cmd/kubelet of the built control plane's release
python -m testbed.kubelet up --k8s 1.35 --data-dir D  # join the real-control-plane testbed in D
python -m testbed.kubelet up --k8s 1.35 --data-dir D --detach --gpus A100-SXM4-80GB:2
python -m testbed.kubelet down --data-dir D           # stop a detached node and clean up
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.controlplane.build import BuildError
from testbed.controlplane.build import find as find_control_plane
from testbed.controlplane.gomod import Release

from .build import build, find
from .node import NodeError, NodeLayout, RealKubeletNode, alive, teardown_recorded

EXIT_NO_BUILD = 4


def _release(spec: str) -> Release:
    """``1.35`` is the release whose control plane is built (so kubelet and apiserver match);
    ``v1.35.8`` is exact."""
    if spec.startswith("v") or spec.count(".") == 2:
        return Release.parse(spec)
    minor = int(spec.split(".")[1])
    cp = find_control_plane(minor)
    if cp is None:
        raise SystemExit(f"error: no control plane of 1.{minor} is built; `python -m testbed.controlplane "
                         f"build 1.{minor}` first (or give v1.{minor}.<patch>)")
    return cp.release


def cmd_build(args: argparse.Namespace) -> int:
    try:
        b = build(_release(args.version), parallel=args.parallel, force=args.force)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"binary": str(b.binary), **b.manifest["binaries"]["kubelet"],
                      "buildSeconds": b.manifest["buildSeconds"]}, indent=1))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    minor = int(args.k8s.split(".")[1])
    built = find(minor)
    if built is None:
        print(f"error: no kubelet is built for 1.{minor}; `python -m testbed.kubelet build 1.{minor}`",
              file=sys.stderr)
        return EXIT_NO_BUILD
    lay = NodeLayout(data_dir, args.node)
    with contextlib.suppress(OSError, ValueError):
        st = json.loads(lay.state_file.read_text())
        if not st.get("stopped") and alive(int(st.get("pid") or 0)):
            print(f"error: node {args.node} already runs from {data_dir} (pid {st['pid']}); "
                  f"`python -m testbed.kubelet down --data-dir {data_dir}` first", file=sys.stderr)
            return 1
    if args.detach:
        return _detach(args, lay)
    node = RealKubeletNode(built, data_dir, args.node, args.gpus)
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        t = node.start()
        node.mark_ready()
        print(f"node {args.node} Ready (kubelet {built.release.version}) in {t['nodeReady']:.1f}s after the "
              f"kubelet started, {t['total']:.1f}s in all; logs in {lay.logs}", flush=True)
        if "gpus" in t:
            print(f"nvidia.com/gpu registered by HAMi's device plugin in {t['gpus']:.1f}s", flush=True)
        while not stop["now"]:
            dead = [p for p in node.procs if p.popen.poll() is not None]
            if dead:
                print(f"error: {dead[0].name} exited ({dead[0].popen.returncode}); see {dead[0].log}",
                      file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
        return 0
    except NodeError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        problems = node.stop()
        print("node stopped" + (f"; not cleaned: {problems}" if problems else ""), flush=True)


def _detach(args: argparse.Namespace, lay: NodeLayout) -> int:
    lay.logs.mkdir(parents=True, exist_ok=True)
    lay.state_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "testbed.kubelet", "up", "--k8s", args.k8s, "--data-dir", str(lay.data_dir),
            "--node", args.node] + (["--gpus", args.gpus] if args.gpus else [])
    with open(lay.logs / "up.log", "ab") as fh:
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            print(f"error: the node did not come up (exit {p.returncode}):\n"
                  + (lay.logs / "up.log").read_text(errors="replace")[-4000:], file=sys.stderr)
            return 1
        with contextlib.suppress(OSError, ValueError):
            st = json.loads(lay.state_file.read_text())
            if st.get("ready") and st.get("pid") == p.pid:
                print(json.dumps({"node": args.node, "pid": p.pid, "timings": st.get("timings"),
                                  "logs": str(lay.logs)}))
                return 0
        time.sleep(0.3)
    print(f"error: not ready within {args.timeout:.0f}s; see {lay.logs}", file=sys.stderr)
    os.killpg(p.pid, signal.SIGTERM)
    return 1


def cmd_down(args: argparse.Namespace) -> int:
    lay = NodeLayout(Path(args.data_dir).resolve(), args.node)
    try:
        st = json.loads(lay.state_file.read_text())
    except (OSError, ValueError):
        print(f"no node {args.node} in {lay.data_dir}")
        return 0
    if st.get("stopped"):
        print(f"node {args.node} already stopped")
        return 0
    pid = int(st.get("pid") or 0)
    if pid and alive(pid):  # the runner cleans up itself on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.2)
        with contextlib.suppress(OSError, ValueError):
            st = json.loads(lay.state_file.read_text())
    if not st.get("stopped"):  # the runner died (or hung) before cleaning: do it from its record
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"node {args.node}'s runner (pid {pid}) did not clean up; cleaning from {lay.state_file}",
              file=sys.stderr)
        problems = teardown_recorded(lay, st)
        st.update(stopped=True, problems=problems)
        lay.state_file.write_text(json.dumps(st, indent=1))
    print(f"node {args.node} stopped" + (f"; not cleaned: {st['problems']}" if st.get("problems") else ""))
    return 1 if st.get("problems") else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.kubelet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build cmd/kubelet into ~/.cache/hami-conformance/kubelet/")
    b.add_argument("version", help="1.35 (the built control plane's release) or v1.35.8")
    b.add_argument("--parallel", "-p", type=int, default=1, help="go build -p (default 1)")
    b.add_argument("--force", action="store_true")
    b.set_defaults(func=cmd_build)
    u = sub.add_parser("up", help="run one real-kubelet node against the testbed in --data-dir")
    u.add_argument("--k8s", default="1.35")
    u.add_argument("--data-dir", required=True,
                   help="the data dir of `python -m testbed up --control-plane real`")
    u.add_argument("--node", default="kubelet-node-1")
    u.add_argument("--gpus", default="", metavar="MODEL:COUNT",
                   help="run HAMi's NVIDIA device plugin on that many emulated GPUs (e.g. A100-SXM4-80GB:2)")
    u.add_argument("--detach", action="store_true")
    u.add_argument("--timeout", type=float, default=300, help="--detach: seconds to wait for Ready")
    u.set_defaults(func=cmd_up)
    d = sub.add_parser("down", help="stop a detached node")
    d.add_argument("--data-dir", required=True)
    d.add_argument("--node", default="kubelet-node-1")
    d.set_defaults(func=cmd_down)
    args = p.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
