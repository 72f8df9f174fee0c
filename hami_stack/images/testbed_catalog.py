"""Image catalog entries that let testbed node agents run the chart's containers.

The chart names real commands (``scheduler``, ``nvidia-device-plugin``, ``kube-scheduler`` ...) the way a
real image provides them. On the testbed a container sees the host's filesystem, so the entries put
directories holding same-named launchers first on ``PATH``:

* ``*/hami:*`` (the stack image): ``bin/`` (the very scripts the Dockerfile installs), with
  ``HAMI_PYTHON`` = this interpreter running ``testbed_toolkit.py``, which injects the emulated
  driver libraries when the container asks for GPUs (``NVIDIA_VISIBLE_DEVICES``) as the NVIDIA
  container toolkit would;
* ``registry.k8s.io/kube-scheduler:*`` (and ``k8s.gcr.io``): ``testbed_bin/kube-scheduler`` runs the
  testbed scheduler, which speaks each minor's flags and config formats.

Use :func:`register_all` in the node agents' process, or :func:`write_catalog` and point
``$TESTBED_IMAGE_CATALOG`` at the file before ``python -m testbed up``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KUBE_SCHEDULER_IMAGES = ("registry.k8s.io/kube-scheduler:*", "k8s.gcr.io/kube-scheduler:*")
HAMI_IMAGE = "*/hami:*"


def entries(python: str = sys.executable) -> list[dict[str, Any]]:
    """Catalog entries (``{match, entrypoint, cmd, env}``) with absolute paths of this checkout."""
    common = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    out: list[dict[str, Any]] = [
        {
            "match": HAMI_IMAGE,
            "entrypoint": [],
            "cmd": [],
            "env": {
                **common,
                "PATH": f"{HERE / 'bin'}:{SYSTEM_PATH}",
                "HAMI_PYTHON": f"{python} {HERE / 'testbed_toolkit.py'}",
            },
        }
    ]
    for match in KUBE_SCHEDULER_IMAGES:
        out.append(
            {
                "match": match,
                "entrypoint": [python, "-m", "testbed.scheduler"],
                "cmd": [],
                "env": {**common, "PATH": f"{HERE / 'testbed_bin'}:{SYSTEM_PATH}", "TESTBED_PYTHON": python},
            }
        )
    return out


def write_catalog(path: str | Path, python: str = sys.executable) -> Path:
    out = Path(path)
    out.write_text(yaml.safe_dump({"images": entries(python)}, sort_keys=False))
    return out


def register_all(python: str = sys.executable) -> None:
    """Add the entries to this process's catalog (they win over the built-in placeholders)."""
    from testbed.node import images

    for e in reversed(entries(python)):  # register() prepends: keep our order
        images.register(e["match"], e["entrypoint"], e["cmd"], e["env"])


if __name__ == "__main__":
    if len(sys.argv) == 2:
        print(write_catalog(sys.argv[1]))
    else:
        sys.stdout.write(yaml.safe_dump({"images": entries()}, sort_keys=False))
