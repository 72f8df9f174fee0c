"""kube-scheduler configuration decoding, per Kubernetes minor.

The version table below is the one place that says which configuration formats and flags each minor
accepts (facts from ``/work/shared/reference/k8s-versions.md`` section 3a and 3c). Decoding follows the
real decoders where it shows: KubeSchedulerConfiguration v1beta1+ is strict and case-sensitive;
v1alpha1/v1alpha2 and the legacy ``Policy`` are decoded like Go's ``encoding/json`` (keys matched
case-insensitively, unknown keys ignored, ``httpTimeout`` as integer nanoseconds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

GROUP = "kubescheduler.config.k8s.io"
SCHEME = "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme/scheme.go:30"

# minor -> accepted KubeSchedulerConfiguration versions (k8s-versions.md §3a)
CONFIG_VERSIONS: dict[int, tuple[str, ...]] = {
    18: ("v1alpha1", "v1alpha2"),
    19: ("v1beta1",), 20: ("v1beta1",), 21: ("v1beta1",),
    22: ("v1beta1", "v1beta2"),
    23: ("v1beta2", "v1beta3"), 24: ("v1beta2", "v1beta3"),
    25: ("v1beta2", "v1beta3", "v1"), 26: ("v1beta2", "v1beta3", "v1"), 27: ("v1beta2", "v1beta3", "v1"),
    28: ("v1beta3", "v1"),
    **{m: ("v1",) for m in range(29, 36)},  # 1.34, 1.35: v1 only (CL-1.34, CL-1.35)
}
POLICY_LAST_MINOR = 22  # legacy Policy API and its flags removed in 1.23 (kk#105424)
SCHEDULER_NAME_FLAG_LAST_MINOR = 21  # --scheduler-name removed in 1.22 (kk#102805)
STRICT_ERROR_FROM = 24  # "strict decoding error: ..." wording (sigs.k8s.io/json strict errors)

DEFAULT_SCHEDULER = "default-scheduler"


class ConfigError(Exception):
    """A configuration the real kube-scheduler refuses at start-up."""


@dataclass
class TLSConfig:
    insecure: bool = False
    server_name: str = ""
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    cert_data: bytes = b""
    key_data: bytes = b""
    ca_data: bytes = b""


@dataclass
class ExtenderConfig:
    url_prefix: str
    filter_verb: str = ""
    preempt_verb: str = ""
    prioritize_verb: str = ""
    bind_verb: str = ""
    weight: int = 0
    enable_https: bool = False
    tls: TLSConfig | None = None
    http_timeout: float = 5.0  # seconds; 0 in the file means the 5 s default (extender.go)
    node_cache_capable: bool = False
    managed_resources: list[tuple[str, bool]] = field(default_factory=list)  # (name, ignoredByScheduler)
    ignorable: bool = False


@dataclass
class Profile:
    scheduler_name: str = DEFAULT_SCHEDULER
    ignored_resources: set[str] = field(default_factory=set)
    ignored_resource_groups: set[str] = field(default_factory=set)


def default_lock(minor: int) -> str:
    """kube-scheduler's default ``--leader-elect-resource-lock``: "endpointsleases" (an Endpoints
    record mirrored to a Lease) up to 1.19, "leases" from 1.20."""
    return "endpointsleases" if minor < 20 else "leases"


@dataclass
class LeaderElection:
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    resource_lock: str = ""  # "" until resolved: the minor's default (default_lock)
    resource_name: str = "kube-scheduler"
    resource_namespace: str = "kube-system"


@dataclass
class SchedulerConfig:
    api_version: str = f"{GROUP}/v1"
    profiles: list[Profile] = field(default_factory=lambda: [Profile()])
    extenders: list[ExtenderConfig] = field(default_factory=list)
    leader_election: LeaderElection = field(default_factory=LeaderElection)
    kubeconfig: str = ""
    percentage_of_nodes_to_score: int = 0
    pod_initial_backoff: float = 1.0
    pod_max_backoff: float = 10.0
    policy: dict[str, Any] | None = None  # the legacy Policy, when one was given

    def scheduler_names(self) -> set[str]:
        return {p.scheduler_name for p in self.profiles}


# -- generic decoding helpers --------------------------------------------------------------------

def load_document(text: str | bytes) -> dict[str, Any]:
    """YAML or JSON text to a dict (the real decoder converts YAML to JSON first)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"error converting YAML to JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError("Object 'Kind' is missing in '" + _short(text) + "'")
    return doc


