"""``python -m testbed.hardware.probe``: the conformance probe, kept under its old name.

The probe lives in ``conformance/probe`` (one place for it); this module re-exports it.
"""

from __future__ import annotations

import sys

from conformance.probe import (  # noqa: F401  (re-exported for existing callers)
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    KERNEL_IMAGE,
    MIB,
    Cuda,
    Nvml,
    ProbeError,
    run_probe,
)
from conformance.probe.cli import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m testbed.hardware.probe")


if __name__ == "__main__":
    sys.exit(main())
