#!/usr/bin/env bash
# The main demo (scripts/demo.sh) as a test: system Y writes, system X follows through Tributary
# into its SQLite model, and X's model must end up equal to a rebuild straight from Kafka, with
# X and the gateway restarted mid-stream. Non-interactive; exits non-zero on any failure.
#
#   1. a fresh topic; Y (examples/demo_producer) writes to it; the gateway; X takes a snapshot and
#      follows (demo/x.py, plain output);
#   2. X is killed (SIGKILL: a crash) and started again: it must resume from its saved position,
#      not take a second snapshot;
#   3. X is stopped (SIGTERM) and started again: the same;
#   4. the gateway is stopped and started again on the same address: X reconnects by itself;
#   5. Y stops; X must catch up: its saved position equals the topic's end offsets (Kafka's);
#   6. X's `assignments` table must equal a raw rebuild (the topic read from offset 0 straight
#      from Kafka, last value per key, tombstoned keys dropped, mapped to X's shape in Python), and
#      X's journal must hold every record after its snapshot exactly once (demo/check.py).
#
# TRIBUTARY_LISTEN sets the gateway's address (127.0.0.1:50152); DEMO_BUILD=0 skips the builds.
# Logs: ${TMPDIR:-/tmp}/tributary-demo-check/. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly LISTEN="${TRIBUTARY_LISTEN:-127.0.0.1:50152}"
readonly WORK="${TMPDIR:-/tmp}/tributary-demo-check"
TOPIC="demo-check-$(date +%s)-$$"
readonly TOPIC
readonly TARGET=target/debug
readonly DB="$WORK/x.sqlite"

