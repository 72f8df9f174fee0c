"""The skip rule of the tests that run upstream HAMi's binaries.

They need the release built (``python -m testbed.upstream build v2.10.0 --source GIT_DIR``: the Go
module proxy refuses upstream's module, so CI has no source to build from) and, because together
they take 2-4 minutes, the opt-in ``HAMI_UPSTREAM_TESTS=1``.
"""

from __future__ import annotations

import os

import pytest

from testbed.upstream.build import Built, installed

TAG = "v2.10.0"
BUILT: Built | None = installed(TAG)


def _reason() -> str:
    if BUILT is None:
        return (
            f"upstream HAMi {TAG} is not built: python -m testbed.upstream build {TAG} --source GIT_DIR "
            "(a clone of Project-HAMi/HAMi; the Go module proxy refuses the module)"
        )
    return "runs upstream HAMi's binaries (2-4 min in all): set HAMI_UPSTREAM_TESTS=1"


requires_build = pytest.mark.skipif(
    BUILT is None or os.environ.get("HAMI_UPSTREAM_TESTS") != "1", reason=_reason()
)
