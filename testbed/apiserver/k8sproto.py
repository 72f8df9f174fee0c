"""The Kubernetes API's protobuf schema, built by this project from the upstream Go modules' ``.proto`` files.

The ``generated.proto`` files of ``k8s.io/api`` and ``k8s.io/apimachinery`` are Kubernetes source, so
the repository holds none of them. ``fetch(minor)`` downloads the two modules of that minor
(``v0.<minor>.0``) from the Go module proxy (plain HTTPS, no Go toolchain needed), checks each zip
against the module checksum pinned in :data:`SUMS` (Go's ``h1:`` directory hash, the one ``go.sum``
holds), and compiles every ``generated.proto`` with ``grpc_tools.protoc`` (the compiler
``kubeletapi/regen.sh`` uses) into one ``FileDescriptorSet``. Beside it goes ``fields-v3.json``: for
each message, the fields whose Go type is a pointer, the fields Go's JSON always writes (no
``omitempty``) and the embedded structs JSON inlines, read from the struct tags of the same modules'
Go files (protobuf cannot say whether a zero was set on purpose, nor whether JSON shows it; the Go
types can).

Cache layout (``$HAMI_K8S_PROTO_CACHE`` or ``~/.cache/hami-conformance/k8s-api-proto``)::

    v0.<minor>.0/descriptors.pb   FileDescriptorSet of k8s.io/api + k8s.io/apimachinery
    v0.<minor>.0/fields-v3.json   {"<message full name>": {"pointer": [..], "always": [..], "inline": [..]}}
    v0.<minor>.0/definitions-v2.json  OpenAPI definitions of every type (testbed.apiserver.openapi_source)
    openapi/v2-1.<minor>-<digest>.pb  encoded OpenAPI v2 documents (testbed.apiserver.openapi)

Both files appear by atomic rename, so their presence means a complete build. The apiserver only
reads the cache (:func:`load`); it never fetches at run time. ``make clients`` fetches every minor;
by hand::

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

from . import openapi_source

PROXY = os.environ.get("HAMI_GOPROXY", "https://proxy.golang.org")
MODULES = ("k8s.io/api", "k8s.io/apimachinery")
# go.sum's h1: hash of each module zip (sum.golang.org records the same values).
SUMS: dict[tuple[str, str], str] = {
    ("k8s.io/api", "v0.18.0"): "h1:lwYk8Vt7rsVTwjRU6pzEsa9YNhThbmbocQlKvNBB4EQ=",
    ("k8s.io/apimachinery", "v0.18.0"): "h1:fuPfYpk3cs1Okp/515pAf0dNhL66+8zk8RLbSX+EgAE=",
    ("k8s.io/api", "v0.19.0"): "h1:XyrFIJqTYZJ2DU7FBE/bSPz7b1HvbVBuBf07oeo6eTc=",
    ("k8s.io/apimachinery", "v0.19.0"): "h1:gjKnAda/HZp5k4xQYjL0K/Yb66IvNqjthCb03QlKpaQ=",
    ("k8s.io/api", "v0.20.0"): "h1:WwrYoZNM1W1aQEbyl8HNG+oWGzLpZQBlcerS9BQw9yI=",
    ("k8s.io/apimachinery", "v0.20.0"): "h1:jjzbTJRXk0unNS71L7h3lxGDH/2HPxMPaQY+MjECKL8=",
    ("k8s.io/api", "v0.21.0"): "h1:gu5iGF4V6tfVCQ/R+8Hc0h7H1JuEhzyEi9S4R5LM8+Y=",
    ("k8s.io/apimachinery", "v0.21.0"): "h1:3Fx+41if+IRavNcKOz09FwEXDBG6ORh6iMsTSelhkMA=",
    ("k8s.io/api", "v0.22.0"): "h1:elCpMZ9UE8dLdYxr55E06TmSeji9I3KH494qH70/y+c=",
    ("k8s.io/apimachinery", "v0.22.0"): "h1:CqH/BdNAzZl+sr3tc0D3VsK3u6ARVSo3GWyLmfIjbP0=",
    ("k8s.io/api", "v0.23.0"): "h1:WrL1gb73VSC8obi8cuYETJGXEoFNEh3LU0Pt+Sokgro=",
    ("k8s.io/apimachinery", "v0.23.0"): "h1:mIfWRMjBuMdolAWJ3Fd+aPTMv3X9z+waiARMpvvb0HQ=",
    ("k8s.io/api", "v0.24.0"): "h1:J0hann2hfxWr1hinZIDefw7Q96wmCBx6SSB8IY0MdDg=",
    ("k8s.io/apimachinery", "v0.24.0"): "h1:ydFCyC/DjCvFCHK5OPMKBlxayQytB8pxy8YQInd5UyQ=",
    ("k8s.io/api", "v0.25.0"): "h1:H+Q4ma2U/ww0iGB78ijZx6DRByPz6/733jIuFpX70e0=",
    ("k8s.io/apimachinery", "v0.25.0"): "h1:MlP0r6+3XbkUG2itd6vp3oxbtdQLQI94fD5gCS+gnoU=",
    ("k8s.io/api", "v0.26.0"): "h1:IpPlZnxBpV1xl7TGk/X6lFtpgjgntCg8PJ+qrPHAC7I=",
    ("k8s.io/apimachinery", "v0.26.0"): "h1:1feANjElT7MvPqp0JT6F3Ss6TWDwmcjLypwoPpEf7zg=",
    ("k8s.io/api", "v0.27.0"): "h1:2owttiA8Oa+J3idFeq8TSnNpm4y6AOGPI3PDbIpp2cE=",
    ("k8s.io/apimachinery", "v0.27.0"): "h1:vEyy/PVMbPMCPutrssCVHCf0JNZ0Px+YqPi82K2ALlk=",
    ("k8s.io/api", "v0.28.0"): "h1:3j3VPWmN9tTDI68NETBWlDiA9qOiGJ7sdKeufehBYsM=",
    ("k8s.io/apimachinery", "v0.28.0"): "h1:ScHS2AG16UlYWk63r46oU3D5y54T53cVI5mMJwwqFNA=",
    ("k8s.io/api", "v0.29.0"): "h1:NiCdQMY1QOp1H8lfRyeEf8eOwV6+0xA6XEE44ohDX2A=",
    ("k8s.io/apimachinery", "v0.29.0"): "h1:+ACVktwyicPz0oc6MTMLwa2Pw3ouLAfAon1wPLtG48o=",
    ("k8s.io/api", "v0.30.0"): "h1:siWhRq7cNjy2iHssOB9SCGNCl2spiF1dO3dABqZ8niA=",
    ("k8s.io/apimachinery", "v0.30.0"): "h1:qxVPsyDM5XS96NIh9Oj6LavoVFYff/Pon9cZeDIkHHA=",
    ("k8s.io/api", "v0.31.0"): "h1:b9LiSjR2ym/SzTOlfMHm1tr7/21aD7fSkqgD/CVJBCo=",
    ("k8s.io/apimachinery", "v0.31.0"): "h1:m9jOiSr3FoSSL5WO9bjm1n6B9KROYYgNZOb4tyZ1lBc=",
    ("k8s.io/api", "v0.32.0"): "h1:OL9JpbvAU5ny9ga2fb24X8H6xQlVp+aJMFlgtQjR9CE=",
    ("k8s.io/apimachinery", "v0.32.0"): "h1:cFSE7N3rmEEtv4ei5X6DaJPHHX0C+upp+v5lVPiEwpg=",
    ("k8s.io/api", "v0.33.0"): "h1:yTgZVn1XEe6opVpP1FylmNrIFWuDqe2H0V8CT5gxfIU=",
    ("k8s.io/apimachinery", "v0.33.0"): "h1:1a6kHrJxb2hs4t8EE5wuR/WxKDwGN1FKH3JvDtA0CIQ=",
    ("k8s.io/api", "v0.34.0"): "h1:L+JtP2wDbEYPUeNGbeSa/5GwFtIA662EmT2YSLOkAVE=",
    ("k8s.io/apimachinery", "v0.34.0"): "h1:eR1WO5fo0HyoQZt1wdISpFDffnWOvFLOOeJ7MgIv4z0=",
    ("k8s.io/api", "v0.35.0"): "h1:iBAU5LTyBI9vw3L5glmat1njFK34srdLmktWwLTprlY=",
    ("k8s.io/apimachinery", "v0.35.0"): "h1:Z2L3IHvPVv/MJ7xRxHEtk6GoJElaAqDCCU0S6ncYok8=",
}


FIELDS = "fields-v3.json"  # the layout of field_facts(); a new layout gets a new name, so old caches rebuild


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
    if want is None:
        raise ProtoUnavailable(f"{module}@{version} has no pinned checksum in SUMS; add its go.sum h1: line")
    if got != want:
        raise ProtoUnavailable(f"{module}@{version} from {url} has checksum {got}, expected {want}")
    return data


# A struct field with a tag: "Name Type `tag`", or an embedded "Type `tag`".
_FIELD = re.compile(r"^\s*(\*?\w+)(?:[ \t]+(\S+))?[ \t]+`([^`]*)`", re.M)
_PB_NUM = re.compile(r'protobuf:"[a-z0-9]+,(\d+),')
_JSON_TAG = re.compile(r'json:"([^"]*)"')
_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)


def field_facts(go_source: str) -> dict[str, dict[str, list[int]]]:
    """Message name -> lists of field numbers: "pointer" (the Go type is a pointer: ``*int32``,
    ``*bool``, ...), "always" (a non-pointer field whose JSON tag lacks ``omitempty``: Go's JSON writes
    it even at zero, e.g. ``nodeInfo.kubeProxyVersion: ""``), "inline" (an embedded struct tagged
    ``json:",inline"``, whose fields JSON puts in the parent object: ``Volume``'s ``VolumeSource``)."""
    out: dict[str, dict[str, list[int]]] = {}
    for m in _STRUCT.finditer(go_source):
        facts: dict[str, list[int]] = {"pointer": [], "always": [], "inline": []}
        for f in _FIELD.finditer(m.group(2)):
            num = _PB_NUM.search(f.group(3))
            if num is None:
                continue
            n = int(num.group(1))
            go_type = f.group(2) if f.group(2) is not None else f.group(1)
            js = _JSON_TAG.search(f.group(3))
            name, *opts = js.group(1).split(",") if js is not None else ("",)
            if not name and "inline" in opts:
                facts["inline"].append(n)
            elif go_type.startswith("*"):
                facts["pointer"].append(n)
            elif js is not None and "omitempty" not in opts:
                facts["always"].append(n)
        if any(facts.values()):
            out[m.group(1)] = facts
    return out


def _proto_package(proto_text: str) -> str:
    m = re.search(r"^package ([\w.]+);", proto_text, re.M)
    return m.group(1) if m else ""


def build(minor: int) -> Path:
    """Download, verify and compile the schema of ``minor`` into the cache; returns its directory."""
    version = module_version(minor)
    out = cache_root() / version
    if (out / "descriptors.pb").exists() and (out / FIELDS).exists() and openapi_source.present(out):
        return out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="k8sproto-", dir=out) as tmp:
        src = Path(tmp) / "src"
        protos: list[str] = []
        facts: dict[str, dict[str, list[int]]] = {}
        go_texts: dict[str, list[str]] = {}  # proto package -> Go files, for the OpenAPI definitions
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
                        if not base.startswith(("generated.", "zz_generated")):
                            go_texts.setdefault(package, []).append(text)
                        for msg, ff in field_facts(text).items():
                            facts[f"{package}.{msg}"] = ff
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
        try:
            openapi_source.write(out, src, protos, go_texts)
        except RuntimeError as e:
            raise ProtoUnavailable(f"OpenAPI definitions for {version}: {e}") from e
        fields = Path(tmp) / FIELDS
        fields.write_text(json.dumps(facts, sort_keys=True))
        os.replace(fields, out / FIELDS)
        os.replace(desc, out / "descriptors.pb")
    return out


@cache
def load(minor: int) -> tuple[bytes, dict[str, dict[str, list[int]]]]:
    """The cached schema of ``minor`` (descriptor set bytes, field facts); ProtoUnavailable if absent.

    A minor without its own build uses the nearest cached one above it, then below it: field numbers
    never change between releases, only fields and kinds are added or removed."""
    root = cache_root()
    order = [minor, *range(minor + 1, minor + 8), *range(minor - 1, minor - 8, -1)]
    for m in order:
        d = root / module_version(m)
        if (d / "descriptors.pb").exists() and (d / FIELDS).exists():
            return (d / "descriptors.pb").read_bytes(), json.loads((d / FIELDS).read_text())
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
