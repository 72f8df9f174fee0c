"""SSH ``ProxyCommand`` into a lab: connect from the lab's gateway namespace, pipe stdin/stdout.

``python -S proxy.py /var/run/netns/<gateway> <address> <port>`` - run by ssh for every connection, so it
imports nothing from the project (it is started as a script, not as ``-m``) and stays cheap. The
controller's own namespace never gets an address on the lab's network: only the gateway namespace the
lab created holds one (the bridge's).
"""

from __future__ import annotations

import ctypes
import os
import selectors
import socket
import sys

CLONE_NEWNET = 0x40000000


def main(argv: list[str]) -> int:
    ns_path, host, port = argv[0], argv[1], int(argv[2])
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(ns_path, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        print(f"lab proxy: cannot enter {ns_path}: {os.strerror(err)}", file=sys.stderr)
        return 255
    os.close(fd)
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as e:
        print(f"lab proxy: cannot reach {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 255
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    stdin_open = True
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(0, 65536)
                if not data:
                    sel.unregister(0)
                    stdin_open = False
                    sock.shutdown(socket.SHUT_WR)
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return 0
                os.write(1, data)
        if not stdin_open and not sel.get_map():
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
