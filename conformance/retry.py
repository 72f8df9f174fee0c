"""Flaky detection: a failed conformance case is run once more, and what the retry saw is written
into the first attempt's failure, never over it.

``hami-conformance run`` turns this on for its cells (``$HAMI_CONFORMANCE_RETRY=1``; ``run
--no-retry`` turns it off), and so does the self-test for its fault sessions (a catch must
reproduce); plain pytest sessions do not retry. The case keeps
the outcome of its first attempt (``failed``), so a flaky required rule still fails the cell; its
message ends with :data:`FLAKY` when the retry passed or :data:`STABLE` when it failed again. The
matrix report (``reports.matrix``) counts the first as flaky, the second as a reproducible failure.
Only the first attempt's reports are logged, so the recorder, JUnit and the terminal see one case.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

from conformance import progress
from reports.matrix import FLAKY_NOTE as FLAKY
from reports.matrix import STABLE_NOTE as STABLE

ENV = "HAMI_CONFORMANCE_RETRY"
HEAD_LIMIT = 1300


def enabled() -> bool:
    return os.environ.get(ENV, "") == "1"


def _failed(reports: list[Any]) -> bool:
    return any(r.failed for r in reports)


def _annotate(reports: list[Any], note: str) -> None:
    for r in reports:
        if r.failed:
            # a plain-text longrepr keeps the crash line first: the recorder's message is that line
            crash = getattr(getattr(r, "longrepr", None), "reprcrash", None)
            head = crash.message if crash is not None else str(r.longreprtext)
            if len(head) > HEAD_LIMIT:  # the recorder keeps 1500 characters: the note must survive that
                head = head[:HEAD_LIMIT] + "…"
            r.longrepr = f"{head} {note}\n\n{r.longreprtext}"
            r.user_properties.append(("hami-conformance.retry", note))


class RetryHooks:
    """Takes over pytest's run of one item (as pytest-rerunfailures does): run, and on a failure of
    a rule-marked case run it again without logging, then log the first attempt, annotated."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if item.get_closest_marker("rule") is None:
            return None  # not a conformance case: pytest's own protocol
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        first = runtestprotocol(item, nextitem=nextitem, log=False)
        if _failed(first):
            item._initrequest()  # type: ignore[attr-defined]  # fresh fixture request for the re-run
            again = runtestprotocol(item, nextitem=nextitem, log=False)
            passed = not _failed(again) and any(r.when == "call" and r.passed for r in again)
            _annotate(first, FLAKY if passed else STABLE)
            mark = item.get_closest_marker("rule")
            progress.emit(
                "retry",
                case=item.nodeid,
                rule=str(mark.args[0]) if mark and mark.args else "",
                outcome="passed" if passed else "failed",
            )
        for report in first:
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True
