"""``python -m testbed``: start, inspect and stop an emulated cluster.

python -m testbed up --k8s 1.33            # foreground; Ctrl-C stops it
python -m testbed up --k8s 1.33 --detach   # background; prints the kubeconfig path
python -m testbed status
python -m testbed down
python -m testbed up --fresh               # the data dir keeps the cluster across down/up; this empties it
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import pki
from .components import ComponentSet
from .procutil import pid_alive
from .supervisor import Containment, become_subreaper, reap_orphans

DEFAULT_DATA_DIR = Path(".testbed")
DEFAULT_PORT = 6443


class CLIError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _prepare_data_dir(path: Path) -> Path:
    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise CLIError(f"data directory {path} exists and is not a directory")
    try:
        # 0700: it holds the admin kubeconfig, the CA key and every node's root (issue 15)
        pki.private_dir(path)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise CLIError(f"data directory {path} is not usable: {e.strerror or e}") from e
    return path


def _check_port(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise CLIError(
                    f"port {port} on {host} is already in use (is a testbed already running? "
                    f"try `python -m testbed status`, or pass --port)"
                ) from e
            raise CLIError(f"cannot listen on {host}:{port}: {e.strerror}") from e


def _state_path(data_dir: Path) -> Path:
    return data_dir / "state.json"


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    tmp = _state_path(data_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_path(data_dir))


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_state_path(data_dir).read_text())
    except (OSError, ValueError):
        return None


def _live_state(data_dir: Path) -> dict[str, Any] | None:
    """The state file of a testbed whose process is still alive, if any."""
    st = _read_state(data_dir)
    return st if st and pid_alive(int(st["pid"])) else None


async def _serve(args: argparse.Namespace, data_dir: Path) -> int:
    from kubeclient.client import Kube

    from .components import ComponentError

    started = time.monotonic()
    # every process of the testbed (components, pods) stays in our cgroup / under us as subreaper,
    # so `down` can end all of them even when a node agent died and left its pods behind
    containment = Containment(data_dir)
    containment.enter()
    become_subreaper()
    catalog = Path(args.image_catalog).resolve() if args.image_catalog else None
    components = ComponentSet(data_dir / "kubeconfig", data_dir, args.k8s_minor, nodes=args.node_inventory,
                              scheduler=not args.no_scheduler, controllers=not args.no_controllers,
                              image_catalog=catalog, containment=containment)
    # the apiserver is a supervised process too: killed, it comes back on the data dir's state and port
    api_argv = [sys.executable, "-m", "testbed.apiserver_process", "--data-dir", str(data_dir),
                "--k8s-minor", str(args.k8s_minor), "--host", args.host, "--port", str(args.port)]
    if getattr(args, "fresh", False):
        api_argv.append("--fresh")
    try:
        # from this (main) thread: the apiserver's parent-death signal follows the thread that spawned it
        ready = components.start_apiserver(api_argv)
    except ComponentError as e:
        components.stop()
        raise CLIError(str(e)) from e
    kubeconfig = Path(str(ready["kubeconfig"]))
    components.start()
    kube = Kube.from_config(str(kubeconfig), user_agent="testbed-up")
    try:
        await _wait_nodes_ready(kube, components, len(args.node_names))
    except CLIError:
        kube.close()
        components.stop()
        raise
    kube.close()
    state = {
        "pid": os.getpid(),
        "url": ready["url"],
        "minor": f"1.{ready['minor']}",
        "gitVersion": ready["gitVersion"],
        "kubeconfig": str(kubeconfig),
        "started": time.time(),
    }
    state["components"] = components.describe()
    _write_state(data_dir, state)
    elapsed = time.monotonic() - started
    print(f"testbed {ready['gitVersion']} ready at {ready['url']} in {elapsed:.2f}s", flush=True)
    running = ", ".join(c.name for c in components.components) or "apiserver only"
    print(f"components: {running}; logs in {data_dir / 'logs'}", flush=True)
    print(f"kubeconfig: {kubeconfig}", flush=True)
    print(f"  export KUBECONFIG={kubeconfig}", flush=True)
    stop = asyncio.Event()
    wake = asyncio.Event()  # a stop or a child's exit: the supervisor looks at once
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        stop.set()
        wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping)
    # Orphans are looked for when a child of ours exited (SIGCHLD), not on every tick: the search reads
    # /proc/*/stat of every process on the machine, which at 10 Hz was the idle testbed's largest cost
    # (6 % of a core with a few hundred processes, more with each testbed running beside it). A sweep
    # every ORPHAN_SWEEP_S catches anything a signal did not announce. The components are looked at
    # when one exits (SIGCHLD) or a restart back-off ends, at the latest every second (a 0.1 s tick was
    # a quarter of a per cent of a core for nothing).
    child_exited = asyncio.Event()

    def child() -> None:
        child_exited.set()
        wake.set()

    loop.add_signal_handler(signal.SIGCHLD, child)
    next_sweep = 0.0
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), components.next_due())
            wake.clear()
            if stop.is_set():
                break
            events = components.supervise()
            for line in events:
                print(f"supervisor: {line}", file=sys.stderr, flush=True)
            if events:
                state["components"] = components.describe()
                _write_state(data_dir, state)
            if child_exited.is_set() or time.monotonic() >= next_sweep:
                child_exited.clear()
                next_sweep = time.monotonic() + ORPHAN_SWEEP_S
                reap_orphans({c.proc.pid for c in components.components if c.proc is not None})
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)
        components.stop()
        with contextlib.suppress(OSError):
            st = _read_state(data_dir)
            if st and st.get("pid") == os.getpid():
                _state_path(data_dir).unlink()
        print("testbed stopped", flush=True)
    return 0


ORPHAN_SWEEP_S = 10.0


async def _wait_nodes_ready(kube: Any, components: ComponentSet, expected: int,
                            timeout: float = 180) -> None:
    """Wait until the inventory's nodes report Ready, showing progress; fail if a component dies."""
    if not expected:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    shown = -1
    while True:
        nodes = (await asyncio.to_thread(kube.get, "/api/v1/nodes"))["items"]
        ready = sum(
            1 for n in nodes
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (n.get("status") or {}).get("conditions") or []))
        if ready != shown:
            print(f"nodes ready: {ready}/{expected}", flush=True)
            shown = ready
        if ready >= expected:
            return
        dead = components.failed()
        if dead:
            raise CLIError(components.describe_failure(dead[0]))
        if loop.time() > deadline:
            raise CLIError(f"only {ready} of {expected} nodes became Ready within {timeout:.0f}s; "
                           f"see {components.data_dir / 'logs'}")
        await asyncio.sleep(0.2)


