#!/usr/bin/env bash
# The main job, end to end on this machine: a local Kafka, the gateway, a demo producer playing
# system A (media assignments changing over time) and a demo client playing system B (a snapshot,
# then every live change).
#
#   scripts/demo.sh            # runs until Ctrl-C
#   DEMO_SECONDS=20 scripts/demo.sh
#
# Kafka stays up afterwards (so the README's grpcurl examples work); `scripts/kafka.sh stop`.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TOPIC=media-assignments
readonly LISTEN="${TRIBUTARY_LISTEN:-127.0.0.1:50051}"
readonly SECONDS_TO_RUN="${DEMO_SECONDS:-0}"
readonly LOGS="${TMPDIR:-/tmp}/tributary-demo"
mkdir -p "$LOGS"

say() { printf '\n==> %s\n' "$*" >&2; }

scripts/setup.sh

say "Starting Kafka (scripts/kafka.sh)"
bootstrap=$(scripts/kafka.sh start)
scripts/kafka.sh tool topics --bootstrap-server "$bootstrap" --create --if-not-exists \
  --topic "$TOPIC" --partitions 3 --replication-factor 1 >/dev/null

say "Building the gateway and the demo programs"
cargo build --quiet -p tributary-cli --bin tributary --example demo_producer --example demo_client
target=target/debug

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

say "System A starts writing media assignments to Kafka (log: $LOGS/producer.log)"
"$target/examples/demo_producer" "$bootstrap" "$TOPIC" >"$LOGS/producer.log" 2>&1 &
pids+=($!)
sleep 2

say "Tributary serves $TOPIC on $LISTEN (log: $LOGS/gateway.log)"
"$target/tributary" serve --listen "$LISTEN" --bootstrap-servers "$bootstrap" --topic "$TOPIC" \
  >"$LOGS/gateway.out" 2>"$LOGS/gateway.log" &
pids+=($!)
for _ in $(seq 1 300); do
  grep -q 'serving snapshots' "$LOGS/gateway.log" 2>/dev/null && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then cat "$LOGS/gateway.log" >&2; exit 1; fi
  sleep 0.1
done

say "System B takes a snapshot through Tributary, then follows every change"
"$target/examples/demo_client" "http://$LISTEN" "$TOPIC" "$SECONDS_TO_RUN"
