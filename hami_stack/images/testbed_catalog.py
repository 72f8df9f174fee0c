"""Image catalog entries that let testbed node agents run the chart's stack containers.

The chart names the stack image's commands (``scheduler``, ``nvidia-device-plugin``, ``vGPUmonitor``,
``hami-install-shim``) the way the real image provides them. On the testbed a container sees the
host's filesystem, so the ``*/hami:*`` entry puts ``bin/`` (the very scripts the Dockerfile installs)
first on ``PATH``, with ``HAMI_PYTHON`` = this interpreter and ``PYTHONPATH`` = this checkout. The
node agent itself plays the NVIDIA container toolkit (driver libraries for containers that ask for
GPUs) and maps the kube-scheduler images.

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
HAMI_IMAGE = "*/hami:*"


def entries(python: str = sys.executable) -> list[dict[str, Any]]:
    """Catalog entries (``{match, entrypoint, cmd, env}``) with absolute paths of this checkout."""
    return [
        {
            "match": HAMI_IMAGE,
            "entrypoint": [],
            "cmd": [],
            "env": {
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
                "PATH": f"{HERE / 'bin'}:{SYSTEM_PATH}",
                "HAMI_PYTHON": python,
            },
        }
    ]


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
