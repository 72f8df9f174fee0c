#!/bin/sh
# Regenerates the Python stubs from the .proto files in this directory (run from anywhere).
# The repository root is the include path, so the generated *_pb2_grpc.py import their messages
# as kubeletapi.<name>_pb2.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
cd "$root"
for proto in kubeletapi/*.proto; do
  "$py" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. "$proto"
done
# Generated code is not ours to lint.
for gen in kubeletapi/*_pb2.py kubeletapi/*_pb2_grpc.py kubeletapi/*_pb2.pyi; do
  if ! head -n 1 "$gen" | grep -q '^# ruff: noqa'; then
    { echo '# ruff: noqa'; cat "$gen"; } > "$gen.tmp" && mv "$gen.tmp" "$gen"
  fi
done
