"""``python -m reports build|verify|keygen``; ``hami-conformance verify`` calls ``main`` too.

Exit codes: 0 success; 1 verification failed (or an unexpected error); 4 bad input or usage, as
pytest uses for usage errors, so the main job can pass the code straight through.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from reports import attest
from reports import sensitivity as sens
from reports.bundle import BundleError, build
from reports.model import RunInputError
from reports.verify import verify

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m reports", description="Certification bundles of conformance runs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    b = sub.add_parser("build", help="turn a run directory into a (signed) certification bundle")
    b.add_argument("run_dir", type=Path, help="directory holding run.json (written by the pytest plugin)")
    b.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    b.add_argument("--key", type=Path, help="Ed25519 private key (PEM) to sign the in-toto statement")
    b.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    b.add_argument(
        "--sensitivity",
        type=Path,
        metavar="FILE",
        help="the self-test's sensitivity.json to carry (must be of the run's commit)",
    )
    b.add_argument(
        "--allow-unfinished",
        action="store_true",
        help="build from a run that never finalised (marked incomplete)",
    )
    v = sub.add_parser("verify", help="check a bundle's manifest, statement and signature")
    v.add_argument("bundle", type=Path)
    v.add_argument("--key", type=Path, help="the signer's public key (PEM); default: the bundled one")
    k = sub.add_parser("keygen", help="write an Ed25519 key pair: KEY and KEY's .pub.pem")
    k.add_argument("key", type=Path, help="private key path, e.g. ed25519.pem")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "build":
        try:
            out = build(
                args.run_dir,
                args.out,
                signing_key=args.key,
                overwrite=args.force,
                allow_unfinished=args.allow_unfinished,
                sensitivity=sens.load(args.sensitivity) if args.sensitivity else None,
            )
        except (RunInputError, attest.KeyFileError, BundleError) as e:
            print(f"error: {e}", file=sys.stderr)
            print("no bundle was written", file=sys.stderr)
            return EXIT_USAGE
        print(f"bundle written: {out}")
        return EXIT_OK
    if args.command == "verify":
        result = verify(args.bundle, public_key=args.key)
        print(result.report(), file=sys.stdout if result.ok else sys.stderr)
        return EXIT_OK if result.ok else EXIT_FAILED
    try:
        private, public = attest.keygen(args.key)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"private key: {private}\npublic key:  {public}")
    return EXIT_OK
