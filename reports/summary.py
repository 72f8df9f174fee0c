"""What a run concluded: counts, the vendor x minor matrix, the overall verdict, and the CNCF AI
conformance requirement each case is evidence for. Every renderer reads these, so the Markdown,
HTML, results.json, in-toto predicate and self-assessment can never disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from reports.model import AI_REQUIREMENTS, CaseResult, Run

# Used when a case does not name its AI requirements itself. Why these: several pods placed on one
# physical GPU (scheduling, allocation) is gpu_sharing; a slice that looks and behaves like a
# smaller device (allocation, enforcement) is virtualized_accelerator; a pod seeing only its own
# device, or none without a request (isolation), is secure_accelerator_access.
DEFAULT_AI_MAP: dict[str, tuple[str, ...]] = {
    "scheduling": ("gpu_sharing",),
    "allocation": ("gpu_sharing", "virtualized_accelerator"),
    "enforcement": ("virtualized_accelerator",),
    "isolation": ("secure_accelerator_access",),
}

PASSED, WARNED, FAILED = "PASSED", "WARNED", "FAILED"


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    unknown: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.unknown

    @property
    def status(self) -> str:
        """The worst outcome present; what a matrix cell is coloured by."""
        for outcome in ("failed", "unknown", "passed", "skipped"):
            if getattr(self, outcome):
                return outcome
        return "empty"

    def to_dict(self) -> dict[str, int]:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "unknown": self.unknown,
            "total": self.total,
        }


def count(cases: Iterable[CaseResult]) -> Counts:
    counts = Counts()
    for case in cases:
        counts.add(case.outcome)
    return counts


def matrix(run: Run) -> dict[tuple[str, str], Counts]:
    cells: dict[tuple[str, str], Counts] = {}
    for case in run.cases:
        cells.setdefault((case.vendor, case.minor), Counts()).add(case.outcome)
    return cells


def verdict(run: Run) -> str:
    """PASSED only when every case that matters passed and the run finished.

    FAILED when a required case failed. Anything short of proof (an optional failure, an unknown
    or skipped case the profile requires, an unfinished run) is WARNED: never PASSED.
    """
    if any(c.outcome == "failed" and c.requirement == "required" for c in run.cases):
        return FAILED
    if not run.metadata.complete or not run.cases:
        return WARNED
    for case in run.cases:
        if case.outcome == "failed":
            return WARNED
        if case.outcome == "unknown" and case.requirement != "not-applicable":
            return WARNED
        if case.outcome == "skipped" and case.requirement == "required":
            return WARNED
    return PASSED


def outcome_lists(run: Run) -> tuple[list[str], list[str], list[str]]:
    """(passed, warned, failed) test names for the in-toto predicate.

    Unknown cases go to ``warnedTests`` (they did not pass, nor did they fail) unless the profile
    says they do not apply; skipped ones are listed nowhere.
    """
    passed = [c.test_name for c in run.cases if c.outcome == "passed"]
    warned = [c.test_name for c in run.cases if c.outcome == "unknown" and c.requirement != "not-applicable"]
    failed = [c.test_name for c in run.cases if c.outcome == "failed"]
    return passed, warned, failed


def ai_requirements_of(case: CaseResult) -> tuple[str, ...]:
    if case.ai_requirements is not None:
        return tuple(case.ai_requirements)
    return DEFAULT_AI_MAP.get(case.capability, ())


def ai_cases(run: Run) -> dict[str, list[CaseResult]]:
    out: dict[str, list[CaseResult]] = {req: [] for req in AI_REQUIREMENTS}
    for case in run.cases:
        for req in ai_requirements_of(case):
            out[req].append(case)
    return out


def ai_status(cases: list[CaseResult]) -> tuple[str, str]:
    """(status, note) in the CNCF checklist's vocabulary, derived from the mapped cases.

    Cases the profile marks not-applicable do not count. Unknown and skipped cases are not proof
    either way, so they can only lower the status from Implemented to Partially Implemented.
    """
    relevant = [c for c in cases if c.requirement != "not-applicable"]
    counts = count(relevant)
    tally = (
        f"{counts.passed} passed, {counts.failed} failed, {counts.unknown} unknown, {counts.skipped} skipped"
    )
    if not relevant:
        return "N/A", "No case of this run applies to this requirement, so it was not assessed."
    if counts.passed and not (counts.failed or counts.unknown or counts.skipped):
        return "Implemented", f"Every mapped case passed ({counts.passed})."
    if counts.passed:
        return "Partially Implemented", f"Mapped cases: {tally}."
    if counts.failed:
        return "Not Implemented", f"No mapped case passed: {tally}."
    return "N/A", f"No mapped case could apply here: {tally}."


def anchor(case: CaseResult) -> str:
    """A stable HTML id for one case (node ids hold characters ids cannot)."""
    return "case-" + hashlib.sha256(case.test_name.encode()).hexdigest()[:12]
