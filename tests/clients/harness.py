"""Running real kubectl/helm binaries against an embedded testbed, isolated from the user's config."""

from __future__ import annotations

import os
import ssl
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from testbed import pki
from testbed.embedded import EmbeddedTestbed

RUN_TIMEOUT_S = 60


@dataclass
class Client:
    """One client binary bound to one testbed, with a private HOME and cache."""

    binary: Path
    tb: EmbeddedTestbed | None  # None: an offline command (e.g. ``helm template``)
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
        env.update(
            HOME=str(self.home),
            KUBECONFIG=str(kubeconfig or (self.tb.kubeconfig_path if self.tb else self.home / "none")),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local/share"),
        )
        env.update(self.extra_env)
        return env

    def run(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = RUN_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *self.global_args(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.binary.name} {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.binary), *self.global_args(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
        )

    def global_args(self) -> list[str]:
        if self.binary.name == "kubectl":
            return ["--cache-dir", str(self.home / "kube-cache")]
        return []


def token_kubeconfig(tb: EmbeddedTestbed, token: str, path: Path, namespace: str = "default") -> Path:
    """A kubeconfig like the testbed's, but authenticating with ``token``."""
    assert tb.server is not None
    cfg = tb.server.kubeconfig(user="token-user", token=token)
    cfg["contexts"][0]["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def manifest(*objs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(objs, sort_keys=False)


def table_rows(text: str) -> list[list[str]]:
    """Split kubectl's column output (header first) into whitespace-separated cells."""
    return [line.split() for line in text.strip().splitlines() if line.strip()]


class LogKubelet:
    """A minimal kubelet ``/containerLogs`` endpoint on 127.0.0.1, served on the testbed's loop."""

    def __init__(self, tb: EmbeddedTestbed, lines: int = 5) -> None:
        self.tb = tb
        self.lines = [f"log line {i}\n" for i in range(lines)]
        self.seen: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _logs(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path, **request.query})
        lines = self.lines
        if "tailLines" in request.query:
            lines = lines[-int(request.query["tailLines"]) :]
        return web.Response(text="".join(lines))

    def start(self) -> LogKubelet:
        ca = pki.make_ca()
        leaf = pki.make_serving_cert(ca, "kubelet", ["127.0.0.1"])
        d = Path(tempfile.mkdtemp(prefix="kubelet-"))
        leaf.write(d / "tls.crt", d / "tls.key")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(d / "tls.crt", d / "tls.key")

        async def start() -> int:
            app = web.Application()
            app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self._logs)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
            await site.start()
            return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        self.port = self.tb.call(start())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self.tb.call(self._runner.cleanup())
            self._runner = None

    def node(self, name: str) -> dict[str, Any]:
        """A Node object whose kubelet endpoint is this server."""
        return {
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            },
        }
