"""What a run concluded: counts, the vendor x minor matrix, the overall verdict, and the CNCF AI
conformance requirement each case is evidence for. Every renderer reads these, so the Markdown,
HTML, results.json, in-toto predicate and self-assessment can never disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

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

PASSED, WARNED, INCOMPLETE, FAILED = "PASSED", "WARNED", "INCOMPLETE", "FAILED"
VERDICTS = (PASSED, WARNED, INCOMPLETE, FAILED)  # worst last
# The one mapping from a verdict to a process exit code (hami-conformance run, pytest sessions of
# the suites). 4 stays bad input and 5 a run that produced no verdict, as documented in the CLI.
EXIT_CODES = {PASSED: 0, FAILED: 1, INCOMPLETE: 2, WARNED: 3}
EXIT_BAD_INPUT, EXIT_NO_VERDICT = 4, 5


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


@dataclass
class Decision:
    """What a run proves, and why: the single source of every verdict the project shows.

    * FAILED: a case of a required rule failed.
    * INCOMPLETE: not everything the profile requires was tried: a required rule has no case that
      ran (filtered out, deselected, never reached, skipped), the cases were filtered (``-k``,
      ``-m``, node ids), the session was interrupted or never finished.
    * WARNED: everything required ran, nothing required failed, but something is short of proof
      (an optional rule failed; a case could not apply).
    * PASSED: every required rule ran and all its cases passed, in a complete, unfiltered run.
    """

    verdict: str
    reasons: list[str] = field(default_factory=list)
    failed_required: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # required rules (per cell) that did not run

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exitCode": self.exit_code,
            "reasons": list(self.reasons),
            "failedRequiredRules": list(self.failed_required),
            "requiredRulesNotRun": list(self.not_run),
        }


def _cell_label(run: Run, vendor: str, minor: str) -> str:
    return "" if len(matrix(run)) <= 1 else f" ({vendor} {minor})"


def decide(run: Run) -> Decision:
    meta = run.metadata
    failed_required = sorted(
        {c.rule_id for c in run.cases if c.outcome == "failed" and c.requirement == "required"}
    )
    cells = sorted(matrix(run)) or [("", "")]
    not_run: list[str] = []
    for vendor, minor in cells:
        in_cell = [c for c in run.cases if (c.vendor, c.minor) == (vendor, minor)] if vendor else []
        required = set(meta.required_rules or ())
        # several vendors in one cell (--vendor a,b): the run's required rules are the union of their
        # profiles; a rule another vendor's cases ran is that vendor's, not missing here
        required -= {c.rule_id for c in run.cases if c.minor == minor and vendor and c.vendor != vendor}
        required |= {c.rule_id for c in in_cell if c.requirement == "required"}
        # a rule ran when it has cases and none of them was skipped (a skipped parametrisation of a
        # required rule leaves part of it untried)
        ran = {c.rule_id for c in in_cell} - {c.rule_id for c in in_cell if c.outcome == "skipped"}
        label = _cell_label(run, vendor, minor)
        not_run += [f"{rule}{label}" for rule in sorted(required - ran)]
    selection = meta.selection or {}
    reasons: list[str] = []
    if failed_required:
        reasons.append(f"required rule(s) failed: {', '.join(failed_required)}")
    if not meta.complete:
        reasons.append("the run did not finish")
    if selection.get("interrupted"):
        reasons.append(f"the session was interrupted ({selection.get('interruptedBy') or 'stopped early'})")
    if selection.get("filtered"):
        why = "; ".join(str(r) for r in selection.get("reasons") or []) or "cases were filtered"
        reasons.append(f"the cases were filtered: {why}")
    if not run.cases:
        reasons.append("no case ran")
    if not_run:
        shown = ", ".join(not_run[:8]) + (f" and {len(not_run) - 8} more" if len(not_run) > 8 else "")
        reasons.append(f"{len(not_run)} required rule(s) did not run: {shown}")
    incomplete = bool(
        not meta.complete
        or selection.get("interrupted")
        or selection.get("filtered")
        or not run.cases
        or not_run
    )
    warned = [
        c for c in run.cases
        if (c.outcome == "failed" and c.requirement != "required")
        or (c.outcome == "unknown" and c.requirement != "not-applicable")
    ]
    if warned:
        rules = sorted({f"{c.rule_id} {c.outcome}" for c in warned})
        reasons.append(f"short of proof: {', '.join(rules)}")
    if failed_required:
        result = FAILED
    elif incomplete:
        result = INCOMPLETE
    elif warned:
        result = WARNED
    else:
        result = PASSED
        reasons.append("every required rule ran and passed")
    return Decision(result, reasons, failed_required, not_run)


def verdict(run: Run) -> str:
    """The run's verdict (see :class:`Decision`); never PASSED short of full proof."""
    return decide(run).verdict


def worst(verdicts: Iterable[str]) -> str:
    """The verdict of several cells: the worst of theirs (FAILED > INCOMPLETE > WARNED > PASSED)."""
    found = list(verdicts)
    return max(found, key=VERDICTS.index) if found else INCOMPLETE


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
