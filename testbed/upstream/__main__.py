"""``python -m testbed.upstream {build,show}``: exit 0 on success, 4 on bad input or a failed build."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .build import BuildFailed, build, cache_root, installed
from .source import SourceUnavailable, resolve
from .versions import UnknownVersion

EXIT_BAD_INPUT = 4


def _source(arg: str | None) -> Path | None:
    text = arg or os.environ.get("HAMI_UPSTREAM_SOURCE", "")
    return Path(text) if text else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.upstream", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    commands = (
        ("build", "build (or reuse) a release's binaries"),
        ("show", "print a built entry's manifest"),
    )
    for name, text in commands:
        p = sub.add_parser(name, help=text)
        p.add_argument("version", help="release tag (v2.10.0) or 'latest'")
        p.add_argument(
            "--source",
            help="git repository of Project-HAMi/HAMi, used when the Go module proxy refuses the module "
            "(default $HAMI_UPSTREAM_SOURCE)",
        )
        if name == "build":
            p.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "show":
            tag = resolve(args.version, _source(args.source)).tag
            done = installed(tag)
            if done is None:
                print(f"upstream HAMi {tag} is not built under {cache_root()}", file=sys.stderr)
                return EXIT_BAD_INPUT
            print(json.dumps(done.manifest, indent=2))
            return 0
        done = build(args.version, _source(args.source), force=args.force)
    except (UnknownVersion, SourceUnavailable, BuildFailed) as exc:
        print(f"upstream HAMi {args.version}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(done.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
