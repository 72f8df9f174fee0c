"""``python -m hami_stack.faults list [--json] [--vendor V]``: the faults this stack knows."""

from __future__ import annotations

import argparse
import json
import sys

from .catalogue import CATALOGUE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hami_stack.faults", description=__doc__)
    p.add_argument("command", choices=("list",))
    p.add_argument("--json", action="store_true")
    p.add_argument("--vendor")
    args = p.parse_args(argv)
    faults = [f for f in CATALOGUE if args.vendor in (None, f.vendor)]
    if args.json:
        print(json.dumps([f.to_dict() for f in faults], indent=1))
    else:
        for f in faults:
            print(f"{f.name:48} {f.component:14} {f.vendor:8} {','.join(f.expected_rules)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
