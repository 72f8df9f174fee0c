"""The Kubernetes API's protobuf schema, built by this project from the upstream Go modules' ``.proto`` files.

The ``generated.proto`` files of ``k8s.io/api`` and ``k8s.io/apimachinery`` are Kubernetes source, so
the repository holds none of them. ``fetch(minor)`` downloads the two modules of that minor
(``v0.<minor>.0``) from the Go module proxy (plain HTTPS, no Go toolchain needed), checks each zip
against the module checksum pinned in :data:`SUMS` (Go's ``h1:`` directory hash, the one ``go.sum``
holds), and compiles every ``generated.proto`` with ``grpc_tools.protoc`` (the compiler
``kubeletapi/regen.sh`` uses) into one ``FileDescriptorSet``. Beside it goes ``fields.json``: for each
message, the fields whose Go type is a pointer, read from the struct tags of the same modules'
``types.go`` files (protobuf cannot say whether a zero was set on purpose; the Go types can).

Cache layout (``$HAMI_K8S_PROTO_CACHE`` or ``~/.cache/hami-conformance/k8s-api-proto``)::

    v0.<minor>.0/descriptors.pb   FileDescriptorSet of k8s.io/api + k8s.io/apimachinery
    v0.<minor>.0/fields.json      {"<proto message full name>": [pointer field numbers]}

Both files appear by atomic rename, so their presence means a complete build. The apiserver only
reads the cache (:func:`load`); it never fetches at run time. ``make clients`` fetches the minors the
tests use; anything else::

    python -m testbed.apiserver.k8sproto fetch 1.33 1.18   # or: all
    python -m testbed.apiserver.k8sproto list
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from functools import cache
from pathlib import Path

PROXY = os.environ.get("HAMI_GOPROXY", "https://proxy.golang.org")
MODULES = ("k8s.io/api", "k8s.io/apimachinery")
# go.sum's h1: hash of each module zip (sum.golang.org records the same values).
SUMS: dict[tuple[str, str], str] = {
    ("k8s.io/api", "v0.33.0"): "h1:yTgZVn1XEe6opVpP1FylmNrIFWuDqe2H0V8CT5gxfIU=",
    ("k8s.io/apimachinery", "v0.33.0"): "h1:1a6kHrJxb2hs4t8EE5wuR/WxKDwGN1FKH3JvDtA0CIQ=",
}


class ProtoUnavailable(RuntimeError):
    """The schema of a minor is not in the cache (or could not be built)."""


def cache_root() -> Path:
    override = os.environ.get("HAMI_K8S_PROTO_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "hami-conformance" / "k8s-api-proto"


def module_version(minor: int) -> str:
    return f"v0.{minor}.0"


def h1_hash(zdata: bytes) -> str:
    """Go's dirhash Hash1 of a module zip: sha256 over sorted "<sha256 hex>  <name>\\n" lines."""
    lines = []
    with zipfile.ZipFile(io.BytesIO(zdata)) as z:
        for name in sorted(z.namelist()):
            lines.append(f"{hashlib.sha256(z.read(name)).hexdigest()}  {name}\n")
    return "h1:" + base64.b64encode(hashlib.sha256("".join(lines).encode()).digest()).decode()


def _download(module: str, version: str) -> bytes:
    url = f"{PROXY}/{module}/@v/{version}.zip"
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            data: bytes = resp.read()
    except OSError as e:
        raise ProtoUnavailable(f"downloading {url} failed: {e}") from e
    got = h1_hash(data)
    want = SUMS.get((module, version))
    if want is not None and got != want:
        raise ProtoUnavailable(f"{module}@{version} from {url} has checksum {got}, expected {want}")
    return data


# A struct field with a protobuf tag: Go name, Go type, protobuf tag body.
_FIELD = re.compile(r'^\s*\w+\s+(\S+)\s+`[^`]*protobuf:"[a-z0-9]+,(\d+),[^"]*"', re.M)
_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)


