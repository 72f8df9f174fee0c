"""Command line of the extender, with HAMi's flag names (section 1.1): ``python -m hami_stack.scheduler``.

Booleans follow Go's flag package: ``--legacy-metrics`` alone means true, ``--leader-elect=false``
works too. ``version`` prints the version and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from kubeclient.client import Kube

from ..devices.config import DeviceConfigError, load_device_config
from ..devices.registry import build_families
from ..protocol.policy import BINPACK, SPREAD
from .extender import ExtenderOptions
from .metrics import build_info
from .server import SchedulerService, ServiceConfig

log = logging.getLogger("hami.scheduler")


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _verbosity(text: str) -> int:
    return int(text.lstrip("="))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scheduler", description="HAMi scheduler extender (filter, bind, webhook)"
    )
    p.add_argument("--http_bind", default="127.0.0.1:8080", help="address of the extender's HTTP(S) server")
    p.add_argument("--cert_file", default="", help="TLS certificate; with --key_file the server is HTTPS")
    p.add_argument("--key_file", default="", help="TLS private key")
    p.add_argument(
        "--client-ca-file",
        default="",
        help="CA that signs the kube-scheduler's client certificate: /filter and /bind then answer 403 "
        "to any caller without a certificate verified by it (mutual TLS; needs --cert_file/--key_file). "
        "/webhook and /healthz stay reachable without a client certificate",
    )
    p.add_argument(
        "--client-cn",
        default="",
        help="with --client-ca-file: the client certificate's subject CN must be exactly this "
        "(default: empty = any certificate signed by the client CA)",
    )
    p.add_argument(
        "--allow-unauthenticated-extender",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="without --client-ca-file, let ANY caller use /filter and /bind (which patch pods and bind "
        "them). For local development only; without this flag and without --client-ca-file both "
        "routes answer 403 (fail closed)",
    )
    p.add_argument("--scheduler-name", default="", help="schedulerName the webhook writes into pods")
    p.add_argument("--device-config-file", default="", help="device-config.yaml")
    p.add_argument("--metrics-bind-address", default=":9395", help="address of the metrics server")
    p.add_argument("--leader-elect", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--leader-elect-resource-name", default="hami-scheduler")
    p.add_argument("--leader-elect-resource-namespace", default="kube-system")
    p.add_argument("--node-scheduler-policy", default=BINPACK, choices=[BINPACK, SPREAD])
    p.add_argument("--gpu-scheduler-policy", default=SPREAD)
    p.add_argument("--kubeconfig", default="", help="kubeconfig (default: in-cluster credentials)")
    p.add_argument("--legacy-metrics", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("-v", "--v", dest="verbosity", type=_verbosity, default=0, help="log verbosity")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def service_config(ns: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(
        http_bind=ns.http_bind,
        cert_file=ns.cert_file,
        key_file=ns.key_file,
        metrics_bind=ns.metrics_bind_address,
        client_ca_file=ns.client_ca_file,
        client_cn=ns.client_cn,
        allow_unauthenticated=ns.allow_unauthenticated_extender,
        legacy_metrics=ns.legacy_metrics,
        leader_elect=ns.leader_elect,
        lease_name=ns.leader_elect_resource_name,
        lease_namespace=ns.leader_elect_resource_namespace,
        options=ExtenderOptions(
            scheduler_name=ns.scheduler_name,
            node_policy=ns.node_scheduler_policy,
            gpu_policy=ns.gpu_scheduler_policy,
        ),
    )


async def _serve(service: SchedulerService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await loop.run_in_executor(None, service.start_background)
    await service.start_http()
    await stop.wait()
    await service.stop_http()
    service.stop_background()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["version"]:
        info = build_info()
        print(f"{info['version']} {info['go_version']}")
        return 0
    ns = parse_args(args)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbosity >= 4 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_device_config(Path(ns.device_config_file)) if ns.device_config_file else None
    except DeviceConfigError as e:
        log.error("%s", e)
        return 1
    from ..devices.config import DeviceConfig

    families = build_families(config or DeviceConfig())
    service = service_config(ns)
    try:
        service.check()
    except ValueError as e:
        log.error("%s", e)
        return 2
    kube = Kube.from_config(ns.kubeconfig or None, user_agent="hami-scheduler")
    asyncio.run(_serve(SchedulerService(kube, families, service)))
    return 0
