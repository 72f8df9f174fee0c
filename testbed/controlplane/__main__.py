"""``python -m testbed.controlplane``: build and list the real Kubernetes control planes.

python -m testbed.controlplane build 1.33          # latest served patch of 1.33
python -m testbed.controlplane build 1.33,1.35     # several; `all` for every minor the proxy serves
python -m testbed.controlplane build v1.33.13      # an exact release
python -m testbed.controlplane list                # what the cache holds
python -m testbed.controlplane fidelity 1.33       # the request corpus, real vs emulated
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from .build import BuildError, build, find
from .gomod import GoModError, Release
from .releases import MINORS, k8s_cache, latest


def _targets(spec: str, refresh: bool) -> list[Release]:
    """``1.33``, ``v1.33.13``, ``all``, or a comma/space separated list of those."""
    exact: list[Release] = []
    minors: list[int] = []
    for item in re.split(r"[,\s]+", spec.strip()):
        if not item:
            continue
        if item == "all":
            minors += list(MINORS)
        elif re.fullmatch(r"v?1\.\d+\.\d+", item):
            exact.append(Release.parse(item))
        elif re.fullmatch(r"1\.\d+", item):
            minors.append(int(item.split(".")[1]))
        else:
            raise GoModError(f"{item!r} is not a minor (1.33), a release (v1.33.13) or 'all'")
    found = latest(sorted(set(minors)), refresh=refresh) if minors else {}
    missing = [f"1.{m}" for m, r in found.items() if r is None and spec.strip() != "all"]
    if missing:
        raise GoModError(f"the Go module proxy serves no release of {', '.join(missing)}")
    return exact + [r for _, r in sorted(found.items()) if r is not None]


def cmd_build(args: argparse.Namespace) -> int:
    try:
        targets = _targets(args.versions, args.refresh)
    except GoModError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("building: " + ", ".join(r.version for r in targets), flush=True)
    failed: dict[str, str] = {}
    for rel in targets:
        try:
            build(rel, parallel=args.parallel, force=args.force)
        except BuildError as e:
            failed[rel.version] = str(e)
            print(f"error: {rel.version}: {e}", file=sys.stderr, flush=True)
            if not args.keep_going:
                break
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for m in MINORS:
        b = find(m)
        if b is not None:
            rows.append({"minor": f"1.{m}", "version": b.release.version, "path": str(b.path),
                         "buildSeconds": b.manifest.get("buildSeconds"), "go": b.manifest.get("go"),
                         "sizes": {k: v["size"] for k, v in b.manifest.get("binaries", {}).items()}})
    if args.json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print(f"no control plane built in {k8s_cache()}; "
              "build one with `python -m testbed.controlplane build 1.33`")
    else:
        for r in rows:
            mib = sum(r["sizes"].values()) / 2**20
            print(f"{r['minor']:5} {r['version']:9} {r['go']:10} {r['buildSeconds']:>7}s "
                  f"{mib:6.0f} MiB  {r['path']}")
    return 0


def cmd_fidelity(args: argparse.Namespace) -> int:
    """Start the real and the emulated control plane of the minor, send the corpus to both, compare."""
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    from kubeclient.client import Kube

    from .fidelity import compare, corpus, send

    minor = args.minor
    if find(int(minor.split(".")[1])) is None:
        print(f"error: no real build of {minor}: python -m testbed.controlplane build {minor}",
              file=sys.stderr)
        return 4
    env = {k: v for k, v in os.environ.items() if k != "TESTBED_CONTROL_PLANE"}
    answers = {}
    cases = corpus()
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        for mode in ("real", "emulated"):
            data = Path(tmp) / mode
            up = subprocess.run([sys.executable, "-m", "testbed", "up", "--k8s", minor,
                                 "--control-plane", mode, "--detach", "--port", "0", "--data-dir", str(data)],
                                capture_output=True, text=True, timeout=300, env=env)
            if up.returncode != 0:
                print(f"error: testbed up ({mode}) failed: {up.stderr.strip()[-1500:]}", file=sys.stderr)
                return 1
            try:
                kube = Kube.from_config(str(data / "kubeconfig"), user_agent="fidelity")
                answers[mode] = send(kube, cases)
                kube.close()
            finally:
                subprocess.run([sys.executable, "-m", "testbed", "down", "--data-dir", str(data)],
                               capture_output=True, text=True, timeout=120, env=env)
    res = compare(minor, cases, answers["real"], answers["emulated"])
    for d in res.differences:
        print(f"differs: {d['case']}: real {d['real']['status']} / emulated {d['emulated']['status']}")
    summary = {"minor": minor, "requests": res.total, "identical": res.identical,
               "identicalFraction": round(res.fraction, 4)}
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "differences": res.differences}, indent=1))
    print(json.dumps(summary))
    return 0


def cmd_openapi_inputs(args: argparse.Namespace) -> int:
    """The OpenAPI input packages of a release by its Makefile's rule; where the release's module has
    the generated file (1.24, 1.25 carry both), which packages of it the rule misses or adds."""
    import tempfile
    from pathlib import Path

    from .build import BuildError, _go_env
    from .gomod import KUBERNETES, parse_upstream
    from .openapi import (
        GENERATED_FILE,
        MAKEFILE,
        SAMPLES,
        OpenAPIError,
        excluded_modules,
        input_packages,
        module_dirs,
    )

    try:
        rel = Release.parse(args.release)
        env = {**_go_env("local"), "GOFLAGS": "-mod=mod"}
        with tempfile.TemporaryDirectory() as tmp:
            kdir = module_dirs(Path(tmp), [f"{KUBERNETES}@{rel.version}"], env)[KUBERNETES][1]
            excluded = excluded_modules((kdir / MAKEFILE).read_text())
            listed = parse_upstream((kdir / "go.mod").read_text()).staging
            staging = [f"{m}@{rel.staging_version}" for m in listed
                       if m not in excluded and not m.startswith(SAMPLES)]
            dirs = module_dirs(Path(tmp), staging, env)
        inputs = input_packages(kdir, {m: d for m, (_, d) in dirs.items()}, excluded)
    except (GoModError, BuildError, OpenAPIError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out: dict[str, object] = {"release": rel.version, "inputs": len(inputs)}
    committed = kdir / "pkg" / "generated" / "openapi" / GENERATED_FILE
    if committed.is_file():
        defined = set(re.findall(r'^\t\t"([^"]+)\.\w+":', committed.read_text(), re.M))
        out["packagesWithCommittedDefinitions"] = len(defined)
        out["committedButNotInputs"] = sorted(defined - set(inputs))
        out["inputsWithoutCommittedDefinitions"] = sorted(set(inputs) - defined)
    if args.list:
        print("\n".join(inputs))
    print(json.dumps(out))
    return 1 if out.get("committedButNotInputs") else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.controlplane", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build kube-apiserver, kube-controller-manager, kube-scheduler")
    b.add_argument("versions", help="1.33, v1.33.13, all, or a comma-separated list")
    b.add_argument("-p", "--parallel", type=int, default=None,
                   help="go build -p (packages compiled at once; default: the CPU count)")
    b.add_argument("--force", action="store_true", help="rebuild even when the cache has the release")
    b.add_argument("--refresh", action="store_true", help="ask the proxy again for the latest patches")
    b.add_argument("--keep-going", action="store_true", help="continue with the next release after a failure")
    b.set_defaults(func=cmd_build)
    ls = sub.add_parser("list", help="the builds in the cache")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    f = sub.add_parser("fidelity", help="send the request corpus to the real and the emulated control plane")
    f.add_argument("minor", help="a built minor, e.g. 1.33")
    f.add_argument("--json", metavar="FILE", help="write the summary and every difference here")
    f.set_defaults(func=cmd_fidelity)
    o = sub.add_parser("openapi-inputs", help="the OpenAPI input packages of a release (and, where "
                       "its module has the generated file, how they compare)")
    o.add_argument("release", help="an exact release, e.g. v1.24.17")
    o.add_argument("--list", action="store_true", help="print the packages too")
    o.set_defaults(func=cmd_openapi_inputs)
    args = p.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
