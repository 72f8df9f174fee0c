"""What ``testbed up`` asks before it starts anything: which control plane runs this minor.

``--control-plane`` (default ``$TESTBED_CONTROL_PLANE``, else ``emulated``):
- ``emulated``: the testbed's own apiserver, scheduler and controllers (every minor 1.18-1.33);
- ``real``: the minor's kube-apiserver, kube-controller-manager and kube-scheduler from the build cache;
  without a build: an error naming the minor and the build command, exit 4, nothing started;
- ``auto``: real when the minor is built, else emulated (and it says which).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from .cluster import EXIT_NO_BUILD, RealControlPlaneError, require_build

MODES = ("real", "emulated", "auto")
ENV = "TESTBED_CONTROL_PLANE"


def default_mode() -> str:
    mode = os.environ.get(ENV, "emulated") or "emulated"
    return mode if mode in MODES else "emulated"


def parse_minor(k8s: str) -> int:
    m = re.fullmatch(r"v?1\.(\d+)(?:\.\d+)?", k8s.strip())
    if not m:
        raise RealControlPlaneError(f"--k8s {k8s!r} is not a Kubernetes minor (like 1.33)", code=2)
    return int(m.group(1))


def decide(k8s: str, mode: str) -> tuple[str, Any]:
    """(``real`` with its :class:`~testbed.controlplane.build.Built`) or (``emulated``, None)."""
    if mode not in MODES:
        raise RealControlPlaneError(f"--control-plane {mode!r}: expected one of {', '.join(MODES)}", code=2)
    if mode == "emulated":
        return "emulated", None
    minor = parse_minor(k8s)
    try:
        built = require_build(minor)
    except RealControlPlaneError:
        if mode == "real":
            raise
        print(f"control plane: emulated (no real build of 1.{minor}; "
              f"`python -m testbed.controlplane build 1.{minor}` makes one)", file=sys.stderr, flush=True)
        return "emulated", None
    if mode == "auto":
        print(f"control plane: real {built.release.version} from {built.path}", file=sys.stderr, flush=True)
    return "real", built


__all__ = ["EXIT_NO_BUILD", "MODES", "RealControlPlaneError", "decide", "default_mode"]
