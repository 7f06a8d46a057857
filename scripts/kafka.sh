#!/usr/bin/env bash
# Run a real single-node Apache Kafka 4.x broker (KRaft, combined
# broker+controller) for development, tests, CI and demos.
#
# Why this script exists: there is no Docker and no internet apart from the
# package registries, so we cannot use a container image or the Apache
# download tarball. Maven Central does carry every Kafka jar (but none of the
# bin/*.sh start scripts), so we fetch the jars with Maven and start the
# broker's main class (kafka.Kafka) ourselves.
#
# Everything lives outside the clone, in ${TRIBUTARY_CACHE:-~/.cache/tributary}:
#   kafka-<version>/libs/      the jars (one copy per Kafka version)
#   kafka-data-<port>/         one broker instance: config, data, log, pid
#
# Run `scripts/kafka.sh help` for the subcommands and the environment knobs.
set -euo pipefail

readonly DEFAULT_KAFKA_VERSION=4.4.0
# Kafka's jars depend on log4j-api/-core but not on an slf4j binding, so we add
# one. All three log4j artifacts are pinned to one version so they always match
# (mixing log4j-api and log4j-core versions breaks at run time).
readonly LOG4J_VERSION="${LOG4J_VERSION:-2.25.5}"
# Pinned so `install` behaves the same with every Maven 3.6.3+ (Maven 3.8's
# built-in default is the ancient 2.8).
readonly DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

readonly SCRIPT_NAME="${0##*/}"
KAFKA_VERSION="${KAFKA_VERSION:-$DEFAULT_KAFKA_VERSION}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# The client port the broker tells clients to connect to; another port puts something between
# them, such as the network-fault proxy of the tests (crates/testkit/src/proxy.rs).
KAFKA_ADVERTISED_PORT="${KAFKA_ADVERTISED_PORT:-$KAFKA_PORT}"
# Optional SASL_SSL listener (off when empty): TLS with a certificate of a CA made by
# scripts/certs.sh in the data dir (tls/ca.pem for clients), SASL PLAIN and SCRAM-SHA-512 with
# the user `gateway` / `gateway-secret`.
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
readonly SASL_USER=gateway SASL_PASSWORD=gateway-secret KEYSTORE_PASSWORD=tributary-test
# Small on purpose: the machines have 2 cores and the test suites run next to
# the broker. A single-node test broker is happy with far less than 1 GiB.
KAFKA_HEAP="${KAFKA_HEAP:--Xms128m -Xmx1g}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:-}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
readonly HOST=127.0.0.1

