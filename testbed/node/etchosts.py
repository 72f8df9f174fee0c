"""The pod's ``/etc/hosts``, as the kubelet manages it.

Every container of a pod gets the same file (unless it mounts something at ``/etc/hosts`` itself):
the localhost entries, the pod's IP with its hostname (fully qualified first when the pod names a
``subdomain``), then the pod's ``hostAliases``. A ``hostNetwork`` pod gets the node's own file
instead, followed by its ``hostAliases``. The file lives in the pod's directory and is bound
read-write, so a container may change its copy (the change stays in that pod).
"""

from __future__ import annotations

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


def mounts(pod_dir: Path, pod: dict[str, Any], pod_ip: str,
           taken: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """The bind mount of the pod's hosts file (written on first use), unless the container mounts
    its own ``/etc/hosts``."""
    if any(m[1].rstrip("/") == "/etc/hosts" for m in taken):
        return []
    path = pod_dir / "etc-hosts"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content(pod, pod_ip))
        tmp.chmod(0o644)
        tmp.replace(path)
    return [(str(path), "/etc/hosts", False)]
