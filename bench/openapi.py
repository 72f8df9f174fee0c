"""Cost of the OpenAPI documents: start-up of a testbed, then the first (building) and a later (cached)
request of each document, over HTTPS as clients make them.

The documents are built on first request from the cached definitions (testbed/apiserver/openapi.py),
so start-up must not depend on them; this prints the start time and each request's latency.

    .venv/bin/python bench/openapi.py [--minor 1.33] [--runs 3]

The last line printed is one JSON object with the figures (names carry their units).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.embedded import EmbeddedTestbed

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def _get(tb: EmbeddedTestbed, path: str, accept: str = "application/json") -> tuple[float, int]:
    ctx = ssl.create_default_context(cafile=str(tb.ca_path))
    req = urllib.request.Request(tb.url + path, headers={"Accept": accept,
                                                          "Authorization": f"Bearer {tb.admin_token}"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, context=ctx, timeout=60) as r:
        size = len(r.read())
    return (time.perf_counter() - start) * 1000, size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minor", default="1.33")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    minor = int(a.minor.split(".")[1])
    out: dict[str, float] = {}
    starts = []
    for _ in range(a.runs):
        t = time.perf_counter()
        with EmbeddedTestbed(minor) as tb:
            starts.append((time.perf_counter() - t) * 1000)
            for name, path, accept in (("v2_protobuf", "/openapi/v2", PROTOBUF),
                                       ("v2_json", "/openapi/v2", "application/json"),
                                       ("v3_root", "/openapi/v3", "application/json"),
                                       ("v3_core", "/openapi/v3/api/v1", "application/json")):
                if name.startswith("v3") and minor < 24:
                    continue  # OpenAPI v3 is served from 1.24
                first, size = _get(tb, path, accept)
                again, _ = _get(tb, path, accept)
                out[f"{name}_first_ms"] = max(out.get(f"{name}_first_ms", 0.0), round(first, 1))
                out[f"{name}_cached_ms"] = max(out.get(f"{name}_cached_ms", 0.0), round(again, 1))
                out[f"{name}_bytes"] = size
                print(f"{name}: first {first:.1f} ms, cached {again:.1f} ms, {size} bytes", file=sys.stderr)
    out["start_median_ms"] = round(sorted(starts)[len(starts) // 2], 1)
    print(json.dumps({"minor": a.minor, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
