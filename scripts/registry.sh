#!/usr/bin/env bash
# Run a real schema registry (Apicurio Registry 3.x, which also serves the
# Confluent Schema Registry API under /apis/ccompat/v7) on loopback, for
# development, tests, CI and demos.
#
# Why this script exists: there is no Docker and no internet apart from the
# package registries, so we cannot use a container image. Maven Central does
# carry Apicurio's complete Quarkus "fast-jar" distribution
# (io.apicurio:apicurio-registry-app:<version>:tar.gz:all), so we fetch that
# with Maven, unpack it once and start quarkus-run.jar ourselves.
#
# The registry keeps everything in an in-memory H2 database: every start is
# empty and a stop (or restart) forgets all schemas. No authentication, no
# telemetry, no outgoing connections; it listens on $HOST only.
#
# Everything lives outside the clone, in ${TRIBUTARY_CACHE:-~/.cache/tributary}:
#   apicurio-registry-<version>/  the unpacked distribution (one per version)
#   registry-data-<port>/         one registry instance: log, pid, temp files
#
# Run `scripts/registry.sh help` for the subcommands and the environment knobs.
set -euo pipefail

readonly DEFAULT_REGISTRY_VERSION=3.3.3
# Apicurio Registry 3.3 is compiled for Java 21 (class file version 65).
readonly MIN_JAVA=21
# Pinned so `install` behaves the same with every Maven 3.6.3+ (Maven 3.8's
# built-in default is the ancient 2.8). Same version as scripts/kafka.sh.
readonly DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

readonly SCRIPT_NAME="${0##*/}"
REGISTRY_VERSION="${REGISTRY_VERSION:-$DEFAULT_REGISTRY_VERSION}"
REGISTRY_PORT="${REGISTRY_PORT:-18081}"
# Quarkus serves health and metrics on a separate "management" port (it
# cannot be switched off at run time), so it gets a loopback port too.
# Defaults to REGISTRY_PORT + 1 (set in validate_env).
REGISTRY_MANAGEMENT_PORT="${REGISTRY_MANAGEMENT_PORT:-}"
# Small on purpose: the machines have 2 cores and the test suites run next to
# the registry. An in-memory test registry needs little heap.
REGISTRY_HEAP="${REGISTRY_HEAP:--Xms64m -Xmx384m}"
REGISTRY_JVM_OPTS="${REGISTRY_JVM_OPTS:-}"
REGISTRY_START_TIMEOUT="${REGISTRY_START_TIMEOUT:-120}"
REGISTRY_STOP_TIMEOUT="${REGISTRY_STOP_TIMEOUT:-30}"
readonly HOST=127.0.0.1

