"""From pytest reports to the run directory the report builder reads (``reports.runio``).

The controller (or the only process, without xdist) owns one :class:`Recorder`: it collects the
phases of each case as the reports arrive and appends one ``CaseResult`` when the case's teardown
is reported, so a crash leaves every finished case on disk.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.cases import map_outcome, with_rule
from reports.model import CaseResult, DeviceInfo, Environment, NodeInfo
from reports.runio import RunWriter

PROP = "hami-conformance"  # user_properties key carrying the case's identity


@dataclass
class CaseIdentity:
    vendor: str
    minor: str
    capability: str
    rule_id: str
    rule_text: str
    requirement: str
    ai: list[str] | None = None


@dataclass
class _Pending:
    phases: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    skip_message: str = ""
    duration: float = 0.0
    attachments: list[str] = field(default_factory=list)
    identity: CaseIdentity | None = None


def skip_text(longrepr: Any) -> str:
    text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
    return text.removeprefix("Skipped: ")


def failure_text(report: Any, limit: int = 1500) -> str:
    """The assertion message (which names the rule) rather than the whole traceback."""
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(getattr(report, "longreprtext", "") or report.longrepr)
    prefix = "" if report.when == "call" else f"error in {report.when}: "
    return (prefix + text)[:limit]


class Recorder:
    def __init__(self, writer: RunWriter) -> None:
        self.writer = writer
        self.pending: dict[str, _Pending] = {}
        self.recorded: list[CaseResult] = []

    def on_report(self, report: Any) -> CaseResult | None:
        identity = None
        attachments: list[str] = []
        for key, value in getattr(report, "user_properties", []) or []:
            if key == PROP:
                identity = CaseIdentity(**value)
            elif key == f"{PROP}.attachment":
                attachments.append(str(value))
        if identity is None:
            return None  # not a conformance case
        p = self.pending.setdefault(report.nodeid, _Pending())
        p.identity = identity
        p.phases[report.when] = report.outcome
        p.duration += float(getattr(report, "duration", 0.0) or 0.0)
        for a in attachments:
            if a not in p.attachments:
                p.attachments.append(a)
        if report.outcome == "failed":
            # every failure names its case's rule, whatever raised it (an API error, a KeyError)
            p.messages.append(with_rule(failure_text(report), identity.rule_id))
        elif report.outcome == "skipped":
            p.skip_message = skip_text(report.longrepr)
        if report.when != "teardown":
            return None
        del self.pending[report.nodeid]
        outcome = map_outcome(p.phases, p.skip_message)
        message = (
            "; ".join(p.messages)
            if outcome == "failed"
            else p.skip_message
            if outcome in ("unknown", "skipped")
            else ""
        )
        case = CaseResult(
            vendor=identity.vendor,
            minor=identity.minor,
            capability=identity.capability,
            case_id=report.nodeid,
            rule_id=identity.rule_id,
            rule_text=identity.rule_text,
            requirement=identity.requirement,
            outcome=outcome,
            duration_s=round(p.duration, 3),
            message=message,
            attachments=[a for a in p.attachments if Path(a).is_file()],
            ai_requirements=identity.ai,
        )
        self.writer.append(case)
        self.recorded.append(case)
        return case


def project_commit(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


STACK_PATHS = ("hami_stack",)  # untracked files here are part of the system under test
MAX_DIRTY_FILES = 200


def _git(repo: Path, *args: str) -> bytes | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def working_tree(repo: Path, stack_paths: tuple[str, ...] = STACK_PATHS) -> dict[str, Any]:
    """The checkout as it is, not as its commit says: ``commit``, ``dirty``, ``diffSha256`` (of
    ``git diff HEAD --binary`` plus every untracked, not ignored file under ``stack_paths``, by
    path and content) and the files that differ. A bundle from a modified checkout says so."""
    commit = project_commit(repo)
    diff = _git(repo, "diff", "HEAD", "--binary")
    if diff is None:
        return {"commit": commit, "dirty": None, "diffSha256": "", "dirtyFiles": [],
                "note": "not a git checkout (or git unavailable): the tree could not be checked"}
    changed = (_git(repo, "diff", "HEAD", "--name-only", "-z") or b"").split(b"\0")
    untracked = (_git(repo, "ls-files", "--others", "--exclude-standard", "-z", "--", *stack_paths)
                 or b"").split(b"\0")
    untracked = sorted(u for u in untracked if u)
    h = hashlib.sha256(diff)
    for rel in untracked:
        path = repo / rel.decode(errors="surrogateescape")
        try:
            content = hashlib.sha256(path.read_bytes()).hexdigest().encode()
        except OSError:
            content = b"unreadable"
        h.update(b"\0untracked\0" + rel + b"\0" + content)
    names = {c.decode(errors="replace") for c in changed if c}
    files = sorted(names | {u.decode(errors="replace") for u in untracked})
    dirty = bool(diff) or bool(untracked)
    return {
        "commit": commit,
        "dirty": dirty,
        "diffSha256": h.hexdigest() if dirty else "",
        "dirtyFiles": files[:MAX_DIRTY_FILES],
        "dirtyFileCount": len(files),
    }


def system_under_test(
    repo: Path, cluster_system: dict[str, Any], chart_values: dict[str, Any]
) -> dict[str, Any]:
    """The run's ``systemUnderTest`` record: the working tree, then what the backend knows about
    the installed stack; without a backend digest, the chart values as given are digested."""
    out = working_tree(repo)
    out.update(cluster_system)
    if "chartValuesSha256" not in out:
        canonical = json.dumps(chart_values, sort_keys=True, separators=(",", ":")).encode()
        out["chartValuesSha256"] = hashlib.sha256(canonical).hexdigest()
        out["chartValuesSource"] = "as given to the backend (the installed defaults are not known)"
    return out


def running_images(kube: Any, namespace: str) -> dict[str, str]:
    """``image -> imageID`` of every container of HAMi's pods, as the kubelets report them (on a
    real cluster the imageID carries the registry digest the node pulled)."""
    from kubeclient.client import ApiError

    try:
        pods = kube.get(f"/api/v1/namespaces/{namespace}/pods").get("items") or []
    except ApiError:
        return {}
    out: dict[str, str] = {}
    for pod in pods:
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            if cs.get("image"):
                out[str(cs["image"])] = str(cs.get("imageID") or "")
    return dict(sorted(out.items()))


def capture_environment(kube: Any, version: dict[str, Any], extra: dict[str, Any]) -> Environment:
    from conformance import contract as C

    nodes, devices = [], []
    for n in kube.get("/api/v1/nodes").get("items") or []:
        meta, status = n["metadata"], n.get("status") or {}
        nodes.append(
            NodeInfo(
                name=meta["name"],
                kubelet_version=str((status.get("nodeInfo") or {}).get("kubeletVersion", "")),
                labels={k: str(v) for k, v in (meta.get("labels") or {}).items()},
                capacity={k: str(v) for k, v in (status.get("capacity") or {}).items()},
                allocatable={k: str(v) for k, v in (status.get("allocatable") or {}).items()},
            )
        )
        reg = (meta.get("annotations") or {}).get(C.NVIDIA_REGISTER)
        if reg:
            try:
                for d in C.parse_register(reg):
                    devices.append(
                        DeviceInfo(
                            node=meta["name"],
                            vendor="nvidia",
                            id=d.id,
                            type=d.type,
                            index=d.index,
                            count=d.count,
                            devmem=d.devmem,
                            devcore=d.devcore,
                            numa=d.numa,
                            mode=d.mode,
                            health=d.health,
                        )
                    )
            except C.ContractError as e:
                extra.setdefault("registerErrors", {})[meta["name"]] = str(e)
    return Environment(server_version=version, nodes=nodes, devices=devices, extra=extra)
