"""Certification reports of conformance runs: the run contract, the bundle, its verification.

The pytest plugin writes a run with ``RunWriter``; ``bundle.build`` turns it into a bundle;
``verify.verify`` checks one. ``allure`` holds the files allure-pytest does not write itself.
"""

from reports.model import (
    AI_REQUIREMENTS,
    BACKENDS,
    CAPABILITIES,
    OUTCOMES,
    REQUIREMENTS,
    VENDORS,
    CaseResult,
    DeviceInfo,
    DriverInfo,
    Environment,
    NodeInfo,
    Run,
    RunInputError,
    RunMetadata,
)
from reports.runio import RunWriter, load_run, utc_now

__all__ = [
    "AI_REQUIREMENTS",
    "BACKENDS",
    "CAPABILITIES",
    "OUTCOMES",
    "REQUIREMENTS",
    "VENDORS",
    "CaseResult",
    "DeviceInfo",
    "DriverInfo",
    "Environment",
    "NodeInfo",
    "Run",
    "RunInputError",
    "RunMetadata",
    "RunWriter",
    "load_run",
    "utc_now",
]