def _no_profile(k8s: str, e: Exception) -> str:
    """The error for a minor without an emulated profile; a minor the real control plane builds says how."""
    from .controlplane.hook import RealControlPlaneError, parse_minor
    from .controlplane.releases import MINORS as REAL_MINORS

    try:
        minor = parse_minor(k8s)
    except RealControlPlaneError:
        return str(e)
    if minor not in REAL_MINORS:
        return str(e)
    return (f"Kubernetes 1.{minor} has no emulated control plane (its profiles cover 1.18 to 1.35); it runs "
            f"only on the real one: `python -m testbed.controlplane build 1.{minor}`, then "
            "`--control-plane real`")


def cmd_up(args: argparse.Namespace) -> int:
    from .apiserver.versions import UnknownMinor, profile
    from .controlplane.hook import RealControlPlaneError, decide

    try:  # which control plane (real needs the minor's build): decided before anything starts
        args.control_plane, args.real_build = decide(args.k8s, args.control_plane)
    except RealControlPlaneError as e:
        raise CLIError(str(e), code=e.code) from e
    try:
        args.k8s_minor = profile(args.k8s).minor
    except UnknownMinor as e:
        if args.real_build is None:
            raise CLIError(_no_profile(args.k8s, e), code=2) from e
        args.k8s_minor = args.real_build.release.minor  # a real minor newer than the emulated profiles
    data_dir = _prepare_data_dir(Path(args.data_dir))
    args.node_inventory = None
    args.node_names = []
    if args.nodes:
        from .node.inventory import InventoryError, load_inventory

        try:
            args.node_names = [n.name for n in load_inventory(args.nodes)]
        except InventoryError as e:
            raise CLIError(str(e), code=2) from e
        except OSError as e:
            raise CLIError(f"cannot read node inventory {args.nodes}: {e.strerror or e}", code=2) from e
        args.node_inventory = Path(args.nodes).resolve()
    st = _live_state(data_dir)
    if st:
        raise CLIError(
            f"a testbed is already running from {data_dir} (pid {st['pid']}, {st['url']}); "
            "run `python -m testbed down` first"
        )
    _check_port(args.host, args.port)
    if not args.detach:
        if args.real_build is not None:
            from .controlplane.cluster import serve

            try:
                return serve(args, data_dir, args.real_build)
            except RealControlPlaneError as e:
                raise CLIError(str(e), code=e.code) from e
        return asyncio.run(_serve(args, data_dir))
    log_path = data_dir / "testbed.log"
    cmd = [
        sys.executable,
        "-m",
        "testbed",
        "up",
        "--k8s",
        args.k8s,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--data-dir",
        str(data_dir),
    ]
    if args.nodes:
        cmd += ["--nodes", str(args.node_inventory)]
    if args.image_catalog:
        cmd += ["--image-catalog", str(Path(args.image_catalog).resolve())]
    cmd += ["--no-scheduler"] if args.no_scheduler else []
    cmd += ["--no-controllers"] if args.no_controllers else []
    cmd += ["--fresh"] if args.fresh else []
    cmd += ["--control-plane", args.control_plane]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        st = _read_state(data_dir)
        if st and st.get("pid") == proc.pid:
            print(f"testbed {st['gitVersion']} running at {st['url']} (pid {proc.pid})")
            print(f"kubeconfig: {st['kubeconfig']}")
            print(f"logs: {log_path}")
            return 0
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise CLIError("the testbed exited during start-up:\n  " + "\n  ".join(tail))
        time.sleep(0.05)
    proc.terminate()
    raise CLIError(f"the testbed did not become ready within 240s; see {log_path}")