def _short(text: str | bytes) -> str:
    s = text.decode(errors="replace") if isinstance(text, bytes) else text
    return s.strip()[:200]


def _ci(obj: dict[str, Any], key: str) -> Any:
    """Go encoding/json lookup: exact key first, else a case-insensitive match."""
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == low:
            return v
    return None


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, path: str) -> float:
    """A metav1.Duration string (``"30s"``, ``"1m30s"``) in seconds, with Go's error wording."""
    if not isinstance(value, str):
        raise ConfigError(f"json: cannot unmarshal {_go_type(value)} into Go struct field {path} "
                          "of type string")
    s = value.strip()
    if s in ("0", ""):
        return 0.0
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(body) or not body:
        raise ConfigError(f'time: invalid duration "{value}"')
    return sign * total


def _go_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "string"


# -- strict field checking (v1beta1+) -------------------------------------------------------------

_TLS_FIELDS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}
_EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight", "bindVerb",
                    "enableHTTPS", "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources",
                    "ignorable"}
_LEADER_FIELDS = {"leaderElect", "leaseDuration", "renewDeadline", "retryPeriod", "resourceLock",
                  "resourceName", "resourceNamespace"}
_CLIENT_FIELDS = {"kubeconfig", "acceptContentTypes", "contentType", "qps", "burst"}
_PROFILE_FIELDS = {"schedulerName", "plugins", "pluginConfig"}
_TOP_COMMON = {"apiVersion", "kind", "parallelism", "leaderElection", "clientConnection",
               "percentageOfNodesToScore", "podInitialBackoffSeconds", "podMaxBackoffSeconds", "profiles",
               "extenders", "enableProfiling", "enableContentionProfiling"}


def _top_fields(version: str, minor: int) -> set[str]:
    out = set(_TOP_COMMON)
    if version in ("v1beta1", "v1beta2"):
        out |= {"healthzBindAddress", "metricsBindAddress"}
    if version == "v1" and minor >= 29:
        out.add("delayCacheUntilActive")
    return out


def _unknown_fields(doc: dict[str, Any], version: str, minor: int) -> list[str]:
    bad: list[str] = []

    def check(obj: Any, allowed: set[str], prefix: str) -> None:
        if isinstance(obj, dict):
            bad.extend(f"{prefix}{k}" for k in obj if k not in allowed)

    check(doc, _top_fields(version, minor), "")
    check(doc.get("leaderElection"), _LEADER_FIELDS, "leaderElection.")
    check(doc.get("clientConnection"), _CLIENT_FIELDS, "clientConnection.")
    # per-profile percentageOfNodesToScore exists in v1beta3 and v1 only
    prof_fields = _PROFILE_FIELDS | ({"percentageOfNodesToScore"} if version in ("v1beta3", "v1") else set())
    for i, p in enumerate(doc.get("profiles") or []):
        check(p, prof_fields, f"profiles[{i}].")
    for i, e in enumerate(doc.get("extenders") or []):
        check(e, _EXTENDER_FIELDS, f"extenders[{i}].")
        if isinstance(e, dict):
            check(e.get("tlsConfig"), _TLS_FIELDS, f"extenders[{i}].tlsConfig.")
            for j, r in enumerate(e.get("managedResources") or []):
                check(r, {"name", "ignoredByScheduler"}, f"extenders[{i}].managedResources[{j}].")
    return bad


def _strict_error(bad: list[str], minor: int) -> ConfigError:
    if minor >= STRICT_ERROR_FROM:
        return ConfigError("strict decoding error: " + ", ".join(f'unknown field "{b}"' for b in bad))
    # before 1.24 the strict YAML path reported only the first offending key, by its own name
    first = bad[0].split(".")[-1]
    return ConfigError(f'error unmarshaling JSON: while decoding JSON: json: unknown field "{first}"')


# -- KubeSchedulerConfiguration --------------------------------------------------------------------

