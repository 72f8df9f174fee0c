"""The emulated apiserver as a process of its own, so the ``testbed up`` supervisor can restart it.

``python -m testbed.apiserver_process --data-dir D --k8s-minor 33 --host H --port P [--fresh]`` starts
the apiserver on the data directory's persisted state (objects, CA, tokens, port: ``apiserver/persist.py``),
writes ``D/kubeconfig`` and then ``D/apiserver.json`` (``pid``, ``url``, ``minor``, ``gitVersion``), and
serves until SIGTERM or SIGINT. With ``--wait-fd N`` it is a warm standby: it imports everything, then
waits for one byte on fd N before starting (the supervisor wakes it when the running one died, so a
restart skips Python's start-up and imports). A restarted one comes back on the same port with the same CA and
tokens, so clients reconnect with the kubeconfig they already hold and their informers resume.
A data directory it cannot use exits with status 2 and one line naming the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

READY_FILE = "apiserver.json"
EXIT_DATA_DIR = 2
EXIT_PORT = 3


async def _serve(args: argparse.Namespace) -> int:
    from .apiserver.persist import DataDirError
    from .apiserver.server import APIServer, ServerConfig

    data_dir = Path(args.data_dir)
    try:
        server = APIServer(ServerConfig(minor=args.k8s_minor, host=args.host, port=args.port,
                                        data_dir=data_dir, fresh=args.fresh))
    except DataDirError as e:
        print(f"cannot use the data directory {data_dir}: {e}", file=sys.stderr, flush=True)
        return EXIT_DATA_DIR
    try:
        await server.start()
    except OSError as e:
        print(f"cannot start the apiserver on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr,
              flush=True)
        return EXIT_PORT
    kubeconfig = server.write_kubeconfig(data_dir / "kubeconfig")
    ready = {"pid": os.getpid(), "url": server.url, "minor": server.profile.minor,
             "gitVersion": server.profile.git_version, "kubeconfig": str(kubeconfig)}
    tmp = data_dir / (READY_FILE + ".tmp")
    tmp.write_text(json.dumps(ready))
    os.replace(tmp, data_dir / READY_FILE)
    print(f"apiserver {server.profile.git_version} serving at {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


def read_ready(data_dir: Path, pid: int) -> dict[str, object] | None:
    """What the apiserver process ``pid`` wrote once serving; None until then (or another pid's file)."""
    try:
        st = json.loads((data_dir / READY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return st if isinstance(st, dict) and st.get("pid") == pid else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.apiserver_process",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--k8s-minor", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--wait-fd", type=int, default=None,
                    help="a warm standby: import everything, then wait for one byte on this fd (EOF: exit)")
    args = ap.parse_args(argv)
    if args.wait_fd is not None:
        from .apiserver import persist, server  # noqa: F401 - the imports are the point of a standby

        try:
            go = os.read(args.wait_fd, 1)
        except OSError:
            go = b""
        if not go:
            return 0  # the supervisor went away or stopped: nothing to take over
        os.close(args.wait_fd)
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
