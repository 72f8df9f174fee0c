"""Probes (exec, httpGet, tcpSocket) run against a pod's network namespace, and exec hooks."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from typing import Any

from . import netns

_TLS: ssl.SSLContext | None = None


def _insecure_tls() -> ssl.SSLContext:
    """One client context for every HTTPS probe: the kubelet does not verify a probe's certificate,
    so no CA bundle is loaded (``create_default_context`` per probe loaded the system's CAs each time:
    a quarter of a node agent's CPU in a conformance cell)."""
    global _TLS
    if _TLS is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _TLS = ctx
    return _TLS


def _port(cont: dict[str, Any], port: Any) -> int:
    if isinstance(port, int):
        return port
    for p in cont.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    if str(port).isdigit():
        return int(port)
    raise ValueError(f"unknown port {port!r}")


def _as_user_of(pid: int) -> list[str]:
    """nsenter options running the command as the container's user and group (its runAsUser)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read().splitlines()
    except OSError:
        return []
    ids = {ln.split(":")[0]: ln.split()[1] for ln in status if ln.startswith(("Uid:", "Gid:"))}
    if ids.get("Uid", "0") == "0" and ids.get("Gid", "0") == "0":
        return []
    return ["-S", ids["Uid"], "-G", ids["Gid"]]


def exec_in(
    pid: int | None, argv: list[str], env: dict[str, str], timeout: float, use_ns: bool
) -> tuple[int, str]:
    """Run ``argv`` inside the namespaces of process ``pid`` (nsenter) with the container's env."""
    cmd = list(argv)
    if use_ns and pid and shutil.which("nsenter"):
        # also its user namespace when it has its own (unprivileged containers): a command the pod
        # put in its root must not run with the host's capabilities
        try:
            own_userns = os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
        except OSError:
            own_userns = False
        try:  # and its PID namespace: the hook or probe sees the container's processes
            own_pidns = os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
        except OSError:
            own_pidns = False
        cmd = ["nsenter", "-t", str(pid), "-m", "-n", *(["-U"] if own_userns else []),
               *(["-p"] if own_pidns else []), *_as_user_of(pid), "--", *argv]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return -1, f"command {argv!r} timed out"
    except OSError as e:
        return -1, str(e)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def run_probe(
    probe: dict[str, Any],
    cont: dict[str, Any],
    pod_ip: str,
    ns_path: str | None,
    pid: int | None,
    env: dict[str, str],
    minor: int,
    use_ns: bool,
) -> tuple[bool, str]:
    """(success, failure message in the kubelet's words)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    if "exec" in probe:
        code, out = exec_in(pid, probe["exec"].get("command") or [], env, timeout, use_ns)
        if code == 0:
            return True, ""
        return False, out.strip() or f"command {probe['exec'].get('command')!r} exited with {code}"
    if "tcpSocket" in probe:
        t = probe["tcpSocket"]
        host, port = t.get("host") or pod_ip, _port(cont, t["port"])
        try:
            netns.connect(ns_path, host, port, timeout).close()
            return True, ""
        except OSError as e:
            return False, f"dial tcp {host}:{port}: connect: {os.strerror(e.errno) if e.errno else e}"
    if "httpGet" in probe:
        h = probe["httpGet"]
        host, port = h.get("host") or pod_ip, _port(cont, h["port"])
        path = h.get("path") or "/"
        scheme = (h.get("scheme") or "HTTP").lower()
        url = f"{scheme}://{host}:{port}{path}"
        try:
            s = netns.connect(ns_path, host, port, timeout)
            if scheme == "https":
                s = _insecure_tls().wrap_socket(s, server_hostname=host)
            headers = {
                "Host": f"{host}:{port}",
                "User-Agent": f"kube-probe/1.{minor}",
                "Accept": "*/*",
                "Connection": "close",
            }
            for hh in h.get("httpHeaders") or []:
                headers[hh["name"]] = hh["value"]
            req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            s.sendall(req.encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            code = int(data.split(b" ", 2)[1])
        except (OSError, ValueError, IndexError) as e:
            return False, f'Get "{url}": {e}'
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"
    return True, ""  # grpc probes and empty handlers: treated as success