def decode_config(text: str | bytes, minor: int) -> SchedulerConfig:
    """Decode a ``--config`` file as the kube-scheduler of ``minor`` would, or raise ConfigError."""
    doc = load_document(text)
    api_version = str(doc.get("apiVersion") or "")
    kind = str(doc.get("kind") or "")
    if not kind:
        raise ConfigError(f"Object 'Kind' is missing in '{_short(text)}'")
    group, _, version = api_version.rpartition("/")
    accepted = CONFIG_VERSIONS[minor]
    if kind == "Policy" and minor <= POLICY_LAST_MINOR and api_version in ("v1", f"{GROUP}/v1"):
        # a Policy is registered in the scheme, but is not a KubeSchedulerConfiguration
        raise ConfigError(f"couldn't decode as KubeSchedulerConfiguration, got {_gvk(api_version, kind)}: ")
    if group != GROUP or version not in accepted or kind != "KubeSchedulerConfiguration":
        raise ConfigError(f'no kind "{kind}" is registered for version "{api_version}" in scheme "{SCHEME}"')
    strict = version not in ("v1alpha1", "v1alpha2")
    if strict:
        bad = _unknown_fields(doc, version, minor)
        if bad:
            raise _strict_error(bad, minor)
    get = (lambda o, k: o.get(k)) if strict else _ci
    cfg = SchedulerConfig(api_version=api_version)
    cfg.leader_election = _leader(get(doc, "leaderElection") or {}, get, version)
    cc = get(doc, "clientConnection") or {}
    cfg.kubeconfig = str(get(cc, "kubeconfig") or "")
    cfg.percentage_of_nodes_to_score = int(get(doc, "percentageOfNodesToScore") or 0)
    cfg.pod_initial_backoff = float(get(doc, "podInitialBackoffSeconds") or 1)
    cfg.pod_max_backoff = float(get(doc, "podMaxBackoffSeconds") or 10)
    if version == "v1alpha1":
        cfg.profiles = [Profile(str(get(doc, "schedulerName") or DEFAULT_SCHEDULER))]
        src = get(doc, "algorithmSource") or {}
        pol = _ci(src, "policy")
        if pol:
            cfg.policy = {"source": pol}
    else:
        profiles = get(doc, "profiles")
        if profiles:
            cfg.profiles = [_profile(p or {}, get) for p in profiles]
        cfg.extenders = [_extender(e or {}, legacy=not strict, index=i)
                         for i, e in enumerate(get(doc, "extenders") or [])]
    _validate(cfg)
    _apply_managed_ignored(cfg)
    return cfg


