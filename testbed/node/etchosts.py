"""The pod's ``/etc/hosts``, as the kubelet manages it.

Every container of a pod gets the same file (unless it mounts something at ``/etc/hosts`` itself):
the localhost entries, the pod's IP with its hostname (fully qualified first when the pod names a
``subdomain``), then the pod's ``hostAliases``. A ``hostNetwork`` pod gets the node's own file
instead, followed by its ``hostAliases``. The file lives in the pod's directory and is bound
read-write, so a container may change its copy (the change stays in that pod). ``/etc/hostname``
(the container runtime's file) holds the pod's hostname.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DOMAIN = "cluster.local"
LOCAL = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def _aliases(spec: dict[str, Any]) -> str:
    lines = []
    for alias in spec.get("hostAliases") or []:
        names = [str(n) for n in alias.get("hostnames") or []]
        if alias.get("ip") and names:
            lines.append(f"{alias['ip']}\t" + "\t".join(names))
    return "\n# Entries added by HostAliases.\n" + "\n".join(lines) + "\n" if lines else ""


def content(pod: dict[str, Any], pod_ip: str, host_file: Path = Path("/etc/hosts")) -> str:
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        try:
            node = host_file.read_text()
        except OSError:
            node = LOCAL
        if node and not node.endswith("\n"):
            node += "\n"
        return "# Kubernetes-managed hosts file (host network).\n" + node + _aliases(spec)
    name = (spec.get("hostname") or pod["metadata"]["name"])[:63]
    out = "# Kubernetes-managed hosts file.\n" + LOCAL
    if pod_ip:
        sub = spec.get("subdomain")
        if sub:
            out += f"{pod_ip}\t{name}.{sub}.{pod['metadata']['namespace']}.svc.{DOMAIN}\t{name}\n"
        else:
            out += f"{pod_ip}\t{name}\n"
    return out + _aliases(spec)


def hostname(pod: dict[str, Any]) -> str:
    """The pod's hostname (``spec.hostname`` or its name, at most 63 characters); a host-network pod
    has the node's."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return os.uname().nodename
    return str(spec.get("hostname") or pod["metadata"]["name"])[:63]


def _write(path: Path, text: str) -> None:
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)


def mounts(pod_dir: Path, pod: dict[str, Any], pod_ip: str,
           taken: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """Bind mounts of the pod's ``/etc/hosts`` and ``/etc/hostname`` (written on first use; the
    runtime writes the latter), except where the container mounts its own."""
    out = []
    for target, name, text in (("/etc/hosts", "etc-hosts", lambda: content(pod, pod_ip)),
                               ("/etc/hostname", "etc-hostname", lambda: hostname(pod) + "\n")):
        if any(m[1].rstrip("/") == target for m in taken):
            continue
        path = pod_dir / name
        _write(path, text())
        out.append((str(path), target, False))
    return out