def pointer_fields(go_source: str) -> dict[str, list[int]]:
    """Message name -> numbers of the fields whose Go type is a pointer (``*int32``, ``*bool``, ...)."""
    out: dict[str, list[int]] = {}
    for m in _STRUCT.finditer(go_source):
        nums = [int(f.group(2)) for f in _FIELD.finditer(m.group(2)) if f.group(1).startswith("*")]
        if nums:
            out[m.group(1)] = nums
    return out


def _proto_package(proto_text: str) -> str:
    m = re.search(r"^package ([\w.]+);", proto_text, re.M)
    return m.group(1) if m else ""


def build(minor: int) -> Path:
    """Download, verify and compile the schema of ``minor`` into the cache; returns its directory."""
    version = module_version(minor)
    out = cache_root() / version
    if (out / "descriptors.pb").exists() and (out / "fields.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="k8sproto-", dir=out) as tmp:
        src = Path(tmp) / "src"
        protos: list[str] = []
        pointers: dict[str, list[int]] = {}
        for module in MODULES:
            data = _download(module, version)
            prefix = f"{module}@{version}/"
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                by_dir: dict[str, dict[str, str]] = {}
                for name in z.namelist():
                    rel = name[len(prefix) :]
                    if "/testdata/" in rel or "testapigroup" in rel:
                        continue
                    d, _, base = rel.rpartition("/")
                    if base == "generated.proto" or (base.endswith(".go") and not base.endswith("_test.go")):
                        by_dir.setdefault(d, {})[base] = z.read(name).decode()
            for d, files in by_dir.items():
                proto = files.get("generated.proto")
                if proto is None:
                    continue
                path = src / module / d / "generated.proto"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(proto)
                protos.append(f"{module}/{d}/generated.proto")
                package = _proto_package(proto)
                for base, text in files.items():
                    if base.endswith(".go"):
                        for msg, nums in pointer_fields(text).items():
                            pointers[f"{package}.{msg}"] = nums
        desc = Path(tmp) / "descriptors.pb"
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            f"--descriptor_set_out={desc}",
            "--include_imports",
            *protos,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ProtoUnavailable(f"protoc failed for {version}: {res.stderr.strip()[:2000]}")
        fields = Path(tmp) / "fields.json"
        fields.write_text(json.dumps(pointers, sort_keys=True))
        os.replace(fields, out / "fields.json")
        os.replace(desc, out / "descriptors.pb")
    return out


@cache
def load(minor: int) -> tuple[bytes, dict[str, list[int]]]:
    """The cached schema of ``minor`` (descriptor set bytes, pointer fields); ProtoUnavailable if absent.

    A minor without its own build uses the nearest cached one above it, then below it: field numbers
    never change between releases, only fields and kinds are added or removed."""
    root = cache_root()
    order = [minor, *range(minor + 1, minor + 8), *range(minor - 1, minor - 8, -1)]
    for m in order:
        d = root / module_version(m)
        if (d / "descriptors.pb").exists() and (d / "fields.json").exists():
            return (d / "descriptors.pb").read_bytes(), json.loads((d / "fields.json").read_text())
    raise ProtoUnavailable(
        f"no Kubernetes API protobuf schema cached for 1.{minor} under {root}; "
        f"run: python -m testbed.apiserver.k8sproto fetch 1.{minor}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m testbed.apiserver.k8sproto", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and compile the schema of these minors (1.N, or all)")
    f.add_argument("minors", nargs="+")
    sub.add_parser("list", help="the minors cached")
    a = p.parse_args(argv)
    if a.cmd == "list":
        for d in sorted(cache_root().glob("v0.*.0")):
            if (d / "descriptors.pb").exists():
                print(d.name, d)
        return 0
    from .versions import MINORS

    minors = list(MINORS) if a.minors == ["all"] else [int(m.split(".")[1]) for m in a.minors]
    for m in minors:
        try:
            print(f"1.{m}: {build(m)}")
        except ProtoUnavailable as e:
            print(f"1.{m}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
