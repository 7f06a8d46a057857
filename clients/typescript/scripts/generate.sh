#!/usr/bin/env bash
# Generates the protobuf messages and service descriptors into OUT (default src/gen) with protoc
# and protoc-gen-es from node_modules: Tributary's protos from <repo>/proto, google.rpc's
# (Status, ErrorInfo, BadRequest) from the google-proto-files package.
#
#   scripts/generate.sh [OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-src/gen}
mkdir -p "$out"
out=$(cd "$out" && pwd)
google="$here/node_modules/google-proto-files"
plugin="$here/node_modules/.bin/protoc-gen-es"
[[ -x $plugin ]] || { echo "generate.sh: $plugin missing: run npm ci first" >&2; exit 1; }
command -v protoc >/dev/null || { echo "generate.sh: protoc not found (scripts/setup.sh installs it)" >&2; exit 1; }

rm -rf "${out:?}/tributary" "${out:?}/google"
cd "$repo/proto"
protoc -I . -I "$google" \
  --plugin=protoc-gen-es="$plugin" \
  --es_out="$out" --es_opt=target=ts,import_extension=js \
  tributary/v1/gateway.proto tributary/v1/subscriptions.proto tributary/v1/translators.proto \
  google/rpc/status.proto google/rpc/error_details.proto
