"""The etcd each minor's kube-apiserver stores its objects in.

Choice (recorded in testbed/DIFFERENCES.md): Debian's ``etcd-server`` package for every minor. kubeadm
pins etcd 3.4.x for 1.18-1.21 and 3.5.x from 1.22; Debian 12 ships 3.4.23. Every kube-apiserver from
1.18 on speaks only etcd's v3 API, which 3.4 serves completely, so one server fits all minors without
a second Go build competing for the CPUs. ``TESTBED_ETCD`` names another binary (e.g. one built from
``go.etcd.io/etcd/server/v3``).

It runs as a single member on loopback without TLS (the apiserver is its only client and both are
local processes of the same user), with its data in ``<data dir>/etcd``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class EtcdMissing(Exception):
    pass


@dataclass(frozen=True)
class Etcd:
    binary: Path
    version: str
    source: str  # where it came from, for the state file and bundles


def locate() -> Etcd:
    """The etcd server binary to run (``TESTBED_ETCD``, else ``etcd`` on PATH)."""
    explicit = os.environ.get("TESTBED_ETCD")
    found = explicit or shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if not found:
        raise EtcdMissing("no etcd server: install Debian's etcd-server (`apt-get install etcd-server`) "
                          "or set TESTBED_ETCD to an etcd binary")
    try:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
    except OSError as e:
        raise EtcdMissing(f"{found}: cannot run etcd: {e.strerror or e}") from e
    m = re.search(r"etcd Version:\s*(\S+)", out)
    if not m:
        raise EtcdMissing(f"{found} --version did not print an etcd version: {out.strip()[:200]!r}")
    source = ("TESTBED_ETCD" if explicit
              else "debian etcd-server" if found.startswith("/usr/bin/") else "PATH")
    return Etcd(Path(found), m.group(1), source)


def argv(etcd: Etcd, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd.binary),
        "--name=testbed",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=testbed={peer}",
        "--initial-cluster-state=new",
        # the cluster lives minutes: no compaction of history needed beyond what the apiserver asks for
        "--snapshot-count=10000",
        "--log-level=warn",
        "--logger=zap",
    ]
