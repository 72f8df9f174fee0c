"""The CI matrix as data: which vendor x minor (x stack) cells exist, in one place.

The GitHub workflow (``.github/workflows/conformance.yml``) asks this module for its cells, tox
has one env per cell (``tox -e nvidia-1.35``; tests check that each planned cell has its env), and
``bench/matrix.py`` runs the same list. Adding a vendor is one line in :data:`VENDORS`.

    python -m reports.matrix_plan github      # cells=[{...}, ...] for $GITHUB_OUTPUT
    python -m reports.matrix_plan list        # one tox env per line
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

# vendor -> (first minor, last minor, stacks). "ours" is hami_stack deployed by its chart; an
# "upstream" stack (upstream HAMi on the testbed) gets its own cells once a backend provides it:
# none does yet (the Go module proxy refuses upstream HAMi's module, so it cannot be built here).
# A vendor is listed once `hami-conformance run --vendor <vendor>` runs on the testbed and its
# profile covers these minors (conformance/profiles/<vendor>.yaml).
VENDORS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "nvidia": (18, 35, ("ours",)),
    "ascend": (18, 35, ("ours",)),
    # the data-driven families, each on its two-node emulated inventory
    "iluvatar": (18, 35, ("ours",)),
    "mthreads": (18, 35, ("ours",)),
    "metax": (18, 35, ("ours",)),
    "kunlunxin": (18, 35, ("ours",)),
    "enflame": (18, 35, ("ours",)),
    "awsneuron": (18, 35, ("ours",)),
    "amd": (18, 35, ("ours",)),
    "vastai": (18, 35, ("ours",)),
    "biren": (18, 35, ("ours",)),
}


@dataclass(frozen=True)
class Cell:
    vendor: str
    minor: str
    stack: str

    @property
    def toxenv(self) -> str:
        base = f"{self.vendor}-{self.minor}"
        return base if self.stack == "ours" else f"{base}-{self.stack}"

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "toxenv": self.toxenv}


def cells(vendors: dict[str, tuple[int, int, tuple[str, ...]]] | None = None) -> list[Cell]:
    out = []
    for vendor, (first, last, stacks) in (vendors or VENDORS).items():
        for n in range(first, last + 1):
            out += [Cell(vendor, f"1.{n}", stack) for stack in stacks]
    return out


def main(argv: list[str] | None = None) -> int:
    what = (argv if argv is not None else sys.argv[1:]) or ["list"]
    if what[0] == "github":
        print("cells=" + json.dumps([c.to_dict() for c in cells()], separators=(",", ":")))
    elif what[0] == "list":
        print("\n".join(c.toxenv for c in cells()))
    else:
        print(f"usage: python -m reports.matrix_plan github|list (not {what[0]!r})", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
