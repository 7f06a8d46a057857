#!/usr/bin/env bash
# The workspace's crate boundaries are its architecture: this fails when a crate depends on what it
# must not know. Checks the normal (non-dev) dependencies of every workspace crate.
#
#   rdkafka   only tributary-kafka (and the test harness, whose raw consumer is the reference)
#   wasmtime  only tributary-wasm
#   redb      only tributary-checkpoint
#   tonic*    only tributary-server, tributary-client (clients/rust), tributary-cli, the test harness
#   prost*    only tributary-server (the gRPC layer owns every protobuf mapping) and tributary-client
#   the schema registry's decoders and HTTP client: only tributary-schema
#   tikv-jemallocator  only tributary-cli (the binary chooses the process's allocator)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo metadata --format-version 1 --no-deps --offline 2>/dev/null >"${TMPDIR:-/tmp}/tributary-metadata.json" ||
  cargo metadata --format-version 1 --no-deps >"${TMPDIR:-/tmp}/tributary-metadata.json"

python3 - "${TMPDIR:-/tmp}/tributary-metadata.json" <<'PY'
import json, sys

allowed = {
    "rdkafka": {"tributary-kafka", "tributary-testkit"},
    "wasmtime": {"tributary-wasm"},
    "redb": {"tributary-checkpoint"},
    "tonic": {"tributary-server", "tributary-cli", "tributary-testkit", "tributary-client"},
    "tonic-health": {"tributary-server", "tributary-testkit"},
    "tonic-reflection": {"tributary-server"},
    "tonic-prost": {"tributary-server", "tributary-client"},
    "tonic-types": {"tributary-server", "tributary-client"},
    "prost": {"tributary-server", "tributary-client"},
    "prost-types": {"tributary-server", "tributary-client"},
    "apache-avro": {"tributary-schema"},
    "prost-reflect": {"tributary-schema"},
    "protox": {"tributary-schema"},
    "jsonschema": {"tributary-schema"},
    "ureq": {"tributary-schema", "tributary-testkit"},
    "tikv-jemallocator": {"tributary-cli"},
}
metadata = json.load(open(sys.argv[1]))
failures = []
for package in metadata["packages"]:
    for dep in package["dependencies"]:
        if dep["kind"] is not None:  # dev and build dependencies are not the crate's code
            continue
        owners = allowed.get(dep["name"])
        if owners is not None and package["name"] not in owners:
            failures.append(f"{package['name']} depends on {dep['name']}, which only {', '.join(sorted(owners))} may know")
for f in failures:
    print("check-deps:", f, file=sys.stderr)
if failures:
    sys.exit(1)
print(f"check-deps: {len(metadata['packages'])} crates keep their boundaries")
PY