def _gvk(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    return f"{group}/{version}, Kind={kind}" if group else f"/{version}, Kind={kind}"


def _leader(le: dict[str, Any], get: Any, version: str) -> LeaderElection:
    out = LeaderElection()
    v = get(le, "leaderElect")
    if v is not None:
        out.leader_elect = bool(v)
    for key, attr in (("leaseDuration", "lease_duration"), ("renewDeadline", "renew_deadline"),
                      ("retryPeriod", "retry_period")):
        raw = get(le, key)
        if raw is not None:
            setattr(out, attr, parse_duration(raw, f"leaderElection.{key}"))
    out.resource_lock = str(get(le, "resourceLock") or out.resource_lock)
    out.resource_name = str(get(le, "resourceName") or (version == "v1alpha1" and get(le, "lockObjectName"))
                            or out.resource_name)
    out.resource_namespace = str(get(le, "resourceNamespace")
                                 or (version == "v1alpha1" and get(le, "lockObjectNamespace"))
                                 or out.resource_namespace)
    return out


def _profile(p: dict[str, Any], get: Any) -> Profile:
    prof = Profile(str(get(p, "schedulerName") or DEFAULT_SCHEDULER))
    for pc in get(p, "pluginConfig") or []:
        if get(pc, "name") == "NodeResourcesFit":
            args = get(pc, "args") or {}
            prof.ignored_resources |= set(get(args, "ignoredResources") or [])
            prof.ignored_resource_groups |= set(get(args, "ignoredResourceGroups") or [])
    return prof


def _extender(e: dict[str, Any], *, legacy: bool, index: int) -> ExtenderConfig:
    """One extender entry; ``legacy`` = the 1.18 Policy/v1alpha2 struct (Go json, int-ns timeout)."""
    get = _ci if legacy else (lambda o, k: o.get(k))
    https_key = "enableHttps" if legacy else "enableHTTPS"
    ext = ExtenderConfig(url_prefix=str(get(e, "urlPrefix") or ""))
    ext.filter_verb = str(get(e, "filterVerb") or "")
    ext.preempt_verb = str(get(e, "preemptVerb") or "")
    ext.prioritize_verb = str(get(e, "prioritizeVerb") or "")
    ext.bind_verb = str(get(e, "bindVerb") or "")
    ext.weight = int(get(e, "weight") or 0)
    ext.enable_https = bool(get(e, https_key))
    ext.node_cache_capable = bool(get(e, "nodeCacheCapable"))
    ext.ignorable = bool(get(e, "ignorable"))
    raw = get(e, "httpTimeout")
    if raw is not None:
        if legacy:
            if not isinstance(raw, (int, float)) or isinstance(raw, bool):
                raise ConfigError(f"json: cannot unmarshal {_go_type(raw)} into Go struct field "
                                  "Extender.extenders.httpTimeout of type time.Duration")
            ext.http_timeout = raw / 1e9
        else:
            ext.http_timeout = parse_duration(raw, "Extender.extenders.httpTimeout")
    if ext.http_timeout <= 0:
        ext.http_timeout = 5.0
    tls = get(e, "tlsConfig")
    if isinstance(tls, dict):
        ext.tls = TLSConfig(
            insecure=bool(get(tls, "insecure")), server_name=str(get(tls, "serverName") or ""),
            cert_file=str(get(tls, "certFile") or ""), key_file=str(get(tls, "keyFile") or ""),
            ca_file=str(get(tls, "caFile") or ""), cert_data=_bytes(get(tls, "certData")),
            key_data=_bytes(get(tls, "keyData")), ca_data=_bytes(get(tls, "caData")))
    for r in get(e, "managedResources") or []:
        ext.managed_resources.append((str(get(r, "name") or ""), bool(get(r, "ignoredByScheduler"))))
    return ext


def _bytes(v: Any) -> bytes:
    """Go []byte fields are base64 in JSON; PEM text given directly is accepted too."""
    if not v:
        return b""
    s = str(v)
    if "-----BEGIN" in s:
        return s.encode()
    import base64

    try:
        return base64.b64decode(s, validate=True)
    except ValueError as e:
        raise ConfigError(f"illegal base64 data in tlsConfig: {e}") from e


def _validate(cfg: SchedulerConfig) -> None:
    errs: list[str] = []
    names = [p.scheduler_name for p in cfg.profiles]
    for i, n in enumerate(names):
        if n in names[:i]:
            errs.append(f'profiles[{i}].schedulerName: Duplicate value: "{n}"')
    binders = sum(1 for e in cfg.extenders if e.bind_verb)
    if binders > 1:
        errs.append(f"extenders: Invalid value: \"found {binders} extenders implementing bind\": "
                    "only one extender can implement bind")
    for i, e in enumerate(cfg.extenders):
        if e.prioritize_verb and e.weight <= 0:
            errs.append(f"extenders[{i}].weight: Invalid value: {e.weight}: must have a positive weight "
                        "applied to it")
    if errs:
        raise ConfigError("[" + ", ".join(errs) + "]" if len(errs) > 1 else errs[0])


def _apply_managed_ignored(cfg: SchedulerConfig) -> None:
    """Resources an extender manages with ignoredByScheduler are not checked by NodeResourcesFit."""
    ignored = {n for e in cfg.extenders for n, ign in e.managed_resources if ign}
    for p in cfg.profiles:
        p.ignored_resources |= ignored


# -- legacy Policy (1.18-1.22) -------------------------------------------------------------------

def decode_policy(text: str | bytes, minor: int) -> dict[str, Any]:
    """The legacy scheduler ``Policy`` (``--policy-config-file`` / ``--policy-configmap``)."""
    if minor > POLICY_LAST_MINOR:
        raise ConfigError("the legacy scheduler Policy API was removed in 1.23")
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = load_document(text)
    if not isinstance(doc, dict):
        raise ConfigError("invalid policy: Object 'Kind' is missing")
    api_version, kind = str(doc.get("apiVersion") or ""), str(doc.get("kind") or "")
    if kind != "Policy" or api_version not in ("v1", f"{GROUP}/v1"):
        raise ConfigError(f'invalid policy: no kind "{kind}" is registered for version "{api_version}" '
                          f'in scheme "{SCHEME}"')
    return doc


def config_from_policy(policy: dict[str, Any], scheduler_name: str) -> SchedulerConfig:
    """What a Policy run amounts to: one profile (named by --scheduler-name) plus the Policy's extenders."""
    cfg = SchedulerConfig(api_version="v1/Policy", profiles=[Profile(scheduler_name)], policy=policy)
    cfg.extenders = [_extender(e or {}, legacy=True, index=i)
                     for i, e in enumerate(_ci(policy, "extenders") or [])]
    _validate(cfg)
    _apply_managed_ignored(cfg)
    return cfg
