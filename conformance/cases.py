"""How a suite case declares the rule it checks, and how pytest outcomes become report outcomes.

A case is a test function decorated with :func:`rule`::

    @rule("ADM-SCHEDNAME-1", "A pod requesting nvidia.com/gpu is given schedulerName hami-scheduler")
    def test_scheduler_name_set(...): ...

Its capability is the module's capability marker, its vendor the module's vendor marker. A case
that cannot apply calls :func:`unknown` with the reason: it is reported as ``unknown`` (a skip with
the ``could not apply:`` prefix in JUnit and Allure), never as passed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, NoReturn, TypeVar

import pytest

UNKNOWN_PREFIX = "could not apply:"  # the same prefix reports.allure's categories match on
RULE_ID_RE = re.compile(r"^[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+$")

VENDORS = (
    "nvidia", "ascend", "cambricon", "hygon", "iluvatar", "mthreads", "metax", "enflame", "kunlunxin",
    "vastai", "biren", "awsneuron", "amd",
)
VENDOR_TITLES = {
    "nvidia": "NVIDIA GPUs",
    "ascend": "Huawei Ascend NPUs",
    "cambricon": "Cambricon MLUs",
    "hygon": "Hygon DCUs",
    "iluvatar": "Iluvatar GPUs",
    "mthreads": "Moore Threads GPUs",
    "metax": "MetaX GPUs",
    "enflame": "Enflame GCUs",
    "kunlunxin": "Kunlunxin XPUs",
    "vastai": "Vastai accelerators",
    "biren": "Biren GPUs",
    "awsneuron": "AWS Neuron devices",
    "amd": "AMD GPUs",
}
CAPABILITIES = {
    "registration": "device plugins register devices (annotations, capacity, handshake)",
    "admission": "the mutating webhook's decisions (schedulerName, denials, defaults)",
    "scheduling": "filter and bind: fit/reject reasons, policies, selection, cordon, quota",
    "allocation": "Allocate gives a container exactly its assigned devices and limits",
    "isolation": "containers see only their devices; sharing one GPU between pods",
    "enforcement": "in-container limits: memory OOM at the limit, reported total, compute band",
    "metrics": "scheduler and monitor series reflect the allocations",
    "versions": "the stack's scheduler configuration is accepted by each Kubernetes minor",
}

F = TypeVar("F", bound=Callable[..., Any])


class CaseNotApplicable(Exception):
    """Raised through :func:`unknown`; kept as a type so callers can tell it from a failure."""


AI_REQUIREMENTS = ("gpu_sharing", "virtualized_accelerator", "secure_accelerator_access")


def rule(rule_id: str, text: str, *, ai: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Mark a test as a conformance case checking contract rule ``rule_id`` (one line of text).

    ``ai`` names the CNCF AI conformance requirements the case is evidence for (default: derived
    from the capability by the report builder).
    """
    for req in ai or ():
        if req not in AI_REQUIREMENTS:
            raise ValueError(f"rule {rule_id}: unknown AI conformance requirement {req!r}")
    if not RULE_ID_RE.match(rule_id):
        raise ValueError(f'rule id "{rule_id}" must look like "SCHED-FIT-1" (upper case, dashes)')
    if not text.strip() or "\n" in text:
        raise ValueError(f"rule {rule_id}: the text must be one non-empty line")

    def deco(fn: F) -> F:
        return pytest.mark.rule(rule_id, text, ai=ai)(fn)  # type: ignore[no-any-return]

    return deco


def unknown(reason: str) -> NoReturn:
    """End the case as ``unknown``: it could not apply here (reason required)."""
    if not reason.strip():
        raise ValueError("unknown() needs a reason")
    pytest.skip(f"{UNKNOWN_PREFIX} {reason}")


def violated(rule_id: str, detail: str) -> str:
    """An assertion message that names the rule, so a failure reads back to the contract."""
    return f"[{rule_id}] {detail}"


# The rule of the case running now. The plugin sets it around each case (from its rule marker), so
# helpers that fail on their own (a wait that times out, a probe without a result) name the rule
# of the case they serve without every call site passing it down.
_CURRENT_RULE: ContextVar[str | None] = ContextVar("hami_conformance_rule", default=None)


def current_rule() -> str | None:
    """Rule id of the running conformance case; None outside one."""
    return _CURRENT_RULE.get()


def set_current_rule(rule_id: str | None) -> Token[str | None]:
    return _CURRENT_RULE.set(rule_id)


def reset_current_rule(token: Token[str | None]) -> None:
    _CURRENT_RULE.reset(token)


def with_rule(message: str, rule_id: str | None = None) -> str:
    """``message`` prefixed with ``[RULE-ID]`` (the given one, else the running case's) unless it
    already names that rule; unchanged when there is no rule to name."""
    rid = rule_id or current_rule()
    if not rid or f"[{rid}]" in message:
        return message
    return f"[{rid}] {message}"


def fail(detail: str, rule_id: str | None = None) -> NoReturn:
    """Fail the running case with ``detail`` under its rule (or ``rule_id``)."""
    raise AssertionError(with_rule(detail, rule_id))


def map_outcome(phases: dict[str, str], skip_message: str = "") -> str:
    """Report outcome of one case from its pytest phase outcomes (``setup``/``call``/``teardown``).

    Any failed phase fails the case; a skip with the unknown prefix is ``unknown``; other skips are
    ``skipped``; only a passed call (and no failure anywhere) is ``passed``. A case with no call
    phase and no skip (setup error) is failed, never passed.
    """
    if any(v == "failed" for v in phases.values()):
        return "failed"
    if any(v == "skipped" for v in phases.values()):
        return "unknown" if skip_message.lstrip().startswith(UNKNOWN_PREFIX) else "skipped"
    if phases.get("call") == "passed":
        return "passed"
    return "failed"
