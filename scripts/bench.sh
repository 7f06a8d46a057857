#!/usr/bin/env bash
# The benchmark, from a clean clone: a local Kafka, the translators, then the gateway (release
# build, its own process) against a raw rdkafka consumer tuned for throughput, on the same topics
# in the same run. Prints every ratio; asserts nothing (the machine is shared).
#
#   scripts/bench.sh                          # 2M records of 100 B, 4 partitions
#   BENCH_RECORDS=500000 BENCH_VALUE_BYTES=1024 scripts/bench.sh
#   scripts/bench.sh restart                  # start to ready with and without a checkpoint,
#                                             # 2M and 20M records (benches/restart.rs)
#   scripts/bench.sh fleet                    # 1 replica vs 3 sharing a topic ([sharding]),
#                                             # time to serve and memory per replica
#   scripts/bench.sh http                     # HTTP clients direct and through nginx's cache:
#                                             # gateway CPU per 1M records, first byte, latency
#   scripts/bench.sh translators              # µs per record of translators (Rust, JavaScript,
#                                             # Python) in both versions of the contract
#   scripts/bench.sh head                     # following a producer that writes flat out: rate,
#                                             # latency, CPU of gateway, client and broker
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-translators.sh >/dev/null
bootstrap=$(scripts/kafka.sh start)
export TRIBUTARY_TEST_BOOTSTRAP="$bootstrap"
# The schema registry of the Avro rows (empty at every start: it keeps schemas in memory).
registry=$(scripts/registry.sh restart)
export TRIBUTARY_TEST_REGISTRY="$registry/apis/ccompat/v7"
# The broker's process, whose CPU the head bench counts.
BENCH_BROKER_PID=$(scripts/kafka.sh status 2>&1 | sed -n 's/.*(pid \([0-9]*\)).*/\1/p' | head -1)
export BENCH_BROKER_PID
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
bench=${1:-throughput}
case "$bench" in
  throughput | restart | fleet | http | translators | head) ;;
  *) echo "bench.sh: unknown benchmark '$bench' (throughput, restart, fleet, http, translators or head)" >&2; exit 2 ;;
esac
cargo bench -p tributary-cli --bench "$bench"
