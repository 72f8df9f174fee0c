"""``hami-conformance matrix merge|allure``: the CI matrix's last job.

    hami-conformance matrix merge cells/*/bundle -o matrix [--signing-key key.pem] [--key signer.pub.pem]
    hami-conformance matrix allure matrix -o allure-report [--history allure-history.jsonl]

Exit codes: 0 written; 4 bad input (a bundle that does not verify, mixed profiles, a cell twice,
an output that exists), nothing written; 5 the Allure generator failed or is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_BAD_INPUT, EXIT_TOOL = 0, 4, 5


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("matrix", help="merge the bundles of a vendor x minor matrix; its Allure report")
    msub = m.add_subparsers(dest="matrix_command", required=True, parser_class=parser_class)
    merge = msub.add_parser("merge", help="one signed matrix bundle from the cells' bundles")
    merge.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    merge.add_argument("-o", "--out", type=Path, required=True, help="matrix bundle directory to create")
    merge.add_argument("--signing-key", type=Path, help="Ed25519 private key (PEM) to sign the matrix bundle")
    merge.add_argument("--key", type=Path, help="public key (PEM) every input bundle must be signed with")
    merge.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    al = msub.add_parser(
        "allure", help="the Allure 3 HTML report of a (matrix) bundle, one environment per cell"
    )
    al.add_argument("bundle", type=Path, help="a matrix bundle (or a cell's bundle)")
    al.add_argument("-o", "--out", type=Path, required=True, help="report directory to write")
    al.add_argument(
        "--history",
        type=Path,
        help="Allure history file (JSON lines) read and extended: keep it between runs for trends",
    )
    al.add_argument("--results", type=Path, help="also keep the generated allure-results here")


def main(args: argparse.Namespace) -> int:
    if args.matrix_command == "merge":
        from reports.attest import KeyFileError
        from reports.matrix import MatrixError, merge
        from reports.model import RunInputError

        try:
            out = merge(
                args.bundles,
                args.out,
                signing_key=args.signing_key,
                public_key=args.key,
                overwrite=args.force,
            )
        except (MatrixError, KeyFileError, RunInputError) as e:
            print(f"hami-conformance matrix merge: error: {e}", file=sys.stderr)
            print("no matrix bundle was written", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"matrix bundle written: {out}")
        return EXIT_OK
    from reports.allure_report import AllureError, report_from_bundle

    try:
        index = report_from_bundle(args.bundle, args.out, history=args.history, keep_results=args.results)
    except AllureError as e:
        print(f"hami-conformance matrix allure: error: {e}", file=sys.stderr)
        return EXIT_TOOL if e.tool else EXIT_BAD_INPUT
    print(f"allure report written: {index}")
    return EXIT_OK
