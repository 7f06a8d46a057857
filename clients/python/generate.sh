#!/usr/bin/env bash
# Regenerates the protobuf and gRPC modules of src/tributary/v1/ from ../../proto.
#
#   clients/python/generate.sh [OUT_DIR]
#
# OUT_DIR (default: src) receives tributary/v1/{gateway,subscriptions,translators}_pb2{.py,.pyi,_grpc.py}.
# Needs grpcio-tools at the version pinned in requirements-dev.txt; PYTHON (default: the venv's
# python if there is one, else python3) names the interpreter that has it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
proto_root=$(cd "$here/../../proto" && pwd)
out=${1:-$here/src}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $here/.venv/bin/python ]]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$out/tributary/v1"
(
  cd "$proto_root"
  "$PYTHON" -m grpc_tools.protoc -I . \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    tributary/v1/gateway.proto tributary/v1/subscriptions.proto tributary/v1/translators.proto
)