CACHE_DIR="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
# The broker gets absolute paths in its config, whatever the caller's cwd.
[[ "$CACHE_DIR" == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"
readonly CACHE_DIR
readonly KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
readonly LIBS_DIR="$KAFKA_HOME/libs"
DATA_DIR="${KAFKA_DATA_DIR:-$CACHE_DIR/kafka-data-$KAFKA_PORT}"
[[ "$DATA_DIR" == /* ]] || DATA_DIR="$PWD/$DATA_DIR"
DATA_DIR="${DATA_DIR%/}"
readonly DATA_DIR
readonly LOG_DIRS="$DATA_DIR/kraft-combined-logs"   # topic data + KRaft metadata
readonly SERVER_PROPS="$DATA_DIR/server.properties"
readonly LOG4J_PROPS="$DATA_DIR/log4j2.properties"
readonly LOG_FILE="$DATA_DIR/kafka.log"
# shellcheck disable=SC2034 # read by lib/daemon.sh (CI runs shellcheck without -x)
readonly PID_FILE="$DATA_DIR/kafka.pid"
# Written when the data dir is formatted. Doubles as the marker that lets
# `reset` know the directory is ours to delete.
readonly INSTANCE_FILE="$DATA_DIR/tributary-kafka.env"
readonly BOOTSTRAP="$HOST:$KAFKA_PORT"
# How lib/daemon.sh speaks of this instance ("Kafka is running (pid 42) on
# 127.0.0.1:9092", "stopping the half-started broker"), and how long its
# stop_pid waits after SIGTERM before SIGKILL. SIGTERM lets Kafka shut down
# cleanly (flush logs, write the clean-shutdown marker, so the next start
# skips log recovery).
# shellcheck disable=SC2034 # read by lib/daemon.sh (CI runs shellcheck without -x)
readonly DAEMON_NAME=Kafka DAEMON_KIND=broker DAEMON_ADDR="$BOOTSTRAP" \
  DAEMON_REQUESTS="Kafka requests" DAEMON_STOP_TIMEOUT="$KAFKA_STOP_TIMEOUT"

JAVA="java"
[[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]] && JAVA="$JAVA_HOME/bin/java"

# ---------------------------------------------------------------------------
# Helpers: those shared with scripts/registry.sh (say, die, locks, pid files,
# stop/status/logs/reset and the command dispatch) are in lib/daemon.sh.
# Messages go to stderr so that stdout of `start` is only the bootstrap
# address: BOOTSTRAP=$(scripts/kafka.sh start) works in CI.
# ---------------------------------------------------------------------------
# shellcheck source-path=SCRIPTDIR source=lib/daemon.sh disable=SC1091 # CI runs shellcheck without -x
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME COMMAND [ARGS]

Runs a single-node Apache Kafka $KAFKA_VERSION broker (KRaft mode, broker and
controller in one JVM) on $HOST, for development, tests, CI and demos.

Commands:
  install        fetch the Kafka jars with Maven (no-op when already there)
  start          install if needed, format storage if needed, start the broker
                 in the background and wait until it answers Kafka requests;
                 prints the bootstrap address ($BOOTSTRAP) on stdout
  stop           stop the broker (SIGTERM, then SIGKILL after ${KAFKA_STOP_TIMEOUT}s)
  restart        stop, then start (data is kept)
  status         say whether the broker runs; exit 0 if it does, 3 if not
  logs [-f]      print the broker log (-f: follow it)
  reset          stop the broker and delete its data directory
  tool NAME ...  run a Kafka command-line tool from the same jars, e.g.
                   $SCRIPT_NAME tool topics --bootstrap-server $BOOTSTRAP --list
                 NAME is one of: topics, console-producer, console-consumer,
                 consumer-groups, api-versions, storage, or a Java class name
  help           show this message

Environment (defaults in brackets):
  KAFKA_PORT             client listener port [9092]
  KAFKA_CONTROLLER_PORT  KRaft controller listener port [9093]
  KAFKA_ADVERTISED_PORT  client port the broker advertises [\$KAFKA_PORT]; another
                         port needs something there that forwards to KAFKA_PORT
  KAFKA_SASL_SSL_PORT    also listen with SASL_SSL on this port [off]: the broker's
                         certificate is signed by \$KAFKA_DATA_DIR/tls/ca.pem; user
                         gateway, password gateway-secret (PLAIN, SCRAM-SHA-512)
  KAFKA_DATA_DIR         data, config, log and pid of this broker
                         [\$TRIBUTARY_CACHE/kafka-data-\$KAFKA_PORT]
  KAFKA_VERSION          Kafka version from Maven Central [$DEFAULT_KAFKA_VERSION]
  KAFKA_HEAP             JVM heap flags [-Xms128m -Xmx1g]
  KAFKA_JVM_OPTS         extra JVM flags for the broker []
  KAFKA_START_TIMEOUT    seconds to wait for the broker to come up [120]
  KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL [30]
  TRIBUTARY_CACHE        cache root [\$HOME/.cache/tributary]
  JAVA_HOME              Java 17+ to use [java on PATH]

Two brokers can run side by side with different ports, e.g.
  KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 $SCRIPT_NAME start
EOF
}

validate_env() {
  require_number '^[0-9]+$' "a number" \
    KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_ADVERTISED_PORT KAFKA_START_TIMEOUT KAFKA_STOP_TIMEOUT
  require_ports KAFKA_PORT KAFKA_CONTROLLER_PORT
  ((KAFKA_ADVERTISED_PORT > 0 && KAFKA_ADVERTISED_PORT < 65536)) ||
    die "KAFKA_ADVERTISED_PORT out of range: $KAFKA_ADVERTISED_PORT"
  [[ "$KAFKA_VERSION" =~ ^4\.[0-9]+\.[0-9]+$ ]] ||
    die "KAFKA_VERSION must be a Kafka 4.x release like $DEFAULT_KAFKA_VERSION, got '$KAFKA_VERSION'"
}

require_java() {
  command -v "$JAVA" >/dev/null 2>&1 ||
    die "java not found. Kafka 4 needs Java 17 or newer: apt-get install openjdk-17-jre-headless maven"
  local version major
  version="$(java_version "$JAVA")"
  major="$(java_major_of "$version")"
  if [[ -z "$major" ]] || ((major < 17)); then
    die "Kafka 4 needs Java 17 or newer, but '$JAVA' is '$version': apt-get install openjdk-17-jre-headless"
  fi
}

# PID of this instance's broker if it is running, else nothing (and status 1):
# the JVM running kafka.Kafka with this data dir's config.
daemon_pid() { pid_from_file kafka.Kafka "$SERVER_PROPS"; }

# True when the broker answers a real Kafka request, not merely accepts TCP:
# send ApiVersions v0 (api_key 18, correlation id 1, empty client id) and
# expect a response with correlation id 1 and error code 0. A broker only
# serves its client listener once it has caught up with the metadata log.
daemon_responds() {
  local reply
  # shellcheck disable=SC2016 # $0 is expanded by the inner bash, on purpose
  reply="$(timeout 5 bash -c '
      exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00" >&3
      od -An -tx1 -N10 <&3' "$HOST" "$KAFKA_PORT" 2>/dev/null)" || return 1
  reply="${reply//[[:space:]]/}"
  # 4-byte length, then correlation id 00000001, then error code 0000.
  [[ "$reply" =~ ^[0-9a-f]{8}000000010000$ ]]
}

is_installed() { [[ -f "$LIBS_DIR/.installed" && -f "$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar" ]]; }

write_pom() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/kafka.sh: only used to download Kafka's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.tributary</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- The broker: kafka.Kafka and kafka.tools.StorageTool. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- The CLI tools (topics, console producer/consumer, ...). Kafka Connect
         is only needed by the connect tools and would add ~45 jars. -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion>
          <groupId>org.apache.kafka</groupId>
          <artifactId>connect-runtime</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <!-- Logging backend: Kafka logs through slf4j 1.7 and log4j2. -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

cmd_install() {
  if is_installed; then
    say "Kafka $KAFKA_VERSION is already installed in $LIBS_DIR"
    return 0
  fi
  require_java
  require_mvn "the Kafka jars" "openjdk-17-jre-headless maven"
  local install_lock_fd tmp
  take_lock "$KAFKA_HOME.lock" install_lock_fd
  if is_installed; then # another process installed it while we waited
    exec {install_lock_fd}>&-
    return 0
  fi
  say "installing Kafka $KAFKA_VERSION from Maven Central into $LIBS_DIR ..."
  mkdir -p "$KAFKA_HOME"
  write_pom "$KAFKA_HOME/pom.xml"
  # Download into a scratch dir and rename it at the end, so an interrupted
  # install never leaves a half-filled libs/ that looks complete.
  tmp="$KAFKA_HOME/libs.partial.$$"
  rm -rf "$tmp"
  if ! mvn -B -q --no-transfer-progress -f "$KAFKA_HOME/pom.xml" \
    "$DEPENDENCY_PLUGIN:copy-dependencies" -Dstyle.color=never \
    -DincludeScope=runtime -DoutputDirectory="$tmp" \
    >"$KAFKA_HOME/install.log" 2>&1; then
    tail -n 30 "$KAFKA_HOME/install.log" >&2 || true
    rm -rf "$tmp"
    die "mvn could not fetch Kafka $KAFKA_VERSION (full output: $KAFKA_HOME/install.log)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] ||
    die "mvn finished but $tmp has no kafka_2.13-$KAFKA_VERSION.jar"
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  touch "$LIBS_DIR/.installed"
  exec {install_lock_fd}>&-
  say "installed Kafka $KAFKA_VERSION ($(du -sh "$LIBS_DIR" | cut -f1))"
}

write_broker_config() {
  # Rewritten on every start so changes to this script reach existing data
  # dirs. Only the ports and log.dirs must stay stable (checked elsewhere).
  cat >"$SERVER_PROPS" <<EOF
# Generated by scripts/kafka.sh on every start; edits are overwritten.
# Single-node KRaft: this JVM is both the broker and the only controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
# Loopback only: a dev/test broker must not be reachable from elsewhere.
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT${KAFKA_SASL_SSL_PORT:+,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT}
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_ADVERTISED_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT${KAFKA_SASL_SSL_PORT:+,SASL_SSL://$HOST:$KAFKA_SASL_SSL_PORT}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT${KAFKA_SASL_SSL_PORT:+,SASL_SSL:SASL_SSL}
log.dirs=$LOG_DIRS

# One broker, so every replication factor and ISR minimum is 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer partitions for the internal topics (default 50 each): the first
# consumer group / transaction on a fresh broker is then ready much sooner.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.num.partitions=1

# Test-friendly behaviour: topics exist only when created explicitly, can be
# deleted, and consumer groups rebalance without the default 3 s delay.
auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=1
group.initial.rebalance.delay.ms=0
log.retention.check.interval.ms=10000

# Small machine (2 cores, tests alongside): fewer threads, smaller buffers.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
EOF
  if [[ -n "$KAFKA_SASL_SSL_PORT" ]]; then
    write_sasl_ssl_config
  fi

  # All broker logging goes to stdout, which start redirects to $LOG_FILE
  # (one file per run; the previous run's is kept as kafka.log.1).
  cat >"$LOG4J_PROPS" <<'EOF'
# Generated by scripts/kafka.sh.
status = warn
name = tributary-kafka
# Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook would
# otherwise stop logging first and the end of the shutdown would be lost.
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# One line per request at DEBUG/TRACE: far too chatty for a test broker.
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

# The SASL_SSL listener: a PKCS#12 keystore made from a certs.sh server certificate, and the
# JAAS settings of its two mechanisms (SCRAM credentials are added when storage is formatted).
write_sasl_ssl_config() {
  local tls="$DATA_DIR/tls"
  if [[ ! -f "$tls/broker.p12" ]]; then
    "$(dirname "$0")/certs.sh" "$tls" >/dev/null
    openssl pkcs12 -export -in "$tls/server.pem" -inkey "$tls/server.key" -name broker \
      -out "$tls/broker.p12" -passout "pass:$KEYSTORE_PASSWORD"
  fi
  cat >>"$SERVER_PROPS" <<EOF

# SASL_SSL listener (KAFKA_SASL_SSL_PORT).
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_ssl.ssl.keystore.location=$tls/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$KEYSTORE_PASSWORD
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
}

# Generate a cluster id the way Kafka's Uuid.randomUuid() does: 16 random
# bytes, URL-safe base64 without padding, never starting with '-' (the CLI
# would read it as an option). Saves starting a JVM for `random-uuid`.
new_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && break
  done
  printf '%s\n' "$id"
}

format_storage_if_needed() {
  if [[ -f "$LOG_DIRS/meta.properties" ]]; then
    # A --standalone format records the controller's address in the metadata
    # log, so the same data dir cannot be reused with another controller port.
    local recorded=""
    [[ -f "$INSTANCE_FILE" ]] && recorded="$(sed -n 's/^KAFKA_CONTROLLER_PORT=//p' "$INSTANCE_FILE")"
    if [[ -n "$recorded" && "$recorded" != "$KAFKA_CONTROLLER_PORT" ]]; then
      die "$DATA_DIR was formatted for controller port $recorded, not $KAFKA_CONTROLLER_PORT; use that port or run '$SCRIPT_NAME reset'"
    fi
    return 0
  fi
  local cluster_id out
  cluster_id="$(new_cluster_id)"
  say "formatting KRaft storage in $LOG_DIRS (cluster id $cluster_id)"
  # --standalone: this node is the whole (dynamic) controller quorum.
  if ! out="$("$JAVA" -Xshare:auto -Xmx256m -cp "$LIBS_DIR/*" \
    -Dlog4j2.configurationFile="$LOG4J_PROPS" \
    kafka.tools.StorageTool format --standalone \
    ${KAFKA_SASL_SSL_PORT:+--add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]"} \
    --cluster-id "$cluster_id" --config "$SERVER_PROPS" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "formatting storage failed"
  fi
  cat >"$INSTANCE_FILE" <<EOF
# Written by scripts/kafka.sh when this data dir was formatted.
KAFKA_CLUSTER_ID=$cluster_id
KAFKA_PORT=$KAFKA_PORT
KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
KAFKA_VERSION=$KAFKA_VERSION
EOF
}

# Ready: the broker both logged that it started and answers an ApiVersions
# request on the client port.
broker_ready() { grep -q 'Kafka Server started' "$LOG_FILE" 2>/dev/null && daemon_responds; }

cmd_start() {
  if already_running; then
    return 0
  fi
  require_java
  cmd_install
  require_free_ports "KAFKA_PORT / KAFKA_CONTROLLER_PORT" \
    "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" ${KAFKA_SASL_SSL_PORT:+"$KAFKA_SASL_SSL_PORT"}

  mkdir -p "$DATA_DIR"
  write_broker_config
  format_storage_if_needed
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"

  local -a heap extra jvm_opts
  read -r -a heap <<<"$KAFKA_HEAP"
  read -r -a extra <<<"$KAFKA_JVM_OPTS"
  jvm_opts=(
    "${heap[@]}"
    # Serial GC: fewest GC threads and quickest start on a 2-core machine;
    # a test broker's heap is small, so its pauses are short anyway.
    -XX:+UseSerialGC
    -Xshare:auto # reuse the JDK's class-data archive: faster JVM start
    -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$LOG4J_PROPS"
    -Dkafka.logs.dir="$DATA_DIR"
    "${extra[@]}"
  )
  say "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $HOST:$KAFKA_CONTROLLER_PORT)"
  local pid
  start_daemon pid "$KAFKA_START_TIMEOUT" broker_ready "" \
    "$JAVA" "${jvm_opts[@]}" -cp "$LIBS_DIR/*" kafka.Kafka "$SERVER_PROPS"
  say "Kafka is ready (pid $pid); bootstrap servers: $BOOTSTRAP"
  printf '%s\n' "$BOOTSTRAP"
}

cmd_reset() {
  # The entries a data dir of ours may hold without its instance file (e.g.
  # after a start that failed while formatting storage).
  reset_instance kafka.sh server.properties log4j2.properties kafka.log kafka.log.1 kafka.pid \
    kraft-combined-logs
}

cmd_tool() {
  (($# > 0)) || die "usage: $SCRIPT_NAME tool NAME [ARGS...] (see '$SCRIPT_NAME help')"
  local name="$1" class
  shift
  case "$name" in
    topics) class=org.apache.kafka.tools.TopicCommand ;;
    console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    configs) class=org.apache.kafka.tools.ConfigCommand ;;
    api-versions) class=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    storage) class=kafka.tools.StorageTool ;;
    *.*) class="$name" ;;
    *) die "unknown tool '$name' (see '$SCRIPT_NAME help')" ;;
  esac
  require_java
  is_installed || cmd_install
  # Tools log warnings to stderr only, so their stdout stays clean data.
  local tools_log4j="$KAFKA_HOME/tools-log4j2.properties"
  if [[ ! -f "$tools_log4j" ]]; then
    printf '%s\n' 'status = warn' 'shutdownHook = disable' 'appender.err.type = Console' \
      'appender.err.name = STDERR' 'appender.err.target = SYSTEM_ERR' \
      'appender.err.layout.type = PatternLayout' \
      'appender.err.layout.pattern = [%d] %p %m (%c)%n' \
      'rootLogger.level = WARN' 'rootLogger.appenderRef.err.ref = STDERR' \
      >"$tools_log4j.$$" && mv -f "$tools_log4j.$$" "$tools_log4j"
  fi
  exec "$JAVA" -Xshare:auto -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xmx512m \
    -Dlog4j2.configurationFile="$tools_log4j" -cp "$LIBS_DIR/*" "$class" "$@"
}

main() {
  # `tool` is kafka.sh's own command (it takes no instance lock); the rest are
  # the commands both scripts share.
  if [[ "${1:-}" == tool ]]; then
    shift
    validate_env
    cmd_tool "$@"
    return
  fi
  daemon_main "$@"
}

main "$@"