CACHE_DIR="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
# The registry gets absolute paths, whatever the caller's cwd.
[[ "$CACHE_DIR" == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"
readonly CACHE_DIR
readonly REGISTRY_HOME="$CACHE_DIR/apicurio-registry-$REGISTRY_VERSION"
readonly RUN_JAR="$REGISTRY_HOME/quarkus-run.jar"
DATA_DIR="${REGISTRY_DATA_DIR:-$CACHE_DIR/registry-data-$REGISTRY_PORT}"
[[ "$DATA_DIR" == /* ]] || DATA_DIR="$PWD/$DATA_DIR"
DATA_DIR="${DATA_DIR%/}"
readonly DATA_DIR
readonly TMP_DIR="$DATA_DIR/tmp"
readonly LOG_FILE="$DATA_DIR/registry.log"
# shellcheck disable=SC2034 # read by lib/daemon.sh (CI runs shellcheck without -x)
readonly PID_FILE="$DATA_DIR/registry.pid"
# Written on start. Doubles as the marker that lets `reset` know the
# directory is ours to delete.
readonly INSTANCE_FILE="$DATA_DIR/tributary-registry.env"
readonly URL="http://$HOST:$REGISTRY_PORT"
# How lib/daemon.sh speaks of this instance ("the registry is running (pid 42)
# on http://127.0.0.1:18081", "stopping the half-started registry"), and how
# long its stop_pid waits after SIGTERM before SIGKILL. SIGTERM lets Quarkus
# shut down cleanly (well under a second).
# shellcheck disable=SC2034 # read by lib/daemon.sh (CI runs shellcheck without -x)
readonly DAEMON_NAME="the registry" DAEMON_KIND=registry DAEMON_ADDR="$URL" \
  DAEMON_REQUESTS="" DAEMON_STOP_TIMEOUT="$REGISTRY_STOP_TIMEOUT"
# Answers 200 once HTTP is up and the storage is usable (it lists subjects).
readonly READY_PATH=/apis/ccompat/v7/subjects

JAVA="" # chosen by require_java

# ---------------------------------------------------------------------------
# Helpers: those shared with scripts/kafka.sh (say, die, locks, pid files,
# stop/status/logs/reset and the command dispatch) are in lib/daemon.sh.
# Messages go to stderr so that stdout of `start` is only the URL:
# REGISTRY_URL=$(scripts/registry.sh start) works in CI.
# ---------------------------------------------------------------------------
# shellcheck source-path=SCRIPTDIR source=lib/daemon.sh disable=SC1091 # CI runs shellcheck without -x
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME COMMAND

Runs Apicurio Registry $REGISTRY_VERSION on $HOST with in-memory storage (every
start is empty), for development, tests, CI and demos. The Confluent-compatible
API is under $URL/apis/ccompat/v7, Apicurio's own under
$URL/apis/registry/v3; health and metrics are on the management port
(/health/ready, /metrics on REGISTRY_MANAGEMENT_PORT).

Commands:
  install     fetch the registry with Maven and unpack it (no-op when already there)
  start       install if needed, start the registry in the background and wait
              until it answers API requests; prints its URL ($URL) on stdout
  stop        stop the registry (SIGTERM, then SIGKILL after ${REGISTRY_STOP_TIMEOUT}s);
              all schemas are lost
  restart     stop, then start (empty again)
  status      say whether the registry runs; exit 0 if it does, 3 if not
  logs [-f]   print the registry log (-f: follow it)
  reset       stop the registry and delete its data directory
  help        show this message

Environment (defaults in brackets):
  REGISTRY_PORT             HTTP port of the APIs [18081]
  REGISTRY_MANAGEMENT_PORT  health/metrics port [REGISTRY_PORT + 1]
  REGISTRY_DATA_DIR         log, pid and temp files of this instance
                            [\$TRIBUTARY_CACHE/registry-data-\$REGISTRY_PORT]
  REGISTRY_VERSION          Apicurio Registry version from Maven Central [$DEFAULT_REGISTRY_VERSION]
  REGISTRY_HEAP             JVM heap flags [-Xms64m -Xmx384m]
  REGISTRY_JVM_OPTS         extra JVM flags, e.g. -Dquarkus.http.access-log.enabled=true []
  REGISTRY_START_TIMEOUT    seconds to wait for the registry to come up [120]
  REGISTRY_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL [30]
  REGISTRY_JAVA_HOME        Java $MIN_JAVA+ to use [\$JAVA_HOME, java on PATH or the newest
                            /usr/lib/jvm/* that is Java $MIN_JAVA+]
  TRIBUTARY_CACHE           cache root [\$HOME/.cache/tributary]

Two registries can run side by side with different ports, e.g.
  REGISTRY_PORT=28081 $SCRIPT_NAME start
EOF
}

validate_env() {
  require_number '^[1-9][0-9]*$' "a number" REGISTRY_PORT
  [[ -n "$REGISTRY_MANAGEMENT_PORT" ]] || REGISTRY_MANAGEMENT_PORT=$((REGISTRY_PORT + 1))
  require_number '^[1-9][0-9]*$' "a positive number" \
    REGISTRY_MANAGEMENT_PORT REGISTRY_START_TIMEOUT REGISTRY_STOP_TIMEOUT
  require_ports REGISTRY_PORT REGISTRY_MANAGEMENT_PORT
  [[ "$REGISTRY_VERSION" =~ ^3\.[0-9]+\.[0-9]+$ ]] ||
    die "REGISTRY_VERSION must be an Apicurio Registry 3.x release like $DEFAULT_REGISTRY_VERSION, got '$REGISTRY_VERSION'"
}

# Major version of the java binary $1 (e.g. 17, 21, 25), or nothing.
java_major() {
  local version major
  version="$(java_version "$1")" || return 1
  major="$(java_major_of "$version")"
  [[ -n "$major" ]] && printf '%s\n' "$major"
}

# Sets JAVA to a Java $MIN_JAVA+ binary. An explicit REGISTRY_JAVA_HOME must
# fit; otherwise JAVA_HOME, java on PATH, then the JDKs in /usr/lib/jvm (the
# distribution's default Java may be too old, e.g. 17 on Debian 12).
require_java() {
  [[ -n "$JAVA" ]] && return 0
  local candidate major best="" best_major=0
  if [[ -n "${REGISTRY_JAVA_HOME:-}" ]]; then
    candidate="$REGISTRY_JAVA_HOME/bin/java"
    [[ -x "$candidate" ]] || die "REGISTRY_JAVA_HOME has no bin/java: $REGISTRY_JAVA_HOME"
    major="$(java_major "$candidate")" || major=0
    ((${major:-0} >= MIN_JAVA)) ||
      die "Apicurio Registry $REGISTRY_VERSION needs Java $MIN_JAVA+, but $candidate is Java ${major:-?}"
    JAVA="$candidate"
    return 0
  fi
  local -a candidates=()
  [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]] && candidates+=("$JAVA_HOME/bin/java")
  candidate="$(command -v java 2>/dev/null)" && candidates+=("$candidate")
  for candidate in "${candidates[@]}"; do
    major="$(java_major "$candidate")" || continue
    if ((major >= MIN_JAVA)); then
      JAVA="$candidate"
      return 0
    fi
  done
  for candidate in /usr/lib/jvm/*/bin/java; do
    [[ -x "$candidate" ]] || continue
    major="$(java_major "$candidate")" || continue
    if ((major >= MIN_JAVA && major > best_major)); then
      best="$candidate" best_major="$major"
    fi
  done
  [[ -n "$best" ]] ||
    die "Apicurio Registry $REGISTRY_VERSION needs Java $MIN_JAVA or newer, and none was found (JAVA_HOME, PATH, /usr/lib/jvm); install one (e.g. a Temurin 21+ JDK) and/or set REGISTRY_JAVA_HOME"
  JAVA="$best"
}

# PID of this instance's registry if it is running, else nothing (and status
# 1): the JVM running quarkus-run.jar on this instance's port.
daemon_pid() { pid_from_file "-Dquarkus.http.port=$REGISTRY_PORT " quarkus-run.jar; }

# True when GET PATH on PORT answers HTTP 200. Plain bash, so that neither
# this script nor CI needs curl.
http_ok() {
  local port="$1" path="$2" status
  # shellcheck disable=SC2016 # $0, $1, $2 are expanded by the inner bash, on purpose
  status="$(timeout 5 bash -c '
      exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nAccept: application/json\r\n\r\n" "$2" "$0" "$1" >&3
      head -n 1 <&3' "$HOST" "$port" "$path" 2>/dev/null)" || return 1
  [[ "$status" =~ ^HTTP/1\.[01]\ 200 ]]
}

daemon_responds() { http_ok "$REGISTRY_PORT" "$READY_PATH"; }

is_installed() { [[ -f "$REGISTRY_HOME/.installed" && -f "$RUN_JAR" ]]; }

cmd_install() {
  if is_installed; then
    say "Apicurio Registry $REGISTRY_VERSION is already installed in $REGISTRY_HOME"
    return 0
  fi
  require_mvn "the registry" maven
  local install_lock_fd tmp tarball
  take_lock "$REGISTRY_HOME.lock" install_lock_fd
  if is_installed; then # another process installed it while we waited
    exec {install_lock_fd}>&-
    return 0
  fi
  say "installing Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_HOME ..."
  # Download and unpack into a scratch dir and rename it at the end, so an
  # interrupted install never leaves a half-filled directory that looks
  # complete. The tarball (~160 MB) stays cached in ~/.m2 only.
  tmp="$REGISTRY_HOME.partial.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  tarball="$tmp/apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz"
  # dependency:copy needs no pom; run it from the scratch dir so that no
  # pom.xml of the caller's cwd is picked up.
  if ! (cd "$tmp" && mvn -B -q --no-transfer-progress \
    "$DEPENDENCY_PLUGIN:copy" -Dstyle.color=never \
    -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
    -DoutputDirectory="$tmp" -Dmdep.overWriteReleases=true) \
    >"$tmp.install.log" 2>&1; then
    tail -n 30 "$tmp.install.log" >&2 || true
    mv -f "$tmp.install.log" "$CACHE_DIR/apicurio-registry-$REGISTRY_VERSION-install.log"
    rm -rf "$tmp"
    die "mvn could not fetch Apicurio Registry $REGISTRY_VERSION (full output: $CACHE_DIR/apicurio-registry-$REGISTRY_VERSION-install.log)"
  fi
  rm -f "$tmp.install.log"
  [[ -f "$tarball" ]] || { rm -rf "$tmp"; die "mvn finished but did not produce $tarball"; }
  if ! tar -xzf "$tarball" -C "$tmp" --no-same-owner; then
    rm -rf "$tmp"
    die "could not unpack $tarball"
  fi
  rm -f "$tarball"
  [[ -f "$tmp/quarkus-run.jar" ]] || { rm -rf "$tmp"; die "the distribution has no quarkus-run.jar"; }
  rm -rf "$REGISTRY_HOME"
  mv "$tmp" "$REGISTRY_HOME"
  touch "$REGISTRY_HOME/.installed"
  exec {install_lock_fd}>&-
  say "installed Apicurio Registry $REGISTRY_VERSION ($(du -sh "$REGISTRY_HOME" | cut -f1))"
}

cmd_start() {
  if already_running; then
    return 0
  fi
  require_java
  cmd_install
  require_free_ports "REGISTRY_PORT / REGISTRY_MANAGEMENT_PORT" "$REGISTRY_PORT" "$REGISTRY_MANAGEMENT_PORT"

  mkdir -p "$DATA_DIR" "$TMP_DIR"
  cat >"$INSTANCE_FILE" <<EOF
# Written by scripts/registry.sh on every start.
REGISTRY_PORT=$REGISTRY_PORT
REGISTRY_MANAGEMENT_PORT=$REGISTRY_MANAGEMENT_PORT
REGISTRY_VERSION=$REGISTRY_VERSION
EOF
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"

  local -a heap extra jvm_opts config
  read -r -a heap <<<"$REGISTRY_HEAP"
  read -r -a extra <<<"$REGISTRY_JVM_OPTS"
  jvm_opts=(
    "${heap[@]}"
    # Serial GC: fewest GC threads and quickest start on a 2-core machine.
    -XX:+UseSerialGC
    # C1 only: halves the start-up time and CPU (measured ~5 s instead of
    # ~8-9 s on 2 cores) and saves ~35 MB RSS; a test registry never needs
    # C2's peak throughput.
    -XX:TieredStopAtLevel=1
    -Xshare:auto # reuse the JDK's class-data archive: faster JVM start
    -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Djava.io.tmpdir="$TMP_DIR" # Vert.x file cache etc. stay in the data dir
  )
  # Quarkus/Apicurio configuration as system properties (they win over the
  # application.properties in the jar). Most repeat the defaults of
  # $REGISTRY_VERSION, so that a newer release cannot silently change them.
  config=(
    # Loopback only: a dev/test registry must not be reachable from elsewhere.
    -Dquarkus.http.host="$HOST"
    -Dquarkus.http.port="$REGISTRY_PORT"
    -Dquarkus.management.host="$HOST"
    -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT"
    # Storage: SQL on an in-memory H2 database, created empty on every start.
    # A test registry needs 2 connections, not the default 20.
    -Dapicurio.storage.kind=sql
    -Dapicurio.storage.sql.kind=h2
    -Dapicurio.datasource.url="jdbc:h2:mem:registry"
    -Dapicurio.datasource.jdbc.initial-size=2
    -Dapicurio.datasource.jdbc.min-size=2
    -Dapicurio.datasource.jdbc.max-size=10
    -Dapicurio.storage.snapshot.location="$TMP_DIR"
    -Dapicurio.import.work-dir="$TMP_DIR"
    # No authentication or authorization: anyone on loopback may read/write.
    -Dquarkus.oidc.tenant-enabled=false
    -Dapicurio.authn.basic-client-credentials.enabled=false
    -Dapicurio.auth.role-based-authorization=false
    -Dapicurio.auth.owner-only-authorization=false
    # Nothing leaves the machine: no OpenTelemetry export, no Elasticsearch,
    # no Kafka events, no (local) usage telemetry.
    -Dquarkus.otel.sdk.disabled=true
    -Dapicurio.search.index.enabled=false
    -Dapicurio.events.kafka.config.bootstrap.servers=
    -Dapicurio.usage.telemetry.enabled=false
    # Confluent-compatible API: schema ids are content ids (the default).
    -Dapicurio.ccompat.legacy-id-mode.enabled=false
    # Let tests delete subjects/versions like on a Confluent registry.
    -Dapicurio.rest.deletion.artifact.enabled=true
    -Dapicurio.rest.deletion.artifact-version.enabled=true
    # Quiet log: no banner, no line per request (enable with
    # REGISTRY_JVM_OPTS=-Dquarkus.http.access-log.enabled=true), a sane
    # timestamp (the jar's format has a typo: "YYYY-MMx-dd").
    -Dquarkus.banner.enabled=false
    -Dquarkus.http.access-log.enabled=false
    "-Dquarkus.log.console.format=%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p [%c{3.}] (%t) %m%n"
  )
  say "starting Apicurio Registry $REGISTRY_VERSION on $URL (management http://$HOST:$REGISTRY_MANAGEMENT_PORT) with $JAVA"
  # It runs in the data dir because Quarkus also reads ./.env and
  # ./config/application.properties from its working directory.
  local pid
  start_daemon pid "$REGISTRY_START_TIMEOUT" daemon_responds "$DATA_DIR" \
    "$JAVA" "${jvm_opts[@]}" "${config[@]}" "${extra[@]}" -jar "$RUN_JAR"
  say "Apicurio Registry is ready (pid $pid) on $URL (Confluent API: $URL/apis/ccompat/v7)"
  printf '%s\n' "$URL"
}

cmd_reset() {
  # The entries a data dir of ours may hold without its instance file.
  reset_instance registry.sh registry.log registry.log.1 registry.pid tmp
}

daemon_main "$@"