def cmd_status(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser().resolve()
    st = _live_state(data_dir)
    if not st:
        print(f"no testbed running from {data_dir}")
        return 3
    print(f"testbed {st['gitVersion']} running at {st['url']} (pid {st['pid']})")
    print(f"kubeconfig: {st['kubeconfig']}")
    for name, c in (st.get("components") or {}).items():
        last = f", last exit status {c['lastExit']}" if c.get("lastExit") is not None else ""
        print(f"component {name}: pid {c.get('pid')}, restarts {c.get('restarts', 0)}{last}")
    return 0


def _remove_namespaces(data_dir: Path) -> None:
    """The network namespaces the node agents left (a killed or restarted agent does not delete its
    pods' and its cluster network's): nothing of the testbed outlives `down`."""
    from .node import netns
    from .node.podcheckpoint import agent_namespaces

    for name in agent_namespaces(data_dir):
        netns.delete_netns(name)
        print(f"removed network namespace {name} the node agents left", file=sys.stderr)


def cmd_down(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser().resolve()
    st = _live_state(data_dir)
    containment = Containment(data_dir)
    if not st:
        left = containment.kill_all(grace=2.0)  # a killed `up` may have left components behind
        containment.remove()
        _remove_namespaces(data_dir)
        print(f"no testbed running from {data_dir}")
        return 0 if not left else 1
    pid = int(st["pid"])
    os.kill(pid, signal.SIGTERM)
    # the `up` process stops its components (their pods get their grace) before it exits
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    # anything that outlived it: its cgroup, processes carrying its marker
    left = containment.kill_all(grace=2.0)
    containment.remove()
    _remove_namespaces(data_dir)
    with contextlib.suppress(OSError):
        _state_path(data_dir).unlink()
    if left:
        print(f"error: processes of the testbed survived SIGKILL: {left}", file=sys.stderr)
        return 1
    print(f"testbed (pid {pid}) stopped")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .apiserver.versions import UnknownMinor, profile
    from .demo import run_demo

    try:
        profile(args.k8s)
    except UnknownMinor as e:
        raise CLIError(str(e), code=2) from e
    return run_demo(args.k8s, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m testbed", description="Emulated Kubernetes control plane")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the testbed")
    up.add_argument("--k8s", default="1.33", help="Kubernetes minor to emulate, 1.18 to 1.35 (default 1.33)")
    up.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTPS port (0 picks a free one)")
    up.add_argument("--detach", action="store_true", help="run in the background")
    up.add_argument("--nodes", metavar="INVENTORY",
                    help="node inventory YAML: start a node agent for each node (e.g. "
                         "inventories/emulated/two-nodes-a100.yaml)")
    up.add_argument("--image-catalog", metavar="FILE",
                    help="extra image catalog for the node agents (maps image names to local commands; "
                         "see testbed/node/images.py)")
    up.add_argument("--no-scheduler", action="store_true", help="do not start the default scheduler")
    up.add_argument("--no-controllers", action="store_true", help="do not start the controller manager")
    up.add_argument("--fresh", action="store_true",
                    help="discard the cluster kept in the data dir (objects, CA, keys, tokens) "
                         "and start empty")
    from .controlplane.hook import MODES, default_mode

    up.add_argument("--control-plane", choices=MODES, default=default_mode(),
                    help="real: the minor's kube-apiserver, kube-controller-manager and kube-scheduler "
                         "built by `python -m testbed.controlplane build` (with etcd); emulated: the "
                         "testbed's own; "
                         "auto: real when built (default $TESTBED_CONTROL_PLANE, else emulated)")
    up.set_defaults(func=cmd_up)
    demo = sub.add_parser("demo", help="start a testbed, drive it with the official client, print a report")
    demo.add_argument("--k8s", default="1.33", help="Kubernetes minor to emulate (default 1.33)")
    demo.add_argument("--keep", action="store_true", help="keep the testbed running after the demo")
    demo.set_defaults(func=cmd_demo)
    for name, fn, text in (
        ("status", cmd_status, "show the running testbed"),
        ("down", cmd_down, "stop the running testbed"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.set_defaults(func=fn)
    for sp in (up, *(sub.choices[n] for n in ("status", "down"))):
        sp.add_argument(
            "--data-dir",
            default=str(DEFAULT_DATA_DIR),
            help="where the kubeconfig, certificates and state live (default ./.testbed)",
        )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
