#!/usr/bin/env bash
# The main demo, end to end on this machine: the background paper's scenario (section 6).
#
# System Y (examples/demo_producer.rs) publishes its media assignments to Kafka and knows nothing
# of X. System X (demo/x.py, Python) needs Y's state and every change, without polling Y and
# without Y keeping state for it: X uploads its own translator (translators/examples/x-model) to
# Tributary, takes a snapshot once, then follows every change into its own SQLite model, in its
# own shape, with its position saved in the same transaction as its rows.
#
#   scripts/demo.sh                    # runs until Ctrl-C; run it again: X resumes, no snapshot
#   DEMO_SECONDS=20 scripts/demo.sh    # stops by itself
#   DEMO_FRESH=1 scripts/demo.sh       # X starts from an empty database (a snapshot first)
#
# On a terminal X shows a live table; otherwise one line per event (`X snapshot: ...`,
# `X resumed: ...`, `X live: ... [p<partition>@<offset>]`). TRIBUTARY_LISTEN sets the gateway's
# address (127.0.0.1:50051). DEMO_BUILD=0 skips setup and builds (binaries and translators as they are).
# X's database: ${TMPDIR:-/tmp}/tributary-demo/x.sqlite; logs beside it. scripts/demo-check.sh
# is the same scenario as a test, with restarts and a comparison against Kafka.
#
# Kafka stays up afterwards (so the grpcurl examples in docs/grpcurl.md work); `scripts/kafka.sh stop`.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TOPIC=media-assignments
readonly LISTEN="${TRIBUTARY_LISTEN:-127.0.0.1:50051}"
readonly SECONDS_TO_RUN="${DEMO_SECONDS:-0}"
readonly WORK="${TMPDIR:-/tmp}/tributary-demo"
readonly TARGET=target/debug
mkdir -p "$WORK"

say() { printf '\n==> %s\n' "$*" >&2; }

if [ "${DEMO_BUILD:-1}" != 0 ]; then
  scripts/setup.sh
fi

say "Starting Kafka (scripts/kafka.sh)"
bootstrap=$(scripts/kafka.sh start)
scripts/kafka.sh tool topics --bootstrap-server "$bootstrap" --create --if-not-exists \
  --topic "$TOPIC" --partitions 3 --replication-factor 1 >/dev/null

if [ "${DEMO_BUILD:-1}" != 0 ]; then
  say "Building the gateway, system Y and X's translator (log: $WORK/build.log)"
  cargo build --quiet -p tributary-cli --bin tributary --example demo_producer
  scripts/build-translators.sh >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
fi
say "X's Python environment (demo/.venv: the tributary client)"
python=$(demo/venv.sh)

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "System Y publishes media assignments to Kafka topic $TOPIC (log: $WORK/producer.log)"
"$TARGET/examples/demo_producer" "$bootstrap" "$TOPIC" >"$WORK/producer.log" 2>&1 &
pids+=($!)
sleep 2

say "Tributary serves $TOPIC on $LISTEN (log: $WORK/gateway.log)"
TRIBUTARY__TRANSLATORS__DATA_DIR="$WORK/gateway-data" \
  "$TARGET/tributary" serve --listen "$LISTEN" --bootstrap-servers "$bootstrap" --topic "$TOPIC" \
  >"$WORK/gateway.out" 2>"$WORK/gateway.log" &
gateway=$!
pids+=("$gateway")
for _ in $(seq 1 300); do
  grep -q 'serving snapshots' "$WORK/gateway.log" 2>/dev/null && break
  if ! kill -0 "$gateway" 2>/dev/null; then cat "$WORK/gateway.log" >&2; exit 1; fi
  sleep 0.1
done

if [ "${DEMO_FRESH:-0}" != 0 ]; then
  rm -f "$WORK/x.sqlite" "$WORK/x.sqlite-wal" "$WORK/x.sqlite-shm"
fi
if [ -s "$WORK/x.sqlite" ]; then
  say "System X starts again with its database $WORK/x.sqlite: it resumes from its saved position"
else
  say "System X uploads its translator, takes a snapshot through Tributary, then follows every change"
fi
"$python" demo/x.py --gateway "$LISTEN" --topic "$TOPIC" --db "$WORK/x.sqlite" \
  --translator-file translators/dist/x-model.wasm --seconds "$SECONDS_TO_RUN"
say "X's model: $WORK/x.sqlite (sqlite3 $WORK/x.sqlite 'SELECT * FROM assignments LIMIT 5')"
