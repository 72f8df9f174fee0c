"""``python -m testbed.scheduler``: flags as kube-scheduler of the chosen minor accepts them.

Flags follow pflag: ``--name=value`` or ``--name value``, booleans bare or ``=true|false``. A flag the
minor does not have fails with cobra's ``Error: unknown flag: --x`` and exit status 1.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from kubeclient.client import ApiError, Kube

from . import config as cfgmod
from .config import ConfigError, Profile, SchedulerConfig

BOOL_FLAGS = {"leader-elect", "profiling", "contention-profiling", "use-legacy-policy-config", "logtostderr",
              "alsologtostderr"}


def flags_for(minor: int) -> set[str]:
    """Flag names the minor's kube-scheduler accepts (the subset that matters here, plus common ones)."""
    names = {"kubeconfig", "config", "master", "v", "leader-elect", "leader-elect-lease-duration",
             "leader-elect-renew-deadline", "leader-elect-retry-period", "leader-elect-resource-lock",
             "leader-elect-resource-name", "leader-elect-resource-namespace", "bind-address", "secure-port",
             "authentication-kubeconfig", "authorization-kubeconfig", "feature-gates", "profiling",
             "contention-profiling", "kube-api-qps", "kube-api-burst", "kube-api-content-type", "cert-dir",
             "tls-cert-file", "tls-private-key-file", "vmodule", "log-flush-frequency", "write-config-to",
             "k8s"}  # --k8s is the testbed's own: which minor to emulate
    if minor <= cfgmod.POLICY_LAST_MINOR:
        names |= {"policy-config-file", "policy-configmap", "policy-configmap-namespace",
                  "use-legacy-policy-config", "algorithm-provider"}
    if minor <= cfgmod.SCHEDULER_NAME_FLAG_LAST_MINOR:
        names |= {"scheduler-name", "hard-pod-affinity-symmetric-weight"}
    if minor <= 23:  # insecure serving flags removed in 1.24
        names |= {"port", "address"}
    if minor <= 25:  # klog flags removed from components in 1.26
        names |= {"logtostderr", "alsologtostderr", "log-dir", "log-file", "skip-headers"}
    return names


class UsageError(Exception):
    pass


@dataclass
class Flags:
    values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.values

    def bool(self, name: str, default: bool) -> bool:
        v = self.values.get(name)
        return default if v is None else v.lower() in ("true", "1", "t")


def parse_flags(argv: list[str], allowed: set[str] | None) -> Flags:
    out = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            continue
        body = arg.lstrip("-")
        name, eq, value = body.partition("=")
        if allowed is not None and name not in allowed:
            raise UsageError(f"unknown flag: {arg.split('=')[0]}" if arg.startswith("--")
                             else f"unknown shorthand flag: '{name[:1]}' in {arg}")
        if not eq:
            if name in BOOL_FLAGS:
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise UsageError(f"flag needs an argument: {arg}")
        out.values[name] = value
    return out


def _duration(flags: Flags, name: str, default: float) -> float:
    return cfgmod.parse_duration(flags.get(name), name) if flags.has(name) else default


def detect_minor(kube: Kube) -> int:
    from testbed.apiserver.versions import parse_minor

    info = kube.get("/version")
    return parse_minor(str(info.get("minor", "")).rstrip("+"))


def build_config(flags: Flags, minor: int, kube_factory: Any) -> SchedulerConfig:
    """The effective configuration from --config, or the legacy flags/Policy of 1.18-1.22."""
    if flags.has("config"):
        with open(flags.get("config"), "rb") as f:
            cfg = cfgmod.decode_config(f.read(), minor)
    else:
        policy = None
        if flags.has("policy-config-file") and not flags.has("policy-configmap"):
            with open(flags.get("policy-config-file"), "rb") as f:
                policy = cfgmod.decode_policy(f.read(), minor)
        elif flags.has("policy-configmap"):
            ns = flags.get("policy-configmap-namespace", "kube-system")
            name = flags.get("policy-configmap")
            try:
                cm = kube_factory().get(f"/api/v1/namespaces/{ns}/configmaps/{name}")
            except ApiError as e:
                raise ConfigError(f"couldn't get policy config map {ns}/{name}: {e}") from e
            data = (cm.get("data") or {}).get("policy.cfg")
            if data is None:
                raise ConfigError("missing policy config map value at key \"policy.cfg\"")
            policy = cfgmod.decode_policy(data, minor)
        name = flags.get("scheduler-name", cfgmod.DEFAULT_SCHEDULER)
        cfg = (cfgmod.config_from_policy(policy, name) if policy is not None
               else SchedulerConfig(profiles=[Profile(name)]))
    # leader-election flags are honoured without --config (and, from 1.23, override it when given)
    if not flags.has("config") or minor >= 23:
        le = cfg.leader_election
        le.leader_elect = flags.bool("leader-elect", le.leader_elect)
        le.lease_duration = _duration(flags, "leader-elect-lease-duration", le.lease_duration)
        le.renew_deadline = _duration(flags, "leader-elect-renew-deadline", le.renew_deadline)
        le.retry_period = _duration(flags, "leader-elect-retry-period", le.retry_period)
        le.resource_lock = flags.get("leader-elect-resource-lock", le.resource_lock)
        le.resource_name = flags.get("leader-elect-resource-name", le.resource_name)
        le.resource_namespace = flags.get("leader-elect-resource-namespace", le.resource_namespace)
    return cfg


def _log_setup(verbosity: int) -> None:
    level = logging.DEBUG if verbosity >= 4 else logging.INFO if verbosity >= 0 else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname).1s%(asctime)s %(process)d %(module)s.py] %(message)s",
                        datefmt="%m%d %H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    from .scheduler import Scheduler

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        loose = parse_flags(argv, None)
    except UsageError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    kubeconfig = loose.get("kubeconfig") or None
    kube: Kube | None = None

    def kube_factory() -> Kube:
        nonlocal kube
        if kube is None:
            kube = Kube.from_config(kubeconfig, user_agent="kube-scheduler/testbed")
        return kube

    try:
        if loose.has("k8s"):
            minor = int(str(loose.get("k8s")).split(".")[-1])
        else:
            minor = detect_minor(kube_factory())
        flags = parse_flags(argv, flags_for(minor))
    except UsageError as e:
        print(f"Error: {e}\nRun 'kube-scheduler --help' for usage.", file=sys.stderr)
        return 1
    _log_setup(int(flags.get("v", "0") or 0))
    try:
        cfg = build_config(flags, minor, kube_factory)
    except (ConfigError, OSError) as e:
        if minor >= 24:  # component-base cli.Run logs the error through klog
            import datetime as dt
            import os

            stamp = dt.datetime.now().strftime("%m%d %H:%M:%S.%f")
            err = str(e).replace('"', '\\"')
            print(f'E{stamp} {os.getpid():>7} run.go:74] "command failed" err="{err}"', file=sys.stderr)
        else:
            print(str(e), file=sys.stderr)
        return 1
    if not kubeconfig and cfg.kubeconfig:
        kubeconfig = cfg.kubeconfig
        kube = None
    sched = Scheduler(kube_factory(), cfg, minor)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sched.start()
    logging.getLogger("scheduler").info("kube-scheduler (testbed, 1.%d) serving profiles %s", minor,
                                        sorted(cfg.scheduler_names()))
    done.wait()
    sched.stop()
    return 0
