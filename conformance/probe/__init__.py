"""The probe workload: a small stdlib-only program run as a container that prints what it sees.

``python -m conformance.probe [--alloc-mib N] [--kernel-seconds T] [--load-seconds T]`` on the testbed
(the image catalog maps ``*/hami-conformance-probe:*`` to it), or the image built from the
``Dockerfile`` next to this file on a real cluster.
"""

from conformance.probe.driver import (
    CUDA_ERROR_OUT_OF_MEMORY,
    CUDA_SUCCESS,
    KERNEL_IMAGE,
    MIB,
    Cuda,
    Nvml,
    ProbeError,
)
from conformance.probe.result import MARKER, find_result, result_line
from conformance.probe.run import PROBE_VERSION, relevant_env, run_probe

__all__ = [
    "CUDA_ERROR_OUT_OF_MEMORY",
    "CUDA_SUCCESS",
    "KERNEL_IMAGE",
    "MARKER",
    "MIB",
    "PROBE_VERSION",
    "Cuda",
    "Nvml",
    "ProbeError",
    "find_result",
    "relevant_env",
    "result_line",
    "run_probe",
]
