"""The input contract between the pytest plugin and the report builder.

A *run* is one invocation of the conformance suites: who ran what (metadata), against which cluster
(environment) and what each case concluded (cases). The plugin produces it, the bundle builder
consumes it; both sides go through ``Run.from_dict``/``Run.to_dict`` so the JSON shape is defined
in one place and every field is validated with a message that names it
(``cases[3].outcome: Unsupported value: "passd": ...``), in the style of kube-apiserver field errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

API_VERSION = "hami-conformance/run/v1"

OUTCOMES = ("passed", "failed", "skipped", "unknown")
CAPABILITIES = (
    "registration",
    "admission",
    "scheduling",
    "allocation",
    "isolation",
    "enforcement",
    "metrics",
    "versions",
)
REQUIREMENTS = ("required", "optional", "not-applicable")
BACKENDS = ("testbed", "kubeconfig", "k3s")
VENDORS = (
    "nvidia",
    "ascend",
    "cambricon",
    "hygon",
    "iluvatar",
    "mthreads",
    "metax",
    "enflame",
    "kunlunxin",
    "vastai",
    "biren",
    "awsneuron",
    "amd",
)
# The CNCF AI conformance requirement ids this harness can produce evidence for.
AI_REQUIREMENTS = ("gpu_sharing", "virtualized_accelerator", "secure_accelerator_access")

MINOR_RE = re.compile(r"^1\.(\d{1,3})$")
RULE_ID_RE = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$")


class RunInputError(ValueError):
    """A run (or one of its parts) does not satisfy the contract.

    ``field`` is the JSON path of the offending value, ``source`` the file it came from, so the
    message alone tells a user what to fix.
    """

    def __init__(self, field: str, detail: str, *, source: str | None = None) -> None:
        self.field = field
        self.detail = detail
        self.source = source
        where = f"{field}: " if field else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{where}{detail}")

    def in_source(self, source: str) -> RunInputError:
        return RunInputError(self.field, self.detail, source=source)

    def under(self, parent: str) -> RunInputError:
        if not self.field:
            joined = parent
        elif self.field.startswith("["):
            joined = f"{parent}{self.field}"
        else:
            joined = f"{parent}.{self.field}"
        return RunInputError(joined, self.detail, source=self.source)


# --- small validators: each raises RunInputError naming the field -----------------------------


def _required(obj: Mapping[str, Any], key: str) -> Any:
    if key not in obj or obj[key] is None:
        raise RunInputError(key, "Required value")
    return obj[key]


def _str(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    """A string; a required one must be non-empty, an optional one defaults to ""."""
    value = _required(obj, key) if required else obj.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RunInputError(key, f"Invalid value: {value!r}: must be a string")
    if required and not value:
        raise RunInputError(key, "Required value")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RunInputError(key, f"Invalid value: {value!r}: must be a string")
    return value


def _choice(obj: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = _str(obj, key)
    if value not in choices:
        opts = ", ".join(f'"{c}"' for c in sorted(choices))
        raise RunInputError(key, f'Unsupported value: "{value}": supported values: {opts}')
    return value


def _timestamp(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = _str(obj, key) if required else _opt_str(obj, key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RunInputError(key, f'Invalid value: "{value}": must be an RFC 3339 timestamp') from None
    if parsed.tzinfo is None:
        raise RunInputError(key, f'Invalid value: "{value}": must carry a time zone (e.g. "Z")')
    return value


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = _required(obj, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RunInputError(key, f"Invalid value: {value!r}: must be a number")
    if value < 0:
        raise RunInputError(key, f"Invalid value: {value!r}: must be greater than or equal to 0")
    return float(value)


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunInputError(key, f"Invalid value: {value!r}: must be an integer")
    return value


def _mapping(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunInputError(key, f"Invalid value: {type(value).__name__}: must be an object")
    return value


def _str_map(obj: Mapping[str, Any], key: str) -> dict[str, str]:
    value = _mapping(obj, key)
    for k, v in value.items():
        if not isinstance(v, str):
            raise RunInputError(f"{key}[{k}]", f"Invalid value: {v!r}: must be a string")
    return dict(value)


T = TypeVar("T")


def _list(obj: Mapping[str, Any], key: str, parse: Callable[[Any], T]) -> list[T]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RunInputError(key, f"Invalid value: {type(value).__name__}: must be a list")
    out: list[T] = []
    for i, item in enumerate(value):
        try:
            out.append(parse(item))
        except RunInputError as e:
            raise e.under(f"{key}[{i}]") from None
    return out


def _as_object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise RunInputError("", f"Invalid value: {type(value).__name__}: must be an object")
    return value


def _plain_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RunInputError("", f"Invalid value: {value!r}: must be a non-empty string")
    return value


def _rule_list(obj: Mapping[str, Any], key: str) -> list[str] | None:
    if obj.get(key) is None:
        return None
    rules = _list(obj, key, _plain_str)
    for i, rule_id in enumerate(rules):
        if not RULE_ID_RE.match(rule_id):
            raise RunInputError(f"{key}[{i}]", f'Invalid value: "{rule_id}": must look like "SCHED-FIT-1"')
    return rules


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --- metadata ----------------------------------------------------------------------------------


@dataclass
class RunMetadata:
    """Who ran what: enough to reproduce the run and to pin what a certification states."""

    run_id: str
    project_commit: str
    started: str
    tool_version: str
    backend: str
    hami_namespace: str
    finished: str | None = None  # None while running, or when the run never finished
    chart_values: dict[str, Any] = field(default_factory=dict)
    profile: str = ""  # profile name, e.g. "nvidia-default"
    profile_version: str = ""
    url: str = ""  # link to the CI run, if any (in-toto predicate "url")
    # Product facts for the self-assessment metadata (platformName, vendorName, ...).
    product: dict[str, str] = field(default_factory=dict)
    # Rule ids the profile requires in this cell; None for runs recorded before it was kept (then
    # only the cases' own requirements count).
    required_rules: list[str] | None = None
    # How the cases were chosen and whether the session ran to its end: {"filtered": bool,
    # "interrupted": bool, "reasons": [...], "keyword", "markexpr", "args", "deselected"}.
    selection: dict[str, Any] = field(default_factory=dict)
    # What was tested: {"commit", "dirty", "diffSha256", "dirtyFiles", "chartValuesSha256",
    # "imageDigests", "shimSha256", ...}; see conformance.recording.system_under_test.
    system_under_test: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.finished is not None

    @classmethod
    def from_dict(cls, raw: Any) -> RunMetadata:
        obj = _as_object(raw)
        return cls(
            run_id=_str(obj, "runId"),
            project_commit=_str(obj, "projectCommit"),
            started=_timestamp(obj, "started") or "",
            finished=_timestamp(obj, "finished", required=False),
            tool_version=_str(obj, "toolVersion"),
            backend=_choice(obj, "backend", BACKENDS),
            hami_namespace=_str(obj, "hamiNamespace"),
            chart_values=_mapping(obj, "chartValues"),
            profile=_str(obj, "profile", required=False),
            profile_version=_str(obj, "profileVersion", required=False),
            url=_str(obj, "url", required=False),
            product=_str_map(obj, "product"),
            required_rules=_rule_list(obj, "requiredRules"),
            selection=_mapping(obj, "selection"),
            system_under_test=_mapping(obj, "systemUnderTest"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "projectCommit": self.project_commit,
            "started": self.started,
            "finished": self.finished,
            "toolVersion": self.tool_version,
            "backend": self.backend,
            "hamiNamespace": self.hami_namespace,
            "chartValues": self.chart_values,
            "profile": self.profile,
            "profileVersion": self.profile_version,
            "url": self.url,
            "product": self.product,
            "requiredRules": self.required_rules,
            "selection": self.selection,
            "systemUnderTest": self.system_under_test,
        }


# --- environment -------------------------------------------------------------------------------


@dataclass
class NodeInfo:
    name: str
    kubelet_version: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    capacity: dict[str, str] = field(default_factory=dict)
    allocatable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> NodeInfo:
        obj = _as_object(raw)
        return cls(
            name=_str(obj, "name"),
            kubelet_version=_str(obj, "kubeletVersion", required=False),
            labels=_str_map(obj, "labels"),
            capacity=_str_map(obj, "capacity"),
            allocatable=_str_map(obj, "allocatable"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kubeletVersion": self.kubelet_version,
            "labels": self.labels,
            "capacity": self.capacity,
            "allocatable": self.allocatable,
        }


@dataclass
class DeviceInfo:
    """One device as a node's register annotation (or capacity, for vendors without one) lists it."""

    node: str
    vendor: str
    id: str
    type: str = ""
    index: int | None = None
    count: int | None = None  # how many pods may share it (split count)
    devmem: int | None = None  # MiB
    devcore: int | None = None
    numa: int | None = None
    mode: str = ""
    health: bool = True

    @classmethod
    def from_dict(cls, raw: Any) -> DeviceInfo:
        obj = _as_object(raw)
        health = obj.get("health", True)
        if not isinstance(health, bool):
            raise RunInputError("health", f"Invalid value: {health!r}: must be a boolean")
        return cls(
            node=_str(obj, "node"),
            vendor=_choice(obj, "vendor", VENDORS),
            id=_str(obj, "id"),
            type=_str(obj, "type", required=False),
            index=_opt_int(obj, "index"),
            count=_opt_int(obj, "count"),
            devmem=_opt_int(obj, "devmem"),
            devcore=_opt_int(obj, "devcore"),
            numa=_opt_int(obj, "numa"),
            mode=_str(obj, "mode", required=False),
            health=health,
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_empty(
            {
                "node": self.node,
                "vendor": self.vendor,
                "id": self.id,
                "type": self.type,
                "index": self.index,
                "count": self.count,
                "devmem": self.devmem,
                "devcore": self.devcore,
                "numa": self.numa,
                "mode": self.mode,
                "health": self.health,
            }
        )


@dataclass
class DriverInfo:
    node: str
    vendor: str
    version: str
    runtime_version: str = ""  # e.g. the CUDA driver API version

    @classmethod
    def from_dict(cls, raw: Any) -> DriverInfo:
        obj = _as_object(raw)
        return cls(
            node=_str(obj, "node"),
            vendor=_choice(obj, "vendor", VENDORS),
            version=_str(obj, "version"),
            runtime_version=_str(obj, "runtimeVersion", required=False),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "vendor": self.vendor,
            "version": self.version,
            "runtimeVersion": self.runtime_version,
        }


@dataclass
class Environment:
    """What the run was pointed at, captured once the cluster is up."""

    server_version: dict[str, Any] = field(default_factory=dict)  # /version as the apiserver serves it
    nodes: list[NodeInfo] = field(default_factory=list)
    devices: list[DeviceInfo] = field(default_factory=list)
    drivers: list[DriverInfo] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping (image digests)

    @property
    def kubelet_versions(self) -> dict[str, str]:
        return {n.name: n.kubelet_version for n in self.nodes if n.kubelet_version}

    @classmethod
    def from_dict(cls, raw: Any) -> Environment:
        obj = _as_object(raw)
        return cls(
            server_version=_mapping(obj, "serverVersion"),
            nodes=_list(obj, "nodes", NodeInfo.from_dict),
            devices=_list(obj, "devices", DeviceInfo.from_dict),
            drivers=_list(obj, "drivers", DriverInfo.from_dict),
            extra=_mapping(obj, "extra"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "serverVersion": self.server_version,
            "nodes": [n.to_dict() for n in self.nodes],
            "devices": [d.to_dict() for d in self.devices],
            "drivers": [d.to_dict() for d in self.drivers],
            "extra": self.extra,
        }


# --- cases -------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case in one matrix cell (vendor x minor) and what it concluded.

    ``unknown`` means the case could not apply (e.g. enforcement on a vendor with no emulation);
    it must carry its reason in ``message`` and is never counted as passed.
    """

    vendor: str
    minor: str
    capability: str
    case_id: str  # the pytest node id, parameters included
    rule_id: str
    rule_text: str
    requirement: str
    outcome: str
    duration_s: float = 0.0
    message: str = ""
    attachments: list[str] = field(default_factory=list)  # relative to the run directory, or absolute
    # CNCF AI conformance requirement ids this case is evidence for; None = derive from capability.
    ai_requirements: list[str] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.vendor, self.minor, self.case_id)

    @property
    def test_name(self) -> str:
        """A stable name for the case across the bundle (in-toto test lists, anchors)."""
        return f"{self.vendor}/{self.minor}/{self.case_id} [{self.rule_id}]"

    @classmethod
    def from_dict(cls, raw: Any) -> CaseResult:
        obj = _as_object(raw)
        minor = _str(obj, "minor")
        if not MINOR_RE.match(minor):
            raise RunInputError("minor", f'Invalid value: "{minor}": must be a Kubernetes minor like "1.33"')
        rule_id = _str(obj, "ruleId")
        if not RULE_ID_RE.match(rule_id):
            raise RunInputError(
                "ruleId", f'Invalid value: "{rule_id}": must look like "SCHED-FIT-1" (upper case, dashes)'
            )
        outcome = _choice(obj, "outcome", OUTCOMES)
        message = _str(obj, "message", required=False)
        if outcome == "unknown" and not message.strip():
            raise RunInputError(
                "message", "Required value: an unknown outcome must say why the case could not apply"
            )
        ai = obj.get("aiRequirements")
        ai_requirements: list[str] | None = None
        if ai is not None:
            ai_requirements = _list(obj, "aiRequirements", _plain_str)
            for i, req in enumerate(ai_requirements):
                if req not in AI_REQUIREMENTS:
                    opts = ", ".join(f'"{r}"' for r in AI_REQUIREMENTS)
                    raise RunInputError(
                        f"aiRequirements[{i}]", f'Unsupported value: "{req}": supported values: {opts}'
                    )
        return cls(
            vendor=_choice(obj, "vendor", VENDORS),
            minor=minor,
            capability=_choice(obj, "capability", CAPABILITIES),
            case_id=_str(obj, "caseId"),
            rule_id=rule_id,
            rule_text=_str(obj, "ruleText"),
            requirement=_choice(obj, "requirement", REQUIREMENTS),
            outcome=outcome,
            duration_s=_number(obj, "durationSeconds"),
            message=message,
            attachments=_list(obj, "attachments", _plain_str),
            ai_requirements=ai_requirements,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "vendor": self.vendor,
            "minor": self.minor,
            "capability": self.capability,
            "caseId": self.case_id,
            "ruleId": self.rule_id,
            "ruleText": self.rule_text,
            "requirement": self.requirement,
            "outcome": self.outcome,
            "durationSeconds": self.duration_s,
            "message": self.message,
            "attachments": list(self.attachments),
        }
        if self.ai_requirements is not None:
            out["aiRequirements"] = list(self.ai_requirements)
        return out


def minor_key(minor: str) -> tuple[int, ...]:
    """Sort key so that 1.9 < 1.18 < 1.33 (string order would put 1.9 last)."""
    return tuple(int(p) for p in minor.split("."))


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Run:
    metadata: RunMetadata
    environment: Environment
    cases: list[CaseResult] = field(default_factory=list)
    # Where relative attachment paths are resolved; set by the loader, never serialised.
    base_dir: Path | None = field(default=None, compare=False)

    @property
    def vendors(self) -> list[str]:
        return sorted({c.vendor for c in self.cases}, key=VENDORS.index)

    @property
    def minors(self) -> list[str]:
        return sorted({c.minor for c in self.cases}, key=minor_key)

    @classmethod
    def from_dict(cls, raw: Any, *, base_dir: Path | None = None) -> Run:
        obj = _as_object(raw)
        version = obj.get("apiVersion")
        if version != API_VERSION:
            raise RunInputError(
                "apiVersion", f'Unsupported value: {version!r}: supported values: "{API_VERSION}"'
            )
        try:
            metadata = RunMetadata.from_dict(_required(obj, "metadata"))
        except RunInputError as e:
            raise e.under("metadata") from None
        try:
            environment = Environment.from_dict(obj.get("environment") or {})
        except RunInputError as e:
            raise e.under("environment") from None
        cases = _list(obj, "cases", CaseResult.from_dict)
        check_unique(cases)
        return cls(metadata=metadata, environment=environment, cases=cases, base_dir=base_dir)

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "metadata": self.metadata.to_dict(),
            "environment": self.environment.to_dict(),
            "cases": [c.to_dict() for c in self.cases],
        }


def check_unique(cases: list[CaseResult]) -> None:
    seen: dict[tuple[str, str, str], int] = {}
    for i, case in enumerate(cases):
        if case.key in seen:
            name = f"{case.vendor}/{case.minor}/{case.case_id}"
            first = seen[case.key]
            raise RunInputError(f"cases[{i}]", f'Duplicate value: "{name}" (first at cases[{first}])')
        seen[case.key] = i