say() { printf '==> %s\n' "$*" >&2; }
fail() {
  printf 'demo-check: FAILED: %s\n' "$*" >&2
  for log in "$WORK"/*.log; do
    printf -- '--- %s (last lines)\n' "$log" >&2
    tail -n 15 "$log" >&2
  done
  exit 1
}

rm -rf "$WORK"
mkdir -p "$WORK"
started=$SECONDS

bootstrap=$(scripts/kafka.sh start)
if [ "${DEMO_BUILD:-1}" != 0 ]; then
  say "Building the gateway, system Y and X's translator (log: $WORK/build.txt)"
  cargo build --quiet -p tributary-cli --bin tributary --example demo_producer
  scripts/build-translators.sh >"$WORK/build.txt" 2>&1 || { cat "$WORK/build.txt" >&2; exit 1; }
fi
python=$(demo/venv.sh demo/requirements-check.txt)
check() { "$python" demo/check.py "$@" --bootstrap "$bootstrap" --topic "$TOPIC"; }

producer="" gateway="" x=""
cleanup() {
  for pid in $x $gateway $producer; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  check delete >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for FILE REGEX COUNT SECONDS: until FILE has at least COUNT lines matching REGEX.
wait_for() {
  local file=$1 regex=$2 count=$3 deadline=$((SECONDS + $4))
  local found
  while found=$(grep -cE "$regex" "$file" 2>/dev/null) || true; [ "${found:-0}" -lt "$count" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "no $count lines matching '$regex' in $file within $4 s"
    sleep 0.2
  done
}

gateway_runs=0
start_gateway() {
  gateway_runs=$((gateway_runs + 1))
  local log="$WORK/gateway-$gateway_runs.log"
  TRIBUTARY__TRANSLATORS__DATA_DIR="$WORK/gateway-data" \
    "$TARGET/tributary" serve --listen "$LISTEN" --bootstrap-servers "$bootstrap" --topic "$TOPIC" \
    >"$WORK/gateway-$gateway_runs.out" 2>"$log" &
  gateway=$!
  wait_for "$log" 'serving snapshots' 1 60
}

x_runs=0
start_x() {
  x_runs=$((x_runs + 1))
  xlog="$WORK/x-$x_runs.log"
  "$python" demo/x.py --view plain --gateway "$LISTEN" --topic "$TOPIC" --db "$DB" \
    --translator-file translators/dist/x-model.wasm >"$xlog" 2>&1 &
  x=$!
}

# X's run must resume from its saved position (no snapshot) and apply live changes again.
expect_resume() {
  wait_for "$xlog" '^X (resumed|snapshot):' 1 30
  if grep -q '^X snapshot:' "$xlog"; then fail "X took a snapshot again instead of resuming ($xlog)"; fi
  say "$(grep '^X resumed:' "$xlog")"
  wait_for "$xlog" '^X live: ' 4 30
}

say "Topic $TOPIC; system Y writes to it (log: $WORK/producer.log)"
check create
"$TARGET/examples/demo_producer" "$bootstrap" "$TOPIC" >"$WORK/producer.log" 2>&1 &
producer=$!
wait_for "$WORK/producer.log" '^A wrote ' 50 30

say "The gateway on $LISTEN; X uploads its translator, takes a snapshot and follows"
start_gateway
start_x
wait_for "$xlog" '^X snapshot:' 1 60
say "$(grep '^X snapshot:' "$xlog")"
wait_for "$xlog" '^X live: ' 5 30

# Y's initial state is written; then X follows Y's changes (one every 700 ms) a little while.
wait_for "$WORK/producer.log" '^A wrote ' 205 60
wait_for "$xlog" '^X live: ' $(($(grep -c '^X live: ' "$xlog") + 4)) 30

say "X crashes (SIGKILL) and starts again"
kill -KILL "$x"
wait "$x" 2>/dev/null || true
sleep 2
start_x
expect_resume

say "X stops (SIGTERM) and starts again"
kill -TERM "$x"
wait "$x" || fail "X did not stop cleanly on SIGTERM ($xlog)"
grep -q '^X stopped: ' "$xlog" || fail "X did not report its stop ($xlog)"
sleep 2
start_x
expect_resume

say "The gateway stops and starts again; X reconnects by itself"
before=$(grep -c '^X live: ' "$xlog")
kill -TERM "$gateway"
wait "$gateway" 2>/dev/null || true
sleep 2
start_gateway
wait_for "$xlog" '^X live: ' $((before + 3)) 30
kill -0 "$x" 2>/dev/null || fail "X exited during the gateway's restart ($xlog)"
grep -q '^X note: reconnecting' "$xlog" || fail "X did not see the gateway go ($xlog)"

# Enough of Y's changes for some tombstones (Y ends an assignment one change in ten).
wait_for "$WORK/producer.log" '^A wrote ' 240 60

say "Y stops; X catches up with the topic's end"
kill -TERM "$producer"
wait "$producer" 2>/dev/null || true
producer=""
check wait --db "$DB" --timeout 30 || fail "X did not catch up"
kill -TERM "$x"
wait "$x" || fail "X did not stop cleanly ($xlog)"
x=""
if grep -q '^X snapshot:' "$WORK"/x-[2-9].log; then fail "a restarted X took a snapshot"; fi

say "X's model against a raw rebuild from Kafka (offset 0, last value per key, tombstones dropped)"
check compare --db "$DB" >"$WORK/compare.txt" 2>&1 || { cat "$WORK/compare.txt" >&2; fail "X's model differs"; }
cat "$WORK/compare.txt" >&2

rows=$(grep -oE 'X: [0-9]+ rows' "$WORK/compare.txt" | grep -oE '[0-9]+')
live=$(grep -oE '[0-9]+ live changes' "$WORK/compare.txt" | grep -oE '[0-9]+')
printf 'demo-check: rows %s, live changes %s (each once), X restarts %d (1 crash, 1 stop), gateway restarts %d, snapshots 1, equal yes (%d s)\n' \
  "$rows" "$live" $((x_runs - 1)) $((gateway_runs - 1)) $((SECONDS - started))
